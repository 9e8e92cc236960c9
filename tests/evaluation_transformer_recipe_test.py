"""The video transformers' fine-tuning recipe (evaluation/
transformer_recipe.py and Runner.make_transformer_step): the layer-decay
scale and weight-decay mask of every parameter, AdamW against a NumPy
reference, the schedule against SVFAP's formula, Mixup and CutMix mixing
labels by the pixels' own weights, the loss, and the step on 8 devices
equal to 1 in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stclr_jax import configlib, models
from stclr_jax import mesh as mesh_lib
from stclr_jax.evaluation import runner as runner_lib
from stclr_jax.evaluation import transformer_recipe as tr


def _recipe(**kw):
  r = configlib.transformer_recipe()
  r.update(kw)
  return r


def _classifier(name="tpsbt_tiny", dtype=jnp.float32, seed=0):
  p = jnp.float64 if dtype == jnp.float64 else jnp.float32
  enc = models.make_encoder(
    name, dtype=dtype, param_dtype=p, drop_path=0.1, rngs=nnx.Rngs(seed)
  )
  return runner_lib.Classifier(enc, 6, rngs=nnx.Rngs(seed + 1))


def _paths(tree):
  return {
    jax.tree_util.keystr(p): v
    for p, v in jax.tree_util.tree_leaves_with_path(tree)
  }


def test_every_parameter_has_its_layer_scale_and_decay():
  model = _classifier()
  params = nnx.state(model, nnx.Param)
  blocks = len(model.encoder.blocks)  # 3: one Block, two CrossSelfBlocks
  scales = _paths(tr.lr_scales(params, blocks, 0.75))
  mask = _paths(tr.decay_mask(params))
  shapes = {k: np.shape(v) for k, v in _paths(params).items()}
  assert len(scales) == len(shapes) == 73
  for path, scale in scales.items():
    if "['patch_embed']" in path:
      want = 0.75 ** (blocks + 1)
    elif "['blocks']" in path:
      i = int(path.split("['blocks'][")[1].split("]")[0])
      want = 0.75 ** (blocks - i)
    else:  # pyramid, bottleneck, fc_norm, head
      want = 1.0
    assert scale == pytest.approx(want), path
    assert mask[path] == (len(shapes[path]) >= 2), path
  assert not mask["['encoder']['blocks'][0]['attn']['q_bias'].value"]
  assert mask["['encoder']['temporal_downsamples'][0]['kernel'].value"]
  assert mask["['head']['fc']['kernel'].value"]


def test_adamw_step_equals_numpy():
  """One step from zero moments: Adam's direction is g / (|g| + eps); the
  update is ``-lr x scale x (direction + wd x p)``, decay on kernels only."""
  model = _classifier()
  params = nnx.state(model, nnx.Param)
  recipe = _recipe()
  tx = tr.optimizer(recipe, len(model.encoder.blocks))
  grads = jax.tree.map(
    lambda x: jnp.asarray(
      np.random.RandomState(x.size % 97).randn(*x.shape), x.dtype
    ),
    params,
  )
  updates, _ = tx.update(grads, tx.init(params), params)
  scales = tr.lr_scales(params, len(model.encoder.blocks), 0.75)
  for (path, u), g, p, s in zip(
    jax.tree_util.tree_leaves_with_path(updates),
    jax.tree.leaves(grads),
    jax.tree.leaves(params),
    jax.tree.leaves(scales),
    strict=True,
  ):
    g, p = np.asarray(g, np.float64), np.asarray(p, np.float64)
    want = g / (np.abs(g) + 1e-8) + (0.05 * p if p.ndim >= 2 else 0.0)
    np.testing.assert_allclose(
      np.asarray(u), s * want, rtol=2e-5, atol=1e-6, err_msg=str(path)
    )


def test_schedule_is_svfaps_warmup_then_cosine():
  recipe = _recipe(warmup_fraction=0.1, warmup_lr=1e-6, min_lr=1e-5)
  table = tr.lr_table(recipe, 4e-3, 50)
  assert table.shape == (50,)
  np.testing.assert_allclose(table[:5], np.linspace(1e-6, 4e-3, 5))
  i = np.arange(45)
  cos = 1e-5 + 0.5 * (4e-3 - 1e-5) * (1 + np.cos(np.pi * i / 45))
  np.testing.assert_allclose(table[5:], cos)
  assert tr.learning_rate(recipe, 64) == pytest.approx(2.5e-4)


def _constant_clips(b=6):
  """Clip i holds the value i everywhere: a pixel's mix reads its weights."""
  return jnp.broadcast_to(
    jnp.arange(b, dtype=jnp.float32)[:, None, None, None, None],
    (b, 2, 8, 10, 3),
  )


