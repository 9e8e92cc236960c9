"""The sharded ST-CLR train step: it learns, and 8 devices equal 1."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stclr_jax import optim as optim_lib
from stclr_jax import train
from configs import stclr_synthetic


def _config(**optim):
  c = stclr_synthetic.get_config("tiny=1")
  c.batch_size = 8
  for k, v in optim.items():
    setattr(c.optim, k, v)
  return c


def _batch(seed=0, b=8):
  rng = np.random.default_rng(seed)
  base = rng.uniform(size=(b, 4, 32, 32, 3)).astype(np.float32)
  noise = lambda: rng.normal(0, 0.05, base.shape).astype(np.float32)
  return {"view_a": np.clip(base + noise(), 0, 1),
          "view_b": np.clip(base + noise(), 0, 1)}


def _setup(config, devices, bn_groups=None):
  mesh = train.make_mesh(devices)
  lr_fn = optim_lib.schedule(config.optim, 10, 100)
  tx = optim_lib.make_optimizer(config.optim, lr_fn)
  graphdef, state = train.init_state(config, mesh, tx, bn_groups)
  step = train.make_train_step(config, mesh, graphdef, tx, lr_fn, state)
  return mesh, state, step


def _global(batch, mesh):
  from stclr_jax.data import pipeline
  return pipeline.to_global_arrays(batch, mesh)


def test_steps_on_a_fixed_batch_lower_the_loss():
  config = _config(name="adam", learning_rate=1e-3, weight_decay=0.0)
  mesh, state, step = _setup(config, jax.devices()[:1])
  batch = _global(_batch(), mesh)
  losses = []
  for _ in range(4):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert losses[-1] < losses[0] - 0.05, losses
  assert int(state["step"]) == 4
  for k in ("contrastive_top1", "learning_rate", "grad_norm", "param_norm",
            "update_norm"):
    assert np.isfinite(float(m[k]))
  assert float(m["learning_rate"]) == pytest.approx(1e-3)


@pytest.mark.parametrize("bn_per_device", [False, True])
def test_eight_devices_equal_one(bn_per_device):
  """One SGD step (lr 0.1, so the update is large) on 8 devices equals the
  same step on one device; per-device BatchNorm on 8 devices equals 8
  BatchNorm groups on one device."""
  assert jax.device_count() == 8
  config = _config(name="sgd", learning_rate=0.1, momentum=0.9,
                   weight_decay=1e-4)
  config.model.bn_per_device = bn_per_device
  runs = []
  for devices in (jax.devices()[:1], jax.devices()):
    groups = 8 if bn_per_device and len(devices) == 1 else None
    mesh, state, step = _setup(config, devices, groups)
    assert mesh.size == len(devices)
    before = jax.device_get(state["params"])
    state, m = step(state, _global(_batch(), mesh))
    runs.append((before, jax.device_get(state), jax.device_get(m)))
  (p0, s1, m1), (_, s8, m8) = runs
  np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(m8["grad_norm"]), float(m1["grad_norm"]),
                             rtol=1e-5)
  assert float(m1["update_norm"]) > 1.0
  for part in ("params", "batch_stats"):
    for a, b in zip(jax.tree.leaves(s1[part]), jax.tree.leaves(s8[part])):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4)
  # The update moved the parameters far more than the 1-vs-8 difference.
  moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
              for a, b in zip(jax.tree.leaves(p0),
                              jax.tree.leaves(s1["params"])))
  assert moved > 1e-2


def test_checkpoint_from_8_devices_restores_onto_1_and_4(tmp_path):
  """A state saved by an 8-device run restores, equal, onto 1 and onto 4
  devices (replicated there), and training continues from it."""
  config = _config(name="sgd", learning_rate=0.1, momentum=0.9,
                   weight_decay=1e-4)
  mesh8, state, step = _setup(config, jax.devices())
  state, _ = step(state, _global(_batch(), mesh8))
  saved = jax.device_get(state)
  mngr = train.checkpoint_manager(str(tmp_path), config)
  train._save(mngr, 1, state)
  mngr.wait_until_finished()
  for n in (1, 4):
    mesh, fresh, step_n = _setup(config, jax.devices()[:n])
    restored, at = train.restore_latest(mngr, fresh)
    assert at == 1 and int(restored["step"]) == 1
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(restored)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    leaf = jax.tree.leaves(restored["params"])[0]
    assert leaf.sharding.mesh.devices.size == n
    assert leaf.sharding.is_fully_replicated
    restored, m = step_n(restored, _global(_batch(1), mesh))
    assert int(restored["step"]) == 2 and np.isfinite(float(m["loss"]))
  mngr.close()


def test_model_loss_and_step_import_without_tensorflow():
  """The GPU image has no TensorFlow, TFDS, ml-collections, clu or dm-pix:
  the model, the loss and the train step must import without them."""
  import subprocess
  import sys
  code = ("import sys\n"
          "for m in ('tensorflow', 'tensorflow_datasets', 'ml_collections',"
          " 'clu', 'dm_pix'):\n"
          "  sys.modules[m] = None  # import fails\n"
          "import stclr_jax.models, stclr_jax.losses, stclr_jax.train\n"
          "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m]]\n"
          "print('ok')\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
