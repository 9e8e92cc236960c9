"""Helpers shared by the video, manifest, data set and prepare tests (not a
test module): writing test videos and frame folders, reading CSVs back,
building a TFDS data set."""

from __future__ import annotations

import csv
import os

import av
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image


def write_mp4(
  path, frames, fps=25, codec="libx264", faststart=False, rotation=0
):
  """Encodes (T, H, W, 3) uint8 frames. ``rotation`` (degrees, counter-
  clockwise, as ``VideoFrame.rotation`` reads it back) goes into the
  container's display matrix, as a phone stores a portrait video.

  PyAV 18's ``VideoStream.set_display_rotation`` writes that matrix (coded
  side data); ``stream.metadata["rotate"]`` does not: FFmpeg 8's mp4 muxer
  ignores the tag, the file reads back with rotation 0.
  """
  opts = {"movflags": "faststart"} if faststart else {}
  with av.open(str(path), "w", options=opts) as c:
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    if rotation:
      s.set_display_rotation(rotation)
    for f in frames:
      for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


def truncate_at_packet(path, keep):
  """Cuts the file just before its ``keep``-th video packet: with the index
  first (faststart) it still decodes, without an error, short of frames."""
  with av.open(str(path)) as c:
    pos = [p.pos for p in c.demux(c.streams.video[0]) if p.size]
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[: pos[keep]])


def write_folder(path, frames):
  """Frames as ``000.png``, ``001.png``... (lossless)."""
  os.makedirs(path, exist_ok=True)
  for i, f in enumerate(frames):
    Image.fromarray(f).save(os.path.join(path, f"{i:03d}.png"))


def write_sequence(folder, n, size=(20, 16), seed=0):
  """``n`` random ``size`` (w, h) frames as ``000.jpeg``..."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(n):
    img = rng.integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(img).save(os.path.join(folder, f"{i:03d}.jpeg"), quality=95)


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


def build(name, data_dir, manual_dir=None, config=None):
  """A TFDS builder, its data set prepared under ``data_dir``."""
  kw = {"config": config} if config is not None else {}
  builder = tfds.builder(name, data_dir=str(data_dir), **kw)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir) if manual_dir else None
    )
  )
  return builder
