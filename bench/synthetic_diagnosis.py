"""What do pixels and encoder features tell about expression and identity?

The diagnosis behind the synthetic protocol's result (BENCHMARKS.md). Two
closed-form probes, so no optimiser setting can hide or fake a result:

* expression: ridge classification (one-hot targets, features standardised
  on the training part) over the subject-independent folds of the protocol
  (``subject_folds(subjects, 10, seed 0)``, all 10 folds);
* identity: the same ridge predicting the subject, trained on 5 of each
  subject's videos and tested on the 6th (leave one expression out).

Inputs: a data set's pixels (``--data=faces`` etc.: the last frame minus the
first, grey, block-averaged to ``--pixels`` px, i.e. apex minus neutral; and
the last frame alone), and/or ``embeddings.npz`` files written by
``--mode=evaluate`` (the frozen encoder's features of every video).

  python bench/synthetic_diagnosis.py --data=default,faces \\
      --embeddings=workdirs/protocol/eval_stclr/embeddings.npz
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from stclr_jax.evaluation import folds as folds_lib  # noqa: E402
from stclr_jax.evaluation import probes  # noqa: E402


def expression_accuracy(x, labels, subjects, lam):
  accs = []
  for test in folds_lib.subject_folds(subjects, 10, 0):
    train = folds_lib.train_indices(test, len(x))
    pred = probes.ridge_predict(x[train], labels[train], x[test], 6, lam)
    accs.append(np.mean(pred == labels[test]))
  return 100 * np.mean(accs), 100 * np.std(accs)


def pixel_features(data: str, data_dir: str, px: int):
  import tensorflow_datasets as tfds

  from stclr_jax.data import datasets  # noqa: F401  (registers builders)

  ds = tfds.load(
    f"synthetic_expressions/{data}", split="train", data_dir=data_dir or None
  )
  diff, apex, labels, subjects = [], [], [], []
  for ex in tfds.as_numpy(ds):
    grey = ex["video"].astype(np.float32).mean(-1) / 255
    k = grey.shape[1] // px
    pool = lambda f, k=k: (
      f[: k * px, : k * px].reshape(px, k, px, k).mean((1, 3))
    )
    diff.append((pool(grey[-1]) - pool(grey[0])).ravel())
    apex.append(pool(grey[-1]).ravel())
    labels.append(ex["label"])
    subjects.append(ex["subject_id"])
  return (np.stack(diff), np.stack(apex), np.array(labels), np.array(subjects))


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  p.add_argument(
    "--data",
    default="default,faces",
    help="synthetic_expressions configs for the pixel probes",
  )
  p.add_argument("--data_dir", default="")
  p.add_argument("--pixels", type=int, default=16)
  p.add_argument(
    "--embeddings", default="", help="comma-separated embeddings.npz files"
  )
  p.add_argument(
    "--lam",
    type=float,
    default=1.0,
    help="ridge strength (pixels); embeddings use 0.01",
  )
  args = p.parse_args(argv)
  print(
    "| input | expression, 10 folds by subject | subject id, "
    "leave one expression out |"
  )
  print("| --- | --- | --- |")
  for data in filter(None, args.data.split(",")):
    diff, apex, labels, subjects = pixel_features(
      data, args.data_dir, args.pixels
    )
    for name, x in (("apex - neutral", diff), ("apex", apex)):
      m, s = expression_accuracy(x, labels, subjects, args.lam)
      ident = 100 * probes.identity_accuracy(x, labels, subjects, args.lam)
      print(
        f"| {data}: pixels, {name}, {args.pixels}x{args.pixels} grey | "
        f"{m:.1f} ± {s:.1f}% | {ident:.1f}% |",
        flush=True,
      )
  for path in filter(None, args.embeddings.split(",")):
    d = np.load(path)
    x, labels, subjects = d["features"], d["labels"], d["subjects"]
    m, s = expression_accuracy(x, labels, subjects, 0.01)
    ident = 100 * probes.identity_accuracy(x, labels, subjects, 0.01)
    print(
      f"| {path} ({x.shape[1]}-d) | {m:.1f} ± {s:.1f}% | {ident:.1f}% |",
      flush=True,
    )
  print("chance: expression 16.7%; subject id 1/subjects")


if __name__ == "__main__":
  main()
