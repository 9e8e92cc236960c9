"""Tube masks for masked video autoencoding (VideoMAE, SVFAP).

A tube mask hides the same spatial positions in every temporal slot of a
clip: of a frame's ``S`` token positions, ``int(ratio * S)`` are masked
(VideoMAE's ``TubeMaskingGenerator`` rule: at 90%, 90 of 100 positions at
SVFAP's 160^2 clips, 32 of 36 at the CPU size) and the rest stay visible.
TPSBT's temporal pyramid needs it: its convolution over time runs at each
spatial position, so every temporal slot must keep the same positions.

A mask is drawn per clip from uniform noise: the positions of the
``S_vis`` smallest values are visible, the others masked, each set sorted
(so the visible tokens keep their raster order). Shapes are static
(``S_vis`` follows from ``S`` and the ratio), so the draw runs inside a
jitted step. The noise comes from a key per clip, so a clip's mask does not
depend on how the batch is laid out over devices or hosts, and a resumed
run draws the masks the uninterrupted one drew.

This module is TensorFlow-free.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def num_masked(positions: int, ratio: float) -> int:
  """Masked positions of a frame's ``positions``: ``int(ratio *
  positions)``; an error when none or all would be masked."""
  if not 0.0 < ratio < 1.0:
    raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
  masked = int(ratio * positions)
  if masked == 0 or masked == positions:
    raise ValueError(
      f"a mask ratio of {ratio} over {positions} positions per frame leaves "
      f"{positions - masked} visible: need at least one of each"
    )
  return masked


def tube_mask(noise: jax.Array, ratio: float) -> tuple[jax.Array, jax.Array]:
  """``noise (B, S)`` -> ``(visible (B, S_vis), masked (B, S - S_vis))``,
  int32 position indices, each sorted; the visible positions are those of
  the smallest noise values."""
  s = noise.shape[-1]
  n_vis = s - num_masked(s, ratio)
  order = jnp.argsort(noise, axis=-1).astype(jnp.int32)
  visible = jnp.sort(order[..., :n_vis], axis=-1)
  masked = jnp.sort(order[..., n_vis:], axis=-1)
  return visible, masked


def draw(keys: jax.Array, positions: int, ratio: float):
  """A tube mask per clip from its key (``keys``: ``(B,)`` typed keys or
  ``(B, 2)`` uint32 key data): :func:`tube_mask` of uniform noise."""
  if not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
    keys = jax.random.wrap_key_data(keys.astype(jnp.uint32))
  noise = jax.vmap(lambda k: jax.random.uniform(k, (positions,)))(keys)
  return tube_mask(noise, ratio)


def gather_positions(tokens: jax.Array, index: jax.Array) -> jax.Array:
  """``tokens (B, T, S, C)``, ``index (B, K)`` -> ``(B, T, K, C)``: the
  same K positions of every temporal slot, per clip."""
  return jnp.take_along_axis(tokens, index[:, None, :, None], axis=2)


def flat_positions(index: jax.Array, slots: int, positions: int):
  """Token indices ``t * S + s`` of ``index (B, K)`` in every temporal slot,
  t-major: ``(B, slots * K)``, the order of a ``(B, T, K, C)`` tensor
  flattened."""
  t = jnp.arange(slots, dtype=index.dtype)[None, :, None]
  return (t * positions + index[:, None, :]).reshape(index.shape[0], -1)
