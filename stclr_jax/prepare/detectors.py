"""Face detectors whose models ship inside their pip wheels (nothing is
downloaded at run time; all run on CPU).

Every detector takes a batch of RGB frames and returns, per frame, an array
``boxes_Kx5`` of ``(x0, y0, x1, y1, score)`` in pixels of that frame, or
``boxes_Kx15`` when it also finds the five face keypoints (MTCNN): then
columns 5-14 are ``(x, y)`` of the left eye, right eye, nose, left and
right mouth corner ("left" in the image). Scores are only comparable
within one detector. Backends:

* ``mtcnn``: MTCNN (``pip install mtcnn``; TensorFlow, weights in the wheel).
  The default: the most accurate of the four, and at ``min_face=40`` the
  fastest (``bench/face_detectors.py``; figures in BENCHMARKS.md, "Face
  detectors and ``prepare``").
* ``haar``: OpenCV's Haar cascade ``haarcascade_frontalface_default.xml``
  (``pip install "opencv-python-headless<5"``; 5.x dropped the cascades).
* ``dlib``: dlib's HOG + linear SVM frontal face detector (compiled into
  dlib; ``pip install dlib`` builds from source, ``dlib-bin`` is a wheel).
* ``lbp``: scikit-image's LBP cascade (``lbpcascade_frontalface_opencv.xml``
  ships with scikit-image).

To plug in another detector, subclass :class:`FaceDetector` (or pass any
object with ``name`` and ``detect(frames)``) to ``prepare``. The backends'
packages are imported when a detector is built: all but mtcnn are optional,
and mtcnn imports TensorFlow (seconds), which the command line's ``--help``
and the other detectors do without.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

DETECTORS = ("mtcnn", "haar", "dlib", "lbp")


class FaceDetector:
  """Interface: ``detect(frames)`` -> one ``(K, 5)`` float32 array per frame.

  ``min_face`` is the smallest face side, in pixels, worth finding (smaller
  ones cost time and are mostly false alarms).
  """

  name = "base"

  def __init__(self, min_face: int = 40):
    if min_face < 12:
      raise ValueError(f"min_face must be >= 12 pixels, got {min_face}")
    self.min_face = int(min_face)

  def detect(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [self.detect_one(np.asarray(f)) for f in frames]

  def detect_one(self, frame_HxWx3: np.ndarray) -> np.ndarray:
    raise NotImplementedError


def _boxes(rows, width: int = 5) -> np.ndarray:
  return np.asarray(rows, np.float32).reshape(-1, width)


def _needs(package: str, pip_name: str, backend: str):
  try:
    return importlib.import_module(package)
  except ImportError as e:
    raise ImportError(
      f"the {backend!r} face detector needs {package}: pip "
      f"install \"{pip_name}\""
    ) from e


def _gray(frame):
  rgb = frame.astype(np.float32)
  return (rgb @ np.float32([0.299, 0.587, 0.114]) + 0.5).astype(np.uint8)


class MtcnnDetector(FaceDetector):
  """MTCNN (P-, R- and O-Net); frames of one size go through as a batch.

  mtcnn 1.0's image pyramid breaks for ``min_face_size`` above ~24 px (its
  smallest level gets smaller than P-Net's input), so larger ``min_face``
  values shrink the frames by ``20 / min_face`` and detect 20 px faces
  there: the same pyramid, and faster.
  """

  name = "mtcnn"

  def __init__(
    self,
    min_face: int = 40,
    batch: int = 8,
    thresholds=(0.6, 0.7, 0.8),
    downscale: bool = True,
  ):
    super().__init__(min_face)
    self.downscale = downscale
    mtcnn = _needs("mtcnn", "mtcnn>=1.0", self.name)
    self._model = mtcnn.MTCNN(
      stages="face_and_landmarks_detection", device="CPU:0"
    )
    self.batch = batch
    self._kw = dict(
      min_face_size=min(self.min_face, 20),
      threshold_pnet=thresholds[0],
      threshold_rnet=thresholds[1],
      threshold_onet=thresholds[2],
    )

  def detect(self, frames):
    frames = list(frames)
    if self.downscale and self.min_face > 20 and frames:
      h, w = frames[0].shape[:2]
      return detect_scaled(
        self._detect, frames, round(max(h, w) * 20 / self.min_face)
      )
    return self._detect(frames)

  def _detect(self, frames):
    out = []
    frames = [np.ascontiguousarray(f) for f in frames]
    for i in range(0, len(frames), self.batch):
      chunk = frames[i : i + self.batch]
      if len({f.shape for f in chunk}) > 1:  # MTCNN pads mixed sizes
        out += [self.detect_one(f) for f in chunk]
        continue
      rows = np.asarray(
        self._model.detect_faces(
          chunk, box_format="xyxy", output_type="numpy", **self._kw
        )
      )
      rows = rows.reshape(-1, rows.shape[-1]) if rows.size else rows
      for j in range(len(chunk)):
        mine = rows[rows[:, 0] == j] if rows.size else rows
        # mtcnn's numpy rows: image, x0, y0, x1, y1, score, then the five
        # keypoints' x (6-10) and y (11-15); ours interleave (x, y).
        out.append(
          _boxes(
            [
              list(r[1:6]) + np.stack([r[6:11], r[11:16]], 1).ravel().tolist()
              for r in mine
            ],
            15,
          )
        )
    return out

  def detect_one(self, frame_HxWx3):
    return self.detect([frame_HxWx3])[0]


class HaarDetector(FaceDetector):
  """OpenCV's frontal-face Haar cascade; score = the final-stage weight."""

  name = "haar"

  def __init__(
    self,
    min_face: int = 40,
    scale_factor: float = 1.1,
    min_neighbors: int = 5,
    cascade: str = "haarcascade_frontalface_default.xml",
  ):
    super().__init__(min_face)
    cv2 = _needs("cv2", "opencv-python-headless>=4.8,<5", self.name)
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
      raise ImportError(
        f"OpenCV {cv2.__version__} has no Haar cascades; "
        "pip install \"opencv-python-headless<5\""
      )
    path = os.path.join(cv2.data.haarcascades, cascade)
    self._cascade = cv2.CascadeClassifier(path)
    if self._cascade.empty():
      raise FileNotFoundError(f"{path}: cannot load the Haar cascade")
    self.scale_factor, self.min_neighbors = scale_factor, min_neighbors

  def detect_one(self, frame_HxWx3):
    found, _, weights = self._cascade.detectMultiScale3(
      _gray(frame_HxWx3),
      scaleFactor=self.scale_factor,
      minNeighbors=self.min_neighbors,
      minSize=(self.min_face, self.min_face),
      outputRejectLevels=True,
    )
    return _boxes(
      [
        (x, y, x + w, y + h, float(s))
        for (x, y, w, h), s in zip(found, np.ravel(weights))
      ]
    )


