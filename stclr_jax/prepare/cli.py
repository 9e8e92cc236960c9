r"""Bring your own videos: face-cropped clips and a manifest from raw videos.

  python -m stclr_jax.prepare --input=/data/raw --output=/data/faces \
      [--size=224 --margin=0.2 --workers=2 --detect_every=1 --max_gap=12]

``--input`` is a CSV of ``path[,label][,subject][,group]`` rows (as for the
``video_folder`` data set; paths relative to the CSV), or a folder laid out
as ``<label>/[<subject>/]<video file or frame folder>``. Unlabelled videos,
for self-supervised pretraining, are a folder with the videos (or frame
folders) at its top, or a CSV without a label column (or with every label
empty); their rows in the manifests have an empty label and ``video_folder``
makes a data set without labels. Labels are all or nothing: a folder with
videos both at its top and in label folders, or a CSV with some labels
empty, is an error that names one video of each kind. Videos
(mp4/avi/mov/mkv/webm) are decoded with PyAV, upright by their display
matrix, frame folders (jpg/png/bmp) with Pillow (``stclr_jax/video_io.py``).
Each video's face is found with a detector that ships its weights in its
wheel (MTCNN by default, see ``detectors.py``) and followed over time
(``tracking.py``); a square box around it, enlarged by ``margin`` of the
face size on every side, is cropped, resized to ``size`` x ``size`` and
written as a frame folder. A face track needs evidence first
(``--min_confidence``, ``--keypoint_geometry``, ``--min_track_frames``,
``--min_track_seconds``, ``--min_track_density``; see ``tracking.py``):
a detector also fires on wheels, textures and lettering, in short sparse
runs. ``--output`` receives:

* ``clips/<id>/000000.jpg ...``: the face clips, and ``keypoints.npy``
  (MTCNN's five face keypoints per frame, in the clip's pixels);
* ``manifest.csv``: ``path,label,subject,frames_in,frames_kept,fps``
  (``fps`` is empty for frame folders unless ``--folder_fps`` is given);
* ``videos.csv``: ``path,label,subject,group``, what the ``video_folder``
  builder reads (``--config.data.name=video_folder
  --config.data.csv_path=<output>/videos.csv``; it takes at most these four
  columns, hence a second file);
* ``skipped.csv``: ``path,kind,reason`` for every input that was not
  written (``corrupt``, ``no_face``, ``too_short``, ``error``); a
  ``no_face`` reason names the evidence rule that rejected the
  detections, if any did;
* ``.prepare/<id>.json``: per input, what was done (boxes, frame states,
  counts) and for which input file and settings. A rerun reuses every
  record whose input file and settings are unchanged, so an interrupted
  run resumes where it stopped.
"""

from __future__ import annotations

import sys

from absl import flags

from stclr_jax.prepare import detectors, tracking
from stclr_jax.prepare.run import DetectorError, prepare
from stclr_jax.prepare.settings import Settings
from stclr_jax.video_io import BadInputError


def define_flags() -> None:
  """The command's flags (absl), on ``flags.FLAGS``."""
  flags.DEFINE_string(
    "input",
    None,
    "Folder (<label>/[<subject>/]<video>, or unlabelled: <video>) "
    "or CSV (path[,label][,subject][,group]).",
  )
  flags.DEFINE_string(
    "output", None, "Folder for clips/, manifest.csv, videos.csv, skipped.csv."
  )
  d = Settings()
  flags.DEFINE_integer("size", d.size, "Output frame side, pixels.")
  flags.DEFINE_float(
    "margin",
    d.margin,
    "Added around the face box on every side, as a fraction of the face size.",
  )
  flags.DEFINE_enum(
    "detector",
    d.detector,
    list(detectors.DETECTORS),
    "Face detector (see stclr_jax/prepare/detectors.py).",
  )
  flags.DEFINE_integer("min_face", d.min_face, "Smallest face, pixels.")
  flags.DEFINE_integer(
    "detect_every",
    d.detect_every,
    "Detect on every k-th frame, interpolate the box in between.",
  )
  flags.DEFINE_integer(
    "max_gap",
    d.max_gap,
    "Face-less gaps up to this many frames are bridged; longer ones are cut.",
  )
  flags.DEFINE_float(
    "smooth",
    d.smooth,
    "Temporal smoothing of the box (Gaussian sigma, frames; 0 = off).",
  )
  flags.DEFINE_enum(
    "choose",
    d.choose,
    list(tracking.CHOICES),
    "Which face when there are several: largest, most "
    "persistent, or auto (size x frames).",
  )
  flags.DEFINE_integer(
    "min_frames", d.min_frames, "Skip videos with fewer face frames."
  )
  flags.DEFINE_enum("format", d.image_format, ["jpg", "png"], "Frame files.")
  flags.DEFINE_integer("quality", d.quality, "JPEG quality.")
  flags.DEFINE_float(
    "folder_fps",
    d.folder_fps,
    "Frame rate recorded for frame folders (0: unknown, left empty).",
  )
  flags.DEFINE_float(
    "min_confidence",
    d.min_confidence,
    "Evidence: drop detections less confident than this (0: keep all).",
  )
  flags.DEFINE_bool(
    "keypoint_geometry",
    d.keypoint_geometry,
    "Evidence: drop detections whose five keypoints are not in a face's "
    "geometry (eyes above nose above mouth, eye distance against the box; "
    "detectors with keypoints only).",
  )
  flags.DEFINE_integer(
    "min_track_frames",
    d.min_track_frames,
    "Evidence: a face track needs this many detections.",
  )
  flags.DEFINE_float(
    "min_track_seconds",
    d.min_track_seconds,
    "Evidence: a face track must span this long (first to last detection).",
  )
  flags.DEFINE_float(
    "min_track_density",
    d.min_track_density,
    "Evidence: a face track must be detected in this share of the examined "
    "frames it spans (an isolated run of detections is not a face).",
  )
  flags.DEFINE_bool(
    "detect_downscale",
    d.detect_downscale,
    "MTCNN: detect on frames shrunk so that a min_face face is 20 px "
    "(faster); --nodetect_downscale detects at full resolution.",
  )
  flags.DEFINE_integer("workers", 1, "Parallel worker processes.")
  flags.DEFINE_bool("progress", True, "Show a progress bar.")
  flags.mark_flags_as_required(["input", "output"])


def main(argv) -> int:
  """Runs ``prepare`` on the flags; 0 done, 1 nothing prepared, 2 error."""
  del argv
  f = flags.FLAGS
  settings = Settings(
    size=f.size,
    margin=f.margin,
    detector=f.detector,
    min_face=f.min_face,
    detect_every=f.detect_every,
    max_gap=f.max_gap,
    smooth=f.smooth,
    choose=f.choose,
    min_frames=f.min_frames,
    image_format=f.format,
    quality=f.quality,
    folder_fps=f.folder_fps,
    min_confidence=f.min_confidence,
    keypoint_geometry=f.keypoint_geometry,
    min_track_frames=f.min_track_frames,
    min_track_seconds=f.min_track_seconds,
    min_track_density=f.min_track_density,
    detect_downscale=f.detect_downscale,
  )
  try:
    summary = prepare(
      f.input, f.output, settings, workers=f.workers, progress=f.progress
    )
  except (BadInputError, DetectorError, ValueError) as e:
    print(f"prepare: error: {e}", file=sys.stderr)
    return 2
  print(summary.text())
  if not summary.prepared:
    print("prepare: error: no video was prepared", file=sys.stderr)
    return 1
  return 0
