"""Helpers shared by the prepare tests (not a test module): a real face
photograph moving across frames, the command line run once on a raw folder,
and stand-in face detectors."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import numpy as np
from _helpers_video import write_folder, write_mp4
from PIL import Image

from stclr_jax import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACE_CENTRE, FACE_SIDE = np.array([223.0, 120.0]), 92.0  # in astronaut()
SETTINGS = dict(size=48, margin=0.2, detect_every=2)


def astronaut_frames(n=12, w=192, h=144):
  """The astronaut photo pasted so her face moves right and down and grows
  from 40 to 64 px; returns frames and the true (cx, cy, side) per frame."""
  from skimage import data  # a test extra, not a dependency

  photo = Image.fromarray(data.astronaut())
  frames, truth = [], []
  for t in range(n):
    a = t / (n - 1)
    cx, cy, side = 60 + 70 * a, 70 + 10 * a, 40 + 24 * a
    s = side / FACE_SIDE
    canvas = Image.new("RGB", (w, h), (90, 110, 130))
    canvas.paste(
      photo.resize((round(512 * s),) * 2, Image.BILINEAR),
      (round(cx - FACE_CENTRE[0] * s), round(cy - FACE_CENTRE[1] * s)),
    )
    frames.append(np.asarray(canvas))
    truth.append((cx, cy, side))
  return np.stack(frames), np.array(truth)


def prepared_once(tmp_path_factory, worker_id):
  """The command line run once (MTCNN, detect every 2nd frame) on: a moving
  face as mp4 and as a frame folder, pure noise, two truncated mp4s (index
  last, index first), a note. Returns ``(raw, out, completed process,
  frames, truth)``. Under pytest-xdist the workers share one run (the tests
  only read it)."""
  frames, truth = astronaut_frames()
  if worker_id == "master":
    return _run_command(tmp_path_factory.mktemp("prep"), frames, truth)
  shared = tmp_path_factory.getbasetemp().parent / "prepare_test_shared"
  os.makedirs(shared, exist_ok=True)
  with open(shared / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (shared / "result.json").exists():
      run = _run_command(shared, frames, truth)[2]
      (shared / "result.json").write_text(
        json.dumps([run.returncode, run.stdout, run.stderr])
      )
  rc, stdout, stderr = json.loads((shared / "result.json").read_text())
  return (
    shared / "raw",
    shared / "out",
    subprocess.CompletedProcess([], rc, stdout, stderr),
    frames,
    truth,
  )


def _run_command(tmp, frames, truth):
  raw = tmp / "raw"
  os.makedirs(raw / "happy" / "S1")
  write_mp4(raw / "happy" / "S1" / "astro.mp4", frames)
  write_folder(raw / "sad" / "S3" / "take1", frames[::-1])
  rng = np.random.default_rng(0)
  os.makedirs(raw / "surprise")
  write_mp4(
    raw / "surprise" / "noise.mp4",
    rng.integers(0, 256, (8, 96, 96, 3), np.uint8),
  )
  data = (raw / "happy" / "S1" / "astro.mp4").read_bytes()
  (raw / "surprise" / "broken.mp4").write_bytes(data[: len(data) // 2])
  write_mp4(tmp / "fast.mp4", frames, faststart=True)  # index first
  data = (tmp / "fast.mp4").read_bytes()
  (raw / "surprise" / "cut.mp4").write_bytes(data[: len(data) * 4 // 5])
  (raw / "labels_notes.txt").write_text("not a video\n")
  out = tmp / "out"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "stclr_jax.prepare",
      f"--input={raw}",
      f"--output={out}",
      "--size=48",
      "--margin=0.2",
      "--detect_every=2",
      "--noprogress",
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env=env,
    timeout=300,
  )
  return raw, out, run, frames, truth


class FixedDetector(prepare.FaceDetector):
  """Finds one face at a fixed box and counts the frames it looked at."""

  name = "fixed"
  frames_seen = 0

  def detect_one(self, frame_HxWx3):
    FixedDetector.frames_seen += 1
    return np.array([[60, 50, 100, 90, 1.0]], np.float32)


class RedDetector(prepare.FaceDetector):
  """The bounding box of pure-red pixels (a stand-in face)."""

  name = "red"

  def detect_one(self, frame_HxWx3):
    f = frame_HxWx3.astype(int)
    ys, xs = np.nonzero((f[..., 0] > 200) & (f[..., 1] < 60) & (f[..., 2] < 60))
    if not len(xs):
      return np.zeros((0, 5), np.float32)
    return np.array(
      [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 1]], np.float32
    )


def red_square_frames(n, missing=(), w=80, h=60):
  """A red 20 px square moving right 1 px a frame, absent in ``missing``."""
  frames = np.full((n, h, w, 3), 40, np.uint8)
  for t in range(n):
    if t not in missing:
      frames[t, 10:30, 10 + t : 30 + t] = (255, 0, 0)
  return frames


class DimRedDetector(RedDetector):
  """The red square, found with a low confidence (0.5)."""

  name = "dim_red"

  def detect_one(self, frame_HxWx3):
    boxes = super().detect_one(frame_HxWx3)
    boxes[:, 4] = 0.5
    return boxes
