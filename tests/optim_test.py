"""Optimisers and schedules of stclr_jax.optim: SGD against PyTorch's, the
warmup/cosine/constant schedules against hand formulas, and LARS on the real
model's parameter state against the textbook update (kernels decayed and
trust-scaled; BatchNorm scales and biases and dense biases neither)."""

import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from stclr_jax import models
from stclr_jax import optim as optim_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# optax.lars's default trust coefficient, SimCLR's ``eeta``.
ETA = 1e-3


def _optim(**overrides):
  o = ml_collections.ConfigDict(
    dict(
      name="sgd",
      learning_rate=0.1,
      momentum=0.9,
      weight_decay=1e-4,
      schedule="constant",
      warmup_epochs=0.0,
      grad_clip_norm=0.0,
    )
  )
  o.update(overrides)
  return o


def _pod_config():
  path = os.path.join(ROOT, "configs", "stclr_pod.py")
  spec = importlib.util.spec_from_file_location("stclr_pod", path)
  m = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(m)
  return m.get_config()


def _flat(tree):
  """{path of keys: numpy leaf} of an nnx.State or a nested dict."""
  if isinstance(tree, nnx.State):
    tree = nnx.to_pure_dict(tree)
  return {
    tuple(k.key for k in path): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def _param_kinds(model):
  """{parameter path: kind}, from the type of the module that owns it (not
  from the parameter's name, which is what the mask under test looks at).
  The model's convolutions (VideoConv) have no bias."""
  kinds = {}
  for path, node in nnx.iter_graph(model):
    if isinstance(node, (models.VideoConv, nnx.Linear)):
      kinds[(*path, "kernel")] = "kernel"
    if isinstance(node, nnx.Linear):
      kinds[(*path, "bias")] = "dense_bias"
    if isinstance(node, models.BatchNorm):
      kinds[(*path, "scale")] = "bn_scale"
      kinds[(*path, "bias")] = "bn_bias"
  return kinds


@pytest.fixture(scope="module")
def pod_model():
  """The pod (LARS) config's encoder + head at width 0.25, split as the train
  step splits it; parameters perturbed so that no norm is 0 (a zero BatchNorm
  bias would get trust ratio 1 and hide a wrong mask)."""
  c = _pod_config()
  assert c.optim.name == "lars"
  rngs = nnx.Rngs(0)
  encoder = models.make_encoder(
    c.model.encoder, width=0.25, dtype=jnp.float32, bn_groups=1, rngs=rngs
  )
  model = models.ContrastiveModel(
    encoder,
    proj_hidden=c.model.proj_hidden or None,
    proj_dim=c.model.proj_dim,
    rngs=rngs,
  )
  _, params, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
  rng = np.random.default_rng(0)
  params = jax.tree.map(
    lambda p: np.asarray(p)
    + 0.05 * rng.standard_normal(p.shape).astype(p.dtype),
    params,
  )
  return c, params, _param_kinds(model)


def _random_like(params, seed, scale):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda p: (scale * rng.standard_normal(p.shape)).astype(p.dtype), params
  )


def _assert_close(actual, expected, path):
  np.testing.assert_allclose(
    actual,
    expected,
    rtol=2e-5,
    atol=1e-6 * np.abs(expected).max(),
    err_msg=str(path),
  )


# --------------------------------------------------------------------- SGD


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_sgd_matches_torch_sgd_with_weight_decay_and_momentum(schedule):
  """Weight decay is added to the gradient before momentum, as PyTorch's
  ``SGD(weight_decay=..., momentum=...)``, on every parameter (biases too);
  the learning rate may change every step."""
  torch = pytest.importorskip("torch")
  o = _optim(
    learning_rate=0.5,
    momentum=0.9,
    weight_decay=0.05,
    schedule=schedule,
    warmup_epochs=1.0,
  )
  lr_fn = optim_lib.schedule(o, steps_per_epoch=2, total_steps=6)
  tx = optim_lib.make_optimizer(o, lr_fn)
  rng = np.random.default_rng(0)
  w0 = {
    "kernel": rng.standard_normal((3, 4)).astype(np.float32),
    "bias": rng.standard_normal((4,)).astype(np.float32),
  }
  grads = [
    {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in w0.items()}
    for _ in range(5)
  ]

  params = jax.tree.map(jnp.asarray, w0)
  state = tx.init(params)
  tparams = {k: torch.tensor(v, requires_grad=True) for k, v in w0.items()}
  topt = torch.optim.SGD(
    list(tparams.values()), lr=0.0, momentum=0.9, weight_decay=0.05
  )
  for step, g in enumerate(grads):
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)
    for group in topt.param_groups:
      group["lr"] = float(lr_fn(step))
    for k, p in tparams.items():
      p.grad = torch.tensor(g[k])
    topt.step()
    for k in w0:
      np.testing.assert_allclose(
        np.asarray(params[k]),
        tparams[k].detach().numpy(),
        rtol=1e-5,
        atol=1e-6,
        err_msg=f"{k} {step}",
      )


