"""The fine-tuning phase's runner (stclr_jax/evaluation/runner.py):
BatchNorm statistics re-estimated from a pass in training mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers_jit import count_compiles
from flax import nnx

from configs import finetune_synthetic
from stclr_jax import mesh as mesh_lib
from stclr_jax.evaluation import runner as runner_lib
from stclr_jax.models import factory, layers


@pytest.fixture(scope="module")
def runner_and_vars():
  config = finetune_synthetic.get_config("tiny=1")
  mesh = mesh_lib.make_mesh()
  model = runner_lib.Classifier(
    factory.create_model(config, mesh.size).encoder, 6, rngs=nnx.Rngs(1)
  )
  runner = runner_lib.Runner(model, mesh, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25))
  variables = (
    jax.device_get(nnx.state(model, nnx.Param)),
    jax.device_get(nnx.state(model, nnx.BatchStat)),
  )
  return model, runner, variables, config


def _batch(rng, n, pad, config):
  t, s = config.data.clip_len, config.data.size
  video = rng.uniform(0, 1, (n + pad, 1, t, s, s, 3)).astype(np.float32)
  video[n:] = 1e3  # padding: must not count
  return {"video": video, "mask": np.r_[np.ones(n), np.zeros(pad)]}


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def test_reestimate_equals_running_statistics_of_a_training_pass(
  runner_and_vars,
):
  model, runner, variables, config = runner_and_vars
  momenta = {
    m.momentum
    for _, m in nnx.iter_modules(model)
    if isinstance(m, layers.BatchNorm)
  }
  assert momenta == {0.1}  # the runner left the model's BatchNorm alone
  rng = np.random.default_rng(0)
  one = _batch(rng, 8, 0, config)
  got = runner.reestimate_batch_stats(variables, [one])
  # The model itself, one forward in training mode from the initial
  # statistics (mean 0, var 1): running = 0.9 * initial + 0.1 * batch's.
  params, stats = variables
  trained = nnx.merge(runner.graphdef, params, stats, copy=True)
  x = (one["video"][:, 0] - runner.mean) / runner.std
  nnx.jit(lambda m, x: m.encoder(x))(trained, x)  # updates its stats
  after = nnx.state(trained, nnx.BatchStat)
  for g, a, s0 in zip(_leaves(got), _leaves(after), _leaves(stats)):
    np.testing.assert_allclose(0.9 * s0 + 0.1 * g, a, rtol=2e-5, atol=1e-6)
  changed = [
    np.abs(g - s0).max() for g, s0 in zip(_leaves(got), _leaves(stats))
  ]
  assert min(changed) > 1e-3  # every layer was re-estimated


def test_reestimate_averages_batches_by_clips_and_ignores_padding(
  runner_and_vars,
):
  _, runner, variables, config = runner_and_vars
  rng = np.random.default_rng(1)
  a, b = _batch(rng, 8, 0, config), _batch(rng, 4, 4, config)
  both = runner.reestimate_batch_stats(variables, [a, b])
  sa = runner.reestimate_batch_stats(variables, [a])
  sb = runner.reestimate_batch_stats(variables, [b])
  b_real = {"video": b["video"][:4], "mask": np.ones(4)}
  for x, y in zip(
    _leaves(sb), _leaves(runner.reestimate_batch_stats(variables, [b_real]))
  ):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  for w, x, y in zip(_leaves(both), _leaves(sa), _leaves(sb)):
    np.testing.assert_allclose(w, (8 * x + 4 * y) / 12, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="no videos"):
    runner.reestimate_batch_stats(variables, [])


def test_runner_for_shares_one_runner_and_its_compilations(runner_and_vars):
  _, _, _, config = runner_and_vars
  mesh = mesh_lib.make_mesh()
  mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)

  def model_and_vars(seed):
    c = config.copy_and_resolve_references()
    c.seed = seed
    encoder = factory.create_model(c, mesh.size).encoder
    model = runner_lib.Classifier(encoder, 6, rngs=nnx.Rngs(seed + 1))
    return model, (
      jax.device_get(nnx.state(model, nnx.Param)),
      jax.device_get(nnx.state(model, nnx.BatchStat)),
    )

  (m1, v1), (m2, v2) = model_and_vars(0), model_and_vars(5)
  runner = runner_lib.runner_for(m1, mesh, mean, std)
  assert runner_lib.runner_for(m2, mesh, list(mean), std) is runner
  assert runner_lib.runner_for(m2, mesh, (0.5,) * 3, std) is not runner
  batch = _batch(np.random.default_rng(2), 8, 0, config)
  batch["label"] = np.arange(8) % 6
  f1, _ = runner.features(v1, [batch])  # compiles, unless done before
  with count_compiles() as compiled:
    f2, labels = runner_lib.runner_for(m2, mesh, mean, std).features(
      v2, [batch]
    )
  assert len(compiled) == 0
  # The weights are inputs: the second model's own features.
  own, _ = runner_lib.Runner(m2, mesh, mean, std).features(v2, [batch])
  np.testing.assert_array_equal(f2, own)
  assert np.abs(f1 - f2).max() > 1e-3
  assert labels.tolist() == batch["label"].tolist()
  tx, step = runner.make_train_step(1e-3)
  assert runner.make_train_step(1e-3) == (tx, step)
  assert runner.make_train_step(1e-4)[1] is not step


def test_fetched_keeps_the_order_and_a_bounded_number_in_flight():
  dispatched = []

  def items():
    for i in range(7):
      dispatched.append(i)
      yield jnp.full((2,), i), f"batch {i}"

  got = []
  for out, tag in runner_lib.fetched(items(), depth=2):
    i = len(got)
    assert isinstance(out, np.ndarray) and out.tolist() == [i, i]
    assert tag == f"batch {i}"
    # Item i is fetched once item i + 2 is dispatched, not before.
    assert len(dispatched) == min(i + 3, 7)
    got.append(i)
  assert got == list(range(7))


def test_started_reads_the_first_item_at_once():
  read = []

  def items(n):
    for i in range(n):
      read.append(i)
      yield i

  it = runner_lib.started(items(3))
  assert read == [0]
  assert list(it) == [0, 1, 2] and read == [0, 1, 2]
  assert list(runner_lib.started(items(0))) == []


def test_head_rate_multiplier_scales_the_linear_layers_step_only(
  runner_and_vars,
):
  """``eval.head_lr_mult``: the head's first Adam step (the same size for
  every weight, lr x sign) is the multiplier times the encoder's rate."""
  _, runner, variables, config = runner_and_vars
  rng = np.random.default_rng(3)
  t, s = config.data.clip_len, config.data.size
  batch = {
    "video": rng.uniform(0, 1, (8, t, s, s, 3)).astype(np.float32),
    "label": np.arange(8) % 6,
  }
  params, stats = variables
  moved = {}
  for mult in (1.0, 10.0):
    tx, step = runner.make_train_step(1e-3, mult)
    assert runner.make_train_step(1e-3, mult)[1] is step  # kept
    state = runner_lib.TrainState(
      params=jax.tree.map(jnp.array, params),
      batch_stats=jax.tree.map(jnp.array, stats),
      opt_state=tx.init(params),
      step=np.int32(0),
    )
    state, _ = step(
      state, mesh_lib.to_global_arrays(batch, runner.mesh), np.float32(1)
    )
    new = jax.device_get(state.params)
    moved[mult] = jax.tree.map(lambda a, b: np.asarray(a) - b, new, params)
  for a, b in zip(_leaves(moved[10.0]["head"]), _leaves(moved[1.0]["head"])):
    np.testing.assert_allclose(a, 10 * b, rtol=1e-4, atol=1e-9)
  assert max(np.abs(b).max() for b in _leaves(moved[1.0]["head"])) > 5e-4
  for a, b in zip(
    _leaves(moved[10.0]["encoder"]), _leaves(moved[1.0]["encoder"])
  ):
    np.testing.assert_array_equal(a, b)
