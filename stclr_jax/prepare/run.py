"""The ``prepare`` run: each input decoded (``stclr_jax.video_io``), its
face followed (``tracking``), cropped and written as a frame folder; a
record per input in ``.prepare/<id>.json`` that a rerun reuses while the
input file and the settings are unchanged; inputs spread over worker
processes; the tables and summary at the end (``report``)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import traceback
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from stclr_jax import video_io
from stclr_jax.prepare import detectors, report, sources, tracking
from stclr_jax.prepare.sources import Item
from stclr_jax.video_io import BadInputError

STATE_DIR, CLIPS_DIR = ".prepare", "clips"


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that decides the output; a change redoes a video."""

  size: int = 224
  margin: float = 0.2
  detector: str = "mtcnn"
  min_face: int = 40
  detect_every: int = 1
  max_gap: int = 12
  smooth: float = 2.0
  choose: str = "auto"
  min_frames: int = 1
  image_format: str = "jpg"
  quality: int = 95
  folder_fps: float = 0.0
  # Evidence that a track is a face (tracking.TrackParams; thresholds and
  # their measurements: BENCHMARKS.md, "Evidence for a face").
  min_confidence: float = 0.95
  keypoint_geometry: bool = True
  min_track_frames: int = 3
  min_track_seconds: float = 0.2
  min_track_density: float = 0.5
  # MTCNN: shrink frames so a min_face face is 20 px (faster), or not.
  detect_downscale: bool = True

  @classmethod
  def no_evidence_rules(cls, **kw) -> Settings:
    """The settings before the evidence rules (every detection counts and
    a one-frame track is a face), with ``kw`` on top."""
    off = dict(
      min_confidence=0.0,
      keypoint_geometry=False,
      min_track_frames=1,
      min_track_seconds=0.0,
      min_track_density=0.0,
    )
    return cls(**{**off, **kw})

  def __post_init__(self):
    if self.size < 8:
      raise ValueError(f"size must be >= 8, got {self.size}")
    if not 0 <= self.margin <= 2:
      raise ValueError(f"margin must be in [0, 2], got {self.margin}")
    if self.min_frames < 1:
      raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")
    if self.image_format not in ("jpg", "png"):
      raise ValueError(
        f"image_format must be jpg or png, got {self.image_format!r}"
      )
    self.track_params()  # validates the tracking fields

  def track_params(self) -> tracking.TrackParams:
    return tracking.TrackParams(
      self.detect_every,
      self.max_gap,
      self.smooth,
      self.choose,
      min_confidence=self.min_confidence,
      keypoint_geometry=self.keypoint_geometry,
      min_track_frames=self.min_track_frames,
      min_track_seconds=self.min_track_seconds,
      min_track_density=self.min_track_density,
    )


class DetectorError(RuntimeError):
  """The face detector could not be created: nothing can be prepared."""


def crop(
  frame_HxWx3: np.ndarray, box: Sequence[float], margin: float, size: int
) -> np.ndarray:
  """The square ``(cx, cy, side)`` enlarged by ``margin`` x side on every
  side, resized to ``size``; outside the frame is black."""
  cx, cy, side = box
  half = side * (1 + 2 * margin) / 2
  x0, y0, x1, y1 = cx - half, cy - half, cx + half, cy + half
  h, w = frame_HxWx3.shape[:2]
  pad = int(np.ceil(max(0, -x0, -y0, x1 - w, y1 - h)))
  if pad:
    frame_HxWx3 = np.pad(frame_HxWx3, ((pad, pad), (pad, pad), (0, 0)))
  box = (x0 + pad, y0 + pad, x1 + pad, y1 + pad)
  return np.asarray(
    Image.fromarray(frame_HxWx3).resize((size, size), Image.BILINEAR, box=box)
  )


# MaskFN's keypoints, per kept frame in the clip's pixels (video_folder
# reads them).
KEYPOINTS_FILE = "keypoints.npy"


def crop_keypoints(
  keypoints_Tx5x2: np.ndarray, boxes_Tx3: np.ndarray, margin: float, size: int
) -> np.ndarray:
  """Frame keypoints ``(x, y)`` in the coordinates of :func:`crop`'s output
  (pixel ``k`` spans ``[k, k + 1)``): float32 ``(T, 5, 2)``, NaN stays
  NaN."""
  cx, cy, side = (boxes_Tx3[:, i, None] for i in range(3))
  half = side * (1 + 2 * margin) / 2
  origin = np.stack([cx - half, cy - half], -1)  # (T, 1, 2)
  scale = (size / (2 * half))[:, :, None]
  return ((keypoints_Tx5x2 - origin) * scale).astype(np.float32)


