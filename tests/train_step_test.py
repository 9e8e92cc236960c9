"""The sharded ST-CLR train step (stclr_jax/train_step.py): it learns, 8
devices equal 1, and it imports without TensorFlow."""

import subprocess
import sys

import _helpers_step
import jax
import jax.numpy as jnp
import losses_test
import numpy as np
import pretext_face_swap_test
import pytest
from flax import nnx

from stclr_jax import descriptors, train
from stclr_jax import losses as losses_lib
from stclr_jax import mesh as mesh_lib
from stclr_jax import optim as optim_lib
from stclr_jax import train_step as train_step_lib
from stclr_jax.data import device_augment
from stclr_jax.models import factory
from stclr_jax.pretext import objectives

_config, _batch, setup_step = (
  _helpers_step.config,
  _helpers_step.batch,
  _helpers_step.setup_step,
)
_global = mesh_lib.to_global_arrays


def test_steps_on_a_fixed_batch_lower_the_loss():
  config = _config(name="adam", learning_rate=1e-3, weight_decay=0.0)
  mesh, state, step = setup_step(config, jax.devices()[:1])
  batch = _global(_batch(), mesh)
  losses = []
  for _ in range(4):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert losses[-1] < losses[0] - 0.05, losses
  assert int(state.step) == 4
  for k in (
    "contrastive_top1",
    "learning_rate",
    "grad_norm",
    "param_norm",
    "update_norm",
  ):
    assert np.isfinite(float(m[k]))
  assert float(m["learning_rate"]) == pytest.approx(1e-3)


@pytest.mark.parametrize("bn_per_device", [False, True])
def test_eight_devices_equal_one(bn_per_device):
  """One SGD step (lr 0.1, so the update is large) on 8 devices equals the
  same step on one device; per-device BatchNorm on 8 devices equals 8
  BatchNorm groups on one device. To float64 rounding.

  Float64, because in float32 this tiny network (16 clips of 4x32x32, few
  values per BatchNorm channel in its last stages) amplifies rounding: its
  float32 gradient norm is 2e-5 to 1.5e-3 (relative) from the float64 value
  depending only on which XLA:CPU kernels sum the convolutions and the
  BatchNorm statistics (YNNPACK's or Eigen's; BENCHMARKS.md), on 1 device
  or on 8. Those are summation orders, not the maths."""
  assert jax.device_count() == 8
  with jax.enable_x64(True):
    config = _config(
      name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4
    )
    config.model.dtype = "float64"
    config.model.bn_per_device = bn_per_device
    batch = {k: v.astype(np.float64) for k, v in _batch().items()}
    runs = []
    for devices in (jax.devices()[:1], jax.devices()):
      groups = 8 if bn_per_device and len(devices) == 1 else None
      mesh, state, step = setup_step(config, devices, groups)
      assert mesh.size == len(devices)
      before = jax.device_get(state.params)
      state, m = step(state, _global(batch, mesh))
      runs.append((before, jax.device_get(state), jax.device_get(m)))
    (p0, s1, m1), (_, s8, m8) = runs
    for k in ("loss", "grad_norm", "update_norm", "contrastive_top1"):
      np.testing.assert_allclose(float(m8[k]), float(m1[k]), rtol=1e-12)
    assert float(m1["update_norm"]) > 1.0
    for part in ("params", "batch_stats"):
      for a, b in zip(
        jax.tree.leaves(getattr(s1, part)), jax.tree.leaves(getattr(s8, part))
      ):
        assert np.asarray(a).dtype == np.float64
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-11)
    # The update moved the parameters far more than the 1-vs-8 difference.
    moved = max(
      float(np.abs(np.asarray(a) - np.asarray(b)).max())
      for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(s1.params))
    )
    assert moved > 1e-2


def _one_step_on_1_and_8_devices(config, batch):
  """``[(state, metrics)]`` after one step on 1 device, then on 8."""
  runs = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh, state, step = setup_step(config, devices)
    state, m = step(state, _global(batch, mesh))
    runs.append((jax.device_get(state), jax.device_get(m)))
  return runs


