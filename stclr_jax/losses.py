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

The same module holds the losses of the methods that followed, each with
its all-gather form: SSL-FER's MaskFN (:func:`maskfn`) and CL-MEx's
multi-positive NT-Xent (:func:`multi_positive_nt_xent`, a reconstruction);
and masked autoencoding's :func:`reconstruction_mse`, which needs no gather.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from stclr_jax.pretext.options import SSLFER_MASKFN_WEIGHT

_EPS = 1e-12


def l2_normalize(z: jax.Array) -> jax.Array:
  """Rows scaled to unit norm (in float32, or float64 for float64 input);
  zero rows stay zero."""
  z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
  sq = jnp.sum(jnp.square(z), axis=-1, keepdims=True)
  return z * jax.lax.rsqrt(jnp.maximum(sq, _EPS))


def _pair_logits(za_local, zb_local, za_all, zb_all, offset, temperature):
  """``(logits, self_idx, pos_idx)`` of the local anchors (rows ``[view a;
  view b]``) against all ``2N`` candidates, cosine over ``temperature``;
  the anchor's own column is -inf."""
  n, big_n = za_local.shape[0], za_all.shape[0]
  anchors = l2_normalize(jnp.concatenate([za_local, zb_local], axis=0))
  cands = l2_normalize(jnp.concatenate([za_all, zb_all], axis=0))
  logits = (anchors @ cands.T) / temperature
  local = jnp.arange(n) + offset
  self_idx = jnp.concatenate([local, local + big_n])
  pos_idx = jnp.concatenate([local + big_n, local])
  cols = jnp.arange(2 * big_n)
  logits = jnp.where(cols[None, :] == self_idx[:, None], -jnp.inf, logits)
  return logits, self_idx, pos_idx


def _anchor_terms(za_local, zb_local, za_all, zb_all, offset, temperature):
  """Per-anchor losses and top-1 hits for the local anchors.

  Args:
    za_local, zb_local: (n, D) local rows of the two views.
    za_all, zb_all: (N, D) all rows of the two views (n == N on one device).
    offset: index of the first local row within the global batch.
  Returns:
    (losses, hits), each of shape (2n,), ordered [view a; view b].
  """
  logits, _, pos_idx = _pair_logits(
    za_local, zb_local, za_all, zb_all, offset, temperature
  )
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


def sharded(body, mesh: Mesh, axis_name: str = "data"):
  """``body`` in ``jax.shard_map`` over ``axis_name`` of ``mesh``: every
  argument is split along its first axis (the rows of the global batch),
  and ``body(*local rows) -> (loss, metrics)`` returns values that are
  the same on every device (replicated out). The one wrapper of every
  loss here, e.g. ``sharded(functools.partial(nt_xent_sharded,
  temperature=0.1), mesh)(z_a, z_b)``; callable inside or outside
  ``jax.jit``, and differentiable."""

  def fn(*args):
    return jax.shard_map(
      body,
      mesh=mesh,
      in_specs=P(axis_name),
      out_specs=(P(), P()),
    )(*args)

  return fn


# MaskFN (SSL-FER, Shu et al. 2022): the false negative moves from the
# denominator to a down-weighted extra positive.

MASKFN_WEIGHT = SSLFER_MASKFN_WEIGHT  # SSL-FER's lambda, 0.8


def _maskfn_terms(
  za_l, zb_l, za_all, zb_all, da_l, db_l, da_all, db_all, offset, temperature
):
  """Per-anchor ``(l1, l2, hits, k_star)`` of MaskFN (see :func:`maskfn`)."""
  logits, self_idx, pos_idx = _pair_logits(
    za_l, zb_l, za_all, zb_all, offset, temperature
  )
  cols = jnp.arange(logits.shape[1])[None, :]
  desc = l2_normalize(jnp.concatenate([da_l, db_l], axis=0))
  desc_all = l2_normalize(jnp.concatenate([da_all, db_all], axis=0))
  sim = jax.lax.stop_gradient(desc @ desc_all.T)
  negative = (cols != self_idx[:, None]) & (cols != pos_idx[:, None])
  k_star = jnp.argmax(jnp.where(negative, sim, -jnp.inf), axis=1)
  rest = negative & (cols != k_star[:, None])
  lse_rest = jax.nn.logsumexp(jnp.where(rest, logits, -jnp.inf), axis=1)
  pos_logit = jnp.take_along_axis(logits, pos_idx[:, None], axis=1)[:, 0]
  k_logit = jnp.take_along_axis(logits, k_star[:, None], axis=1)[:, 0]
  l1 = jnp.logaddexp(pos_logit, lse_rest) - pos_logit
  l2 = jnp.logaddexp(k_logit, lse_rest) - k_logit
  hits = (jnp.argmax(logits, axis=1) == pos_idx).astype(jnp.float32)
  return l1, l2, hits, k_star


