"""Raw inputs of ``prepare``: finding the videos and frame folders under a
folder or in a CSV, decoding them (PyAV, Pillow) with errors that name the
file, fingerprinting them for resumable runs, and cropping face boxes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Sequence

import numpy as np
from PIL import Image

from stclr_jax.data.datasets import video_folder, video_io


@dataclasses.dataclass(frozen=True)
class Item:
  source: str   # absolute path of the video file or frame folder
  id: str       # output name: clips/<id>, .prepare/<id>.json
  label: str
  subject: str = ""
  group: str = ""


def _make_id(rel: str, is_dir: bool) -> str:
  parts = ["__" if p == ".." else p for p in rel.replace(os.sep, "/")
           .split("/") if p not in ("", ".")]
  if not is_dir:
    parts[-1] = os.path.splitext(parts[-1])[0]
  return "/".join(re.sub(r"[^\w.\-]", "_", p) for p in parts)


def _dedupe_ids(items: list[Item]) -> list[Item]:
  """Two inputs named alike (a.mp4, a.avi) get the extension in their ids;
  the same input twice is an error."""
  sources, counts = set(), {}
  for it in items:
    if it.source in sources:
      raise video_io.BadInputError(f"{it.source}: listed twice in --input")
    sources.add(it.source)
    counts[it.id] = counts.get(it.id, 0) + 1
  return [dataclasses.replace(it, id=it.id + "_" + os.path.splitext(
      it.source)[1].lstrip(".").lower()) if counts[it.id] > 1 and
          not os.path.isdir(it.source) else it for it in items]


def find_inputs(path: str) -> tuple[list[Item], list[str]]:
  """The videos to prepare, and the files under a folder that were ignored
  (neither video nor frame)."""
  if os.path.isfile(path) and path.lower().endswith(".csv"):
    base = os.path.dirname(os.path.abspath(path))
    items = []
    for r in video_folder.read_csv(path):
      src = os.path.normpath(r.path)
      items.append(Item(src, _make_id(os.path.relpath(src, base),
                                      os.path.isdir(src)),
                        r.label, r.subject, r.group))
    return _dedupe_ids(items), []
  if not os.path.isdir(path):
    raise video_io.BadInputError(
        f"{path}: --input must be a folder or a .csv file"
        + ("" if os.path.exists(path) else " (it does not exist)"))
  root = os.path.abspath(path)
  items, ignored = [], []

  def add(full, is_dir):
    rel = os.path.relpath(full, root)
    parts = rel.split(os.sep)
    if len(parts) < 2:
      raise video_io.BadInputError(
          f"{full}: at the top of --input; put each video in a folder named "
          "after its label (<label>/[<subject>/]<video>) or list it in a CSV")
    items.append(Item(full, _make_id(rel, is_dir), parts[0],
                      parts[1] if len(parts) > 2 else ""))

  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    files = sorted(f for f in filenames if not f.startswith("."))
    frames = [f for f in files
              if f.lower().endswith(video_io.FRAME_EXTENSIONS)]
    if frames and dirpath != root:
      add(dirpath, True)
    for f in files:
      if f.lower().endswith(video_io.VIDEO_EXTENSIONS):
        add(os.path.join(dirpath, f), False)
      elif f not in frames:
        ignored.append(os.path.join(dirpath, f))
    if frames and dirpath == root:
      ignored += [os.path.join(root, f) for f in frames]
  if not items:
    raise video_io.BadInputError(
        f"{path}: no videos ({'/'.join(video_io.VIDEO_EXTENSIONS)}) or frame "
        "folders found")
  return _dedupe_ids(items), ignored


def decode(path: str, folder_fps: float = 0.0):
  """``(frames_TxHxWx3, fps)``; fps is None for a frame folder without
  ``folder_fps``. Raises BadInputError with the decoder's message."""
  if os.path.isdir(path):
    return video_io.read_frame_folder(path), (folder_fps or None)
  import av
  if not os.path.isfile(path):
    raise video_io.BadInputError(f"{path}: no such video file")
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise video_io.BadInputError(f"{path}: no video stream")
      stream = container.streams.video[0]
      fps = float(stream.average_rate or stream.guessed_rate or 0) or None
      declared, packets, frames = stream.frames, 0, []
      for packet in container.demux(stream):
        packets += bool(packet.size)   # the last, empty one only flushes
        for f in packet.decode():
          a = f.to_ndarray(format="rgb24")
          turn = round((f.rotation or 0) / 90) % 4  # display matrix, CCW
          frames.append(np.rot90(a, turn) if turn else a)
  except video_io.BadInputError:
    raise
  except Exception as e:  # PyAV raises many types for corrupt data
    raise video_io.BadInputError(f"{path}: cannot decode video ({e})") from e
  if not frames:
    raise video_io.BadInputError(f"{path}: zero frames")
  # A truncated file whose index comes first (mp4 "faststart") decodes
  # without an error, short of packets. (Packets, not frames: an edit list
  # may hide frames that are nonetheless in the file.)
  if declared and packets < declared:
    raise video_io.BadInputError(
        f"{path}: truncated or corrupt: {packets} of the {declared} frames "
        "its container lists are in the file")
  if len({a.shape for a in frames}) > 1:
    raise video_io.BadInputError(f"{path}: frame size changes mid-video")
  return np.stack(frames), fps


def crop(frame_HxWx3: np.ndarray, box: Sequence[float], margin: float,
         size: int) -> np.ndarray:
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
  return np.asarray(Image.fromarray(frame_HxWx3).resize(
      (size, size), Image.BILINEAR, box=box))


def fingerprint(path: str) -> str:
  """Size and modification time of a file, or of every frame of a folder."""
  if os.path.isdir(path):
    entries = [(os.path.basename(p), os.stat(p).st_size, os.stat(p).st_mtime_ns)
               for p in video_io.list_frames(path)]
  else:
    st = os.stat(path)
    entries = [(st.st_size, st.st_mtime_ns)]
  return hashlib.sha1(json.dumps(entries).encode()).hexdigest()