def test_eight_devices_equal_one_with_hard_negatives_in_float64():
  """Hard negatives: 4 clips per video through the one-pass encoder and
  4B rows in the all-gathered NT-Xent. SGD steps on 8 devices equal one
  device in value, gradient and update, to float64 rounding: a step on
  random clips, then one on a batch as FaceSwap's stream makes it (both
  positives on another subject's head: pretext_face_swap_test).

  Float64, because in float32 this 64-clip step's gradient norm differs by
  5e-5 (relative) between 1 and 8 devices, and each is 5e-5 to 1e-4 from
  the float64 value: summation order, not a difference in the maths. In
  float64 the two agree to 1e-14."""
  swapped = pretext_face_swap_test.swapped_batch()
  with jax.enable_x64(True):
    config = _config(
      name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4
    )
    config.model.dtype = "float64"
    batches = [
      {k: v.astype(np.float64) for k, v in b.items()}
      for b in (_batch(hard=True), swapped)
    ]
    runs = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh, state, step = setup_step(config, devices)
      runs.append([])
      for batch in batches:
        state, m = step(state, _global(batch, mesh))
        runs[-1].append((jax.device_get(state), jax.device_get(m)))
    for (s1, m1), (s8, m8) in zip(*runs):
      assert float(m1["update_norm"]) > 1.0
      for k in ("loss", "grad_norm", "update_norm", "contrastive_top1"):
        np.testing.assert_allclose(float(m8[k]), float(m1[k]), rtol=1e-12)
      for part in ("params", "batch_stats"):
        for a, b in zip(
          jax.tree.leaves(getattr(s1, part)),
          jax.tree.leaves(getattr(s8, part)),
        ):
          assert np.asarray(a).dtype == np.float64
          np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-11)


def test_hard_negative_layout_is_sslfers_with_hand_checked_positives():
  """The stacks NT-Xent pairs row by row hold [A0, NA0, A1, NA1] and [P0,
  NP0, P1, NP1]; the loss equals the NumPy reference on SSL-FER's literal
  [A, NA, P, NP] layout, where row i's positive is row (i + 2B) mod 4B."""
  b = 2
  mark = lambda v: np.full((b, 1, 1, 1, 1), v, np.float32) + np.arange(
    b, dtype=np.float32
  ).reshape(b, 1, 1, 1, 1)
  batch = {
    "view_a": mark(0),
    "hard_a": mark(10),
    "view_b": mark(20),
    "hard_b": mark(30),
  }
  x_a, x_b = objectives.contrastive_views(batch)
  assert np.asarray(x_a).ravel().tolist() == [0, 10, 1, 11]  # A0 NA0 A1 NA1
  assert np.asarray(x_b).ravel().tolist() == [20, 30, 21, 31]  # P0 NP0 ..
  # SSL-FER's rows and their positives, by hand: A0 A1 NA0 NA1 P0 P1 NP0
  # NP1; A_k <-> P_k, NA_k <-> NP_k.
  layout = [0, 1, 10, 11, 20, 21, 30, 31]
  positive = {0: 20, 1: 21, 10: 30, 11: 31, 20: 0, 21: 1, 30: 10, 31: 11}
  for i, v in enumerate(layout):
    assert layout[(i + 2 * b) % (4 * b)] == positive[v]
  rng = np.random.default_rng(0)
  emb = {v: rng.normal(size=5) for v in layout}
  z_a = np.stack([emb[v] for v in np.asarray(x_a).ravel().tolist()])
  z_b = np.stack([emb[v] for v in np.asarray(x_b).ravel().tolist()])
  got = float(losses_lib.nt_xent(z_a, z_b, 0.2))
  ref = losses_test.numpy_nt_xent(
    np.stack([emb[v] for v in layout[:4]]),
    np.stack([emb[v] for v in layout[4:]]),
    0.2,
  )[0]
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  assert set(
    objectives.contrastive_views({"view_a": mark(0), "view_b": mark(1)})[0]
    .ravel()
    .tolist()
  ) == {0, 1}


