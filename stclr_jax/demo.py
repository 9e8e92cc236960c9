"""CPU demo (`make demo`): ST-CLR pretraining on the built-in synthetic data,
then the benchmark's comparison at demo size.

1. The main job, ``train.pretrain``, with
   ``configs/stclr_synthetic.py`` (the paper's code path at CPU size), and a
   preview of the two views the model trains on.
2. The positive control: the same encoder trained with the pool's
   expression labels (``supervised_pretrain``, its labelled twin), for
   ``--control_steps`` steps.
3. ``evaluation.protocol.evaluate`` with
   ``configs/finetune_synthetic.py:linear_only=1`` (a budget of
   optimisation steps) on a few subject-independent folds, from the
   random, the ST-CLR and the control encoder (the same code path), every
   run scored on the held-out population (200 other people); accuracies
   with 95% CIs over the runs and the paired differences to scratch.

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
from stclr_jax.evaluation import compare, protocol, stats, supervised_pretrain

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
  p.add_argument(
    "--control_steps",
    type=int,
    default=300,
    help="steps of the supervised control (0: none)",
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
  """The calibrated comparison at demo size: linear probes (frozen
  features) of the random, the ST-CLR and (``--control_steps``) the
  supervised-control encoder, on the same subject-independent runs, each
  run scored on the held-out population; prints accuracies with their 95%
  CIs and the paired differences to scratch."""
  tiny = "tiny=1" in (args.config_arg or "")
  arg = "linear_only=1" + (",tiny=1" if tiny else "")
  arms = [("scratch", ""), ("ST-CLR", os.path.abspath(args.workdir))]
  if args.control_steps > 0:
    arms.append(("supervised", supervised_control(args, pretrain_config)))
  results = {}
  for name, init in arms:
    config = load_config(args.eval_config, arg)
    config.init_from = init
    config.eval.run_folds = args.eval_folds
    config.eval.budget = "steps"
    config.eval.train_seeds = "0"
    config.eval.heldout_data = "synthetic_expressions/" + (
      "tiny_heldout" if tiny else "expressive_heldout"
    )
    config.data.data_dir = pretrain_config.data.data_dir
    out = os.path.join(args.workdir, f"eval_{name.lower().replace('-', '')}")
    t0 = time.time()
    rep = protocol.evaluate(config, out)
    runs = compare.load_runs(out, rep, phase="linear")
    results[name] = (rep, runs, out, time.time() - t0)
  held = rep["heldout"]["population"]
  print(
    f"\nlinear probe (frozen encoder), trained on {config.data.name} in "
    f"subject-independent folds {args.eval_folds} of {config.eval.num_folds},"
    f" scored on {held['data']} ({held['subjects']} other people, "
    f"{held['videos']} videos); 95% CIs over the runs:"
  )
  base = results["scratch"][1]
  for name, (rep, runs, out, secs) in results.items():
    s = compare.summary(runs)
    ident = rep.get("identity_probe")
    line = (
      f"  {name:10s} held-out {stats.format_pm(s['mean'], *s['ci95'])}"
      if s["runs"] > 1
      else f"  {name:10s} held-out {100 * s['mean']:.1f}%"
    )
    d = compare.paired(runs, base) if name != "scratch" else None
    if d is not None:
      line += "; minus scratch " + stats.format_pm(
        d["diff"], *d["ci95"], unit=" points", signed=True
      )
    if ident:
      line += f"; identity probe {100 * ident['accuracy']:.1f}%"
    print(line + f" ({secs:.0f}s)")
    print(f"             report: {out}/report.json, logits: {out}/logits/")
  ident = rep.get("identity_probe")
  print(
    f"chance: expression {100 / len(rep['class_names']):.1f}%"
    + (f", identity {100 / ident['subjects']:.1f}%" if ident else "")
  )
  print(
    "What it means: a difference counts only where its CI excludes 0. The"
    " supervised control (the pool's expressions as labels) shows what the"
    " probe reads when an encoder has learnt the expression; ST-CLR's"
    " features name the person (identity probe), not the expression. "
    "bench/synthetic_protocol.py runs the full table, fine-tuning included."
  )


def supervised_control(args, pretrain_config) -> str:
  """The positive control: the encoder trained on the pool's twin with the
  expression labels (``--control_steps`` steps); its workdir."""
  tiny = "tiny=1" in (args.config_arg or "")
  config = load_config(args.eval_config, "tiny=1" if tiny else None)
  config.data.data_dir = pretrain_config.data.data_dir
  config.data.name = pretrain_config.data.name + "_labelled"
  config.eval.schedule = "cosine"
  config.eval.learning_rate = 1e-3
  workdir = os.path.join(args.workdir, "supervised_control")
  t0 = time.time()
  out = supervised_pretrain.pretrain(
    config, workdir, target="expression", num_steps=args.control_steps
  )
  print(
    f"supervised control on {config.data.name}: {out['steps']} steps, "
    f"training accuracy {out['log'][-1]['accuracy']:.2f} "
    f"({time.time() - t0:.0f}s)"
  )
  return workdir


if __name__ == "__main__":
  main()
