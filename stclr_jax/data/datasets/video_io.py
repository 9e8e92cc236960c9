"""Reading frames from disk with errors that name the file and the problem."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class BadInputError(ValueError):
  """A file that cannot be used; the message names the file and why."""


def _decode_image(path: str) -> np.ndarray:
  from PIL import Image
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
  names = sorted(n for n in os.listdir(folder)
                 if n.lower().endswith(FRAME_EXTENSIONS))
  return [os.path.join(folder, n) for n in names]


def read_frame_folder(folder: str) -> np.ndarray:
  """(T, H, W, 3) uint8 from a folder of frames; every frame must decode and
  share one size."""
  paths = list_frames(folder)
  if not paths:
    raise BadInputError(f"{folder}: zero frames (no {'/'.join(FRAME_EXTENSIONS)}"
                        " files)")
  frames = [_decode_image(p) for p in paths]
  shapes = {f.shape for f in frames}
  if len(shapes) != 1:
    raise BadInputError(f"{folder}: frames have different sizes {shapes}")
  return np.stack(frames)


def read_video_file(path: str) -> tuple[np.ndarray, float]:
  """(T, H, W, 3) uint8 and the frame rate, decoded with PyAV."""
  try:
    import av
  except ImportError as e:  # pragma: no cover - av is a dependency
    raise ImportError("reading video files needs PyAV: pip install av") from e
  if not os.path.isfile(path):
    raise BadInputError(f"{path}: no such video file")
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      fps = float(stream.average_rate or 0.0)
      frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
  except Exception as e:
    raise BadInputError(f"{path}: cannot decode video ({e})") from e
  if not frames:
    raise BadInputError(f"{path}: zero frames")
  return np.stack(frames), fps


def read_any(path: str) -> np.ndarray:
  """A video file or a frame folder, as (T, H, W, 3) uint8."""
  if os.path.isdir(path):
    return read_frame_folder(path)
  if path.lower().endswith(VIDEO_EXTENSIONS):
    return read_video_file(path)[0]
  raise BadInputError(f"{path}: neither a frame folder nor a video file "
                      f"({'/'.join(VIDEO_EXTENSIONS)})")


def skip_or_raise(skip_bad: bool, skipped: list, path: str,
                  error: Exception) -> None:
  """Under ``skip_bad``, records ``(path, reason)``; otherwise re-raises."""
  if not skip_bad:
    raise error
  skipped.append((path, str(error)))


def report_skipped(skipped: Sequence[tuple[str, str]], name: str) -> str:
  lines = [f"{name}: skipped {len(skipped)} bad input(s)"]
  lines += [f"  {p}: {r}" for p, r in skipped]
  text = "\n".join(lines)
  if skipped:
    print(text)
  return text
