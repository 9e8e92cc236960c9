"""Frozen descriptors of face parts, for MaskFN's false-negative choice.

SSL-FER (Shu et al. 2022) describes each image by a frozen ImageNet
ResNet-18 applied to crops of the eyes and the mouth. Its weights cannot be
fetched at run time here, so the library's default descriptor is the
histogram of oriented gradients (HOG) of the same crops, computed on the
device inside the jitted step; ``bench/maskfn_descriptors.py`` measures
which descriptor finds same-expression videos most often (BENCHMARKS.md
at 6b7ade2, "Which descriptor chooses MaskFN's false negative").

:func:`hog` is scikit-image's ``skimage.feature.hog`` (Dalal & Triggs)
rewritten in jax.numpy (``tests/descriptors_test.py`` compares them):
central-difference gradients (zero on the border), the channel with the
largest gradient per pixel, unsigned orientations in hard bins, cell
means, and blocks normalised with L2-Hys.

This module imports jax only (no TensorFlow), as the step does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stclr_jax.pretext.options import DESCRIPTORS as KINDS


def _gradients(image):
  """Central differences along rows and columns, zero on the border."""
  zr = jnp.zeros_like(image[..., :1, :, :])
  zc = jnp.zeros_like(image[..., :, :1, :])
  g_row = jnp.concatenate(
    [zr, image[..., 2:, :, :] - image[..., :-2, :, :], zr], axis=-3
  )
  g_col = jnp.concatenate(
    [zc, image[..., :, 2:, :] - image[..., :, :-2, :], zc], axis=-2
  )
  return g_row, g_col


def hog(
  images: jax.Array,
  orientations: int = 9,
  pixels_per_cell: int = 8,
  cells_per_block: int = 3,
  eps: float = 1e-5,
) -> jax.Array:
  """HOG feature vectors of ``(..., H, W, C)`` images (float; any range).

  Equals ``skimage.feature.hog(image, orientations, (p, p), (b, b),
  block_norm="L2-Hys", channel_axis=-1)`` per image; returns ``(...,
  n_blocks**2 * b**2 * orientations)`` with ``n_blocks = H // p - b + 1``
  (square images).
  """
  if images.ndim < 3 or images.shape[-3] != images.shape[-2]:
    raise ValueError(f"hog needs square (..., H, W, C) images: {images.shape}")
  p, b = pixels_per_cell, cells_per_block
  cells = images.shape[-3] // p
  if cells < b:
    raise ValueError(
      f"hog: {images.shape[-3]} px holds {cells} cells of {p} px, fewer than "
      f"a block of {b}"
    )
  g_row, g_col = _gradients(images)
  magnitude = jnp.hypot(g_row, g_col)
  # The channel with the largest gradient (the first on ties), per pixel.
  pick = jnp.argmax(magnitude, axis=-1)[..., None]
  g_row = jnp.take_along_axis(g_row, pick, axis=-1)[..., 0]
  g_col = jnp.take_along_axis(g_col, pick, axis=-1)[..., 0]
  magnitude = jnp.take_along_axis(magnitude, pick, axis=-1)[..., 0]
  # Unsigned orientation: the gradient turned into the upper half-plane
  # (angle in [0, 180), 180 wrapping to 0). Bin i holds [i, i + 1) * 180
  # / n; the angle is compared with each edge by the sign of a cross
  # product, not through arctan2: for integer-valued images (uint8 crops)
  # the gradients are exact integers, no edge is ever hit exactly, and the
  # bins do not depend on how arctan2 rounds (which differs between
  # backends, and between jit and eager, by an ulp: enough to move a
  # vote to the next bin).
  flip = (g_row < 0) | ((g_row == 0) & (g_col < 0))
  gr = jnp.where(flip, -g_row, g_row)
  gc = jnp.where(flip, -g_col, g_col)
  edges = jnp.deg2rad(
    (180.0 / orientations) * jnp.arange(1, orientations, dtype=gr.dtype)
  )
  above = gr[..., None] * jnp.cos(edges) - gc[..., None] * jnp.sin(edges)
  bins = jnp.sum(above >= 0, axis=-1)
  votes = jax.nn.one_hot(bins, orientations, dtype=magnitude.dtype)
  votes = votes * magnitude[..., None]
  size = cells * p
  votes = votes[..., :size, :size, :]
  lead = votes.shape[:-3]
  hist = votes.reshape(*lead, cells, p, cells, p, orientations)
  hist = hist.sum(axis=(-4, -2)) / (p * p)  # (..., cells, cells, n)
  n_blocks = cells - b + 1
  blocks = jnp.stack(
    [
      jnp.stack(
        [hist[..., r : r + b, c : c + b, :] for c in range(n_blocks)], -4
      )
      for r in range(n_blocks)
    ],
    -5,
  )  # (..., n_blocks, n_blocks, b, b, n)
  flat = blocks.reshape(*lead, n_blocks, n_blocks, -1)

  def normalise(x):
    return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps * eps)

  out = normalise(jnp.minimum(normalise(flat), 0.2))
  return out.reshape(*lead, -1)


def part_descriptors(crops: jax.Array, kind: str = "hog") -> jax.Array:
  """Descriptors of face-part crops ``(N, parts, S, S, 3)`` uint8 (the eye
  and mouth crops of :func:`stclr_jax.pretext.face_parts.face_part_crops`):
  ``(N, D)``, each part described and the parts concatenated, no gradient.
  MaskFN's loss compares rows by cosine, so scale does not matter.

  ``"hog"``: :func:`hog` of each crop. ``"pixels"``: each crop's grey
  levels less their mean (a baseline with no notion of edges).
  """
  x = jnp.asarray(crops).astype(jnp.float32)  # 0-255: exact gradients
  if kind == "hog":
    d = hog(x)
  elif kind == "pixels":
    grey = jnp.mean(x, axis=-1) / 255.0
    grey = grey - jnp.mean(grey, axis=(-2, -1), keepdims=True)
    d = grey.reshape(*grey.shape[:-2], -1)
  else:
    raise ValueError(f"maskfn descriptor {kind!r} unknown; known: {KINDS}")
  return jax.lax.stop_gradient(d.reshape(d.shape[0], -1))
