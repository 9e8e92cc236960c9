"""Which pretraining gives an encoder expression features? The calibrated
benchmark on the built-in synthetic data, CPU-sized, in one command.

Populations (``synthetic_expressions``), each its own people:

* the **pool** (``expressive_pool``, subjects 1001-1400, no labels): what
  every arm pretrains on; its labelled twin (``expressive_pool_labelled``,
  bit-identical videos) is read only by the ``supervised_pool`` control;
* the **labelled 80** (``expressive``, subjects 1-80): the paper's
  protocol, subject-independent folds (``--folds``);
* the **held-out population** (``expressive_heldout``, subjects
  3001-3200, 1,200 videos): scored by every run's final model, never
  trained or tuned on; the table ranks by it;
* the **development population** (``expressive_dev``, subjects
  4001-4080): ``--population=dev`` runs the same protocol on it, with no
  held-out scoring. Every knob of the recipe was chosen there.

Runs: each arm at each label fraction is evaluated on every fold of
``--folds`` x (below 100% labels) ``--draws`` label subsets, or (at 100%)
``--seeds`` training seeds: the same runs, paired by name, in every arm.
The recipe (:data:`RECIPE`): budgets in optimisation steps, equal at every
fraction; the linear phase on standardised features (its held-out accuracy
is the ``linear_probe_acc`` column); fine-tuning from a zero head.

Arms (``--arms``; :data:`TABLE` is the default set):

* ``scratch``: a random encoder (BatchNorm statistics re-estimated per run);
  ``scratch_tpsbt`` and ``scratch_vit``: SVFAP's TPSBT and VideoMAE's ViT
  at CPU size (docs/video_transformers.md), random, fine-tuned with
  ``eval.transformer``'s recipe (SVFAP's defaults) on the same budget;
* controls, pretrained with labels on the pool (same budget in clips as
  ST-CLR): ``supervised_pool`` (the expression: positive control),
  ``identity_pool`` (the subject: negative), ``shuffled_pool`` (permuted
  expressions: "a trained start" without expression information);
* ``stclr`` (``configs/stclr_synthetic.py``), ``stclr_no_temporal``,
  ``stclr_timeaug_hardneg_maskfn`` (SSL-FER's row without FaceSwap),
  ``clmex`` (multi-view pool), and the single pretext options; FaceSwap
  alone (``stclr_faceswap``), with TimeAug + HardNeg
  (``stclr_timeaug_hardneg_faceswap``) and SSL-FER's four strategies
  (``stclr_sslfer``); each pretext arm is also paired with ``stclr``
  where both ran (``diff_vs_stclr``);
* masked video autoencoding (``configs/svfap_synthetic.py``: SVFAP's
  pretext) with the TPSBT (``mae_tpsbt``) or VideoMAE's ViT (``mae_vit``)
  at CPU size, fine-tuned like ``scratch_tpsbt`` and ``scratch_vit``, the
  rows to read them against;
* ``pixels``: ridge on apex - neutral pixels (told which frames are which:
  an easier task), on each run's labelled subset, scored like the others.

Statistics (:mod:`stclr_jax.evaluation.stats`): per arm and fraction, the
held-out accuracy (mean over runs, t-interval), the fold-protocol
accuracy, the paired difference to ``scratch`` over runs (t-interval) and
by a subject-level paired bootstrap on the held-out population; the
design's minimum detectable difference (MDE: the paired t test's, at
alpha 0.05 and power 0.8, from the differences' pooled std); and the
validity gate ``supervised_pool - identity_pool >= 3 x MDE`` at the
smallest fraction. ``--out=PATH.json`` writes it all (fractions in [0, 1]).

  python bench/synthetic_protocol.py --workdir=workdirs/bench --out=b.json

Everything resumes from ``--workdir``: pretraining (controls included)
under ``v<BENCH_VERSION>/``, each run's fold file and logits.
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

from stclr_jax import train  # noqa: E402
from stclr_jax.demo import load_config  # noqa: E402
from stclr_jax.evaluation import (  # noqa: E402
  compare,
  probes,
  protocol,
  stats,
  supervised_pretrain,  # noqa: E402
)
from stclr_jax.evaluation import folds as folds_lib  # noqa: E402
from stclr_jax.evaluation import runs as runs_lib  # noqa: E402

# Bumped whenever the recipe, the data or an arm's pretraining changes:
# cached pretraining and evaluations of another version are not reused.
BENCH_VERSION = 2

# The evaluation recipe, set on the development population (BENCHMARKS.md,
# "The calibrated benchmark"); config fields of configs/finetune_synthetic.py.
RECIPE = {
  "eval.budget": "steps",
  "eval.linear_steps": 300,
  "eval.finetune_steps": 300,
  "eval.schedule": "cosine",
  "eval.learning_rate": 1e-3,
  "eval.linear_learning_rate": 1e-3,
  "eval.linear_standardize": True,
  "eval.head_init": "zero",
  "eval.subset": "subjects",
  "eval.subset_seed": 0,
  "model.zero_init_residual": False,
}
POPULATIONS = {
  "bench": ("synthetic_expressions/expressive", "expressive_heldout"),
  "dev": ("synthetic_expressions/expressive_dev", ""),
}
# Supervised controls: (target, the pool's data set it reads).
CONTROLS = {
  "supervised_pool": ("expression", "expressive_pool_labelled"),
  "identity_pool": ("identity", "expressive_pool"),
  "shuffled_pool": ("shuffled", "expressive_pool_labelled"),
}
CONTROL_STEPS = 600  # x batch 16: the clips of ST-CLR's 300 steps x 2 views
PRETEXT = {
  "stclr_timeaug": ("timeaug",),
  "stclr_hardneg": ("hardneg",),
  "stclr_samesubject": ("samesubject",),
  "stclr_combined": (
    "timeaug",
    "hardneg",
    "samesubject",
  ),
  "stclr_maskfn": ("maskfn",),
  "stclr_timeaug_hardneg_maskfn": (
    "timeaug",
    "hardneg",
    "maskfn",
  ),
  "clmex": ("clmex",),
  # SSL-FER's FaceSwap alone, with TimeAug + HardNeg (its swapCLR
  # script), and SSL-FER's four strategies (its best row).
  "stclr_faceswap": ("faceswap",),
  "stclr_timeaug_hardneg_faceswap": ("timeaug", "hardneg", "faceswap"),
  "stclr_sslfer": ("timeaug", "hardneg", "maskfn", "faceswap"),
}
_VIEWS = {
  "data.name": "synthetic_expressions/expressive_views_pool",
  "batch_size": 18,
}
OVERRIDES = {"stclr_views": _VIEWS, "clmex": _VIEWS}
SSL_ARMS = ("stclr", "stclr_no_temporal", "stclr_views", *PRETEXT)
# Random encoders of another family, fine-tuned with its own recipe
# (eval.transformer's defaults for the video transformers).
ENCODER_ARMS = {"scratch_tpsbt": "tpsbt_cpu", "scratch_vit": "vit_cpu"}
# Masked video autoencoding (configs/svfap_synthetic.py) with each of
# them; compare with the same encoder's scratch arm.
MAE_ARMS = {"mae_tpsbt": "tpsbt_cpu", "mae_vit": "vit_cpu"}
# Each masked-autoencoding arm is paired with its encoder's random start
# where both ran (``diff_vs_family_scratch``), and with ``stclr``.
FAMILY_SCRATCH = {"mae_tpsbt": "scratch_tpsbt", "mae_vit": "scratch_vit"}
ARMS = (
  "scratch",
  *ENCODER_ARMS,
  *CONTROLS,
  *SSL_ARMS,
  *MAE_ARMS,
  "pixels",
)
TABLE = (
  "scratch",
  "supervised_pool",
  "identity_pool",
  "shuffled_pool",
  "stclr",
  "stclr_no_temporal",
  "stclr_timeaug_hardneg_maskfn",
  "clmex",
  "pixels",
)
GATE = ("supervised_pool", "identity_pool")
# Two readouts of every run on the held-out population, each with its own
# paired differences, MDE and gate: "finetune", the protocol's final model
# (what the table ranks by, the issue's ``heldout_acc``), and "linear", the
# linear layer on the frozen, standardised features before fine-tuning
# (``linear_probe_acc``: what the pretraining put in the features).
READOUTS = {"finetune": "correct", "linear": "linear_correct"}


def _set(config, field, value):
  parent, _, name = field.rpartition(".")
  node = config
  try:
    for part in filter(None, parent.split(".")):
      node = node[part]
    old = node[name]
  except KeyError:
    raise ValueError(
      f"{field}={value}: the config has no field {field}"
    ) from None
  if isinstance(old, (tuple, list)) and isinstance(value, str):
    value = tuple(type(old[0])(v) for v in value.split(","))
  elif isinstance(old, bool):
    value = value if isinstance(value, bool) else str(value) in ("1", "True")
  elif isinstance(old, (int, float)) and not isinstance(value, type(old)):
    value = type(old)(value)
  node[name] = value


def _config(name, arg, args):
  if args.tiny:
    arg = ",".join(filter(None, [arg, "tiny=1"]))
  c = load_config(os.path.join(_ROOT, "configs", name), arg)
  c.data.data_dir = args.data_dir
  return c


def _version_dir(args):
  return os.path.join(args.workdir, f"v{BENCH_VERSION}")


def pretrain(arm, args, times):
  """The arm's pretraining workdir ("" for scratch and pixels)."""
  if arm in ("scratch", "pixels", *ENCODER_ARMS):
    return ""
  workdir = os.path.join(_version_dir(args), f"pretrain_{arm}")
  t0 = time.time()
  if arm in CONTROLS:
    target, data = CONTROLS[arm]
    c = _config("finetune_synthetic.py", None, args)
    _apply(c, args)
    if args.tiny:
      data = {"expressive_pool_labelled": "tiny_pool_labelled"}.get(
        data, "tiny_pool"
      )
    c.data.name = f"synthetic_expressions/{data}"
    steps = args.control_steps or (6 if args.tiny else CONTROL_STEPS)
    out = supervised_pretrain.pretrain(
      c, workdir, target=target, num_steps=steps
    )
    print(
      f"[{arm}] supervised ({target}, {out['classes']} classes) on {data}: "
      f"{steps} steps, last loss {out['log'][-1]['loss']:.3f}, training "
      f"accuracy {out['log'][-1]['accuracy']:.2f}",
      flush=True,
    )
    times[f"pretrain {arm}"] = time.time() - t0
    return workdir
  if arm in MAE_ARMS:
    config = _config("svfap_synthetic.py", f"encoder={MAE_ARMS[arm]}", args)
  else:
    variant = "aug=no_temporal" if arm == "stclr_no_temporal" else None
    config = _config("stclr_synthetic.py", variant, args)
  for option in PRETEXT.get(arm, ()):
    config.pretext[option].enabled = True
  for field, value in OVERRIDES.get(arm, {}).items():
    if args.tiny and field == "data.name":
      value = "synthetic_expressions/tiny_views"
    _set(config, field, value)
  if args.pretrain_epochs:
    config.num_epochs = args.pretrain_epochs
  for item in args.pretrain_set:
    field, _, value = item.partition("=")
    _set(config, field, value)
  out = train.pretrain(config, workdir)
  times[f"pretrain {arm}"] = time.time() - t0
  if out["history"]:
    last = out["history"][-1]
    print(
      f"[{arm}] pretrained: step {last['step']}, loss {last['loss']:.3f}",
      flush=True,
    )
  return workdir


