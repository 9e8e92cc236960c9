"""Does pretraining help? The whole protocol on the built-in synthetic data,
CPU-sized, in one command: Table VI's question on data where supervised
training from scratch learns the expression.

Arms (``--arms``):

* ``scratch``: no pretraining, a random encoder (BatchNorm statistics
  re-estimated per fold, ``eval.bn_reestimate``);
* ``stclr``: ST-CLR pretraining (``configs/stclr_synthetic.py``) on the
  unlabelled pool, subjects disjoint from the labelled ones;
* ``stclr_no_temporal``: the same without temporal augmentation
  (``:aug=no_temporal``, Table IV);
* ``stclr_timeaug``, ``stclr_hardneg``, ``stclr_samesubject``: ST-CLR with
  one pretext option on (``pretext.temporal_shift``,
  ``pretext.hard_negatives``, ``pretext.same_subject_negatives``, at their
  defaults: SSL-FER's offsets and gap, 2 videos per subject);
* ``stclr_combined``: all three options together;
* ``stclr_samesubject6``: same-subject batches of 3 subjects x all 6 of
  their videos (batch 18): a third of every anchor's negatives show its
  own person, against one in 15 with the default 8 x 2.
* ``stclr_maskfn``: SSL-FER's MaskFN (``pretext.maskfn``: HOG of the
  eye and mouth crops picks each anchor's false negative);
* ``stclr_timeaug_hardneg_maskfn``: SSL-FER's TimeAug + HardNeg + MaskFN
  (its best row without FaceSwap, which is not built);
* ``stclr_views``, ``clmex``: pretraining on the multi-view pool
  (``synthetic_expressions/expressive_views_pool``: 136 other people x 6
  sequences x 3 views, 2,448 videos), batches of 18: ST-CLR (NT-Xent, any
  shuffle) and CL-MEx (``pretext.multi_view_positives``: 6 whole groups
  per batch, every clip of a sequence's 3 views a positive).

Each arm is evaluated with ``configs/finetune_synthetic.py`` at every label
fraction (``--labels``, percent of each fold's training videos) on the
subject-independent folds ``--folds``:

* linear probe: ``linear_only=1`` (frozen encoder, standardised features);
* fine-tuned: the protocol's linear phase, then the whole model;
* identity probe: the subject from the frozen features (ridge, leave one
  expression out; ``report.json``'s ``identity_probe``).

A reference row gives the closed-form ridge on apex - neutral pixels on the
same folds (it is told which frames are neutral and apex: an easier task).
Prints a markdown table (mean ± std over folds) and the wall time of every
stage; ``WORKDIR/summary.json`` holds it all. Every stage resumes from
``--workdir``.

  python bench/synthetic_protocol.py --workdir=workdirs/protocol
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from absl import logging

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import synthetic_diagnosis  # noqa: E402

from stclr_jax import train  # noqa: E402
from stclr_jax.demo import load_config  # noqa: E402
from stclr_jax.evaluation import folds as folds_lib  # noqa: E402
from stclr_jax.evaluation import probes, protocol  # noqa: E402

ARMS = (
  "scratch",
  "stclr",
  "stclr_no_temporal",
  "stclr_timeaug",
  "stclr_hardneg",
  "stclr_samesubject",
  "stclr_combined",
  "stclr_samesubject6",
  "stclr_maskfn",
  "stclr_timeaug_hardneg_maskfn",
  "stclr_views",
  "clmex",
)
# The pretext options each arm turns on (data/pretext.py).
PRETEXT = {
  "stclr_timeaug": ("temporal_shift",),
  "stclr_hardneg": ("hard_negatives",),
  "stclr_samesubject": ("same_subject_negatives",),
  "stclr_combined": (
    "temporal_shift",
    "hard_negatives",
    "same_subject_negatives",
  ),
  "stclr_samesubject6": ("same_subject_negatives",),
  "stclr_maskfn": ("maskfn",),
  "stclr_timeaug_hardneg_maskfn": (
    "temporal_shift",
    "hard_negatives",
    "maskfn",
  ),
  "clmex": ("multi_view_positives",),
}
_VIEWS = {
  "data.name": "synthetic_expressions/expressive_views_pool",
  "batch_size": 18,
}
# Other fields an arm sets.
OVERRIDES = {
  "stclr_samesubject6": {"pretext.videos_per_subject": 6, "batch_size": 18},
  "stclr_views": _VIEWS,
  "clmex": _VIEWS,
}


def _config(name, arg, args):
  if args.tiny:
    arg = ",".join(filter(None, [arg, "tiny=1"]))
  c = load_config(os.path.join(_ROOT, "configs", name), arg)
  c.data.data_dir = args.data_dir
  return c


def pretrain(arm, args, times):
  """The arm's pretraining workdir ("" for scratch)."""
  if arm == "scratch":
    return ""
  variant = "aug=no_temporal" if arm == "stclr_no_temporal" else None
  config = _config("stclr_synthetic.py", variant, args)
  for option in PRETEXT.get(arm, ()):
    setattr(config.pretext, option, True)
  for field, value in OVERRIDES.get(arm, {}).items():
    if args.tiny and field == "data.name":  # the views pool's tiny twin
      value = "synthetic_expressions/tiny_views"
    parent, _, name = field.rpartition(".")
    setattr(config[parent] if parent else config, name, value)
  if args.pretrain_epochs:
    config.num_epochs = args.pretrain_epochs
  workdir = os.path.join(args.workdir, f"pretrain_{arm}")
  t0 = time.time()
  out = train.pretrain(config, workdir)
  times[f"pretrain {arm}"] = time.time() - t0
  if not out["history"]:  # resumed at its last step: nothing to train
    print(f"[{arm}] already pretrained in {workdir}", flush=True)
    return workdir
  last = out["history"][-1]
  print(
    f"[{arm}] pretrained: step {last['step']}, NT-Xent {last['loss']:.3f}, "
    f"contrastive top-1 {last['contrastive_top1']:.2f}",
    flush=True,
  )
  return workdir


