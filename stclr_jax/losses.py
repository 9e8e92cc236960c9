"""NT-Xent, eq. (1) of the ST-CLR paper (SimCLR's contrastive loss).

For a batch of N videos with two views each, the 2N embeddings are anchors
and candidates at once. For anchor i with positive j:

    loss_i = -log( exp(cos(z_i, z_j)/tau)
                   / sum_{k != i} exp(cos(z_i, z_k)/tau) )

and the loss is the mean over all 2N anchors. Rows are ordered
``[z_a; z_b]``: anchor i < N has positive i + N and vice versa.

Two forms share one implementation:

* :func:`nt_xent` on the whole batch (one device, or under ``jax.jit`` with
  any sharding: XLA partitions it);
* :func:`nt_xent_sharded` for use *inside* ``jax.shard_map`` over a mesh
  axis: each device all-gathers both views' embeddings, scores its local
  anchors against the 2N global candidates (positive indices offset by its
  axis index), and the per-anchor losses are summed over devices and divided
  by 2N. Value and gradient equal :func:`nt_xent` on the gathered batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

_EPS = 1e-12


def l2_normalize(z: jax.Array) -> jax.Array:
  """Rows scaled to unit norm (in float32, or float64 for float64 input);
  zero rows stay zero."""
  z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
  sq = jnp.sum(jnp.square(z), axis=-1, keepdims=True)
  return z * jax.lax.rsqrt(jnp.maximum(sq, _EPS))


def _anchor_terms(za_local, zb_local, za_all, zb_all, offset, temperature):
  """Per-anchor losses and top-1 hits for the local anchors.

  Args:
    za_local, zb_local: (n, D) local rows of the two views.
    za_all, zb_all: (N, D) all rows of the two views (n == N on one device).
    offset: index of the first local row within the global batch.
  Returns:
    (losses, hits), each of shape (2n,), ordered [view a; view b].
  """
  n, big_n = za_local.shape[0], za_all.shape[0]
  anchors = l2_normalize(jnp.concatenate([za_local, zb_local], axis=0))
  cands = l2_normalize(jnp.concatenate([za_all, zb_all], axis=0))
  logits = (anchors @ cands.T) / temperature  # (2n, 2N)
  local = jnp.arange(n) + offset
  self_idx = jnp.concatenate([local, local + big_n])  # anchor's own column
  pos_idx = jnp.concatenate([local + big_n, local])  # positive's column
  cols = jnp.arange(2 * big_n)
  logits = jnp.where(cols[None, :] == self_idx[:, None], -jnp.inf, logits)
  pos_logit = jnp.take_along_axis(logits, pos_idx[:, None], axis=1)[:, 0]
  losses = jax.nn.logsumexp(logits, axis=1) - pos_logit
  hits = (jnp.argmax(logits, axis=1) == pos_idx).astype(jnp.float32)
  return losses, hits


def _check_pair(z_a, z_b):
  if z_a.ndim != 2 or z_a.shape != z_b.shape:
    raise ValueError(
      "nt_xent needs two (N, D) arrays of equal shape, got "
      f"{z_a.shape} and {z_b.shape}"
    )


def nt_xent_with_metrics(
  z_a: jax.Array, z_b: jax.Array, temperature: float
) -> tuple[jax.Array, dict]:
  """NT-Xent and contrastive top-1 (positive is the nearest of 2N-1).

  Returns ``(loss, {"contrastive_top1": ...})``: the loss in float32 (float64
  for float64 embeddings), the top-1 in float32.
  """
  _check_pair(z_a, z_b)
  losses, hits = _anchor_terms(z_a, z_b, z_a, z_b, 0, temperature)
  return jnp.mean(losses), {"contrastive_top1": jnp.mean(hits)}


def nt_xent(z_a: jax.Array, z_b: jax.Array, temperature: float) -> jax.Array:
  """Eq. (1) averaged over all 2N anchors; cosine similarity; stable."""
  return nt_xent_with_metrics(z_a, z_b, temperature)[0]


def nt_xent_sharded(
  z_a: jax.Array, z_b: jax.Array, temperature: float, axis_name: str = "data"
) -> tuple[jax.Array, dict]:
  """Per-device body for ``jax.shard_map``: all-gathered negatives.

  ``z_a`` and ``z_b`` are this device's (n, D) rows; the batch is split in
  equal, contiguous shards along ``axis_name`` (which may be a tuple of
  mesh axes). Returns the global loss and top-1, identical on every device.
  """
  _check_pair(z_a, z_b)
  za_all = jax.lax.all_gather(z_a, axis_name, tiled=True)
  zb_all = jax.lax.all_gather(z_b, axis_name, tiled=True)
  offset = jax.lax.axis_index(axis_name) * z_a.shape[0]
  losses, hits = _anchor_terms(z_a, z_b, za_all, zb_all, offset, temperature)
  denom = 2 * za_all.shape[0]
  loss = jax.lax.psum(jnp.sum(losses), axis_name) / denom
  top1 = jax.lax.psum(jnp.sum(hits), axis_name) / denom
  return loss, {"contrastive_top1": top1}


def make_sharded_nt_xent(mesh: Mesh, axis_name: str = "data"):
  """``(z_a, z_b, temperature) -> (loss, metrics)`` with the batch sharded on
  ``axis_name`` of ``mesh``: :func:`nt_xent_sharded` wrapped in shard_map.
  Call it inside or outside ``jax.jit``; it is differentiable."""

  def fn(z_a, z_b, temperature):
    body = functools.partial(
      nt_xent_sharded, temperature=temperature, axis_name=axis_name
    )
    return jax.shard_map(
      body,
      mesh=mesh,
      in_specs=(P(axis_name), P(axis_name)),
      out_specs=(P(), P()),
    )(z_a, z_b)

  return fn