def _apply(config, args):
  for field, value in RECIPE.items():
    _set(config, field, value)
  for item in args.set:
    field, _, value = item.partition("=")
    _set(config, field, value)


def eval_config(args, pct):
  c = _config("finetune_synthetic.py", f"labels={pct:g}", args)
  _apply(c, args)
  data, heldout = POPULATIONS[args.population]
  if args.tiny:
    data, heldout = c.data.name, ("tiny_heldout" if heldout else "")
  c.data.name = data
  c.eval.heldout_data = f"synthetic_expressions/{heldout}" if heldout else ""
  c.eval.run_folds = args.folds
  c.eval.subset_draws = args.draws if pct < 100 else 1
  c.eval.train_seeds = "0" if pct < 100 else args.seeds
  if args.tiny:
    c.eval.linear_steps, c.eval.finetune_steps = 4, 3
  return c


def evaluate(arm, init, pct, args, times):
  config = eval_config(args, pct)
  config.init_from = init
  if arm in ENCODER_ARMS or arm in MAE_ARMS:
    config.model.encoder = {**ENCODER_ARMS, **MAE_ARMS}[arm]
    if args.tiny:
      config.model.encoder = config.model.encoder.replace("_cpu", "_tiny")
  config.eval.linear_only = args.linear_only
  suffix = "_linear" if args.linear_only else ""
  workdir = os.path.join(
    _version_dir(args), args.population, f"eval_{arm}_{pct:g}{suffix}"
  )
  t0 = time.time()
  rep = protocol.evaluate(config, workdir)
  times[f"eval {arm} {pct:g}%"] = time.time() - t0
  phase = "linear" if args.linear_only else "finetune"
  return {"runs": compare.load_runs(workdir, rep, phase), "report": rep}, config


