"""The sharded ST-CLR train step (stclr_jax/train_step.py): it learns, 8
devices equal 1, and it imports without TensorFlow."""

import subprocess
import sys

import _helpers_step
import jax
import numpy as np
import pytest

from stclr_jax import mesh as mesh_lib

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
  BatchNorm groups on one device."""
  assert jax.device_count() == 8
  config = _config(
    name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4
  )
  config.model.bn_per_device = bn_per_device
  runs = []
  for devices in (jax.devices()[:1], jax.devices()):
    groups = 8 if bn_per_device and len(devices) == 1 else None
    mesh, state, step = setup_step(config, devices, groups)
    assert mesh.size == len(devices)
    before = jax.device_get(state.params)
    state, m = step(state, _global(_batch(), mesh))
    runs.append((before, jax.device_get(state), jax.device_get(m)))
  (p0, s1, m1), (_, s8, m8) = runs
  np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-5)
  np.testing.assert_allclose(
    float(m8["grad_norm"]), float(m1["grad_norm"]), rtol=1e-5
  )
  assert float(m1["update_norm"]) > 1.0
  for part in ("params", "batch_stats"):
    for a, b in zip(
      jax.tree.leaves(getattr(s1, part)), jax.tree.leaves(getattr(s8, part))
    ):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4)
  # The update moved the parameters far more than the 1-vs-8 difference.
  moved = max(
    float(np.abs(np.asarray(a) - np.asarray(b)).max())
    for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(s1.params))
  )
  assert moved > 1e-2


def test_model_loss_and_step_import_without_tensorflow():
  """The GPU image has no TensorFlow, TFDS, ml-collections, clu or dm-pix:
  the model, the loss and the train step must import without them."""
  code = (
    "import sys\n"
    "for m in ('tensorflow', 'tensorflow_datasets', 'ml_collections',"
    " 'clu', 'dm_pix'):\n"
    "  sys.modules[m] = None  # import fails\n"
    "import stclr_jax.models, stclr_jax.losses, stclr_jax.train_step\n"
    "import stclr_jax.checkpoints, stclr_jax.models.factory\n"
    "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m]]\n"
    "print('ok')\n"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