def test_model_loss_and_step_import_without_tensorflow():
  """The GPU image has no TensorFlow, TFDS, ml-collections, clu or dm-pix:
  the model, the loss and the train step must import without them."""
  code = (
    "import sys\n"
    "for m in ('tensorflow', 'tensorflow_datasets', 'ml_collections',"
    " 'clu', 'dm_pix'):\n"
    "  sys.modules[m] = None  # import fails\n"
    "import stclr_jax.models, stclr_jax.losses, stclr_jax.train_step\n"
    "import stclr_jax.pretext.objectives\n"
    "import stclr_jax.checkpoints, stclr_jax.init_from\n"
    "import stclr_jax.workdir, stclr_jax.models.factory\n"
    "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m]]\n"
    "print('ok')\n"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize(
  "loss,hard",
  [("maskfn", False), ("maskfn", True), ("multi_positive", True)],
)
def test_eight_devices_equal_one_with_the_other_losses_in_float64(loss, hard):
  """MaskFN (descriptors of the crops computed in the step, k* over the
  global batch) and the multi-positive loss (group ids per row): one SGD
  step on 8 devices equals one device, to float64 rounding (why float64:
  see the hard-negative test above)."""
  with jax.enable_x64(True):
    config = _config(
      name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4
    )
    config.model.dtype = "float64"
    config.pretext.maskfn.enabled = loss == "maskfn"
    config.pretext.clmex.enabled = loss == "multi_positive"
    batch = _batch(hard=hard, parts=True, groups=True)
    batch = {
      k: v.astype(np.float64) if v.dtype == np.float32 else v
      for k, v in batch.items()
    }
    (s1, m1), (s8, m8) = _one_step_on_1_and_8_devices(config, batch)
    assert float(m1["update_norm"]) > 1.0
    extra = "maskfn_l2" if loss == "maskfn" else "anchors_with_positive"
    for k in ("loss", "grad_norm", "update_norm", "contrastive_top1", extra):
      np.testing.assert_allclose(float(m8[k]), float(m1[k]), rtol=1e-12)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-11)


class _PredictTheLastFrame:
  """A toy objective that is not contrastive, defined here to show that
  an objective plugs into the step without a change to train_step.py:
  the features of view A's first half in time predict (through the
  projection head) those of its second half, and a loss on their
  squared difference plus a metric."""

  batch_keys = ("view_a",)

  def __call__(self, model, batch, *, normalize, mesh):
    del mesh  # plain jnp under jit: XLA reduces over the sharded batch
    x = normalize(batch["view_a"])
    t = x.shape[1] // 2
    z_early, z_late = model.embed_views(x[:, :t], x[:, t:])
    err = jnp.sum((z_early - z_late) ** 2, axis=-1)
    return jnp.mean(err), {"max_error": jnp.max(err)}


def test_the_step_takes_any_objective_and_8_devices_equal_1_in_float64():
  """Two SGD steps with a toy objective defined in this test file (not a
  loss of the library): the step runs it as it is, and 8 devices equal 1
  device to float64 rounding in the metrics and the parameters."""
  with jax.enable_x64(True):
    config = _config(
      name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4
    )
    config.model.dtype = "float64"
    batch = {k: v.astype(np.float64) for k, v in _batch().items()}
    runs = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh = mesh_lib.make_mesh(devices)
      lr_fn = optim_lib.schedule(config.optim, 10, 100)
      tx = optim_lib.make_optimizer(config.optim, lr_fn)
      graphdef, state, _ = train.create_state(config, mesh, tx)
      step = train_step_lib.make_train_step(
        mesh, graphdef, tx, lr_fn, state, _PredictTheLastFrame()
      )
      metrics = []
      for _ in range(2):
        state, m = step(state, _global(batch, mesh))
        metrics.append(jax.device_get(m))
      runs.append((jax.device_get(state), metrics))
    (s1, m1), (s8, m8) = runs
    assert set(m1[0]) >= {"loss", "max_error", "grad_norm"}
    assert float(m1[1]["loss"]) != float(m1[0]["loss"])  # it trained
    assert float(m1[0]["grad_norm"]) > 1e-3
    for a, b in zip(m1, m8):
      for k in ("loss", "max_error", "grad_norm", "update_norm"):
        np.testing.assert_allclose(float(b[k]), float(a[k]), rtol=1e-12)
    for part in ("params", "batch_stats"):
      for a, b in zip(
        jax.tree.leaves(getattr(s1, part)), jax.tree.leaves(getattr(s8, part))
      ):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-11)