def pixel_features(data: str, data_dir: str, px: int):
  """``(apex - neutral, apex, labels, subjects)`` of a synthetic data set:
  the last frame minus the first (and the last alone), grey, averaged over
  blocks down to ``px`` x ``px``, one row per video."""
  import tensorflow_datasets as tfds

  from stclr_jax.data import datasets  # noqa: F401  (registers builders)

  ds = tfds.load(
    f"synthetic_expressions/{data}", split="train", data_dir=data_dir or None
  )
  diff, apex, labels, subjects = [], [], [], []
  for ex in tfds.as_numpy(ds):
    grey = ex["video"].astype(np.float32).mean(-1) / 255
    k = grey.shape[1] // px

    def pool(f, k=k):
      return f[: k * px, : k * px].reshape(px, k, px, k).mean((1, 3))

    diff.append((pool(grey[-1]) - pool(grey[0])).ravel())
    apex.append(pool(grey[-1]).ravel())
    labels.append(ex["label"])
    subjects.append(ex["subject_id"])
  return (np.stack(diff), np.stack(apex), np.array(labels), np.array(subjects))


def pixel_runs(args, config, times):
  """The pixel ridge on each run's labelled subset, scored like an arm."""
  t0 = time.time()
  name = config.data.name.split("/", 1)[1]
  x, _, labels, subjects = pixel_features(name, args.data_dir, 16)
  held = None
  if config.eval.heldout_data:
    held = pixel_features(
      config.eval.heldout_data.split("/", 1)[1], args.data_dir, 16
    )
  ev = config.eval
  tests = folds_lib.make_folds(
    ev.fold_by, labels, subjects, ev.num_folds, config.seed, name
  )
  runs = {}
  for unit in runs_lib.units(
    ev, folds_lib.parse_run_folds(ev.run_folds, ev.num_folds)
  ):
    f, draw, tseed = unit
    train_idx = folds_lib.label_subset(
      ev.subset,
      folds_lib.train_indices(tests[f], len(x)),
      labels,
      subjects,
      ev.label_fraction,
      runs_lib.subset_seed(config, f, draw),
    )
    pred = probes.ridge_predict(
      x[train_idx], labels[train_idx], x[tests[f]], 6, 1.0
    )
    r = {"fold_acc": float(np.mean(pred == labels[tests[f]]))}
    if held is not None:
      hp = probes.ridge_predict(
        x[train_idx], labels[train_idx], held[0], 6, 1.0
      )
      r["correct"] = hp == held[2]
      r["linear_correct"] = r["correct"]
      r["subjects"] = held[3]
    runs[runs_lib.unit_name(*unit)] = r
  times[f"eval pixels {config.eval.label_fraction * 100:g}%"] = time.time() - t0
  return {"runs": runs, "report": {}}