# --------------------------------------------------------------- schedules


def test_warmup_then_cosine_schedule_values():
  # 10 warmup epochs of 5 steps: 50 warmup steps, then cosine to 0 at 250.
  lr = 1.2
  fn = optim_lib.schedule(
    _optim(learning_rate=lr, schedule="cosine", warmup_epochs=10),
    steps_per_epoch=5,
    total_steps=250,
  )

  def hand(t):
    if t < 50:
      return lr * t / 50
    return lr * 0.5 * (1 + math.cos(math.pi * (t - 50) / 200))

  assert float(fn(0)) == 0.0
  np.testing.assert_allclose(float(fn(25)), lr / 2, rtol=1e-6)
  np.testing.assert_allclose(float(fn(50)), lr, rtol=1e-6)
  np.testing.assert_allclose(float(fn(150)), lr / 2, rtol=1e-6)
  np.testing.assert_allclose(float(fn(250)), 0.0, atol=1e-7)
  steps = np.arange(251)
  np.testing.assert_allclose(
    np.asarray(fn(steps)), [hand(t) for t in steps], rtol=1e-5, atol=1e-7
  )


def test_cosine_schedule_without_warmup_starts_at_the_peak():
  fn = optim_lib.schedule(
    _optim(learning_rate=0.3, schedule="cosine"),
    steps_per_epoch=10,
    total_steps=100,
  )
  for t in (0, 25, 50, 100):
    np.testing.assert_allclose(
      float(fn(t)),
      0.3 * 0.5 * (1 + math.cos(math.pi * t / 100)),
      rtol=1e-5,
      atol=1e-7,
    )


def test_constant_schedule_without_warmup_is_constant():
  fn = optim_lib.schedule(
    _optim(learning_rate=1e-3), steps_per_epoch=10, total_steps=100
  )
  np.testing.assert_allclose(np.asarray(fn(np.arange(200))), 1e-3, rtol=1e-6)


def test_constant_schedule_with_warmup_ramps_linearly_then_holds():
  fn = optim_lib.schedule(
    _optim(learning_rate=0.2, warmup_epochs=2),
    steps_per_epoch=5,
    total_steps=100,
  )
  steps = np.arange(200)
  np.testing.assert_allclose(
    np.asarray(fn(steps)),
    0.2 * np.minimum(steps / 10, 1.0),
    rtol=1e-6,
    atol=1e-8,
  )
  assert float(fn(0)) == 0.0


def test_unknown_schedule_is_an_error():
  with pytest.raises(ValueError, match="schedule: unknown 'step'"):
    optim_lib.schedule(_optim(schedule="step"), 10, 100)


def test_unknown_optimizer_is_an_error():
  with pytest.raises(ValueError, match="optim.name: unknown 'adagrad'"):
    optim_lib.make_optimizer(
      _optim(name="adagrad"), optax.constant_schedule(0.1)
    )


# -------------------------------------------------------------------- LARS


def test_lars_mask_marks_exactly_the_kernels_of_the_model(pod_model):
  _, params, kinds = pod_model
  n_kernels = sum(k == "kernel" for k in kinds.values())
  assert n_kernels > 0
  assert {"kernel", "bn_scale", "bn_bias", "dense_bias"} == set(kinds.values())
  # The state as the train step passes it, and the same as a pure dict.
  for tree in (params, nnx.to_pure_dict(params)):
    mask = _flat(optim_lib._not_bn_or_bias(tree))
    assert set(mask) == set(kinds)
    assert sum(bool(m) for m in mask.values()) == n_kernels
    for path, kind in kinds.items():
      assert bool(mask[path]) == (kind == "kernel"), path


