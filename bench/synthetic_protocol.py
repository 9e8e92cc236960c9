"""The whole ST-CLR protocol on the built-in synthetic data, CPU-sized.

Three arms, each evaluated with configs/finetune_synthetic.py (linear probe,
then fine-tuning, subject-independent folds):

* ``stclr``: ST-CLR pretraining (configs/stclr_synthetic.py);
* ``scratch``: no pretraining (random encoder, same code path);
* ``stclr_no_temporal``: ST-CLR without temporal augmentation
  (``:aug=no_temporal``, Table IV).

Prints a table of accuracy mean ± std over folds and the wall time of each
stage. Every stage resumes from ``--workdir`` if it was interrupted.

  python bench/synthetic_protocol.py --workdir=workdirs/protocol \
      --pretrain_epochs=20 --folds=0,1,2,3,4 --finetune_epochs=10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)


def _load(name, arg=None):
  from stclr_jax.demo import load_config

  return load_config(os.path.join(_ROOT, "configs", name), arg)


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  p.add_argument("--workdir", default="workdirs/protocol")
  p.add_argument("--pretrain_epochs", type=int, default=20)
  p.add_argument("--folds", default="0,1,2,3,4")
  p.add_argument("--linear_epochs", type=int, default=30)
  p.add_argument("--finetune_epochs", type=int, default=10)
  p.add_argument("--arms", default="stclr,scratch,stclr_no_temporal")
  p.add_argument("--data_dir", default="")
  p.add_argument(
    "--size",
    type=int,
    default=0,
    help="frame size for pretraining and evaluation (0: the "
    "configs' 64); frames are cached at 1.25x",
  )
  args = p.parse_args(argv)

  def sized(config):
    config.data.data_dir = args.data_dir
    if args.size:
      config.data.size = args.size
      config.data.cache_frame_size = int(round(1.25 * args.size))
    return config

  from absl import logging

  from stclr_jax import train
  from stclr_jax.evaluation import protocol

  logging.set_verbosity(logging.INFO)
  arms = [a for a in args.arms.split(",") if a]
  rows, times = {}, {}
  for arm in arms:
    init = ""
    if arm != "scratch":
      variant = "aug=no_temporal" if arm == "stclr_no_temporal" else None
      config = sized(_load("stclr_synthetic.py", variant))
      config.num_epochs = args.pretrain_epochs
      init = os.path.join(args.workdir, f"pretrain_{arm}")
      t0 = time.time()
      last = train.pretrain(config, init)["last"]
      times[f"pretrain {arm}"] = time.time() - t0
      print(f"[{arm}] pretrained: {last}", flush=True)
    config = sized(_load("finetune_synthetic.py"))
    config.init_from = init
    config.eval.run_folds = args.folds
    config.eval.linear_epochs = args.linear_epochs
    config.eval.finetune_epochs = args.finetune_epochs
    t0 = time.time()
    rows[arm] = protocol.evaluate(
      config, os.path.join(args.workdir, f"eval_{arm}")
    )
    times[f"evaluate {arm}"] = time.time() - t0

  print(
    f"\n{config.data.name} at {config.data.size} px, folds "
    f"{args.folds} of 10 (by subject); "
    f"pretraining {args.pretrain_epochs} epochs; linear "
    f"{args.linear_epochs} + fine-tune {args.finetune_epochs} epochs\n"
  )
  print("| arm | linear probe | fine-tuned |")
  print("| --- | --- | --- |")
  for arm, rep in rows.items():
    cells = []
    for phase in ("linear", "finetune"):
      r = rep.get(phase)
      cells.append(
        f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}%" if r else "-"
      )
    print(f"| {arm} | {cells[0]} | {cells[1]} |")
  print("\nwall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
  with open(os.path.join(args.workdir, "summary.json"), "w") as f:
    json.dump(
      {
        "args": vars(args),
        "times": times,
        "results": {
          a: {k: r.get(k) for k in ("linear", "finetune")}
          for a, r in rows.items()
        },
      },
      f,
      indent=2,
    )


if __name__ == "__main__":
  main()
