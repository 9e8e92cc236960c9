"""One ``prepare`` input: decoded (``stclr_jax.video_io``), its face
followed (``tracking``), cropped (:func:`crop`) and written as a frame
folder ``clips/<id>`` (with its keypoints, :data:`KEYPOINTS_FILE`); a
record of it in ``.prepare/<id>.json`` (:func:`process`) that a rerun
reuses while the input file and the settings are unchanged
(:func:`load_done`)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence

import numpy as np
from PIL import Image

from stclr_jax import video_io
from stclr_jax.prepare import sources, tracking
from stclr_jax.prepare.settings import Settings
from stclr_jax.prepare.sources import Item
from stclr_jax.video_io import BadInputError

STATE_DIR, CLIPS_DIR = ".prepare", "clips"


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
