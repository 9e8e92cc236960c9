"""Writes a PNG of what the model sees: for a few videos, the frames of view
1 and view 2 side by side, exactly as the pretraining pipeline makes them.

  python -m stclr_jax.data.preview --config=configs/stclr_synthetic.py \
      --out=preview.png [--num_videos=4]
"""

from __future__ import annotations

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from stclr_jax.data import input as input_lib


def grid(view_a: np.ndarray, view_b: np.ndarray, gap: int = 4) -> np.ndarray:
  """(N, T, H, W, 3) floats in [0,1] -> one uint8 image, a row per video:
  view 1's T frames, a gap, view 2's T frames."""
  n, t, h, w, _ = view_a.shape
  canvas = np.full((n * (h + gap) - gap, 2 * t * w + 3 * gap, 3), 255, np.uint8)
  for i in range(n):
    y = i * (h + gap)
    for j, view in enumerate((view_a, view_b)):
      x0 = j * (t * w + 3 * gap)
      row = np.concatenate(list(view[i]), axis=1)
      canvas[y : y + h, x0 : x0 + t * w] = np.clip(row * 255 + 0.5, 0, 255)
  return canvas


def write_preview(config, out: str, num_videos: int = 4) -> str:
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.batch_size = num_videos
  batches, _ = input_lib.pretrain_input(
    config, process_index=0, process_count=1
  )
  batch = next(batches.as_numpy_iterator())
  Image.fromarray(grid(batch["view_a"], batch["view_b"])).save(out)
  return out


def main(argv):
  del argv
  f = flags.FLAGS
  path = write_preview(f.config, f.out, f.num_videos)
  print(f"wrote {path}: {f.num_videos} videos, view 1 | view 2")


def _define_flags():
  """The command's flags, defined only when it runs as a command (so that
  importing this module next to another entry point defines nothing)."""
  config_flags.DEFINE_config_file(
    "config", None, "Config file.", lock_config=True
  )
  flags.DEFINE_string("out", "preview.png", "PNG file to write.")
  flags.DEFINE_integer("num_videos", 4, "Videos (rows) to show.")
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  _define_flags()
  app.run(main)