# -- one input ----------------------------------------------------------------


def _count_frames(folder: str) -> int:
  return len(video_io.list_frames(folder)) if os.path.isdir(folder) else -1


def _state_path(output: str, item_id: str) -> str:
  return os.path.join(output, STATE_DIR, item_id + ".json")


def _save(output: str, record: dict) -> dict:
  path = _state_path(output, record["id"])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(record, f)
  os.replace(path + ".tmp", path)
  return record


def _skip(output: str, record: dict, kind: str, reason: str) -> dict:
  """Records a skip; a clip left by an earlier run of this input goes."""
  shutil.rmtree(
    os.path.join(output, CLIPS_DIR, record["id"]), ignore_errors=True
  )
  record.update(status="skipped", kind=kind, reason=reason)
  return _save(output, record)


def process(item: Item, settings: Settings, detector, output: str) -> dict:
  """Prepares one video; returns its record (also written to
  ``.prepare/<id>.json``; never raises for bad input)."""
  record = {
    "id": item.id,
    "source": item.source,
    "label": item.label,
    "subject": item.subject,
    "group": item.group,
    "settings": dataclasses.asdict(settings),
    "frames_in": 0,
    "frames_kept": 0,
    "fps": None,
  }
  try:
    record["source_fingerprint"] = sources.fingerprint(item.source)
    frames, fps = video_io.read_video(item.source, settings.folder_fps)
  except (BadInputError, OSError) as e:
    return _skip(output, record, "corrupt", str(e))
  record.update(frames_in=len(frames), fps=fps)
  track = tracking.follow(
    len(frames),
    lambda idx: detector.detect([frames[i] for i in idx]),
    settings.track_params(),
    fps=fps or None,
  )
  kept = np.flatnonzero(track.kept)
  record.update(
    frames_kept=int(len(kept)),
    faces_seen=track.faces_seen,
    frames_examined=track.frames_examined,
    gaps_bridged=track.gaps_bridged,
    frames_bridged=track.frames_bridged,
    segments_cut=track.segments_cut,
    frames_cut=track.frames_cut,
    states=track.states,
    boxes=[
      None if np.isnan(b[0]) else [round(float(v), 2) for v in b]
      for b in track.boxes_Tx3
    ],
    rejected=track.rejected,
    short_tracks=track.short_tracks,
  )
  if not track.faces_seen:
    return _skip(output, record, "no_face", _no_face_reason(track, settings))
  if len(kept) < settings.min_frames:
    return _skip(
      output,
      record,
      "too_short",
      f"{len(kept)} frames with a "
      f"face, fewer than min_frames={settings.min_frames}",
    )
  final = os.path.join(output, CLIPS_DIR, item.id)
  partial = final + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  ext = settings.image_format
  kw = {"quality": settings.quality} if ext == "jpg" else {}
  for n, t in enumerate(kept):
    face = crop(frames[t], track.boxes_Tx3[t], settings.margin, settings.size)
    Image.fromarray(face).save(os.path.join(partial, f"{n:06d}.{ext}"), **kw)
  kp = track.keypoints_Tx5x2
  if kp is not None and np.isfinite(kp[kept]).any():
    np.save(
      os.path.join(partial, KEYPOINTS_FILE),
      crop_keypoints(
        kp[kept], track.boxes_Tx3[kept], settings.margin, settings.size
      ),
    )
    record["keypoints_missing"] = int(
      np.sum(~np.isfinite(kp[kept]).all(axis=(1, 2)))
    )
  shutil.rmtree(final, ignore_errors=True)
  os.replace(partial, final)
  record.update(status="prepared", path=f"{CLIPS_DIR}/{item.id}")
  return _save(output, record)


def _no_face_reason(track, settings: Settings) -> str:
  """Why no face track was kept, naming the rule that rejected the
  detections (so a rejected false positive reads differently from a
  miss)."""
  found = (
    f"{track.frames_examined} frames examined, detector {settings.detector}"
  )
  why = []
  conf, geom = (
    track.rejected.get(k, []) for k in ("confidence", "keypoint_geometry")
  )
  if conf:
    why.append(
      f"{len(conf)} frames' detections below "
      f"min_confidence={settings.min_confidence}"
    )
  if geom:
    why.append(f"{len(geom)} frames' detections failed keypoint_geometry")
  if track.short_tracks:
    n, sec, density = track.short_tracks[0]
    why.append(
      f"{len(track.short_tracks)} face tracks too short or too sparse, the "
      f"longest {n} detections over {sec:g} s in {density:.0%} of its "
      f"frames (min_track_frames={settings.min_track_frames}, "
      f"min_track_seconds={settings.min_track_seconds:g}, "
      f"min_track_density={settings.min_track_density:g})"
    )
  if not why:
    return f"no face found ({found})"
  return f"no face kept: {'; '.join(why)} ({found})"


