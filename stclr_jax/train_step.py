"""The ST-CLR pretraining step, TensorFlow-free: the train state, its
initialisation on a mesh, and the jitted sharded step.

One ``jax.jit`` over a ``Mesh(('data',))`` (:mod:`stclr_jax.mesh`): the
global batch of two views is sharded on ``'data'``; parameters and optimiser
state are replicated and donated; BatchNorm statistics are global (or per
device with ``model.bn_per_device``); NT-Xent all-gathers the negatives in
``shard_map`` (:func:`stclr_jax.losses.make_sharded_nt_xent`), as do the
pretext options' losses (:func:`make_sharded_loss`): MaskFN, whose
face-part descriptors are computed here, on the device
(:mod:`stclr_jax.descriptors`), and the multi-positive NT-Xent of CL-MEx's
views (group ids per row, :func:`row_groups`).

This module imports jax, flax, optax and the library's models and losses
only, so the step runs where TensorFlow, TFDS, ml-collections and clu are
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
from stclr_jax import descriptors as descriptors_lib
from stclr_jax import losses as losses_lib
from stclr_jax import mesh as mesh_lib
from stclr_jax.data import device_augment


@struct.dataclass
class TrainState:
  """What a step reads and writes; checkpointed as :meth:`to_dict`.

  ``params``: the ``nnx.Param`` state; ``batch_stats``: the
  ``nnx.BatchStat`` state (BatchNorm running statistics); ``opt_state``:
  the optax state of ``params``; ``step``: steps taken (int32).
  """

  params: Any
  batch_stats: Any
  opt_state: Any
  step: Any

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


HARD_VIEWS = ("hard_a", "hard_b")
LOSSES = ("nt_xent", "maskfn", "multi_positive")


def _interleave(x, y):
  return jnp.stack([x, y], axis=1).reshape(2 * x.shape[0], *x.shape[1:])


def contrastive_pairs(batch: dict, a: str, b: str, hard_a: str, hard_b: str):
  """Per-row companions of :func:`contrastive_views`' stacks: ``batch[a]``
  and ``batch[b]``, interleaved with ``batch[hard_a]``, ``batch[hard_b]``
  when the batch has hard negatives."""
  if HARD_VIEWS[0] not in batch:
    return batch[a], batch[b]
  return _interleave(batch[a], batch[hard_a]), _interleave(
    batch[b], batch[hard_b]
  )


def row_groups(batch: dict) -> jax.Array:
  """The group id of each row of a view stack (CL-MEx's positives): a
  video's ``group`` (>= 0) becomes ``2 * group``, its hard-negative pair
  (another moment of it) ``2 * group + 1``; videos without a group (-1)
  get ids of their own (negative), so their only positive is their pair."""
  g = batch["group"].astype(jnp.int32)
  own = -2 - 2 * jnp.arange(g.shape[0], dtype=jnp.int32)
  ids = jnp.where(g >= 0, 2 * g, own)
  if HARD_VIEWS[0] not in batch:
    return ids
  return _interleave(ids, ids + 1)


def contrastive_views(batch: dict) -> tuple[jax.Array, jax.Array]:
  """The two stacks of views that NT-Xent pairs row by row.

  ``{"view_a", "view_b"}`` (B videos): ``(view_a, view_b)``, ST-CLR's 2B
  rows. With hard negatives (``"hard_a"``, ``"hard_b"``: each video's
  second pair, SSL-FER's NA and NP), the stacks are ``[A0, NA0, A1, NA1,
  ...]`` and ``[P0, NP0, P1, NP1, ...]``: 4B rows, positives (A, P) and (NA,
  NP), and every anchor has two negatives from its own video. That is
  SSL-FER's ``[A, NA, P, NP]`` layout with its pairs interleaved, so that
  each device keeps the four clips of its own videos; NT-Xent is a mean
  over pairs, so the order of the pairs does not change it.
  """
  return contrastive_pairs(batch, "view_a", "view_b", *HARD_VIEWS)


def loss_inputs(batch: dict, loss: str, descriptor: str = "hog") -> dict:
  """What ``loss`` needs beside the embeddings, per row: MaskFN's frozen
  descriptors ``d_a``, ``d_b`` of the rows' face-part crops
  (``parts_*``, :func:`stclr_jax.descriptors.part_descriptors`), or the
  multi-positive loss's ``groups`` (:func:`row_groups`)."""
  if loss == "maskfn":
    p_a, p_b = contrastive_pairs(
      batch, "parts_a", "parts_b", "parts_hard_a", "parts_hard_b"
    )
    return {
      "d_a": descriptors_lib.part_descriptors(p_a, descriptor),
      "d_b": descriptors_lib.part_descriptors(p_b, descriptor),
    }
  if loss == "multi_positive":
    return {"groups": row_groups(batch)}
  return {}


def gradients(
  params,
  batch_stats,
  batch: dict,
  *,
  graphdef: nnx.GraphDef,
  loss_fn: Callable,
  mean: jax.Array,
  std: jax.Array,
  loss_input_kind: tuple = ("nt_xent",),
):
  """``((loss, (metrics, new batch_stats)), grads)`` of ``loss_fn`` on a
  batch ``{"view_a", "view_b"}`` of ``(B, T, H, W, 3)`` clips in [0, 1]
  (and ``"hard_a"``, ``"hard_b"`` with hard negatives, see
  :func:`contrastive_views`). ``loss_fn(z_a, z_b, **loss_inputs(batch,
  *loss_input_kind))``."""
  x_a, x_b = contrastive_views(batch)
  extra = loss_inputs(batch, *loss_input_kind)

  def loss_of(params):
    # copy=True: fresh Variables at this trace level, which BatchNorm's
    # statistics update may write to.
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    z_a, z_b = model.embed_views((x_a - mean) / std, (x_b - mean) / std)
    loss, metrics = loss_fn(z_a, z_b, **extra)
    return loss, (metrics, nnx.state(model, nnx.BatchStat))

  return jax.value_and_grad(loss_of, has_aux=True)(params)


def train_step(
  state: TrainState,
  batch: dict,
  *,
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  lr_fn: Callable,
  loss_fn: Callable,
  mean: jax.Array,
  std: jax.Array,
  loss_input_kind: tuple = ("nt_xent",),
  augment: Callable = lambda batch: batch,
) -> tuple[TrainState, dict]:
  """One update on a global batch ``{"view_a", "view_b"}``; returns
  ``(state, metrics)``. ``augment`` first applies the spatial
  augmentation of a batch shipped for the device
  (:func:`make_sharded_augment`).

  ``loss_fn(z_a, z_b, **inputs) -> (loss, metrics)`` (:func:`gradients`).
  Metrics: the loss, the loss's
  own metrics, the learning rate of this step, and the global norms of the
  gradient, the new parameters and the update.
  """
  batch = augment(batch)
  (loss, (metrics, batch_stats)), grads = gradients(
    state.params,
    state.batch_stats,
    batch,
    graphdef=graphdef,
    loss_fn=loss_fn,
    mean=mean,
    std=std,
    loss_input_kind=loss_input_kind,
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


def make_sharded_loss(
  mesh: Mesh,
  loss: str = "nt_xent",
  *,
  temperature: float,
  maskfn_weight: float = losses_lib.MASKFN_WEIGHT,
) -> Callable:
  """``(z_a, z_b, **inputs) -> (loss, metrics)`` over the global batch
  sharded on ``'data'``: NT-Xent, MaskFN (``inputs``: ``d_a``, ``d_b``) or
  the multi-positive NT-Xent (``groups``, one per row of each stack; rows
  ``[z_a; z_b]``)."""
  axis = mesh_lib.DATA_AXIS
  if loss == "nt_xent":
    fn = losses_lib.make_sharded_nt_xent(mesh, axis)
    return functools.partial(fn, temperature=temperature)
  if loss == "maskfn":
    fn = losses_lib.make_sharded_maskfn(mesh, axis)
    return functools.partial(fn, temperature=temperature, weight=maskfn_weight)
  if loss == "multi_positive":
    fn = losses_lib.make_sharded_multi_positive_pairs(mesh, axis)
    return functools.partial(fn, temperature=temperature)
  raise ValueError(f"loss {loss!r} unknown; known: {LOSSES}")


def make_sharded_augment(mesh: Mesh) -> Callable[[dict], dict]:
  """``batch -> batch``: the device path's spatial augmentation
  (:func:`stclr_jax.data.device_augment.augment_views`) on each device's
  own clips, in ``shard_map`` (no clip crosses devices); a batch the host
  augmented passes unchanged."""
  spec = P(mesh_lib.DATA_AXIS)

  def augment(batch: dict) -> dict:
    if "view_a_crop" not in batch:
      return batch
    keys = [
      f"{v}{suffix}"
      for v in device_augment.VIEWS
      if v in batch
      for suffix in ("", "_crop", "_aug")
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
  *,
  temperature: float,
  mean=(0.0, 0.0, 0.0),
  std=(1.0, 1.0, 1.0),
  loss: str = "nt_xent",
  maskfn_weight: float = losses_lib.MASKFN_WEIGHT,
  descriptor: str = "hog",
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """:func:`train_step` jitted on ``mesh``: state replicated and donated,
  batch sharded on ``'data'``, the contrastive ``loss`` (NT-Xent by
  default; ``"maskfn"`` with ``descriptor``'s descriptors and
  ``maskfn_weight``; ``"multi_positive"``) over the global batch at
  ``temperature``, input normalised with ``mean`` / ``std`` (per
  channel). A batch shipped for device augmentation (uint8 views with
  ``*_crop`` and ``*_aug``, data/device_augment.py) is augmented first,
  inside the step."""
  if descriptor not in descriptors_lib.KINDS:
    raise ValueError(
      f"maskfn descriptor {descriptor!r} unknown; known: "
      f"{descriptors_lib.KINDS}"
    )
  step = functools.partial(
    train_step,
    graphdef=graphdef,
    tx=tx,
    lr_fn=lr_fn,
    loss_fn=make_sharded_loss(
      mesh, loss, temperature=temperature, maskfn_weight=maskfn_weight
    ),
    mean=jnp.asarray(mean, jnp.float32),
    std=jnp.asarray(std, jnp.float32),
    loss_input_kind=(loss, descriptor),
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
