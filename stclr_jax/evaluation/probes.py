"""Closed-form ridge probes of frozen features: what a representation tells
about the expression and about the subject, with no optimiser setting that
could hide or fake a result (the protocol's report, bench/).

* :func:`ridge_predict`: ridge regression on one-hot targets, features
  standardised on the training part, solved in the dual (n x n) form;
* :func:`identity_accuracy`: the subject predicted from a video, trained on
  the subject's other videos (leave one class out: each expression's videos
  in turn are the test part, so the probe never sees the test video's
  expression of that subject).
"""

from __future__ import annotations

import numpy as np


def ridge_predict(train_x, train_y, test_x, num_classes: int, lam: float):
  """Predicted classes of ``test_x``: ridge regression of the one-hot
  ``train_y`` (centred) on standardised features, strength ``lam`` per
  training example, argmax."""
  train_x = np.asarray(train_x, np.float64)
  test_x = np.asarray(test_x, np.float64)
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  a = (train_x - mean) / std
  b = (test_x - mean) / std
  y = np.eye(num_classes)[np.asarray(train_y)]
  alpha = np.linalg.solve(
    a @ a.T + lam * len(a) * np.eye(len(a)), y - y.mean(0)
  )
  return (b @ (a.T @ alpha)).argmax(1)


def identity_accuracy(features, labels, subjects, lam: float = 0.01) -> float:
  """Subject-id accuracy of a ridge probe, leave one class out (the mean
  over classes); NaN with fewer than 2 subjects."""
  subjects = np.asarray(subjects)
  labels = np.asarray(labels)
  ids = np.searchsorted(np.unique(subjects), subjects)
  k = int(ids.max()) + 1
  if k < 2:
    return float("nan")
  accs = []
  for c in np.unique(labels):
    held = labels == c
    pred = ridge_predict(features[~held], ids[~held], features[held], k, lam)
    accs.append(np.mean(pred == ids[held]))
  return float(np.mean(accs))
