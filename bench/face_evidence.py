"""Does ``prepare`` keep faces and only faces? False and true positives of
whole videos, before and after the evidence rules, at the default
detection scale and at full resolution.

Videos (256x192, 24 frames, 25 frames/s, frame folders) are made from
images that scikit-image ships, so nothing is downloaded:

* **no face** (42): 20 photographs and textures (a cat, coffee, coins, a
  rocket, text, a page, a clock, bricks, grass, gravel, the moon, the
  Hubble deep field, a retina, cells...) and a title card (a word in large
  letters on a sky with clouds), each twice, panned and zoomed (two
  seeds);
* **face** (22): the astronaut photograph with her face 40-120 px,
  rotated up to 15 degrees and moving over those backgrounds (8, two of
  them with the face entering and leaving the frame), and 14 people of
  ``lfw_subset`` (25 px crops enlarged to 60-120 px, blurry).

Reported per setting (no rules, each rule alone, all rules; at the
default scale and at full resolution): the share of no-face videos that
``prepare`` turns into a clip (false positives), the share of face videos
it keeps (true positives), the face frames kept, the no-face videos kept
and the face videos skipped with their reasons, and the wall time. With
``--detections`` it also prints the MTCNN detections' confidence and
keypoint geometry on both sets (the measurements behind the rules'
thresholds).

  python bench/face_evidence.py [--detections] [--workdir=DIR]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, _HERE)

from face_detectors import ASTRO_CENTRE, ASTRO_SIDE, _rgb  # noqa: E402

from stclr_jax.prepare import clip, detectors, run, tracking  # noqa: E402
from stclr_jax.prepare.settings import Settings  # noqa: E402

W, H, T, FPS = 256, 192, 24, 25.0
NO_FACE = (
  "brick",
  "chelsea",
  "checkerboard",
  "clock",
  "coffee",
  "coins",
  "colorwheel",
  "grass",
  "gravel",
  "horse",
  "hubble_deep_field",
  "immunohistochemistry",
  "logo",
  "moon",
  "page",
  "retina",
  "rocket",
  "text",
  "stereo_motorcycle",
  "cell",
  "title_card",
)


def _image(name) -> np.ndarray:
  from skimage import data

  if name == "title_card":
    return title_card()
  img = getattr(data, name)()
  return _rgb(img[0] if isinstance(img, tuple) else img)


def title_card(w=640, h=480, word="SUMMER") -> np.ndarray:
  """A word in large letters on a sky with clouds (as the title card of
  #18: no person anywhere)."""
  rng = np.random.default_rng(7)
  y = np.linspace(0, 1, h)[:, None, None]
  sky = (1 - y) * np.array([70, 130, 210]) + y * np.array([200, 225, 250])
  clouds = Image.fromarray((rng.random((h // 8, w // 8)) * 255).astype("uint8"))
  clouds = clouds.resize((w, h), Image.BICUBIC).filter(
    ImageFilter.GaussianBlur(12)
  )
  c = np.clip((np.asarray(clouds, np.float32) / 255 - 0.45) * 3, 0, 1)[
    ..., None
  ]
  img = Image.fromarray((sky * (1 - c) + 255 * c).astype(np.uint8))
  draw = ImageDraw.Draw(img)
  font = ImageFont.load_default(size=140)
  draw.text((w // 2, h // 2), word, fill=(250, 250, 240), font=font,
            anchor="mm", stroke_width=4, stroke_fill=(40, 40, 60))  # fmt: skip
  return np.asarray(img)


def ken_burns(img, rng, n=T) -> list[np.ndarray]:
  """A window of the image panning and zooming over ``n`` frames."""
  ih, iw = img.shape[:2]
  side0 = min(iw, ih * W / H) * rng.uniform(0.6, 0.95)
  zoom = rng.uniform(0.7, 1.0)
  if rng.random() < 0.5:
    zoom = 1 / zoom
  sides = side0 * np.linspace(1, zoom, n)
  sides = np.minimum(sides, min(iw, ih * W / H))
  start, end = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
  pil = Image.fromarray(img)
  frames = []
  for t, s in enumerate(sides):
    a = t / max(n - 1, 1)
    fx, fy = (1 - a) * start + a * end
    x0 = fx * (iw - s)
    y0 = fy * (ih - s * H / W)
    box = (x0, y0, x0 + s, y0 + s * H / W)
    frames.append(np.asarray(pil.resize((W, H), Image.BILINEAR, box=box)))
  return frames


def astronaut_video(rng, side, enter_leave=False):
  """Frames and the true face (cx, cy, side) per frame (None: out)."""
  from skimage import data

  photo = Image.fromarray(data.astronaut())
  bg = ken_burns(_image(NO_FACE[rng.integers(len(NO_FACE) - 1)]), rng)
  s = side / ASTRO_SIDE
  a0, a1 = rng.uniform(-15, 15, 2)
  if enter_leave:  # from outside the left edge to outside the right
    p0, p1 = np.array([-side, H / 2]), np.array([W + side, H / 2])
  else:
    p0 = rng.uniform([side, side * 0.8], [W - side, H - side * 0.8])
    p1 = rng.uniform([side, side * 0.8], [W - side, H - side * 0.8])
  frames, truth = [], []
  for t in range(T):
    a = t / (T - 1)
    cx, cy = (1 - a) * p0 + a * p1
    rot = photo.rotate(
      (1 - a) * a0 + a * a1, resample=Image.BILINEAR, center=tuple(ASTRO_CENTRE)
    )
    small = rot.resize((round(512 * s),) * 2, Image.BILINEAR)
    canvas = Image.fromarray(bg[t])
    canvas.paste(
      small, (round(cx - ASTRO_CENTRE[0] * s), round(cy - ASTRO_CENTRE[1] * s))
    )
    frames.append(np.asarray(canvas))
    inside = side / 2 <= cx <= W - side / 2
    truth.append((cx, cy, side) if inside else None)
  return frames, truth


def lfw_video(rng, index):
  from skimage import data

  crop = data.lfw_subset()[index]
  side = float(rng.uniform(60, 120))
  face = Image.fromarray(_rgb(crop)).resize((round(side),) * 2, Image.BICUBIC)
  bg = ken_burns(_image(NO_FACE[rng.integers(len(NO_FACE) - 1)]), rng)
  p0 = rng.uniform([0, 0], [W - face.width, H - face.height])
  p1 = rng.uniform([0, 0], [W - face.width, H - face.height])
  frames, truth = [], []
  for t in range(T):
    a = t / (T - 1)
    x, y = (1 - a) * p0 + a * p1
    canvas = Image.fromarray(bg[t])
    canvas.paste(face, (round(x), round(y)))
    frames.append(np.asarray(canvas))
    truth.append((x + face.width / 2, y + face.height / 2, face.width))
  return frames, truth


def make_videos(root):
  """Writes the videos as frame folders ``root/{face,no_face}/<name>``;
  returns ``{path: truth per frame or None}``."""
  videos = {}
  for i, name in enumerate(NO_FACE):
    for seed in (0, 1):
      rng = np.random.default_rng([i, seed])
      videos[f"no_face/{name}_{seed}"] = (ken_burns(_image(name), rng), None)
  for k, side in enumerate((40, 56, 72, 88, 104, 120)):
    rng = np.random.default_rng([100, k])
    videos[f"face/astronaut_{side}"] = astronaut_video(rng, side)
  for k in range(2):
    rng = np.random.default_rng([200, k])
    videos[f"face/astronaut_enter_leave_{k}"] = astronaut_video(
      rng, 72, enter_leave=True
    )
  for k in range(14):
    rng = np.random.default_rng([300, k])
    videos[f"face/lfw_{k:02d}"] = lfw_video(rng, k)
  truth = {}
  for path, (frames, tr) in videos.items():
    folder = os.path.join(root, path)
    os.makedirs(folder, exist_ok=True)
    for t, f in enumerate(frames):
      Image.fromarray(f).save(os.path.join(folder, f"{t:03d}.png"))
    truth[path] = tr
  return truth


def _hit(det, true):
  if true is None:
    return False
  cx, cy = (det[0] + det[2]) / 2, (det[1] + det[3]) / 2
  size = np.sqrt(max(det[2] - det[0], 0) * max(det[3] - det[1], 0))
  return (
    np.hypot(cx - true[0], cy - true[1]) <= 0.3 * true[2]
    and 0.5 <= size / true[2] <= 2
  )


def detections(root, truth, downscale):
  """Every MTCNN detection: (set, hit, score, geometry measures)."""
  det = detectors.MtcnnDetector(40, downscale=downscale)
  rows = []
  for path, tr in truth.items():
    folder = os.path.join(root, path)
    frames = [
      np.asarray(Image.open(os.path.join(folder, f)))
      for f in sorted(os.listdir(folder))
    ]
    for t, boxes in enumerate(det.detect(frames)):
      for b in boxes:
        hit = _hit(b, tr[t]) if tr is not None else False
        rows.append(
          {
            "video": path,
            "set": path.split("/")[0],
            "hit": hit,
            "score": float(b[4]),
            **tracking.keypoint_geometry(b),
          }
        )
  return rows


def summarise_detections(rows):
  out = {}
  groups = collections.defaultdict(list)
  for r in rows:
    kind = "true face" if r["hit"] else f"false ({r['set']})"
    groups[kind].append(r)
  for kind, rs in sorted(groups.items()):
    scores = np.array([r["score"] for r in rs])
    out[kind] = {
      "detections": len(rs),
      "videos": len({r["video"] for r in rs}),
      "score_quantiles_0_5_25_50": np.quantile(scores, [0, 0.05, 0.25, 0.5])
      .round(4)
      .tolist(),
      "fail_geometry": int(sum(not r["plausible"] for r in rs)),
    }
    for m in ("eye_distance", "roll", "nose", "mouth"):
      v = np.array([r[m] for r in rs if m in r])
      if len(v):
        out[kind][m] = np.quantile(v, [0, 0.02, 0.5, 0.98, 1]).round(2).tolist()
  return out


def prepare_rates(root, truth, settings, workdir):
  t0 = time.time()
  out = os.path.join(workdir, "out")
  summary = run.prepare(root, out, settings, progress=False)
  wall = time.time() - t0
  del summary
  recs = {}
  for path in truth:
    with open(os.path.join(out, clip.STATE_DIR, path + ".json")) as f:
      recs[path] = json.load(f)
  res = {}
  for kind in ("no_face", "face"):
    rs = [r for p, r in recs.items() if p.split("/")[0] == kind]
    kept = [r for r in rs if r.get("status") == "prepared"]
    res[kind] = {
      "videos": len(rs),
      "prepared": len(kept),
      "frames_kept": int(sum(r["frames_kept"] for r in kept)),
      "frames_in": int(sum(r["frames_in"] for r in rs)),
      "prepared_names": sorted(p for p, r in recs.items() if r in kept)
      if kind == "no_face"
      else None,
      "skipped": sorted(
        (p.split("/")[1], r.get("reason", ""))
        for p, r in recs.items()
        if p.split("/")[0] == kind and r.get("status") != "prepared"
      ),
    }
  res["wall_s"] = wall
  return res


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  p.add_argument("--workdir", default="")
  p.add_argument("--detections", action="store_true")
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  workdir = args.workdir or tempfile.mkdtemp(prefix="face_evidence_")
  root = os.path.join(workdir, "videos")
  truth = make_videos(root)
  results = {}
  if args.detections:
    for downscale in (True, False):
      rows = detections(root, truth, downscale)
      key = "default scale" if downscale else "full resolution"
      results[f"detections, {key}"] = summarise_detections(rows)
      print(key, json.dumps(results[f"detections, {key}"], indent=1))
  settings = {
    "before (no rules), default scale": Settings.no_evidence_rules(),
    "before (no rules), full resolution": Settings.no_evidence_rules(
      detect_downscale=False
    ),
    "confidence rule alone, default scale": Settings.no_evidence_rules(
      min_confidence=Settings.min_confidence
    ),
    "geometry rule alone, default scale": Settings.no_evidence_rules(
      keypoint_geometry=True
    ),
    "track frames and seconds alone, default scale": (
      Settings.no_evidence_rules(
        min_track_frames=Settings.min_track_frames,
        min_track_seconds=Settings.min_track_seconds,
      )
    ),
    "track density alone, default scale": Settings.no_evidence_rules(
      min_track_density=Settings.min_track_density
    ),
    "after (rules), default scale": Settings(folder_fps=FPS),
    "after (rules), full resolution": Settings(
      folder_fps=FPS, detect_downscale=False
    ),
  }
  print(
    "| setting | false positives (no-face videos kept) | true "
    "positives (face videos kept) | face frames kept | time |"
  )
  print("| --- | --- | --- | --- | --- |")
  for name, s in settings.items():
    s = dataclasses.replace(s, size=64, folder_fps=FPS)
    r = prepare_rates(
      root, truth, s, os.path.join(workdir, name.replace(" ", "_"))
    )
    results[name] = r
    nf, f = r["no_face"], r["face"]
    print(
      f"| {name} | {nf['prepared']}/{nf['videos']} "
      f"({100 * nf['prepared'] / nf['videos']:.0f}%) | "
      f"{f['prepared']}/{f['videos']} "
      f"({100 * f['prepared'] / f['videos']:.0f}%) | "
      f"{f['frames_kept']}/{f['frames_in']} | {r['wall_s']:.0f} s |",
      flush=True,
    )
  for name, r in results.items():
    if "no_face" in r:
      print(f"\n{name}: no-face kept {r['no_face']['prepared_names']}")
      print(f"  face skipped {r['face']['skipped']}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