def _check_maskfn(z_a, z_b, d_a, d_b, num_pairs):
  _check_pair(z_a, z_b)
  _check_pair(d_a, d_b)
  if d_a.shape[0] != z_a.shape[0]:
    raise ValueError(
      f"maskfn: {z_a.shape[0]} embeddings but {d_a.shape[0]} descriptors"
    )
  if num_pairs < 2:
    raise ValueError(
      "maskfn needs at least 2 pairs in the (global) batch: with one, an "
      "anchor has no negative to call false"
    )


def maskfn(z_a, z_b, d_a, d_b, temperature, weight=MASKFN_WEIGHT):
  """SSL-FER's MaskFN loss, as its released code computes it.

  Rows ``[z_a; z_b]`` as in NT-Xent (row i's positive p(i) is i +- N).
  ``d_a``, ``d_b``: the rows' frozen descriptors (no gradient flows into
  them); cosine similarity of descriptors picks, per anchor, the most
  similar negative ``k*`` (no threshold), the presumed false negative.
  With ``Neg'`` the negatives without ``k*`` and ``s = cos(z_i, z_j)/tau``:

      l1_i = -log(e^{s_ip} / (e^{s_ip} + sum_{Neg'} e^{s_ij}))
      l2_i = -log(e^{s_ik*} / (e^{s_ik*} + sum_{Neg'} e^{s_ij}))
      loss = mean(l1) + weight * mean(l2)

  Returns ``(loss, metrics)``: ``contrastive_top1`` and the two means.
  """
  _check_maskfn(z_a, z_b, d_a, d_b, z_a.shape[0])
  l1, l2, hits, _ = _maskfn_terms(
    z_a, z_b, z_a, z_b, d_a, d_b, d_a, d_b, 0, temperature
  )
  loss = jnp.mean(l1) + weight * jnp.mean(l2)
  return loss, {
    "contrastive_top1": jnp.mean(hits),
    "maskfn_l1": jnp.mean(l1),
    "maskfn_l2": jnp.mean(l2),
  }


def maskfn_false_negatives(d_a, d_b) -> jax.Array:
  """``k*`` of every row of ``[d_a; d_b]`` (a column of the 2N rows): the
  negative, by descriptor cosine, that MaskFN treats as a false one."""
  n = d_a.shape[0]
  d = l2_normalize(jnp.concatenate([d_a, d_b], axis=0))
  rows = jnp.arange(2 * n)
  pos = (rows + n) % (2 * n)
  negative = (rows[None, :] != rows[:, None]) & (rows[None, :] != pos[:, None])
  return jnp.argmax(jnp.where(negative, d @ d.T, -jnp.inf), axis=1)


def maskfn_sharded(
  z_a, z_b, d_a, d_b, temperature, weight=MASKFN_WEIGHT, axis_name="data"
):
  """Per-device body for ``jax.shard_map``: embeddings and descriptors are
  all-gathered, so ``k*`` is chosen over the global batch. Value and
  gradient equal :func:`maskfn` on the gathered batch."""
  gather = functools.partial(
    jax.lax.all_gather, axis_name=axis_name, tiled=True
  )
  za_all, zb_all, da_all, db_all = map(gather, (z_a, z_b, d_a, d_b))
  _check_maskfn(z_a, z_b, d_a, d_b, za_all.shape[0])
  offset = jax.lax.axis_index(axis_name) * z_a.shape[0]
  l1, l2, hits, _ = _maskfn_terms(
    z_a, z_b, za_all, zb_all, d_a, d_b, da_all, db_all, offset, temperature
  )
  rows = 2 * za_all.shape[0]
  mean = lambda x: jax.lax.psum(jnp.sum(x), axis_name) / rows
  m1, m2 = mean(l1), mean(l2)
  return m1 + weight * m2, {
    "contrastive_top1": mean(hits),
    "maskfn_l1": m1,
    "maskfn_l2": m2,
  }


# Multi-positive NT-Xent (CL-MEx, as reconstructed: SupCon's "mean over
# positives of the log-probability" with instance group ids).


def _multi_positive_terms(z_local, g_local, z_all, g_all, offset, temperature):
  """Per-anchor ``(loss, has_positive, hit)`` of the local rows."""
  m = z_local.shape[0]
  logits = (l2_normalize(z_local) @ l2_normalize(z_all).T) / temperature
  self_idx = jnp.arange(m) + offset
  cols = jnp.arange(z_all.shape[0])[None, :]
  is_self = cols == self_idx[:, None]
  logits = jnp.where(is_self, -jnp.inf, logits)
  log_prob = logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)
  positive = (g_local[:, None] == g_all[None, :]) & ~is_self
  count = jnp.sum(positive, axis=1)
  total = jnp.sum(jnp.where(positive, log_prob, 0.0), axis=1)
  has = count > 0
  loss = jnp.where(has, -total / jnp.maximum(count, 1), 0.0)
  hit = jnp.take_along_axis(
    positive, jnp.argmax(logits, axis=1)[:, None], axis=1
  )[:, 0]
  return loss, has.astype(jnp.float32), hit.astype(jnp.float32)


