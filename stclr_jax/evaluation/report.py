"""Cross-validation reports: accuracies, confusion matrices (JSON and a PNG
in the style of the paper's Fig. 6), the embedding export, and an
evaluation's ``report.json`` over its runs (:func:`write_report`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from stclr_jax.evaluation import probes


def confusion(
  labels: np.ndarray, preds: np.ndarray, num_classes: int
) -> np.ndarray:
  """Counts, ground truth on rows and prediction on columns."""
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (np.asarray(labels), np.asarray(preds)), 1)
  return cm


def accuracy(cm: np.ndarray) -> float:
  return float(np.trace(cm) / max(cm.sum(), 1))


def summarize(
  folds: Sequence[dict], class_names: Sequence[str], key: str = "confusion"
) -> dict:
  """Per-fold accuracy, mean and std over folds (population std, ddof=0),
  and per-class accuracy from the confusion matrix summed over folds."""
  cms = [np.asarray(f[key]) for f in folds]
  accs = [accuracy(cm) for cm in cms]
  total = np.sum(cms, axis=0)
  per_class = {
    name: (float(total[i, i] / total[i].sum()) if total[i].sum() else None)
    for i, name in enumerate(class_names)
  }
  return {
    "fold_accuracy": {str(f["fold"]): a for f, a in zip(folds, accs)},
    "mean": float(np.mean(accs)),
    "std": float(np.std(accs)),
    "per_class_accuracy": per_class,
    "confusion": total.tolist(),
  }


def write_json(path: str, obj) -> None:
  """Writes atomically (a crash never leaves half a file)."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def confusion_png(
  cm, class_names: Sequence[str], path: str, title: str = ""
) -> str:
  """Row-normalised confusion matrix (percent of each true class), counts
  in brackets; ground truth on rows, prediction on columns (Fig. 6)."""
  plt = _pyplot()
  cm = np.asarray(cm, np.float64)
  rows = cm.sum(1, keepdims=True)
  pct = np.divide(100 * cm, rows, out=np.zeros_like(cm), where=rows > 0)
  n = len(class_names)
  fig, ax = plt.subplots(figsize=(1.2 * n + 2, 1.1 * n + 1.5))
  ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
  for i in range(n):
    for j in range(n):
      ax.text(
        j,
        i,
        f"{pct[i, j]:.1f}\n({int(cm[i, j])})",
        ha="center",
        va="center",
        fontsize=8,
        color="white" if pct[i, j] > 60 else "black",
      )
  ax.set_xticks(range(n), class_names, rotation=45, ha="right")
  ax.set_yticks(range(n), class_names)
  ax.set_xlabel("Predicted")
  ax.set_ylabel("Ground truth")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def pca_2d(x: np.ndarray) -> np.ndarray:
  """Projection on the first two principal components."""
  x = np.asarray(x, np.float64)
  x = x - x.mean(0)
  _, _, vt = np.linalg.svd(x, full_matrices=False)
  return x @ vt[:2].T


def export_embeddings(
  prefix: str,
  features,
  labels,
  subjects,
  video_ids,
  class_names: Sequence[str],
  title: str = "",
) -> dict:
  """``prefix.npz`` (features, labels, subjects, video ids, class names)
  and ``prefix.png``: the first two principal components, coloured by
  class."""
  np.savez_compressed(
    f"{prefix}.npz",
    features=np.asarray(features),
    labels=np.asarray(labels),
    subjects=np.asarray(subjects),
    video_ids=np.asarray(video_ids),
    class_names=np.asarray(class_names),
  )
  plt = _pyplot()
  xy = pca_2d(features)
  fig, ax = plt.subplots(figsize=(6, 5))
  for c, name in enumerate(class_names):
    m = np.asarray(labels) == c
    ax.scatter(xy[m, 0], xy[m, 1], s=10, label=name, alpha=0.8)
  ax.legend(fontsize=8, markerscale=2)
  ax.set_xlabel("PC 1")
  ax.set_ylabel("PC 2")
  ax.set_title(title or "encoder features (PCA)")
  fig.tight_layout()
  fig.savefig(f"{prefix}.png", dpi=120)
  plt.close(fig)
  return {"npz": f"{prefix}.npz", "png": f"{prefix}.png"}


def write_report(config, workdir, fold_results, class_names, init_info):
  """``report.json`` and ``confusion.png`` over the folds run."""
  ev = config.eval
  rep = {
    "init": init_info,
    "data": config.data.name,
    "encoder": config.model.encoder,
    "width": config.model.width,
    "fold_by": ev.fold_by,
    "num_folds": ev.num_folds,
    "folds_run": sorted({r["fold"] for r in fold_results}),
    "runs": [r.get("unit", r["fold"]) for r in fold_results],
    "label_fraction": ev.label_fraction,
    "class_names": class_names,
    "linear": summarize(
      [
        {
          "fold": r.get("unit", r["fold"]),
          "confusion": r["linear"]["confusion"],
        }
        for r in fold_results
      ],
      class_names,
    ),
  }
  final = "linear"
  if (
    fold_results
    and all("finetune" in r for r in fold_results)
    and not ev.linear_only
  ):
    rep["finetune"] = summarize(
      [
        {
          "fold": r.get("unit", r["fold"]),
          "confusion": r["finetune"]["confusion"],
        }
        for r in fold_results
      ],
      class_names,
    )
    final = "finetune"
  rep["final"] = final
  heldout = {}
  for phase in ("linear", "finetune"):
    accs = {
      str(r.get("unit", r["fold"])): r[phase]["heldout_accuracy"]
      for r in fold_results
      if "heldout_accuracy" in r.get(phase, {})
    }
    if accs and len(accs) == len(fold_results):
      heldout[phase] = {
        "run_accuracy": accs,
        "mean": float(np.mean(list(accs.values()))),
      }
  if heldout:
    heldout["population"] = fold_results[0]["heldout"]
    rep["heldout"] = heldout
  emb = os.path.join(workdir, "embeddings.npz")
  if os.path.exists(emb):
    d = np.load(emb)
    # What the initial encoder's frozen features tell about the subject
    # (ridge, leave one class out; chance 1 / subjects).
    rep["identity_probe"] = {
      "accuracy": probes.identity_accuracy(
        d["features"], d["labels"], d["subjects"]
      ),
      "subjects": len(np.unique(d["subjects"])),
    }
  rep["confusion_png"] = confusion_png(
    rep[final]["confusion"],
    class_names,
    os.path.join(workdir, "confusion.png"),
    title=(
      f"{final}, {len(fold_results)} folds: "
      f"{100 * rep[final]['mean']:.1f} ± {100 * rep[final]['std']:.1f}%"
    ),
  )
  write_json(os.path.join(workdir, "report.json"), rep)
  return rep