def test_the_step_scores_the_loss_of_its_rows_descriptors_and_groups():
  """The step's loss is the loss module's on the model's embeddings with
  the descriptors and groups of :class:`pretext.objectives.MaskFN`, and those
  are laid out row by row like the views: hand-checked here."""
  b = _batch(hard=True, parts=True, groups=True)
  groups = np.asarray(objectives.row_groups(b))
  # Rows [A0, NA0, A1, NA1, ...]: 2g and 2g + 1; no group: own ids.
  np.testing.assert_array_equal(groups[:6], [14, 15, 14, 15, 14, 15])
  np.testing.assert_array_equal(groups[6:10], [6, 7, 6, 7])
  assert groups[14] == -2 - 2 * 7 and groups[15] == groups[14] + 1
  assert len(set(groups[10:].tolist())) == 6
  d = dict(zip(("d_a", "d_b"), objectives.MaskFN(0.1).inputs(b)))
  for v in "ab":  # rows [A0's crops, NA0's, A1's, ...], by hand
    rows = np.stack([b[f"parts_{v}"], b[f"parts_hard_{v}"]], 1)
    want = descriptors.part_descriptors(rows.reshape(16, 2, 24, 24, 3))
    # HOG's bins are exact for uint8 crops (descriptors.hog); what is left
    # is float32 rounding of the magnitudes, ~3e-8 here.
    np.testing.assert_allclose(
      np.asarray(d[f"d_{v}"]), np.asarray(want), atol=1e-6
    )
  assert objectives.NTXent(0.1).inputs(b) == ()
  # The step's loss equals losses.maskfn on the same rows.
  config = _config(name="sgd", learning_rate=0.0, momentum=0.0)
  config.pretext.maskfn.enabled = True
  mesh, state, step = setup_step(config, jax.devices()[:1])
  graphdef = nnx.graphdef(factory.create_model(config))
  model = nnx.merge(graphdef, state.params, state.batch_stats, copy=True)
  x_a, x_b = objectives.contrastive_views(b)
  mean, std = np.asarray(config.data.mean), np.asarray(config.data.std)
  z_a, z_b = model.embed_views((x_a - mean) / std, (x_b - mean) / std)
  want, _ = losses_lib.maskfn(
    z_a, z_b, d["d_a"], d["d_b"], config.loss.temperature
  )
  _, m = step(state, _global(b, mesh))
  np.testing.assert_allclose(float(m["loss"]), float(want), rtol=1e-5)


def _shipped(seed=0, b=8, views=("view_a", "view_b")):
  """A batch shipped for device augmentation (data/device_augment.py):
  uint8 36x40 frames, 32 px crops inside them, and every flip, jitter, op
  order and grayscale choice drawn at random."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (b, 4, 36, 40, 3))
  out = {}
  for k in views:
    out[k] = np.clip(base + rng.integers(-9, 10, base.shape), 0, 255).astype(
      np.uint8
    )
    top, left = rng.uniform(0, 8, (2, b, 1))
    step = rng.uniform(0.5, 1.0, (b, 1))
    at = np.arange(32)[None]
    out[f"{k}_crop"] = np.stack(
      [top + step * at * 35 / 40, left + step * at * 39 / 40], 1
    ).astype(np.float32)
    aug = np.zeros((b, device_augment.NUM_PARAMS), np.float32)
    aug[
      :, [device_augment.FLIP, device_augment.JITTER, device_augment.GRAY]
    ] = rng.integers(0, 2, (b, 3))
    aug[:, device_augment.BRIGHTNESS : device_augment.HUE] = rng.uniform(
      0.2, 1.8, (b, 3)
    )
    aug[:, device_augment.HUE] = rng.uniform(-0.2, 0.2, b)
    aug[:, device_augment.ORDER] = [rng.permutation(4) for _ in range(b)]
    out[f"{k}_aug"] = aug
  return out


def test_a_batch_shipped_for_the_device_trains_as_augmented_and_sharded():
  """A batch of uint8 frames and augmentation parameters: the step
  augments it (in shard_map, each device its own clips) and then trains
  exactly as on the same views augmented before the step; 8 devices equal
  1 to float64 rounding (the augmentation itself is float32 and per clip,
  so no device boundary changes it)."""
  with jax.enable_x64(True):
    config = _config(
      name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4
    )
    config.model.dtype = "float64"
    shipped = _shipped()
    (s1, m1), (s8, m8) = _one_step_on_1_and_8_devices(config, shipped)
    assert float(m1["update_norm"]) > 1.0
    for k in ("loss", "grad_norm", "update_norm", "contrastive_top1"):
      np.testing.assert_allclose(float(m8[k]), float(m1[k]), rtol=1e-12)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-11)
    views = jax.jit(device_augment.augment_views)(shipped)
    assert set(views) == {"view_a", "view_b"}
    assert views["view_a"].shape == (8, 4, 32, 32, 3)
    assert views["view_a"].dtype == np.float32
    [(s0, m0)] = _one_step_on_1_and_8_devices(config, views)[:1]
    for k in ("loss", "grad_norm", "update_norm"):
      np.testing.assert_allclose(float(m0[k]), float(m1[k]), rtol=1e-12)