@pytest.mark.parametrize("seed", range(4))
def test_mixup_mixes_labels_by_the_pixels_weights(seed):
  x = _constant_clips()
  labels = jnp.asarray([0, 1, 2, 3, 4, 5])
  recipe = _recipe(cutmix=0.0, label_smoothing=0.1)
  video, targets, lam = tr.mix(jax.random.key(seed), x, labels, 6, recipe)
  lam = float(lam)
  assert 0 < lam < 1
  i = np.arange(6)
  np.testing.assert_allclose(
    np.asarray(video)[:, 0, 0, 0, 0], lam * i + (1 - lam) * i[::-1], rtol=1e-6
  )
  y = np.full((6, 6), 0.1 / 6) + 0.9 * np.eye(6)
  np.testing.assert_allclose(
    np.asarray(targets), lam * y + (1 - lam) * y[::-1], rtol=1e-6
  )


@pytest.mark.parametrize("seed", range(4))
def test_cutmix_box_is_one_box_for_every_frame_and_weighs_the_labels(seed):
  x = _constant_clips()
  labels = jnp.asarray([5, 4, 3, 2, 1, 0])
  recipe = _recipe(mixup=0.0, label_smoothing=0.0)
  video, targets, lam = tr.mix(jax.random.key(seed), x, labels, 6, recipe)
  video = np.asarray(video)
  other = video[0, ..., 0] == 5  # clip 0 pasted from clip 5 inside the box
  assert np.all(video[0, ..., 0] == np.where(other, 5, 0))
  np.testing.assert_array_equal(other[0], other[1])  # the same in each frame
  for i in range(6):
    np.testing.assert_array_equal(video[i, ..., 0] == 5 - i, other)
  assert float(lam) == pytest.approx(1 - other[0].mean())
  y = np.eye(6)[np.asarray(labels)]
  np.testing.assert_allclose(
    np.asarray(targets), float(lam) * y + (1 - float(lam)) * y[::-1], rtol=1e-6
  )


def test_no_mix_with_probability_zero_and_soft_cross_entropy():
  x = _constant_clips()
  labels = jnp.asarray([0, 1, 2, 3, 4, 5])
  video, targets, lam = tr.mix(
    jax.random.key(0), x, labels, 6, _recipe(mix_prob=0.0)
  )
  np.testing.assert_array_equal(np.asarray(video), np.asarray(x))
  assert float(lam) == 1.0
  logits = np.random.RandomState(0).randn(6, 6)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = -np.mean(np.sum(np.asarray(targets) * logp, -1))
  got = tr.soft_cross_entropy(jnp.asarray(logits, jnp.float32), targets)
  assert float(got) == pytest.approx(want, rel=1e-6)


def test_transformer_step_on_8_devices_equals_1_in_float64():
  """Two steps of the whole recipe (mixing, stochastic depth, AdamW with
  layer decay) with the batch sharded over 8 devices and on one: the same
  parameters in float64, to the reductions' order (below)."""
  assert len(jax.devices()) >= 8
  with jax.enable_x64(True):
    model = _classifier(dtype=jnp.float64)
    rng = np.random.RandomState(0)
    batches = [
      {
        "video": rng.rand(8, 4, 32, 32, 3),
        "label": rng.randint(0, 6, 8).astype(np.int32),
      }
      for _ in range(2)
    ]
    finals = []
    start = [
      np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))
    ]
    for devices in (jax.devices()[:8], jax.devices()[:1]):
      mesh = mesh_lib.make_mesh(devices)
      runner = runner_lib.Runner(model, mesh, [0.5] * 3, [0.25] * 3)
      assert runner.transformer and runner.num_blocks == 3
      tx, step, table = runner.make_transformer_step(_recipe(), 2, 8)
      params = jax.device_get(nnx.state(model, nnx.Param))  # host copies:
      stats = jax.device_get(nnx.state(model, nnx.BatchStat))  # donated
      state = runner.initial_state(tx, params, stats, seed=7)
      for b in batches:
        state, m = step(
          state, mesh_lib.to_global_arrays(b, mesh), np.float32(1)
        )
      assert float(m["lr"]) == pytest.approx(table[1])
      finals.append(jax.device_get(state.params))
    # Adam's first steps move an element by about lr x g / (|g| + eps):
    # where the true gradient is zero (the bottleneck's last bias, which
    # the softmax over S ignores), g is rounding noise and so is its move,
    # up to 1e-11 of a step here. Compared in units of the steps' rate.
    for a, b in zip(
      jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1]), strict=True
    ):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * table.sum())
    moved = sum(
      not np.array_equal(np.asarray(b), np.asarray(p0))
      for b, p0 in zip(jax.tree.leaves(finals[1]), start, strict=True)
    )
    assert moved == len(start)
