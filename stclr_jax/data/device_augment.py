"""Clip-consistent spatial augmentation on the device, inside the jitted
step (TensorFlow-free: the step imports it on the GPU image).

The host (tf.data) draws every random parameter with the same code as the
host path (:func:`stclr_jax.data.augment.draw_params`) and ships, per clip,
the uint8 frames at their cached size, the crop's sampling coordinates and
a small vector of flip and colour parameters
(:func:`stclr_jax.data.augment.device_params`). This module applies them:
bilinear crop-and-resize, flip and the SimCLR colour distortion, the same
parameters for every frame of a clip, vmapped over the clips of a batch.

Each op reproduces the TensorFlow op of the host path
(``tf.image.crop_and_resize``, ``tf.reverse``, the colour ops of
``augment.color_distort`` and the ``AdjustHue`` kernel's hue rotation): the
crop reads the host's own sampling coordinates, so even TensorFlow's
zero row where a coordinate rounds past the frame's last pixel is the
same; the arithmetic agrees to float32 rounding
(tests/data_device_augment_test.py).

Shipped per clip (``K``: each view of the batch schema,
:mod:`stclr_jax.pretext.batch`):

* ``K``: uint8 ``(T, H, W, 3)``, the sampled frames, zero-padded at the
  bottom and right to one ship size for the run;
* ``K_crop``: float32 ``(2, S)``, the crop's sampling coordinates in the
  frame's pixels (rows, then columns; ``-1`` where TensorFlow extrapolates,
  which gives 0);
* ``K_aug``: float32 ``(NUM_PARAMS,)``, laid out as the indices below.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stclr_jax.pretext import batch as batch_lib

# Layout of ``K_aug``.
FLIP, JITTER, BRIGHTNESS, CONTRAST, SATURATION, HUE = range(6)
ORDER = slice(6, 10)  # the colour ops' order: indices into COLOUR_OPS
GRAY = 10
NUM_PARAMS = 11
COLOUR_OPS = ("brightness", "contrast", "saturation", "hue")
# tf.image.rgb_to_grayscale's weights.
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def crop_resize(frames_TxHxWxC: jax.Array, coords_2xS: jax.Array):
  """Bilinear crop-and-resize of every frame at the sampling coordinates
  ``coords_2xS`` (rows ``[0]``, columns ``[1]``, in pixels; negative:
  outside, 0), as ``tf.image.crop_and_resize``'s kernel interpolates:
  along columns in the top and bottom rows, then between them. uint8 frames
  are scaled to [0, 1] after the gather. Returns float32 ``(T, S, S, C)``."""
  h, w = frames_TxHxWxC.shape[1:3]
  in_y, in_x = coords_2xS[0], coords_2xS[1]
  top = jnp.floor(in_y)
  left = jnp.floor(in_x)
  y_lerp = (in_y - top)[None, :, None, None]
  x_lerp = (in_x - left)[None, None, :, None]

  def index(v, n):
    return jnp.clip(v.astype(jnp.int32), 0, n - 1)

  t_i, b_i = index(top, h), index(jnp.ceil(in_y), h)
  l_i, r_i = index(left, w), index(jnp.ceil(in_x), w)

  def pixels(rows, cols):
    v = frames_TxHxWxC[:, rows][:, :, cols].astype(jnp.float32)
    if frames_TxHxWxC.dtype == jnp.uint8:
      v = v / 255.0
    return v

  top_left, top_right = pixels(t_i, l_i), pixels(t_i, r_i)
  bottom_left, bottom_right = pixels(b_i, l_i), pixels(b_i, r_i)
  upper = top_left + (top_right - top_left) * x_lerp
  lower = bottom_left + (bottom_right - bottom_left) * x_lerp
  out = upper + (lower - upper) * y_lerp
  inside = (in_y >= 0)[:, None] & (in_x >= 0)[None, :]
  return jnp.where(inside[None, :, :, None], out, 0.0)


def grayscale(x):
  """Luminance, ``(..., 1)``, with tf.image.rgb_to_grayscale's weights."""
  w = jnp.asarray(GRAY_WEIGHTS, x.dtype)
  return (x[..., 0:1] * w[0] + x[..., 1:2] * w[1]) + x[..., 2:3] * w[2]


def adjust_brightness(x, factor):
  return x * factor


def adjust_contrast(x, factor):
  """Towards the clip's mean luminance (one mean for all frames)."""
  mean = jnp.mean(grayscale(x))
  return (x - mean) * factor + mean


def adjust_saturation(x, factor):
  gray = grayscale(x)
  return gray + (x - gray) * factor


