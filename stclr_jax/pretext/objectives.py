"""Objectives: what a pretext method computes from the model and a batch.

The step (:mod:`stclr_jax.train_step`) takes an objective as an argument
and knows nothing of any loss: an objective is a callable

    objective(model, batch, *, normalize, mesh) -> (loss, metrics)

called inside the jitted step, under ``jax.value_and_grad``. ``model`` is
the merged Flax module in training mode (its BatchNorm statistics update),
``batch`` the global batch sharded on the mesh's ``'data'`` axis (after
the device's augmentation), ``normalize`` the input normalisation of
clips in [0, 1], and ``mesh`` the step's mesh, for losses that all-gather
(:func:`stclr_jax.losses.sharded`). ``loss`` is a scalar and ``metrics``
a dict of scalars, both the same on every device. An objective also names
the batch keys it reads (``batch_keys``).

The contrastive objectives here (NT-Xent, MaskFN, CL-MEx's multi-positive
NT-Xent) share :class:`Contrastive`: the two stacks of views of
:func:`contrastive_views` through ``model.embed_views``, then a per-device
loss body in ``shard_map``. This module is TensorFlow-free.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from stclr_jax import descriptors as descriptors_lib
from stclr_jax import losses as losses_lib
from stclr_jax import mesh as mesh_lib
from stclr_jax.models import masked_autoencoder as mae_lib
from stclr_jax.pretext import batch as batch_lib
from stclr_jax.pretext import masking
from stclr_jax.pretext import options as options_lib


class Objective(Protocol):
  """What the step calls (module docstring)."""

  batch_keys: tuple[str, ...]

  def __call__(
    self, model, batch: dict, *, normalize: Callable, mesh: Mesh
  ) -> tuple[jax.Array, dict]: ...


def _interleave(x, y):
  return jnp.stack([x, y], axis=1).reshape(2 * x.shape[0], *x.shape[1:])


def contrastive_pairs(batch: dict, a: str, b: str, hard_a: str, hard_b: str):
  """Per-row companions of :func:`contrastive_views`' stacks: ``batch[a]``
  and ``batch[b]``, interleaved with ``batch[hard_a]``, ``batch[hard_b]``
  when the batch has hard negatives."""
  if batch_lib.HARD_A not in batch:
    return batch[a], batch[b]
  return _interleave(batch[a], batch[hard_a]), _interleave(
    batch[b], batch[hard_b]
  )


def row_groups(batch: dict) -> jax.Array:
  """The group id of each row of a view stack (CL-MEx's positives): a
  video's ``group`` (>= 0) becomes ``2 * group``, its hard-negative pair
  (another moment of it) ``2 * group + 1``; videos without a group (-1)
  get ids of their own (negative), so their only positive is their pair."""
  g = batch[batch_lib.GROUP].astype(jnp.int32)
  own = -2 - 2 * jnp.arange(g.shape[0], dtype=jnp.int32)
  ids = jnp.where(g >= 0, 2 * g, own)
  if batch_lib.HARD_A not in batch:
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
  return contrastive_pairs(batch, *batch_lib.PAIR, *batch_lib.HARD_PAIR)


class Contrastive:
  """Two view stacks, embedded together, then :meth:`body` (a per-device
  loss of ``(z_a, z_b, *self.inputs(batch))``) over the global batch in
  ``shard_map``. Subclasses set ``body`` and, for extra per-row inputs,
  ``inputs``."""

  batch_keys: tuple[str, ...] = batch_lib.PAIR

  def body(self, axis_name: str) -> Callable:
    raise NotImplementedError

  def inputs(self, batch: dict) -> tuple:
    return ()

  def __call__(self, model, batch, *, normalize, mesh):
    x_a, x_b = contrastive_views(batch)
    extra = self.inputs(batch)
    z_a, z_b = model.embed_views(normalize(x_a), normalize(x_b))
    loss = losses_lib.sharded(self.body(mesh_lib.DATA_AXIS), mesh)
    return loss(z_a, z_b, *extra)


@dataclasses.dataclass(frozen=True)
class NTXent(Contrastive):
  """ST-CLR's NT-Xent (eq. 1) with all-gathered negatives."""

  temperature: float

  def body(self, axis_name):
    return functools.partial(
      losses_lib.nt_xent_sharded,
      temperature=self.temperature,
      axis_name=axis_name,
    )


@dataclasses.dataclass(frozen=True)
class MaskFN(Contrastive):
  """SSL-FER's MaskFN: the negative whose face-part descriptors are most
  alike becomes a positive of weight ``weight``. The descriptors
  (``descriptor``: :data:`stclr_jax.descriptors.KINDS`) of the rows'
  face-part crops (``parts_*``) are computed on the device, frozen."""

  temperature: float
  weight: float = options_lib.SSLFER_MASKFN_WEIGHT
  descriptor: str = "hog"

  def __post_init__(self):
    if self.descriptor not in descriptors_lib.KINDS:
      raise ValueError(
        f"maskfn descriptor {self.descriptor!r} unknown; known: "
        f"{descriptors_lib.KINDS}"
      )

  @property
  def batch_keys(self):
    return (*batch_lib.PAIR, *(batch_lib.PARTS[v] for v in batch_lib.PAIR))

  def inputs(self, batch):
    p_a, p_b = contrastive_pairs(
      batch, *(batch_lib.PARTS[v] for v in batch_lib.VIEWS)
    )
    return (
      descriptors_lib.part_descriptors(p_a, self.descriptor),
      descriptors_lib.part_descriptors(p_b, self.descriptor),
    )

  def body(self, axis_name):
    return functools.partial(
      losses_lib.maskfn_sharded,
      temperature=self.temperature,
      weight=self.weight,
      axis_name=axis_name,
    )


@dataclasses.dataclass(frozen=True)
class MultiPositive(Contrastive):
  """CL-MEx's multi-positive NT-Xent: every row of a group (the views of a
  moment, :func:`row_groups`) is a positive."""

  temperature: float

  @property
  def batch_keys(self):
    return (*batch_lib.PAIR, batch_lib.GROUP)

  def inputs(self, batch):
    return (row_groups(batch),)

  def body(self, axis_name):
    return functools.partial(
      losses_lib.multi_positive_pairs_sharded,
      temperature=self.temperature,
      axis_name=axis_name,
    )


@dataclasses.dataclass(frozen=True)
class MaskedAutoencoding:
  """Masked video autoencoding (VideoMAE; SVFAP with a TPSBT): each clip
  ``view_a`` loses ``ratio`` of its tube positions
  (:func:`stclr_jax.pretext.masking.draw`, from the clip's ``mask_seed``,
  so the mask is the same on any number of devices and after a resume);
  the model (:class:`~stclr_jax.models.masked_autoencoder.
  MaskedVideoAutoencoder`) sees the normalised visible tubes and predicts
  the masked tubes' standardised pixels of the clip in [0, 1]; the loss is
  their mean squared error. No all-gather: the mean runs over the global
  batch under jit. Metrics: the loss again (``reconstruction_mse``) and the
  visible fraction of tubes."""

  ratio: float = 0.9
  batch_keys: tuple[str, ...] = (batch_lib.VIEW_A, batch_lib.MASK_SEED)

  def __call__(self, model, batch, *, normalize, mesh):
    del mesh  # a plain mean over the global batch
    clip = batch[batch_lib.VIEW_A]
    size = model.encoder.size
    _, t, h, w, _ = clip.shape
    slots, positions = t // size.tubelet, (h // size.patch) * (w // size.patch)
    visible, masked = masking.draw(
      batch[batch_lib.MASK_SEED], positions, self.ratio
    )
    pred = model(normalize(clip), visible, masked)
    targets = mae_lib.pixel_targets(clip, size.tubelet, size.patch)
    loss = losses_lib.reconstruction_mse(
      pred, targets, masking.flat_positions(masked, slots, positions)
    )
    frac = jnp.asarray(visible.shape[1] / positions, loss.dtype)
    return loss, {"reconstruction_mse": loss, "visible_fraction": frac}


def from_options(pretext: options_lib.Pretext, temperature: float) -> Objective:
  """The objective of resolved pretext options
  (:class:`~stclr_jax.pretext.options.Pretext`): masked autoencoding, or
  MaskFN, CL-MEx's multi-positive NT-Xent or NT-Xent at ``temperature``
  (the options exclude MaskFN with CL-MEx, and both with masked
  autoencoding)."""
  t = float(temperature)
  if pretext.mae is not None:
    return MaskedAutoencoding(float(pretext.mae.ratio))
  if pretext.maskfn is not None:
    m = pretext.maskfn
    return MaskFN(t, float(m.weight), m.descriptor)
  if pretext.clmex is not None:
    return MultiPositive(t)
  return NTXent(t)


def from_config(config) -> Objective:
  """The objective of a pretraining config: :func:`from_options` of its
  ``pretext`` section at ``loss.temperature``."""
  pretext = options_lib.Pretext.from_config(config)
  return from_options(pretext, config.loss.temperature)