def _mean(xs):
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


def _prefix(readout):
  """The JSON field prefix of a readout's paired differences."""
  return "" if readout == "finetune" else f"{readout}_"


def row(arm, pct, res, scratch, seconds, stclr=None, family=None):
  """One row of the table (fractions in [0, 1]); ``stclr``: plain ST-CLR's
  results, to pair a pretext arm's runs with (``diff_vs_stclr``);
  ``family``: a masked-autoencoding arm's encoder from scratch
  (``diff_vs_family_scratch``)."""
  runs = res["runs"]
  names = sorted(runs)
  fold = [runs[n]["fold_acc"] for n in names]
  held = compare.summary(runs)
  linear = compare.summary(runs, "linear_correct")
  out = {
    "arm": arm,
    "labels": pct,
    "runs": len(names),
    "heldout_acc": held.get("mean"),
    "heldout_ci95": held.get("ci95"),
    "heldout_bootstrap_ci95": held.get("bootstrap_ci95"),
    "heldout_run_acc": held.get("run_accuracy", {}),
    "fold_acc": float(np.mean(fold)),
    "fold_acc_std": float(np.std(fold, ddof=1)) if len(fold) > 1 else None,
    "linear_probe_acc": linear.get("mean"),
    "identity_probe_acc": (res["report"].get("identity_probe") or {}).get(
      "accuracy"
    ),
    "diff_vs_scratch": None,
    "diff_vs_scratch_ci95": None,
    "diff_vs_scratch_bootstrap_ci95": None,
    "diff_vs_scratch_p": None,
    "wall_s": round(seconds, 1),
  }
  out["linear_probe_ci95"] = linear.get("ci95")
  out["linear_probe_run_acc"] = linear.get("run_accuracy", {})
  for readout, key in READOUTS.items():
    d = None
    if scratch is not None and arm != "scratch":
      d = compare.paired(runs, scratch["runs"], key)
    if d is not None:
      prefix = _prefix(readout)
      out.update(
        {
          f"{prefix}diff_vs_scratch": d["diff"],
          f"{prefix}diff_vs_scratch_ci95": d["ci95"],
          f"{prefix}diff_vs_scratch_bootstrap_ci95": d["bootstrap_ci95"],
          f"{prefix}diff_vs_scratch_p": d["p"],
          f"{prefix}diff_vs_scratch_std": d["std"],
          "paired_runs": d["runs"],
        }
      )
    against = {
      "stclr": stclr if arm in PRETEXT or arm in MAE_ARMS else None,
      "family_scratch": family if arm in FAMILY_SCRATCH else None,
    }
    for name, other in against.items():
      d = None if other is None else compare.paired(runs, other["runs"], key)
      if d is not None:
        prefix = _prefix(readout)
        out[f"{prefix}diff_vs_{name}"] = d["diff"]
        out[f"{prefix}diff_vs_{name}_ci95"] = d["ci95"]
        out[f"{prefix}diff_vs_{name}_bootstrap_ci95"] = d["bootstrap_ci95"]
        out[f"{prefix}diff_vs_{name}_p"] = d["p"]
  return out