def load_done(item: Item, settings: Settings, output: str) -> dict | None:
  """The record of an earlier run, if it is complete and still valid for
  this input file and these settings."""
  try:
    with open(_state_path(output, item.id), encoding="utf-8") as f:
      rec = json.load(f)
    if (
      rec.get("source_fingerprint") != sources.fingerprint(item.source)
      or rec.get("settings") != dataclasses.asdict(settings)
      or rec.get("source") != item.source
    ):
      return None
  except (OSError, ValueError, BadInputError):
    return None
  if (
    rec.get("status") == "prepared"
    and _count_frames(os.path.join(output, CLIPS_DIR, item.id))
    != rec["frames_kept"]
  ):
    return None
  # Labels may change without redoing the crops.
  rec.update(label=item.label, subject=item.subject, group=item.group)
  return rec


# -- parallel workers ---------------------------------------------------------

_WORKER = {}


def _detector(settings: Settings, factory):
  """This process's detector, built once (per settings and factory)."""
  key = (
    settings.detector,
    settings.min_face,
    settings.detect_downscale,
    factory,
  )
  if key not in _WORKER:
    _WORKER.clear()
    try:
      _WORKER[key] = (
        factory(settings.min_face)
        if factory is not None
        else detectors.make_detector(
          settings.detector, settings.min_face, settings.detect_downscale
        )
      )
    except Exception as e:
      raise DetectorError(
        f"cannot create the {settings.detector!r} face "
        f"detector: {type(e).__name__}: {e}"
      ) from e
  return _WORKER[key]


def _init_worker(threads: int):
  for var in (
    "OMP_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
  ):
    os.environ[var] = str(threads if var != "TF_NUM_INTEROP_THREADS" else 1)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _run_one(item: Item, settings: Settings, output: str, factory) -> dict:
  detector = _detector(settings, factory)
  try:
    return process(item, settings, detector, output)
  except Exception as e:  # a bug or an odd file: recorded, run continues
    traceback.print_exc()
    return {
      "id": item.id,
      "source": item.source,
      "label": item.label,
      "subject": item.subject,
      "group": item.group,
      "status": "skipped",
      "kind": "error",
      "frames_in": 0,
      "frames_kept": 0,
      "fps": None,
      "reason": f"unexpected {type(e).__name__}: {e}",
    }


# -- the run ------------------------------------------------------------------


def prepare(
  input_path: str,
  output: str,
  settings: Settings = Settings(),
  workers: int = 1,
  detector_factory: Callable | None = None,
  progress: bool = True,
) -> report.Summary:
  """Prepares every video under ``input_path`` (a folder or a CSV, see
  ``sources.find_inputs``) into ``output`` (see ``cli``'s docstring).

  ``detector_factory(min_face)`` replaces the built-in detectors (it must be
  picklable when ``workers > 1``).
  """
  output = os.path.abspath(output)
  if os.path.isdir(input_path):
    inside = os.path.commonpath([output, os.path.abspath(input_path)])
    if inside == os.path.abspath(input_path):
      raise BadInputError(f"{output}: --output must not be inside --input")
  if workers < 1:
    raise ValueError(f"workers must be >= 1, got {workers}")
  items, ignored = sources.find_inputs(input_path)
  os.makedirs(output, exist_ok=True)
  records: dict[str, dict] = {}
  for it in items:
    rec = load_done(it, settings, output)
    if rec is not None:
      records[it.id] = rec
  reused = len(records)
  todo = [it for it in items if it.id not in records]
  bar = tqdm(
    total=len(items),
    initial=reused,
    unit="video",
    disable=not progress,
    desc="prepare",
  )
  try:
    if workers == 1 or len(todo) <= 1:
      for it in todo:
        records[it.id] = _run_one(it, settings, output, detector_factory)
        bar.update()
    else:
      threads = max(1, (os.cpu_count() or 1) // workers)
      with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads,),
      ) as pool:
        futures = {
          pool.submit(_run_one, it, settings, output, detector_factory): it
          for it in todo
        }
        try:
          for fut in concurrent.futures.as_completed(futures):
            records[futures[fut].id] = fut.result()
            bar.update()
        except BaseException:
          pool.shutdown(wait=False, cancel_futures=True)
          raise
  finally:
    bar.close()
  ordered = [records[it.id] for it in items]
  report.write_tables(output, ordered)
  return report.Summary(ordered, reused, ignored, output)
