"""Benchmark: accuracy and speed of the face detectors that `prepare` can use.

Test frames (640x480 by default) are made from images that scikit-image
ships, so nothing is downloaded:

* ``astronaut``: skimage.data.astronaut() rotated (+-15 deg), scaled so the
  face is 40-200 px, moved, its brightness changed, noise added, and pasted
  on a face-less background; the true face box is known (centre (223, 120),
  side 92 px in the original photograph).
* ``lfw``: the 100 face crops of skimage.data.lfw_subset() (25x25 px, grey)
  enlarged to 60-160 px and pasted on a background: blurry, many people.
* ``negatives``: face-less frames (skimage photographs: cat, coffee, rocket,
  coins, text...), pure noise, and the 100 non-face crops of lfw_subset.

A detection is a hit when its centre is within 0.3 face sides of the true
centre and its size (sqrt of area) is within a factor 2 of the true side.
Reported: recall (frames whose face is hit), false positives per frame (any
other detection), and milliseconds per frame at 640x480 and 320x240 with
``min_face=40``.

With ``--prepare``, it also times the whole ``prepare`` command (decode,
MTCNN, tracking, crop to 224, JPEG) on 640x480 h264 videos of the moving
astronaut, with 1 and 2 worker processes, every frame or every 4th frame
detected, and prints frames/s in all and per worker (one worker: in this
process, MTCNN already loaded; more: including the workers' start-up, each
importing TensorFlow and loading MTCNN).

  python bench/face_detectors.py [--detectors mtcnn,haar,dlib,lbp]
                                 [--prepare --videos 4 --frames 48]
"""

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image

from stclr_jax import prepare
from stclr_jax.prepare import detectors

ASTRO_CENTRE, ASTRO_SIDE = np.array([223.0, 120.0]), 92.0
BACKGROUNDS = (
  "coffee",
  "rocket",
  "chelsea",
  "hubble_deep_field",
  "immunohistochemistry",
  "coins",
  "text",
  "brick",
  "grass",
  "gravel",
  "clock",
  "horse",
  "moon",
  "page",
  "retina",
)


def _rgb(a):
  a = np.asarray(a)
  if a.dtype != np.uint8:
    a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
  if a.ndim == 2:
    a = np.stack([a] * 3, -1)
  return a[..., :3]


def _backgrounds(size):
  from skimage import data

  w, h = size
  return [
    np.asarray(
      Image.fromarray(_rgb(getattr(data, n)())).resize((w, h), Image.BILINEAR)
    )
    for n in BACKGROUNDS
  ]


def _finish(frame, rng, gain=None, noise=None):
  gain = rng.uniform(0.6, 1.3) if gain is None else gain
  noise = rng.uniform(0, 12) if noise is None else noise
  f = frame.astype(np.float32) * gain + rng.normal(0, noise, frame.shape)
  return np.clip(f, 0, 255).astype(np.uint8)


def astronaut_frames(n, size, rng):
  """(frames, centres, sides) of the moved, scaled, rotated astronaut."""
  from skimage import data

  photo = Image.fromarray(data.astronaut())
  bgs = _backgrounds(size)
  w, h = size
  frames, centres, sides = [], [], []
  for _ in range(n):
    side = float(np.exp(rng.uniform(np.log(40), np.log(200))))
    s = side / ASTRO_SIDE
    angle = rng.uniform(-15, 15)
    rot = photo.rotate(
      angle, resample=Image.BILINEAR, center=tuple(ASTRO_CENTRE)
    )
    pw, ph = round(512 * s), round(512 * s)
    small = rot.resize((pw, ph), Image.BILINEAR)
    cx = rng.uniform(side * 0.6, w - side * 0.6)
    cy = rng.uniform(side * 0.6, h - side * 0.6)
    canvas = Image.fromarray(bgs[rng.integers(len(bgs))])
    canvas.paste(
      small, (round(cx - ASTRO_CENTRE[0] * s), round(cy - ASTRO_CENTRE[1] * s))
    )
    frames.append(_finish(np.asarray(canvas), rng))
    centres.append((cx, cy))
    sides.append(side)
  return frames, np.array(centres), np.array(sides)


def lfw_frames(size, rng, faces=True):
  from skimage import data

  crops = data.lfw_subset()[:100] if faces else data.lfw_subset()[100:]
  bgs = _backgrounds(size)
  w, h = size
  frames, centres, sides = [], [], []
  for crop in crops:
    side = float(rng.uniform(60, 160))
    face = Image.fromarray(_rgb(crop)).resize((round(side),) * 2, Image.BICUBIC)
    x = rng.integers(0, w - face.width)
    y = rng.integers(0, h - face.height)
    canvas = Image.fromarray(bgs[rng.integers(len(bgs))])
    canvas.paste(face, (int(x), int(y)))
    frames.append(_finish(np.asarray(canvas), rng))
    centres.append((x + face.width / 2, y + face.height / 2))
    sides.append(face.width)
  return frames, np.array(centres), np.array(sides)


def negative_frames(size, rng):
  frames = [_finish(b, rng) for b in _backgrounds(size)]
  w, h = size
  frames += [rng.integers(0, 256, (h, w, 3), np.uint8) for _ in range(5)]
  return frames + lfw_frames(size, rng, faces=False)[0]