def adjust_hue(x, delta):
  """Rotates the hue by ``delta`` turns, as TensorFlow's ``AdjustHue``
  CPU kernel does: the hue in [0, 6) from the order of the channels, the
  chroma range kept, the ties broken as that kernel breaks them."""
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  r_lt_g = r < g
  # (category, max, mid, min) of the kernel's six orderings.
  cat = jnp.where(
    r_lt_g,
    jnp.where(b < r, 1, jnp.where(b > g, 3, 2)),
    jnp.where(b < g, 0, jnp.where(b > r, 4, 5)),
  )
  v_max = jnp.where(r_lt_g, jnp.where(b > g, b, g), jnp.where(b > r, b, r))
  v_min = jnp.where(r_lt_g, jnp.where(b < r, b, r), jnp.where(b < g, b, g))
  v_mid = jnp.select(
    [cat == 0, cat == 1, cat == 2, cat == 3, cat == 4],
    [g, r, b, g, r],
    b,
  )
  ratio = (v_mid - v_min) / jnp.where(v_max == v_min, 1.0, v_max - v_min)
  even = (cat % 2) == 0
  h = cat.astype(x.dtype) + jnp.where(even, ratio, 1 - ratio)
  h = jnp.where(v_max == v_min, 0.0, h)
  h = h + delta * 6
  h = jnp.where(h < 0, h + 6, h)
  h = jnp.where(h >= 6, h - 6, h)
  c = h.astype(jnp.int32)
  ratio = h - c.astype(x.dtype)
  ratio = jnp.where(c % 2 == 0, ratio, 1 - ratio)
  mid = v_min + ratio * (v_max - v_min)
  # (r, g, b) per category: max/mid/min in the kernel's six layouts.
  r2 = jnp.select(
    [c == 0, c == 1, c == 2, c == 3, c == 4],
    [v_max, mid, v_min, v_min, mid],
    v_max,
  )
  g2 = jnp.select(
    [c == 0, c == 1, c == 2, c == 3, c == 4],
    [mid, v_max, v_max, mid, v_min],
    v_min,
  )
  b2 = jnp.select(
    [c == 0, c == 1, c == 2, c == 3, c == 4],
    [v_min, v_min, mid, v_max, v_max],
    mid,
  )
  return jnp.stack([r2, g2, b2], axis=-1)


def colour(x, params):
  """The SimCLR colour distortion of ``augment.apply_color``: with
  probability ``JITTER`` the four ops in ``ORDER``, each clipped to [0, 1],
  then grayscale with ``GRAY``.

  Under vmap a per-clip choice of op computes every candidate, so the hue
  (the costly op) runs once, at its own position, between the cheap ops
  before it and those after it: 0.37 GB of memory traffic for 4 clips of
  16x112x112 in XLA:CPU's cost analysis, against 0.68 GB with all four
  ops at each position (bench/input_pipeline.py --device_cost)."""
  order = params[ORDER].astype(jnp.int32)
  at = jnp.argmax(order == COLOUR_OPS.index("hue"))

  def cheap(y, i):
    outs = (
      adjust_brightness(y, params[BRIGHTNESS]),
      adjust_contrast(y, params[CONTRAST]),
      adjust_saturation(y, params[SATURATION]),
    )
    return jnp.select(
      [order[i] == j for j in range(len(outs))],
      [jnp.clip(o, 0.0, 1.0) for o in outs],
      y,
    )

  y = x
  for i in range(len(COLOUR_OPS) - 1):  # the ops before the hue
    y = jnp.where(i < at, cheap(y, i), y)
  y = jnp.clip(adjust_hue(y, params[HUE]), 0.0, 1.0)
  for i in range(1, len(COLOUR_OPS)):  # and after it
    y = jnp.where(i > at, cheap(y, i), y)
  x = jnp.where(params[JITTER] > 0, y, x)
  return jnp.where(params[GRAY] > 0, jnp.broadcast_to(grayscale(x), x.shape), x)


def augment_clip(frames, coords, params):
  """One clip: crop-and-resize at ``coords`` (mirrored for a flip: the
  same as flipping the resized clip), then the colour distortion."""
  in_x = coords[1]
  in_x = jnp.where(params[FLIP] > 0, in_x[::-1], in_x)
  x = crop_resize(frames, jnp.stack([coords[0], in_x]))
  return colour(x, params)


def augment_views(batch: dict) -> dict:
  """``batch`` with every shipped view (``K``, ``K_crop``, ``K_aug``)
  replaced by its augmented float32 clips in [0, 1], ``(B, T, S, S, 3)``;
  other entries as they are. A batch that was not shipped
  (:func:`stclr_jax.pretext.batch.is_shipped`) is returned unchanged (the
  host augmented it)."""
  if not batch_lib.is_shipped(batch):
    return batch
  views = [k for k in batch_lib.VIEWS if k in batch]
  params = {p for v in views for p in batch_lib.shipped_keys(v)}
  out = {k: v for k, v in batch.items() if k not in params}
  for k in views:
    crop, aug = batch_lib.shipped_keys(k)
    out[k] = jax.vmap(augment_clip)(batch[k], batch[crop], batch[aug])
  return out