def _check_groups(z, groups):
  if z.ndim != 2 or groups.shape != (z.shape[0],):
    raise ValueError(
      "multi_positive_nt_xent needs (M, D) embeddings and (M,) group ids, "
      f"got {z.shape} and {groups.shape}"
    )


def multi_positive_nt_xent(z, groups, temperature):
  """``(1/M') sum_i -(1/|P(i)|) sum_{p in P(i)} log(e^{s_ip} /
  sum_{a != i} e^{s_ia})``, ``P(i)`` the other rows of i's group,
  ``s = cos/tau``; the mean runs over the M' rows that have a positive.
  With two rows per group it is NT-Xent. Returns ``(loss, metrics)``:
  ``contrastive_top1`` (the nearest row is a positive) and
  ``anchors_with_positive`` (the share of rows in the mean)."""
  _check_groups(z, groups)
  loss, has, hit = _multi_positive_terms(z, groups, z, groups, 0, temperature)
  n = jnp.maximum(jnp.sum(has), 1.0)
  return jnp.sum(loss) / n, {
    "contrastive_top1": jnp.sum(hit * has) / n,
    "anchors_with_positive": jnp.mean(has),
  }


def multi_positive_sharded(z, groups, temperature, axis_name="data"):
  """Per-device body for ``jax.shard_map``: rows and group ids
  all-gathered; equals :func:`multi_positive_nt_xent` on the gathered
  batch, value and gradient."""
  _check_groups(z, groups)
  z_all = jax.lax.all_gather(z, axis_name, tiled=True)
  g_all = jax.lax.all_gather(groups, axis_name, tiled=True)
  offset = jax.lax.axis_index(axis_name) * z.shape[0]
  loss, has, hit = _multi_positive_terms(
    z, groups, z_all, g_all, offset, temperature
  )
  psum = lambda x: jax.lax.psum(jnp.sum(x), axis_name)
  n = jnp.maximum(psum(has), 1.0)
  return psum(loss) / n, {
    "contrastive_top1": psum(hit * has) / n,
    "anchors_with_positive": psum(has) / z_all.shape[0],
  }


def multi_positive_pairs(z_a, z_b, groups, temperature):
  """:func:`multi_positive_nt_xent` of the two view stacks (rows ``[z_a;
  z_b]``), ``groups`` the group id of each row of a stack (both views of
  a row share it). With every group id distinct it is NT-Xent."""
  _check_pair(z_a, z_b)
  return multi_positive_nt_xent(
    jnp.concatenate([z_a, z_b], axis=0),
    jnp.concatenate([groups, groups], axis=0),
    temperature,
  )


def multi_positive_pairs_sharded(
  z_a, z_b, groups, temperature, axis_name="data"
):
  """Per-device body of :func:`multi_positive_pairs`: each device stacks
  its own rows ``[z_a; z_b]`` and the gathered rows are scored as in
  :func:`multi_positive_sharded`. The loss is a mean over anchors with
  positives defined by group ids, so the row order does not change it:
  it equals :func:`multi_positive_pairs` on the gathered stacks."""
  _check_pair(z_a, z_b)
  return multi_positive_sharded(
    jnp.concatenate([z_a, z_b], axis=0),
    jnp.concatenate([groups, groups], axis=0),
    temperature,
    axis_name,
  )


def reconstruction_mse(
  predictions: jax.Array, targets: jax.Array, masked_tokens: jax.Array
) -> jax.Array:
  """Masked autoencoding's loss (VideoMAE, SVFAP): the mean squared error
  over the masked tokens and all their values. ``predictions (B, M, D)``
  for the masked tokens, ``targets (B, N, D)`` for every token
  (:func:`stclr_jax.models.masked_autoencoder.pixel_targets`),
  ``masked_tokens (B, M)`` their indices in ``targets``. A mean over the
  global batch: under ``jax.jit`` with a sharded batch XLA reduces across
  devices, so no all-gather is needed."""
  if predictions.shape[:2] != masked_tokens.shape:
    raise ValueError(
      f"predictions {predictions.shape} do not match the masked tokens "
      f"{masked_tokens.shape}"
    )
  target = jnp.take_along_axis(targets, masked_tokens[..., None], axis=1)
  if target.shape != predictions.shape:
    raise ValueError(
      f"predictions {predictions.shape} against targets {target.shape}"
    )
  err = predictions.astype(target.dtype) - target
  return jnp.mean(jnp.square(err))
