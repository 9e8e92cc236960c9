"""``python -m stclr_jax.prepare`` end to end: raw videos -> face-cropped
clips + manifest, on a real face photograph (skimage's astronaut) moved and
zoomed across an h264 mp4, with MTCNN; corrupt and face-less inputs; the
manifest read by the ``video_folder`` data set and the preview; unlabelled
videos (at the top of --input), and refused when mixed with labelled ones."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import tensorflow_datasets as tfds
from _helpers_prepare import ROOT, astronaut_frames
from _helpers_video import read_csv, write_folder, write_mp4
from PIL import Image

from stclr_jax.data import preview
from stclr_jax.data.datasets import video_folder


def test_command_writes_manifest_and_skips_with_reasons(prepared):
  raw, out, run, _, _ = prepared
  assert run.returncode == 0, run.stderr[-3000:]
  assert read_csv(out / "manifest.csv") == [
    ["path", "label", "subject", "frames_in", "frames_kept", "fps"],
    ["clips/happy/S1/astro", "happy", "S1", "12", "12", "25"],
    ["clips/sad/S3/take1", "sad", "S3", "12", "12", ""],
  ]
  assert read_csv(out / "videos.csv")[1:] == [
    ["clips/happy/S1/astro", "happy", "S1", ""],
    ["clips/sad/S3/take1", "sad", "S3", ""],
  ]
  skipped = {
    os.path.basename(p): (k, r) for p, k, r in read_csv(out / "skipped.csv")[1:]
  }
  assert set(skipped) == {"noise.mp4", "broken.mp4", "cut.mp4"}
  assert skipped["noise.mp4"][0] == "no_face"
  assert "no face found" in skipped["noise.mp4"][1]
  for name in ("broken.mp4", "cut.mp4"):
    kind, reason = skipped[name]
    assert kind == "corrupt" and f"{name}: cannot decode video" in reason
    assert "Invalid data" in reason  # the decoder's own message
  assert "prepared 2 (0 reused" in run.stdout
  assert "skipped 3: corrupt 2, no_face 1" in run.stdout
  assert "ignored 1 files" in run.stdout and "labels_notes.txt" in run.stdout
  assert not os.path.exists(out / "clips" / "surprise")


def test_output_feeds_video_folder_and_preview(prepared, tmp_path):
  _, out, _, _, _ = prepared
  # The manifest itself is a video_folder CSV (header; extra columns).
  cfg = video_folder.config_for_csv(str(out / "manifest.csv"))
  b = tfds.builder("video_folder", config=cfg, data_dir=str(tmp_path))
  b.download_and_prepare()
  assert b.info.features["label"].names == ["happy", "sad"]
  rows = list(b.as_dataset(split="train").as_numpy_iterator())
  assert sorted(r["video"].shape for r in rows) == [(12, 48, 48, 3)] * 2
  assert b.info.metadata["skipped"] == []

  spec = importlib.util.spec_from_file_location(
    "cfg", os.path.join(ROOT, "configs", "stclr_synthetic.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.data.name, c.data.csv_path = "video_folder", str(out / "manifest.csv")
  c.data.data_dir, c.data.clip_len, c.data.size = str(tmp_path), 4, 32
  png = preview.write_preview(c, str(tmp_path / "p.png"), num_videos=2)
  img = np.asarray(Image.open(png))
  assert img.shape == (2 * 32 + 4, 2 * 4 * 32 + 12, 3)
  assert img[:32, :32].std() > 10  # a picture, not blank


def _prepare(*args):
  return subprocess.run(
    [sys.executable, "-m", "stclr_jax.prepare", "--noprogress", *args],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    timeout=120,
  )


def test_command_on_unlabelled_videos_and_on_mixed_ones(tmp_path):
  frames, _ = astronaut_frames()
  raw = tmp_path / "raw"
  os.makedirs(raw)
  write_mp4(raw / "astro.mp4", frames)
  write_folder(raw / "take1", frames[::-1])
  out = tmp_path / "out"
  run = _prepare(
    f"--input={raw}", f"--output={out}", "--detector=lbp", "--size=48"
  )
  assert run.returncode == 0, run.stderr[-3000:]
  assert "prepared 2" in run.stdout and "no labels" in run.stdout
  assert read_csv(out / "manifest.csv") == [
    ["path", "label", "subject", "frames_in", "frames_kept", "fps"],
    ["clips/astro", "", "", "12", "12", "25"],
    ["clips/take1", "", "", "12", "12", ""],
  ]
  # A labelled video beside them: an error naming one video of each kind.
  os.makedirs(raw / "happy")
  os.replace(raw / "astro.mp4", raw / "happy" / "astro.mp4")
  run = _prepare(f"--input={raw}", f"--output={tmp_path / 'out2'}")
  assert run.returncode == 2 and run.stdout == ""
  assert run.stderr.startswith(
    f"prepare: error: {raw}: some videos are in label folders and some are "
    f"not: {raw / 'take1'} is at the top of --input (no label), "
    f"{raw / 'happy' / 'astro.mp4'} is in the label folder 'happy'; "
  )


def test_help_lists_the_flags_and_missing_ones_are_errors():
  run = subprocess.run(
    [sys.executable, "-m", "stclr_jax.prepare", "--help"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=120,
  )
  assert run.returncode == 1, run.stderr[-3000:]  # absl's --help exits 1
  assert "python -m stclr_jax.prepare --input=" in run.stdout
  for flag in (
    "--input",
    "--output",
    "--detector: <mtcnn|haar|dlib|lbp>",
    "--max_gap",
    "--workers",
  ):
    assert flag in run.stdout
  run = subprocess.run(
    [sys.executable, "-m", "stclr_jax.prepare"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=120,
  )
  assert run.returncode == 1
  assert "Flag --input must have a value other than None" in run.stderr