def design(rows, results, pct, readout="finetune"):
  """The MDE at ``pct`` of one readout (:data:`READOUTS`): the pooled std
  of the paired differences to scratch over the arms that have them; and
  the gate's difference on that readout."""
  prefix = _prefix(readout)
  std = f"{prefix}diff_vs_scratch_std"
  diffs = [r for r in rows if r["labels"] == pct and std in r]
  mde = None
  if diffs:
    sd = float(np.sqrt(np.mean([r[std] ** 2 for r in diffs])))
    n = min(r["paired_runs"] for r in diffs)
    mde = stats.minimum_detectable_difference(sd, n)
  gate = None
  pos, neg = (results.get((arm, pct)) for arm in GATE)
  if pos is not None and neg is not None:
    gate = compare.paired(pos["runs"], neg["runs"], READOUTS[readout])
  return mde, gate


def verdict(mde, gate):
  return stats.gate(gate["diff"], mde) if gate and mde else "FAIL"


def _pct(x):
  return "-" if x is None else f"{100 * x:.1f}"


def _ci(x):
  return "-" if not x else f"[{100 * x[0]:+.1f}, {100 * x[1]:+.1f}]"


def _acc_ci(mean, ci):
  return f"{_pct(mean)}% " + (
    f"[{_pct(ci[0])}, {_pct(ci[1])}]" if ci and ci[0] == ci[0] else ""
  )


