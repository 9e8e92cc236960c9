"""The linear phase on frozen features (stclr_jax/evaluation/linear.py)."""

import ml_collections
import numpy as np
from _helpers_jit import count_compiles

from stclr_jax.evaluation import linear


def test_linear_phase_learns_separable_features():
  rng = np.random.default_rng(0)
  centres = rng.normal(0, 1, (6, 16))
  labels = rng.integers(0, 6, 300)
  feats = centres[labels] + rng.normal(0, 0.3, (300, 16))
  ev = ml_collections.ConfigDict(
    {"plateau_factor": 0.1, "plateau_patience": 3, "plateau_rtol": 1e-4}
  )
  params, log = linear.train_linear(
    feats[:200],
    labels[:200],
    6,
    epochs=20,
    batch_size=16,
    learning_rate=1e-2,
    ev=ev,
    seed=0,
  )
  assert params["w"].shape == (16, 6) and params["b"].shape == (6,)
  assert log[-1]["loss"] < 0.5 * log[0]["loss"]
  pred = linear.linear_predict(params, feats[200:])
  assert np.mean(pred == labels[200:]) > 0.9


def test_linear_phase_standardises_and_folds_into_one_linear_layer():
  # Pooled-ReLU-like features: a large offset and a small spread per
  # dimension (and one dead dimension), with the classes in the spread.
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 6, 400)
  centres = rng.normal(0, 1, (6, 16))
  spread = centres[labels] + rng.normal(0, 0.3, (400, 16))
  feats = (0.6 + 0.02 * spread).astype(np.float32)
  feats[:, 5] = 0.25  # constant: must not divide by zero
  ev = ml_collections.ConfigDict(
    {"plateau_factor": 0.1, "plateau_patience": 3, "plateau_rtol": 1e-4}
  )
  kw = dict(epochs=10, batch_size=16, learning_rate=1e-3, ev=ev, seed=0)
  std_params, std_log = linear.train_linear(
    feats[:300], labels[:300], 6, standardize=True, **kw
  )
  _, raw_log = linear.train_linear(feats[:300], labels[:300], 6, **kw)
  # The standardised run learns; the same run on raw features stays near
  # ln 6, which is what the standardisation is for.
  assert std_log[-1]["accuracy"] > 0.9 and std_log[-1]["loss"] < 0.5 * np.log(6)
  assert raw_log[-1]["loss"] > 0.9 * np.log(6)
  # The returned layer applies to raw features: its logits equal those of
  # the trained layer on the standardised features (same seed, same steps).
  mean, std = feats[:300].mean(0), feats[:300].std(0)
  std[5] = 1.0
  z = (feats[300:] - mean) / std
  w_std = std_params["w"] * std[:, None]
  b_std = std_params["b"] + (mean / std) @ w_std
  raw_logits = feats[300:] @ std_params["w"] + std_params["b"]
  np.testing.assert_allclose(raw_logits, z @ w_std + b_std, atol=2e-4)
  pred = linear.linear_predict(std_params, feats[300:])
  assert np.mean(pred == labels[300:]) > 0.9


def test_linear_phase_compiles_once_for_every_fold():
  rng = np.random.default_rng(2)
  ev = ml_collections.ConfigDict({"schedule": "cosine"})
  kw = dict(epochs=3, batch_size=16, learning_rate=1e-3, ev=ev)

  def fold(seed):
    feats = rng.normal(0, 1, (100, 16)).astype(np.float32)
    return linear.train_linear(
      feats, rng.integers(0, 6, 100), 6, seed=seed, **kw
    )

  fold(0)
  with count_compiles() as compiled:
    params, log = fold(1)
  assert len(compiled) == 0
  assert len(log) == 3 and np.isfinite(params["w"]).all()


def test_a_step_budget_is_the_same_at_every_set_size():
  """``steps``: the same number of optimisation steps on 7 videos as on
  200 (a set smaller than the batch is drawn with repeats)."""
  rng = np.random.default_rng(1)
  centres = rng.normal(0, 1, (6, 8))
  ev = ml_collections.ConfigDict({"schedule": "cosine"})
  for n in (7, 200):
    labels = np.arange(n) % 6
    feats = centres[labels] + rng.normal(0, 0.1, (n, 8))
    params, log = linear.train_linear(
      feats,
      labels,
      6,
      epochs=99,  # ignored with a step budget
      batch_size=16,
      learning_rate=1e-1,
      ev=ev,
      seed=0,
      steps=25,
    )
    assert log[-1]["step"] == 25
    per_epoch = max(1, n // 16)
    assert [e["step"] for e in log] == [
      min(s + per_epoch, 25) for s in range(0, 25, per_epoch)
    ]
    assert log[0]["lr"] == 1e-1 and log[-1]["lr"] < 1e-1
    assert np.mean(linear.linear_predict(params, feats) == labels) == 1.0
