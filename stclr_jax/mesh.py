"""The device mesh and the arrays on it (TensorFlow-free).

Every sharded path in the library uses one 1-D ``Mesh`` with the axis
``'data'``: batches are sharded on it, parameters and optimiser state are
replicated. On several hosts, the mesh spans every process's devices and each
process feeds its local part of the global batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh ``('data',)`` over ``devices`` (default: all devices)."""
  return Mesh(np.asarray(devices or jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree, mesh: Mesh):
  """Host values, identical on every process -> replicated global arrays."""
  sharding = replicated(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_callback(
      np.shape(x), sharding, lambda idx, x=np.asarray(x): x[idx]
    ),
    tree,
  )


def to_global_arrays(batch, mesh: Mesh, axis: str | Sequence[str] = DATA_AXIS):
  """Host-local numpy batch -> global ``jax.Array``s sharded on ``axis``
  (``jax.make_array_from_process_local_data``: the global batch is the
  concatenation of every process's local batch, in process order)."""
  sharding = NamedSharding(mesh, P(axis))
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
    batch,
  )
