"""Closed-form ridge probes (stclr_jax/evaluation/probes.py)."""

import numpy as np

from stclr_jax.evaluation import probes


def test_ridge_dual_form_equals_the_primal_solution():
  rng = np.random.default_rng(0)
  x, xt = rng.normal(size=(30, 50)), rng.normal(size=(12, 50))
  y = rng.integers(0, 4, 30)
  lam = 0.3
  # Primal: w = (A'A + lam n I)^-1 A' (Y - mean Y) on standardised A.
  mean, std = x.mean(0), x.std(0) + 1e-6
  a, b = (x - mean) / std, (xt - mean) / std
  t = np.eye(4)[y]
  w = np.linalg.solve(a.T @ a + lam * 30 * np.eye(50), a.T @ (t - t.mean(0)))
  np.testing.assert_array_equal(
    probes.ridge_predict(x, y, xt, 4, lam), (b @ w).argmax(1)
  )


def test_identity_probe_reads_identity_not_expression():
  rng = np.random.default_rng(1)
  subjects = np.repeat(np.arange(1, 11), 6)
  labels = np.tile(np.arange(6), 10)
  noise = rng.normal(0, 0.1, (60, 16))
  who = np.eye(10)[subjects - 1] @ rng.normal(size=(10, 16))
  what = np.eye(6)[labels] @ rng.normal(size=(6, 16))
  assert probes.identity_accuracy(who + noise, labels, subjects) == 1.0
  # Expression only: every subject looks alike.
  assert probes.identity_accuracy(what + noise, labels, subjects) <= 0.3
  assert np.isnan(probes.identity_accuracy(who, labels, np.ones(60)))