class DlibHogDetector(FaceDetector):
  """dlib's HOG detector (finds faces down to ~80 px, or ~40 px after one
  2x upsampling, chosen from ``min_face``)."""

  name = "dlib"

  def __init__(self, min_face: int = 40):
    super().__init__(min_face)
    dlib = _needs("dlib", "dlib", self.name)
    self._det = dlib.get_frontal_face_detector()
    self.upsample = 0 if self.min_face >= 80 else 1

  def detect_one(self, frame_HxWx3):
    rects, scores, _ = self._det.run(
      np.ascontiguousarray(frame_HxWx3), self.upsample, 0.0
    )
    return _boxes(
      [
        (r.left(), r.top(), r.right() + 1, r.bottom() + 1, s)
        for r, s in zip(rects, scores)
      ]
    )


class LbpDetector(FaceDetector):
  """scikit-image's multi-block LBP cascade; score = neighbours merged."""

  name = "lbp"

  def __init__(
    self, min_face: int = 40, scale_factor: float = 1.2, min_neighbors: int = 4
  ):
    super().__init__(min_face)
    _needs("skimage", "scikit-image>=0.22", self.name)
    from skimage import data as skdata
    from skimage.feature import Cascade

    self._cascade = Cascade(skdata.lbp_frontal_face_cascade_filename())
    self.scale_factor, self.min_neighbors = scale_factor, min_neighbors

  def detect_one(self, frame_HxWx3):
    h, w = frame_HxWx3.shape[:2]
    found = self._cascade.detect_multi_scale(
      img=frame_HxWx3.astype(np.float32) / 255.0,
      scale_factor=self.scale_factor,
      step_ratio=1,
      min_size=(self.min_face, self.min_face),
      max_size=(h, w),
      min_neighbor_number=self.min_neighbors,
    )
    return _boxes(
      [
        (d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"], 1.0)
        for d in found
      ]
    )


def make_detector(
  name: str = "mtcnn", min_face: int = 40, downscale: bool = True
) -> FaceDetector:
  """The detector called ``name`` (one of :data:`DETECTORS`);
  ``downscale``: MTCNN's shrinking of the frames (see
  :class:`MtcnnDetector`)."""
  if name == "mtcnn":
    return MtcnnDetector(min_face, downscale=downscale)
  elif name == "haar":
    return HaarDetector(min_face)
  elif name == "dlib":
    return DlibHogDetector(min_face)
  elif name == "lbp":
    return LbpDetector(min_face)
  raise ValueError(f"unknown face detector {name!r}; choose from {DETECTORS}")


def detect_scaled(
  detect, frames: Sequence[np.ndarray], max_side: int = 0
) -> list[np.ndarray]:
  """``detect(frames)`` (e.g. a detector's ``detect``) on frames shrunk so
  their longer side is at most ``max_side`` (0: full size), with the boxes
  (and keypoints) mapped back to full-size pixels."""
  frames = list(frames)
  if not frames:
    return []
  h, w = frames[0].shape[:2]
  scale = max_side / max(h, w) if max_side and max(h, w) > max_side else 1.0
  if scale == 1.0:
    return detect(frames)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  small = [
    np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames
  ]
  out = []
  for b in detect(small):
    b = b.copy()
    b[:, :4] /= scale
    b[:, 5:] /= scale  # keypoints, where the detector gives them
    out.append(b)
  return out