def score(boxes_per_frame, centres=None, sides=None):
  """(hits, false positives) over frames; centres None = no face."""
  hits = fps = 0
  for i, b in enumerate(boxes_per_frame):
    matched = False
    for x0, y0, x1, y1, _ in b:
      if centres is not None and not matched:
        c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        size = np.sqrt(max(x1 - x0, 0) * max(y1 - y0, 0))
        if (
          np.linalg.norm(c - centres[i]) <= 0.3 * sides[i]
          and 0.5 <= size / sides[i] <= 2.0
        ):
          matched = True
          continue
      fps += 1
    hits += matched
  return hits, fps


def timing(det, frames, repeats=1):
  det.detect(frames[:2])  # warm-up (graph tracing, lazy loading)
  t = time.perf_counter()
  for _ in range(repeats):
    det.detect(frames)
  return (time.perf_counter() - t) * 1000 / (repeats * len(frames))


def bench_prepare(videos, frames, workers=(1, 2), every=(1, 4)):
  import av

  rng = np.random.default_rng(1)
  with tempfile.TemporaryDirectory() as tmp:
    for v in range(videos):
      clip = astronaut_frames(1, (640, 480), rng)[0][0]
      folder = os.path.join(tmp, "in", "label", f"s{v}")
      os.makedirs(folder)
      with av.open(os.path.join(folder, "v.mp4"), "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 640, 480, "yuv420p"
        for t in range(frames):  # the frame drifts right, 2 px a frame
          f = np.roll(clip, 2 * t, axis=1)
          for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(p)
        for p in st.encode():
          c.mux(p)
    t0 = time.perf_counter()  # load MTCNN in this process once
    prepare.prepare(
      os.path.join(tmp, "in"),
      os.path.join(tmp, "warm"),
      prepare.Settings(detect_every=frames),
      progress=False,
    )
    print(
      f"prepare: start-up (TensorFlow import, MTCNN load) and "
      f"{videos} videos at detect_every={frames}: "
      f"{time.perf_counter() - t0:.1f} s"
    )
    for k in every:
      for w in workers:
        out = os.path.join(tmp, f"out_{k}_{w}")
        t0 = time.perf_counter()
        s = prepare.prepare(
          os.path.join(tmp, "in"),
          out,
          prepare.Settings(detect_every=k),
          workers=w,
          progress=False,
        )
        dt = time.perf_counter() - t0
        n = sum(r["frames_in"] for r in s.records)
        assert len(s.prepared) == videos, s.text()
        print(
          f"prepare: detect_every={k} workers={w}: {n} frames in "
          f"{dt:.1f} s = {n / dt:.1f} frames/s ({n / dt / w:.1f} per "
          "worker"
          + ("; includes starting the worker processes)" if w > 1 else ")"),
          flush=True,
        )


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  p.add_argument("--detectors", default="mtcnn,haar,dlib,lbp")
  p.add_argument("--astronaut_frames", type=int, default=60)
  p.add_argument("--timing_frames", type=int, default=16)
  p.add_argument("--min_face", type=int, default=40)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--prepare", action="store_true")
  p.add_argument("--videos", type=int, default=4)
  p.add_argument("--frames", type=int, default=48)
  a = p.parse_args()

  size = (640, 480)
  rng = np.random.default_rng(a.seed)
  sets = {
    "astronaut": astronaut_frames(a.astronaut_frames, size, rng),
    "lfw": lfw_frames(size, rng),
  }
  negatives = negative_frames(size, rng)
  timed = {
    s: astronaut_frames(a.timing_frames, s, rng)[0]
    for s in ((640, 480), (320, 240))
  }
  cores = len(os.sched_getaffinity(0))
  print(
    f"{cores} CPU cores (shared); frames {size[0]}x{size[1]}; "
    f"min_face={a.min_face}; astronaut {a.astronaut_frames} frames, "
    f"lfw 100, negatives {len(negatives)}"
  )
  print(
    f"{'detector':9} {'astronaut':>10} {'lfw':>6} {'FP/frame pos':>13} "
    f"{'FP/frame neg':>13} {'ms 640x480':>11} {'ms 320x240':>11} "
    f"{'load s':>7}"
  )
  for name in filter(None, a.detectors.split(",")):
    t0 = time.perf_counter()
    try:
      det = detectors.make_detector(name, min_face=a.min_face)
    except ImportError as e:
      print(f"{name:9} not installed ({e})")
      continue
    load = time.perf_counter() - t0
    recall, fp_pos, n_pos = {}, 0, 0
    for key, (frames, centres, sides) in sets.items():
      hits, fps = score(det.detect(frames), centres, sides)
      recall[key] = hits / len(frames)
      fp_pos += fps
      n_pos += len(frames)
    _, fp_neg = score(det.detect(negatives))
    ms = [timing(det, f) for f in timed.values()]
    print(
      f"{name:9} {recall['astronaut']:10.1%} {recall['lfw']:6.1%} "
      f"{fp_pos / n_pos:13.3f} {fp_neg / len(negatives):13.3f} "
      f"{ms[0]:11.1f} {ms[1]:11.1f} {load:7.1f}",
      flush=True,
    )
  if a.prepare:
    bench_prepare(a.videos, a.frames)


if __name__ == "__main__":
  main()