def _diff(r, prefix=""):
  d = r.get(f"{prefix}diff_vs_scratch")
  if d is None:
    return "-"
  return (
    f"{100 * d:+.1f} {_ci(r[f'{prefix}diff_vs_scratch_ci95'])}"
    f" {_ci(r[f'{prefix}diff_vs_scratch_bootstrap_ci95'])}"
  )


def _gate_line(name, mde, g, verdict_, pct):
  print(
    f"{name}: MDE (paired t, alpha 0.05, power 0.8, at {pct:g}% labels) "
    f"{_pct(mde)} points; ",
    end="",
  )
  if g:
    print(
      f"gate supervised_pool - identity_pool = {100 * g['diff']:+.1f} points "
      f"{_ci(g['ci95'])} (95% CI over runs) against 3 x MDE = "
      f"{_pct(3 * mde) if mde is not None else '-'}: {verdict_}"
    )
  else:
    print(f"gate {verdict_} (its two arms were not both run)")


def print_table(rows, out):
  # Under --linear_only the "fine-tuned" fields hold the linear probe.
  tuned = "linear probe (--linear_only)" if _linear_only(out) else "fine-tuned"
  print(
    f"\n| arm | labels | held-out acc., {tuned} [95% CI over runs] | "
    "minus scratch [95% CI over runs] [subject bootstrap] | fold acc. | "
    "linear probe (held-out) [95% CI] | linear minus scratch [CI] "
    "[bootstrap] | identity probe | wall |"
  )
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    print(
      f"| {r['arm']} | {r['labels']:g}% ({r['runs']} runs) | "
      f"{_acc_ci(r['heldout_acc'], r['heldout_ci95'])} | {_diff(r)} | "
      f"{_pct(r['fold_acc'])}% | "
      f"{_acc_ci(r['linear_probe_acc'], r.get('linear_probe_ci95'))} | "
      f"{_diff(r, 'linear_')} | {_pct(r['identity_probe_acc'])}% | "
      f"{r['wall_s']:.0f} s |"
    )
  print()
  pct = out["gate_labels"]
  if _linear_only(out):
    print("(--linear_only: the first readout is the linear probe again)")
  _gate_line(tuned, out["mde"], out["gate_detail"], out["gate"], pct)
  _gate_line(
    "linear probe",
    out["linear_mde"],
    out["linear_gate_detail"],
    out["linear_gate"],
    pct,
  )
  for name, what in (
    ("stclr", "stclr"),
    ("family_scratch", "the same encoder from scratch"),
  ):
    _print_against(rows, name, what)


def _linear_only(out) -> bool:
  return bool(out.get("args", {}).get("linear_only"))


def _print_against(rows, name, what):
  """The paired differences of the rows that have them against ``name``."""
  key = f"diff_vs_{name}"
  against = [r for r in rows if key in r or f"linear_{key}" in r]
  if not against:
    return
  print(
    f"\n| arm | labels | fine-tuned minus {what} [95% CI over runs] | "
    f"linear probe minus {what} [95% CI] |"
  )
  print("| --- | --- | --- | --- |")
  for r in against:
    cells = []
    for prefix in ("", "linear_"):
      d = r.get(f"{prefix}{key}")
      cells.append(
        "-" if d is None else f"{100 * d:+.1f} {_ci(r[f'{prefix}{key}_ci95'])}"
      )
    print(f"| {r['arm']} | {r['labels']:g}% | {cells[0]} | {cells[1]} |")


