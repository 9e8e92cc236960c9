"""CPU demo (`make demo`): ST-CLR pretraining on the built-in synthetic data.

Runs the main job, ``train.train_and_evaluate``, with
``configs/stclr_synthetic.py`` (the same code path as the paper's config, at
CPU size), then writes a preview of the two views the model was trained on.
A rerun resumes from the checkpoints in ``--workdir`` (delete it to start
over).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location("_demo_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--workdir", default="workdirs/demo")
  p.add_argument("--config", default=os.path.join(
      _ROOT, "configs", "stclr_synthetic.py"))
  p.add_argument("--config_arg", default=None,
                 help="variants, e.g. 'aug=no_temporal' or 'tiny=1'")
  args = p.parse_args(argv)

  import jax
  from absl import logging

  from stclr_jax import train
  logging.set_verbosity(logging.INFO)  # clu's metric lines and progress
  from stclr_jax.data import preview
  config = load_config(args.config, args.config_arg)
  print(f"jax {jax.__version__} on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s)")
  print(f"pretraining {config.model.encoder} (width {config.model.width}) on"
        f" {config.data.name}: {config.data.clip_len}x{config.data.size}^2 "
        f"clips, global batch {config.batch_size}, {config.num_epochs} epochs"
        f" -> {args.workdir}")
  t0 = time.time()
  result = train.train_and_evaluate(config, args.workdir)
  hist = result["history"]
  print(f"done in {time.time() - t0:.0f}s")
  if hist:
    first, last = hist[0], hist[-1]
    print(f"NT-Xent {first['loss']:.3f} (step {first['step']}) -> "
          f"{last['loss']:.3f} (step {last['step']}); contrastive top-1 "
          f"{first['contrastive_top1']:.2f} -> {last['contrastive_top1']:.2f}"
          f"; {last['clips_per_sec']:.1f} clips/s")
  out = preview.write_preview(config, os.path.join(args.workdir,
                                                   "preview.png"))
  print(f"checkpoints: {os.path.join(args.workdir, 'checkpoints')}; "
        f"TensorBoard logs: {args.workdir}; views: {out}")


if __name__ == "__main__":
  main()