def evaluate(arm, init, pct, linear_only, args, times):
  arg = f"labels={pct:g}" + (",linear_only=1" if linear_only else "")
  config = _config("finetune_synthetic.py", arg, args)
  config.init_from = init
  config.eval.run_folds = args.folds
  if args.finetune_epochs:
    config.eval.finetune_epochs = args.finetune_epochs
  kind = "linear" if linear_only else "eval"
  workdir = os.path.join(args.workdir, f"{kind}_{arm}_{pct:g}")
  t0 = time.time()
  rep = protocol.evaluate(config, workdir)
  times[f"{kind} {arm} {pct:g}%"] = time.time() - t0
  return rep, config


def pixel_reference(config, folds: list[int]):
  """Ridge on 16x16 grey apex - neutral pixels, on the protocol's folds."""
  diff, _, labels, subjects = synthetic_diagnosis.pixel_features(
    config.data.name.split("/", 1)[1], config.data.data_dir, 16
  )
  tests = folds_lib.make_folds(
    config.eval.fold_by,
    labels,
    subjects,
    config.eval.num_folds,
    config.seed,
    config.data.name,
  )
  accs = []
  for f in folds:
    train_idx = folds_lib.train_indices(tests[f], len(diff))
    pred = probes.ridge_predict(
      diff[train_idx], labels[train_idx], diff[tests[f]], 6, 1.0
    )
    accs.append(float(np.mean(pred == labels[tests[f]])))
  return accs


def _cell(r):
  return f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}%" if r else "-"


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  p.add_argument("--workdir", default="workdirs/protocol")
  p.add_argument("--arms", default=",".join(ARMS))
  p.add_argument("--labels", default="100,10", help="percent of labels")
  p.add_argument(
    "--finetune_labels",
    default="",
    help="fine-tune at these percents only (the others: linear probe and "
    "identity probe); empty: at every --labels",
  )
  p.add_argument("--folds", default="0,1,2,3,4")
  p.add_argument(
    "--pretrain_epochs", type=int, default=0, help="0: the config's"
  )
  p.add_argument(
    "--finetune_epochs", type=int, default=0, help="0: the config's"
  )
  p.add_argument("--data_dir", default="")
  p.add_argument(
    "--tiny", action="store_true", help="the tiny configs (a smoke test)"
  )
  args = p.parse_args(argv)
  arms = [a for a in args.arms.split(",") if a]
  for a in arms:
    if a not in ARMS:
      p.error(f"--arms: unknown arm {a!r}; known: {ARMS}")
  pcts = [float(x) for x in args.labels.split(",") if x]
  ft_pcts = [float(x) for x in args.finetune_labels.split(",") if x] or pcts
  logging.set_verbosity(logging.INFO)
  os.makedirs(args.workdir, exist_ok=True)

  start, times, rows = time.time(), {}, []
  config = None
  for arm in arms:
    init = pretrain(arm, args, times)
    for pct in pcts:
      lin, config = evaluate(arm, init, pct, True, args, times)
      ft = {}
      if pct in ft_pcts:
        ft, config = evaluate(arm, init, pct, False, args, times)
      rows.append(
        {
          "arm": arm,
          "labels": pct,
          "linear": lin["linear"],
          "finetune": ft.get("finetune"),
          "identity_probe": ft.get("identity_probe")
          or lin.get("identity_probe"),
          "init": lin["init"],
        }
      )
  folds = [int(f) for f in args.folds.split(",") if f]
  ref = pixel_reference(config, folds) if config else []
  total = time.time() - start

  print(
    f"\n{config.data.name}: folds {args.folds} of {config.eval.num_folds} "
    f"(by subject); {config.model.encoder} width {config.model.width}, "
    f"{config.data.clip_len}x{config.data.size}^2 clips\n"
  )
  print("| arm | labels | linear probe | fine-tuned | identity probe |")
  print("| --- | --- | --- | --- | --- |")
  for r in rows:
    ident = r["identity_probe"]
    ident = (
      f"{100 * ident['accuracy']:.1f}% (of {ident['subjects']})"
      if ident
      else "-"
    )
    print(
      f"| {r['arm']} | {r['labels']:g}% | {_cell(r['linear'])} | "
      f"{_cell(r['finetune'])} | {ident} |"
    )
  if ref:
    print(
      f"| pixels, apex - neutral, ridge (reference) | 100% | "
      f"{100 * np.mean(ref):.1f} ± {100 * np.std(ref):.1f}% | | |"
    )
  for arm in arms:
    spent = sum(v for k, v in times.items() if k.split(" ")[1] == arm)
    print(f"wall time of {arm}: {spent:.0f}s")
  print(
    "\nwall time: "
    + ", ".join(f"{k} {v:.0f}s" for k, v in times.items())
    + f"; total {total:.0f}s"
  )
  with open(os.path.join(args.workdir, "summary.json"), "w") as f:
    json.dump(
      {
        "args": vars(args),
        "times": times,
        "total_seconds": total,
        "rows": rows,
        "pixel_reference": ref,
      },
      f,
      indent=2,
    )


if __name__ == "__main__":
  main()
