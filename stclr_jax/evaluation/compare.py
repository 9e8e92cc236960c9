"""Comparing evaluations run by :func:`protocol.evaluate` on the same runs
(folds x label subsets x training seeds) with a held-out population
(``eval.heldout_data``): the figures the benchmark (bench/
synthetic_protocol.py) and the demo print.

* :func:`load_runs`: per run, its fold-test accuracy and its per-video
  correctness on the held-out population, read from the evaluation's
  fold files and stored logits;
* :func:`summary`: an evaluation's held-out accuracy, mean over runs with
  its t-interval and a subject-level bootstrap interval;
* :func:`paired`: the difference of two evaluations over their common runs,
  paired t-interval and paired subject-level bootstrap.

Accuracies and differences are fractions; every interval a 95% CI.
"""

from __future__ import annotations

import os

import numpy as np

from stclr_jax.evaluation import stats


def load_runs(workdir: str, report: dict, phase: str = "finetune") -> dict:
  """``{run name: {...}}`` of an evaluation workdir: ``fold_acc`` (the
  fold's test part), ``linear_fold_acc``, and with a held-out population
  ``correct`` and ``linear_correct`` (per held-out video) and ``subjects``.
  ``phase``: the final phase, ``"finetune"`` or ``"linear"`` (a linear-only
  evaluation: then ``correct`` is the linear layer's)."""
  import json

  runs = {}
  for name in report["runs"]:
    name = name if isinstance(name, str) else f"fold_{name:02d}"
    with open(os.path.join(workdir, "folds", f"{name}.json")) as f:
      fold = json.load(f)
    logits = np.load(os.path.join(workdir, "logits", f"{name}.npz"))
    r = {
      "fold_acc": fold[phase]["accuracy"],
      "linear_fold_acc": fold["linear"]["accuracy"],
      "train_videos": fold["num_train"],
      "train_subjects": fold.get("num_train_subjects"),
    }
    if "heldout_labels" in logits:
      labels = logits["heldout_labels"]
      r["correct"] = logits[f"{phase}_heldout"].argmax(-1) == labels
      r["linear_correct"] = logits["linear_heldout"].argmax(-1) == labels
      r["subjects"] = logits["heldout_subjects"]
    runs[name] = r
  return runs


def heldout_accuracies(runs: dict, key: str = "correct") -> dict:
  """``{run: held-out accuracy}`` of the runs that were scored on it."""
  return {
    n: float(np.mean(r[key])) for n, r in sorted(runs.items()) if key in r
  }


def summary(runs: dict, key: str = "correct") -> dict:
  """Held-out accuracy: the mean over runs, a t-interval over runs (the
  spread of training and of the labelled subsets) and a subject-level
  bootstrap of the per-video correctness averaged over the runs' models
  (the sampling of held-out subjects); NaN bounds with one run."""
  accs = heldout_accuracies(runs, key)
  if not accs:
    return {}
  names = list(accs)
  mean, lo, hi = (
    stats.mean_ci(list(accs.values()))
    if len(accs) > 1
    else (
      accs[names[0]],
      float("nan"),
      float("nan"),
    )
  )
  _, blo, bhi = stats.accuracy_ci_by_subject(
    np.stack([runs[n][key] for n in names]), runs[names[0]]["subjects"], seed=0
  )
  return {
    "mean": mean,
    "ci95": [lo, hi],
    "bootstrap_ci95": [blo, bhi],
    "runs": len(names),
    "run_accuracy": accs,
  }


def paired(a: dict, b: dict, key: str = "correct") -> dict | None:
  """``a - b`` on the held-out population over the runs both have (paired
  by name: the same fold, label subset and training seed): mean, paired
  t-interval, std of the differences (ddof 1), p value, and the paired
  subject-level bootstrap interval. None with fewer than 2 common runs."""
  names = sorted(n for n in set(a) & set(b) if key in a[n] and key in b[n])
  if len(names) < 2:
    return None
  acc_a = [float(np.mean(a[n][key])) for n in names]
  acc_b = [float(np.mean(b[n][key])) for n in names]
  t = stats.paired_diff_ci(acc_a, acc_b)
  _, lo, hi = stats.paired_bootstrap_diff(
    np.stack([a[n][key] for n in names]),
    np.stack([b[n][key] for n in names]),
    a[names[0]]["subjects"],
    seed=0,
  )
  return {
    "diff": t["mean"],
    "ci95": [t["low"], t["high"]],
    "std": t["std"],
    "p": t["p"],
    "bootstrap_ci95": [lo, hi],
    "runs": len(names),
  }