def test_lars_mask_without_a_kernel_is_an_error():
  bn_only = {"bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}}
  with pytest.raises(ValueError, match="kernel"):
    optim_lib._not_bn_or_bias(bn_only)


def test_lars_mask_decides_unknown_names_by_rank():
  tree = {
    "embed": {"embedding": jnp.ones((5, 3))},
    "norm": {"gamma": jnp.ones(3)},
    "conv": {"kernel": jnp.ones((3, 3, 2, 2)), "bias": jnp.ones(2)},
  }
  mask = _flat(optim_lib._not_bn_or_bias(tree))
  assert mask == {
    ("embed", "embedding"): True,
    ("norm", "gamma"): False,
    ("conv", "kernel"): True,
    ("conv", "bias"): False,
  }


def _lars_reference(w, grads, lrs, *, weight_decay, momentum, adapt):
  """Updates of one parameter under textbook LARS, in float64.

  This is optax.lars's convention, which is SimCLR's LARSOptimizer (with
  classic momentum) exactly: ``d = g + wd * w``; trust ratio
  ``eta * ||w|| / ||d||`` (1 when either norm is 0); ``v = momentum * v +
  lr * ratio * d``; ``w -= v``: the learning rate and trust ratio are
  applied before momentum. You et al. 2017 (Algorithm 1) use the same update
  with ``||g|| + wd * ||w||`` in the ratio's denominator instead of
  ``||g + wd * w||``. Parameters with ``adapt=False`` get neither decay nor
  trust ratio: plain momentum SGD.
  """
  w = np.asarray(w, np.float64)
  v = np.zeros_like(w)
  updates = []
  for g, lr in zip(grads, lrs):
    g = np.asarray(g, np.float64)
    d = g + weight_decay * w if adapt else g
    ratio = 1.0
    if adapt:
      wn, dn = np.linalg.norm(w), np.linalg.norm(d)
      if wn > 0 and dn > 0:
        ratio = ETA * wn / dn
    v = momentum * v + lr * ratio * d
    updates.append(-v)
    w = w - v
  return updates


def test_lars_kernel_update_is_the_textbook_formula(pod_model):
  """Two LARS steps with the pod config on the real model's parameter state
  (an nnx.State, as the train step passes it), the learning rate halved at
  the second step. Kernels are decayed and trust-scaled; BatchNorm scales,
  BatchNorm biases and dense biases get plain momentum SGD (``-lr * g`` at
  the first step). The gradients are drawn at the scale of the decay term
  (the pod's weight decay is 1e-6), so that a missing decay shows."""
  c, params, kinds = pod_model
  o = c.optim
  assert o.weight_decay > 0 and o.momentum > 0 and not o.grad_clip_norm
  lr = o.learning_rate
  lr_fn = optax.linear_schedule(lr, lr / 2, transition_steps=1)
  tx = optim_lib.make_optimizer(o, lr_fn)
  update = jax.jit(tx.update)
  g1 = _random_like(params, 1, 0.1 * o.weight_decay)
  g2 = _random_like(params, 2, 0.1 * o.weight_decay)
  state = tx.init(params)
  u1, state = update(g1, state, params)
  params1 = jax.tree.map(lambda p, u: p + np.asarray(u), params, u1)
  u2, _ = update(g2, state, params1)

  w, f1, f2 = _flat(params), _flat(g1), _flat(g2)
  a1, a2 = _flat(u1), _flat(u2)
  assert set(a1) == set(kinds)
  for path, kind in kinds.items():
    if kind == "kernel":  # the decay term is not negligible
      assert o.weight_decay * np.linalg.norm(w[path]) > 0.2 * np.linalg.norm(
        f1[path]
      ), path
    e1, e2 = _lars_reference(
      w[path],
      [f1[path], f2[path]],
      [lr, lr / 2],
      weight_decay=o.weight_decay,
      momentum=o.momentum,
      adapt=kind == "kernel",
    )
    _assert_close(a1[path], e1, (kind, path, "step 1"))
    _assert_close(a2[path], e2, (kind, path, "step 2"))
    if kind != "kernel":
      _assert_close(a1[path], -lr * f1[path], (kind, path, "plain SGD"))


def test_adamw_decays_kernels_only_with_its_betas():
  """``adamw`` (masked autoencoding's): one step against the textbook
  update, Adam's bias-corrected moments with b2 = optim.b2, plus lr x wd x p
  on parameters of 2 or more dimensions only (biases, LayerNorm scales and
  the 1-D mask token are not decayed)."""
  o = _optim(name="adamw", learning_rate=0.1, weight_decay=0.05)
  o.b2 = 0.95
  tx = optim_lib.make_optimizer(o, 0.1)
  params = {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full((3,), 2.0)}
  grads = {"kernel": jnp.full((2, 3), 0.5), "bias": jnp.full((3,), 0.5)}
  updates, _ = tx.update(grads, tx.init(params), params)
  # After one step m_hat = g and v_hat = g^2: the Adam part is -lr g/(|g|+eps).
  adam = -0.1 * 0.5 / (0.5 + 1e-8)
  np.testing.assert_allclose(updates["bias"], adam, rtol=1e-6)
  np.testing.assert_allclose(
    updates["kernel"], adam - 0.1 * 0.05 * 2.0, rtol=1e-6
  )
  # b2 is the config's: the second step differs from b2 = 0.999's.
  o2 = _optim(name="adamw", learning_rate=0.1, weight_decay=0.0)
  o2.b2 = 0.95
  o3 = _optim(name="adamw", learning_rate=0.1, weight_decay=0.0)
  outs = []
  for opt in (o2, o3):
    t = optim_lib.make_optimizer(opt, 0.1)
    s = t.init(params)
    _, s = t.update(grads, s, params)
    u, _ = t.update(
      {"kernel": grads["kernel"] * 3, "bias": grads["bias"]}, s, params
    )
    outs.append(float(u["kernel"][0, 0]))
  assert outs[0] != pytest.approx(outs[1], rel=1e-3)
