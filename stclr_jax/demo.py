"""CPU demo (`make demo`): ST-CLR pretraining on the built-in synthetic data,
then a short linear-probe evaluation against the from-scratch baseline.

1. The main job, ``train.pretrain``, with
   ``configs/stclr_synthetic.py`` (the paper's code path at CPU size), and a
   preview of the two views the model trains on.
2. ``evaluation.protocol.evaluate`` with
   ``configs/finetune_synthetic.py:linear_only=1`` on a few
   subject-independent folds, twice: from the pretrained encoder
   and from a random one (the same code path), and both accuracies printed.

A rerun resumes (pretraining from its checkpoints, evaluation at the first
unfinished fold); delete ``--workdir`` to start over.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import jax
from absl import logging

from stclr_jax import train
from stclr_jax.data import preview
from stclr_jax.evaluation import protocol

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location("_demo_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--workdir", default="workdirs/demo")
  p.add_argument(
    "--config", default=os.path.join(_ROOT, "configs", "stclr_synthetic.py")
  )
  p.add_argument(
    "--config_arg",
    default=None,
    help="variants, e.g. 'aug=no_temporal' or 'tiny=1'",
  )
  p.add_argument(
    "--data_dir", default="", help="TFDS data_dir ('' = TFDS's default)"
  )
  p.add_argument(
    "--eval_config",
    default=os.path.join(_ROOT, "configs", "finetune_synthetic.py"),
  )
  p.add_argument(
    "--eval_folds",
    default="0,1,2",
    help="folds of the linear-probe evaluation ('' = none)",
  )
  args = p.parse_args(argv)

  logging.set_verbosity(logging.INFO)  # clu's metric lines and progress
  config = load_config(args.config, args.config_arg)
  config.data.data_dir = args.data_dir
  print(
    f"jax {jax.__version__} on {jax.device_count()} "
    f"{jax.devices()[0].platform} device(s)"
  )
  print(
    f"pretraining {config.model.encoder} (width {config.model.width}) on"
    f" {config.data.name}: {config.data.clip_len}x{config.data.size}^2 "
    f"clips, global batch {config.batch_size}, {config.num_epochs} epochs"
    f" -> {args.workdir}"
  )
  t0 = time.time()
  result = train.pretrain(config, args.workdir)
  hist = result["history"]
  print(f"done in {time.time() - t0:.0f}s")
  if hist:
    first, last = hist[0], hist[-1]
    print(
      f"NT-Xent {first['loss']:.3f} (step {first['step']}) -> "
      f"{last['loss']:.3f} (step {last['step']}); contrastive top-1 "
      f"{first['contrastive_top1']:.2f} -> {last['contrastive_top1']:.2f}"
      f"; {last['clips_per_sec']:.1f} clips/s"
    )
  out = preview.write_preview(config, os.path.join(args.workdir, "preview.png"))
  print(
    f"checkpoints: {os.path.join(args.workdir, 'checkpoints')}; "
    f"TensorBoard logs: {args.workdir}; views: {out}"
  )
  if args.eval_folds:
    linear_probe(args, config)


def linear_probe(args, pretrain_config):
  """Linear probe on a few folds, from the pretrained and from a random
  encoder; prints both."""
  arg = "linear_only=1" + (
    ",tiny=1" if "tiny=1" in (args.config_arg or "") else ""
  )
  results = {}
  for name, init in (
    ("ST-CLR", os.path.abspath(args.workdir)),
    ("scratch", ""),
  ):
    config = load_config(args.eval_config, arg)
    config.init_from = init
    config.eval.run_folds = args.eval_folds
    config.data.data_dir = pretrain_config.data.data_dir
    out = os.path.join(args.workdir, f"eval_{name.lower().replace('-', '')}")
    t0 = time.time()
    results[name] = (protocol.evaluate(config, out), out, time.time() - t0)
  print(
    f"\nlinear probe, {config.data.name}, subject-independent folds "
    f"{args.eval_folds} of {config.eval.num_folds}:"
  )
  for name, (rep, out, secs) in results.items():
    acc = rep["linear"]
    folds = ", ".join(f"{100 * a:.1f}" for a in acc["fold_accuracy"].values())
    ident = rep.get("identity_probe")
    print(
      f"  {name:8s} expression {100 * acc['mean']:5.1f} ± "
      f"{100 * acc['std']:4.1f}% (folds {folds}; {secs:.0f}s)"
      + (f"; identity probe {100 * ident['accuracy']:.1f}%" if ident else "")
    )
    print(
      f"           report: {out}/report.json, confusion matrix: "
      f"{out}/confusion.png, embeddings: {out}/embeddings.png"
    )
  ident = rep.get("identity_probe")
  print(
    f"chance: expression {100 / len(rep['class_names']):.1f}%"
    + (f", identity {100 / ident['subjects']:.1f}%" if ident else "")
  )
  print(
    "The identity probe tells the subject from the frozen features (ridge,"
    " leave one expression out). ST-CLR's negatives are nearly all other "
    "people, so it can solve its task by identity: its frozen features "
    "name the subject, not the expression. Fine-tuned, its encoder still "
    "starts learning sooner than a random one (BENCHMARKS.md, synthetic "
    "benchmark; bench/synthetic_protocol.py runs the full table)."
  )


if __name__ == "__main__":
  main()
