"""The ST-CLR pretraining step, TensorFlow-free: the train state, its
initialisation on a mesh, and the jitted sharded step.

One ``jax.jit`` over a ``Mesh(('data',))`` (:mod:`stclr_jax.mesh`): the
global batch is sharded on ``'data'``; parameters and optimiser state are
replicated and donated; BatchNorm statistics are global (or per device
with ``model.bn_per_device``). The step takes its objective as an
argument (:mod:`stclr_jax.pretext.objectives`: NT-Xent with all-gathered
negatives, MaskFN, CL-MEx's multi-positive NT-Xent, or any callable of
that form), so a new objective needs no change here.

This module imports jax, flax, optax and the library's models only,
so the step runs where TensorFlow, TFDS, ml-collections and clu are
not installed (the GPU benchmark image).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from stclr_jax import compiler
from stclr_jax import mesh as mesh_lib
from stclr_jax.data import device_augment
from stclr_jax.pretext import batch as batch_lib


@struct.dataclass
class TrainState:
  """What a step reads and writes; checkpointed as :meth:`to_dict`.

  ``params``: the ``nnx.Param`` state; ``batch_stats``: the
  ``nnx.BatchStat`` state (BatchNorm running statistics); ``opt_state``:
  the optax state of ``params``; ``step``: steps taken (int32);
  ``rng``: a run's key data where its steps draw (a video transformer's
  fine-tuning), else None; not checkpointed.
  """

  params: Any
  batch_stats: Any
  opt_state: Any
  step: Any
  rng: Any = None

  def to_dict(self) -> dict:
    """The checkpoint layout: a plain dict with the four fields."""
    return {
      "params": self.params,
      "batch_stats": self.batch_stats,
      "opt_state": self.opt_state,
      "step": self.step,
    }

  @classmethod
  def from_dict(cls, d: dict) -> TrainState:
    return cls(
      params=d["params"],
      batch_stats=d["batch_stats"],
      opt_state=d["opt_state"],
      step=d["step"],
    )


def init_state(
  model: nnx.Module, tx: optax.GradientTransformation, mesh: Mesh
) -> tuple[nnx.GraphDef, TrainState]:
  """``(graphdef, state)`` of ``model``, the state replicated on ``mesh``."""
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  state = TrainState(
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    step=np.int32(0),
  )
  return graphdef, mesh_lib.replicate(state, mesh)


def gradients(
  params,
  batch_stats,
  batch: dict,
  *,
  graphdef: nnx.GraphDef,
  objective: Callable,
  mesh: Mesh,
  mean: jax.Array,
  std: jax.Array,
):
  """``((loss, (metrics, new batch_stats)), grads)`` of ``objective``
  (:mod:`stclr_jax.pretext.objectives`) on a global batch of clips in
  [0, 1], normalised with ``mean`` / ``std``."""
  normalize = lambda x: (x - mean) / std

  def loss_of(params):
    # copy=True: fresh Variables at this trace level, which BatchNorm's
    # statistics update may write to.
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    loss, metrics = objective(model, batch, normalize=normalize, mesh=mesh)
    return loss, (metrics, nnx.state(model, nnx.BatchStat))

  return jax.value_and_grad(loss_of, has_aux=True)(params)


def train_step(
  state: TrainState,
  batch: dict,
  *,
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  lr_fn: Callable,
  objective: Callable,
  mesh: Mesh,
  mean: jax.Array,
  std: jax.Array,
  augment: Callable = lambda batch: batch,
) -> tuple[TrainState, dict]:
  """One update on a global batch; returns ``(state, metrics)``.
  ``augment`` first applies the spatial augmentation of a batch shipped
  for the device (:func:`make_sharded_augment`); then ``objective``'s
  loss and gradients (:func:`gradients`).

  Metrics: the loss, the objective's own metrics, the learning rate of
  this step, and the global norms of the gradient, the new parameters and
  the update.
  """
  batch = augment(batch)
  (loss, (metrics, batch_stats)), grads = gradients(
    state.params,
    state.batch_stats,
    batch,
    graphdef=graphdef,
    objective=objective,
    mesh=mesh,
    mean=mean,
    std=std,
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = TrainState(
    params=params,
    batch_stats=batch_stats,
    opt_state=opt_state,
    step=state.step + 1,
  )
  metrics = {
    "loss": loss,
    **metrics,
    "learning_rate": lr_fn(state.step),
    "grad_norm": optax.global_norm(grads),
    "param_norm": optax.global_norm(params),
    "update_norm": optax.global_norm(updates),
  }
  return new_state, metrics


def make_sharded_augment(mesh: Mesh) -> Callable[[dict], dict]:
  """``batch -> batch``: the device path's spatial augmentation
  (:func:`stclr_jax.data.device_augment.augment_views`) on each device's
  own clips, in ``shard_map`` (no clip crosses devices); a batch the host
  augmented passes unchanged."""
  spec = P(mesh_lib.DATA_AXIS)

  def augment(batch: dict) -> dict:
    if not batch_lib.is_shipped(batch):
      return batch
    keys = [
      k
      for v in batch_lib.VIEWS
      if v in batch
      for k in (v, *batch_lib.shipped_keys(v))
    ]
    shipped = {k: batch[k] for k in keys}
    views = jax.shard_map(
      device_augment.augment_views, mesh=mesh, in_specs=spec, out_specs=spec
    )(shipped)
    rest = {k: v for k, v in batch.items() if k not in shipped}
    return {**rest, **views}

  return augment


def make_train_step(
  mesh: Mesh,
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  lr_fn: Callable,
  state: TrainState,
  objective: Callable,
  *,
  mean=(0.0, 0.0, 0.0),
  std=(1.0, 1.0, 1.0),
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """:func:`train_step` jitted on ``mesh``: state replicated and donated,
  batch sharded on ``'data'``, the loss of ``objective`` (e.g.
  ``stclr_jax.pretext.objectives.NTXent(temperature=0.1)``, or any
  callable of that form), input normalised with ``mean`` / ``std`` (per
  channel). A batch shipped for device augmentation (uint8 views with
  ``*_crop`` and ``*_aug``, data/device_augment.py) is augmented first,
  inside the step."""
  step = functools.partial(
    train_step,
    graphdef=graphdef,
    tx=tx,
    lr_fn=lr_fn,
    objective=objective,
    mesh=mesh,
    mean=jnp.asarray(mean, jnp.float32),
    std=jnp.asarray(std, jnp.float32),
    augment=make_sharded_augment(mesh),
  )
  replicated = jax.tree.map(lambda _: mesh_lib.replicated(mesh), state)
  return jax.jit(
    step,
    in_shardings=(replicated, mesh_lib.batch_sharded(mesh)),
    out_shardings=(replicated, mesh_lib.replicated(mesh)),
    donate_argnums=(0,),
    compiler_options=compiler.mesh_compiler_options(mesh),
  )
