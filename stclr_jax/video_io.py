"""The one video reader: video files and frame folders from disk, as arrays.

Both sides read through it: ``stclr_jax.prepare`` (raw videos -> face
clips) and the TFDS builders (``video_folder``, ``oulu_casia``), so a video
comes out the same in both. Video files (mp4/avi/mov/mkv/webm) are decoded
with PyAV, frame folders (jpg/png/bmp, in name order) with Pillow. A video
file is:

* turned upright by its container's display matrix (phones record sideways
  and store the rotation there);
* rejected when it is truncated: fewer packets in the file than the frames
  its container declares (an mp4 with its index first decodes without an
  error, short of frames);
* rejected when its frame size changes mid-video.

Every error is a :class:`BadInputError` whose message names the file and
the problem. No TensorFlow here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import av
import numpy as np
from PIL import Image

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class BadInputError(ValueError):
  """A file that cannot be used; the message names the file and why."""


def _decode_image(path: str) -> np.ndarray:
  try:
    with Image.open(path) as im:
      im.load()  # forces a full decode: truncated files fail here
      return np.asarray(im.convert("RGB"), np.uint8)
  except Exception as e:  # PIL raises many types for corrupt data
    raise BadInputError(f"{path}: cannot decode image ({e})") from e


def list_frames(folder: str) -> list[str]:
  """Image files of a frame folder, in natural (name) order."""
  if not os.path.isdir(folder):
    raise BadInputError(f"{folder}: not a folder")
  names = sorted(
    n for n in os.listdir(folder) if n.lower().endswith(FRAME_EXTENSIONS)
  )
  return [os.path.join(folder, n) for n in names]


def read_frame_folder(folder: str) -> np.ndarray:
  """(T, H, W, 3) uint8 from a folder of frames; every frame must decode and
  share one size."""
  paths = list_frames(folder)
  if not paths:
    raise BadInputError(
      f"{folder}: zero frames (no {'/'.join(FRAME_EXTENSIONS)} files)"
    )
  frames = [_decode_image(p) for p in paths]
  shapes = {f.shape for f in frames}
  if len(shapes) != 1:
    raise BadInputError(f"{folder}: frames have different sizes {shapes}")
  return np.stack(frames)


def _upright(frame: av.VideoFrame) -> np.ndarray:
  """The frame as RGB, turned by its display matrix (``rotation`` is the
  counter-clockwise angle that displays it, as ``np.rot90`` turns)."""
  a = frame.to_ndarray(format="rgb24")
  turn = round((frame.rotation or 0) / 90) % 4
  return np.rot90(a, turn) if turn else a


def read_video_file(path: str) -> tuple[np.ndarray, float | None]:
  """(T, H, W, 3) uint8, upright, and the frame rate (None if unknown) of a
  video file, decoded with PyAV. Raises BadInputError with the decoder's
  message, or for a truncated file or a frame size that changes."""
  if not os.path.isfile(path):
    raise BadInputError(f"{path}: no such video file")
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise BadInputError(f"{path}: no video stream")
      stream = container.streams.video[0]
      fps = float(stream.average_rate or stream.guessed_rate or 0) or None
      declared, packets, frames = stream.frames, 0, []
      for packet in container.demux(stream):
        packets += bool(packet.size)  # the last, empty one only flushes
        frames += [_upright(f) for f in packet.decode()]
  except BadInputError:
    raise
  except Exception as e:  # PyAV raises many types for corrupt data
    raise BadInputError(f"{path}: cannot decode video ({e})") from e
  if not frames:
    raise BadInputError(f"{path}: zero frames")
  # Packets, not frames: an edit list may hide frames that are nonetheless
  # in the file.
  if declared and packets < declared:
    raise BadInputError(
      f"{path}: truncated or corrupt: {packets} of the {declared} frames "
      "its container lists are in the file"
    )
  if len({a.shape for a in frames}) > 1:
    raise BadInputError(f"{path}: frame size changes mid-video")
  return np.stack(frames), fps


def read_video(
  path: str, folder_fps: float = 0.0
) -> tuple[np.ndarray, float | None]:
  """``(frames_TxHxWx3, fps)`` of a frame folder or a video file (any
  name); fps is None for a frame folder without ``folder_fps``."""
  if os.path.isdir(path):
    return read_frame_folder(path), (folder_fps or None)
  return read_video_file(path)


def read_any(path: str) -> np.ndarray:
  """A frame folder or a video file named as one (:data:`VIDEO_EXTENSIONS`),
  as (T, H, W, 3) uint8."""
  if not os.path.isdir(path) and not path.lower().endswith(VIDEO_EXTENSIONS):
    raise BadInputError(
      f"{path}: neither a frame folder nor a video file "
      f"({'/'.join(VIDEO_EXTENSIONS)})"
    )
  return read_video(path)[0]


def skip_or_raise(
  skip_bad: bool, skipped: list, path: str, error: Exception
) -> None:
  """Under ``skip_bad``, records ``(path, reason)``; otherwise re-raises."""
  if not skip_bad:
    raise error
  skipped.append((path, str(error)))


def report_skipped(skipped: Sequence[tuple[str, str]], name: str) -> str:
  """Prints (if any) and returns the list of skipped inputs and reasons."""
  lines = [f"{name}: skipped {len(skipped)} bad input(s)"]
  lines += [f"  {p}: {r}" for p, r in skipped]
  text = "\n".join(lines)
  if skipped:
    print(text)
  return text
