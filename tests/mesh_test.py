"""The 1-D 'data' mesh, and replicated or sharded global arrays on it."""

import jax
import numpy as np

from stclr_jax import mesh as mesh_lib


def test_make_mesh_is_one_data_axis():
  mesh = mesh_lib.make_mesh(jax.devices())
  assert mesh.axis_names == ("data",) == (mesh_lib.DATA_AXIS,)
  assert mesh.shape == {"data": 8} and mesh.size == 8
  assert mesh.devices.tolist() == jax.devices()
  assert mesh_lib.make_mesh().shape == {"data": 8}  # default: all devices
  assert mesh_lib.make_mesh(jax.devices()[:2]).shape == {"data": 2}


def test_replicate_gives_fully_replicated_arrays_equal_to_input():
  mesh = mesh_lib.make_mesh(jax.devices())
  tree = {
    "w": np.arange(12, dtype=np.float32).reshape(3, 4),
    "step": np.int32(7),
    "stats": [np.ones(5, np.float32)],
  }
  g = mesh_lib.replicate(tree, mesh)
  assert jax.tree.structure(g) == jax.tree.structure(tree)
  for x, y in zip(jax.tree.leaves(tree), jax.tree.leaves(g)):
    assert isinstance(y, jax.Array)
    assert y.shape == np.shape(x) and y.dtype == np.asarray(x).dtype
    assert y.sharding.is_fully_replicated
    assert y.sharding.is_equivalent_to(mesh_lib.replicated(mesh), y.ndim)
    assert len(y.sharding.device_set) == 8
    for shard in y.addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), x)
    np.testing.assert_array_equal(np.asarray(y), x)


def test_global_arrays_on_8_devices():
  mesh = mesh_lib.make_mesh(jax.devices())
  batch = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3)}
  g = mesh_lib.to_global_arrays(batch, mesh)
  assert g["x"].shape == (16, 3) and len(g["x"].sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(g["x"]), batch["x"])