def _parser():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  p.add_argument("--workdir", default="workdirs/bench")
  p.add_argument("--out", default="", help="the results as JSON")
  p.add_argument("--arms", default=",".join(TABLE))
  p.add_argument("--labels", default="100,10", help="percent of labels")
  p.add_argument("--folds", default="0,1")
  p.add_argument(
    "--draws", type=int, default=3, help="label subsets per fold below 100%%"
  )
  p.add_argument("--seeds", default="0,1,2", help="training seeds at 100%%")
  p.add_argument("--population", default="bench", choices=sorted(POPULATIONS))
  p.add_argument(
    "--set",
    action="append",
    default=[],
    help="FIELD=VALUE over the recipe (e.g. eval.finetune_steps=600); "
    "tune on --population=dev only",
  )
  p.add_argument("--pretrain_epochs", type=int, default=0)
  p.add_argument(
    "--pretrain_set",
    action="append",
    default=[],
    help="FIELD=VALUE over every self-supervised arm's pretraining config "
    "(stclr, the pretext arms and the masked-autoencoding arms; not the "
    "supervised controls), e.g. optim.learning_rate=3e-4; with a --workdir "
    "of its own (a workdir pretrained with other values is an error); tune "
    "on --population=dev only",
  )
  p.add_argument("--control_steps", type=int, default=0)
  p.add_argument("--data_dir", default="")
  p.add_argument("--tiny", action="store_true", help="tiny configs (tests)")
  p.add_argument(
    "--linear_only",
    action="store_true",
    help="the linear probe on frozen features only (no fine-tuning; its "
    "runs are the full runs' linear phase, in eval_<arm>_<pct>_linear): "
    "the fine-tuned columns then repeat the linear probe",
  )
  return p


def parse_args(argv=None):
  """The command line's arguments (no checks beyond argparse's)."""
  return _parser().parse_args(argv)


def main(argv=None):
  p = _parser()
  args = p.parse_args(argv)
  arms = [a for a in args.arms.split(",") if a]
  for a in arms:
    if a not in ARMS:
      p.error(f"--arms: unknown arm {a!r}; known: {ARMS}")
  pcts = sorted({float(x) for x in args.labels.split(",") if x}, reverse=True)
  logging.set_verbosity(logging.INFO)
  os.makedirs(args.workdir, exist_ok=True)
  # The baselines first: rows pair with them.
  for first in ("scratch_vit", "scratch_tpsbt", "stclr", "scratch"):
    if first in arms:
      arms.remove(first)
      arms.insert(0, first)

  start, times, results, rows = time.time(), {}, {}, []
  for arm in arms:
    init = pretrain(arm, args, times)
    for pct in pcts:
      if arm == "pixels":
        res = pixel_runs(args, eval_config(args, pct), times)
      else:
        res, _ = evaluate(arm, init, pct, args, times)
      results[(arm, pct)] = res
      seconds = times.get(f"eval {arm} {pct:g}%", 0.0)
      rows.append(
        row(
          arm,
          pct,
          res,
          results.get(("scratch", pct)),
          seconds,
          stclr=results.get(("stclr", pct)),
          family=results.get((FAMILY_SCRATCH.get(arm), pct)),
        )
      )
  for r in rows:
    r["pretrain_s"] = round(times.get(f"pretrain {r['arm']}", 0.0), 1)
  gate_pct = min(pcts)
  mde, gate = design(rows, results, gate_pct)
  lin_mde, lin_gate = design(rows, results, gate_pct, "linear")
  out = {
    "bench_version": BENCH_VERSION,
    "population": args.population,
    "args": vars(args),
    "recipe": RECIPE,
    "mde": mde,
    "gate_labels": gate_pct,
    "gate": verdict(mde, gate),
    "gate_detail": gate,
    "linear_mde": lin_mde,
    "linear_gate": verdict(lin_mde, lin_gate),
    "linear_gate_detail": lin_gate,
    "rows": rows,
    "times": times,
    "wall_s": round(time.time() - start, 1),
  }
  print_table(rows, out)
  print(
    "\nwall time: "
    + ", ".join(f"{k} {v:.0f}s" for k, v in times.items())
    + f"; total {out['wall_s']:.0f}s"
  )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=2)
  return out


if __name__ == "__main__":
  main()
