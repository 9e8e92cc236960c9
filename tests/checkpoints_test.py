"""Orbax checkpoints (stclr_jax/checkpoints.py): a state saved on 8 devices
restores onto 1 and 4."""

import _helpers_step
import jax
import numpy as np

from stclr_jax import checkpoints
from stclr_jax import mesh as mesh_lib

_global = mesh_lib.to_global_arrays


def test_checkpoint_from_8_devices_restores_onto_1_and_4(tmp_path):
  """A state saved by an 8-device run restores, equal, onto 1 and onto 4
  devices (replicated there), and training continues from it."""
  config = _helpers_step.config(
    name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4
  )
  mesh8, state, step = _helpers_step.setup_step(config, jax.devices())
  state, _ = step(state, _global(_helpers_step.batch(), mesh8))
  saved = jax.device_get(state)
  mngr = checkpoints.manager(str(tmp_path), config.keep_checkpoints)
  checkpoints.save(mngr, 1, state)
  mngr.wait_until_finished()
  for n in (1, 4):
    mesh, fresh, step_n = _helpers_step.setup_step(config, jax.devices()[:n])
    restored, at = checkpoints.restore_latest(mngr, fresh)
    assert at == 1 and int(restored.step) == 1
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(restored)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    leaf = jax.tree.leaves(restored.params)[0]
    assert leaf.sharding.mesh.devices.size == n
    assert leaf.sharding.is_fully_replicated
    restored, m = step_n(restored, _global(_helpers_step.batch(1), mesh))
    assert int(restored.step) == 2 and np.isfinite(float(m["loss"]))
  mngr.close()
