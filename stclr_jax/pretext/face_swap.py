"""SSL-FER's FaceSwap on clips, from five keypoints, in TF ops: a
positive view keeps its expression (eyes, brows, nose and mouth) on
another person's head.

For one clip (the *source*: its frames and each frame's five keypoints)
and one *head* frame of another subject's video (its pixels and its five
keypoints), every output frame is drawn in the head frame's coordinates:

1. **Transform.** A similarity (scale, rotation, translation: no shear, no
   reflection) from the head's keypoints to the source frame's, fitted by
   least squares on all five points. In complex coordinates ``z_s = a z_h
   + b`` has the closed form ``a = sum(conj(h_i) s_i) / sum(|h_i|^2)`` over
   centred points (Umeyama's solution for 2-D: a complex product rotates
   and scales, it cannot reflect). It is recomputed for every frame from
   that frame's keypoints, which are first smoothed over the video's time
   (:func:`smooth_keypoints`), so the source's rigid head motion is
   removed and its inner-face motion kept.
2. **Warp.** The source frame is sampled bilinearly at ``a p + b`` for
   every head pixel ``p`` (edges clamped).
3. **Mask.** Five points cannot draw SSL-FER's 68-point convex hulls, so
   the two regions are polygons in a *face frame* (origin at the eye
   midpoint, x along the eye line, y down, unit the inter-ocular distance
   ``d``): the eyes and brows, a band from 0.55 ``d`` above the eye line
   to 0.25 ``d`` below it and 0.85 ``d`` either side of the midpoint
   (:data:`EYES_BROWS`); the nose and mouth, from 0.3 ``d`` either side
   of the nose 0.35 ``d`` above the nose tip to the mouth corners widened
   by 0.15 ``d``, and down to 0.45 ``d`` below the corners, room for an
   open jaw (:func:`nose_mouth`). The mask is the union of the head's
   polygons and the source's, the latter mapped into the head frame (as
   SSL-FER's ``max(mask(head), warp(mask(source)))``), hard-edged (its
   feathering is commented out). What five points cannot follow: a raised
   brow or a frown moves no keypoint, so the brow band is a fixed box
   above the eyes (68 points follow the brows' own outline), and the
   mouth region is a fixed shape about the corners (68 points follow the
   lips and the opening jaw).
4. **Colour.** The warped source times ``blur(head) / blur(warped)``, a
   Gaussian of odd size about 0.6 ``d`` of the head (OpenCV's sigma for
   that size), in float, so the source's skin takes the head's tone;
   SSL-FER adds 128 to denominators <= 1, here they are raised to 1.
   Values are **clipped** to [0, 255] before rounding (SSL-FER casts to
   uint8 and wraps).
5. **Composite.** ``head * (1 - m) + corrected * m``.

A clip is swapped whole or not at all. It is left as it is, and counted,
when a keypoint set is missing (:data:`NO_KEYPOINTS`: the head frame has
none, or no frame of the source video has; frames without keypoints take
the nearest frame's) or a frame's transform is degenerate
(:data:`DEGENERATE`: an inter-ocular distance under 1 px, a scale outside
[1/8, 8], a value not finite). Keypoints are ``(x, y)`` pixels, pixel
``k`` spanning ``[k, k + 1)``, in MTCNN's order (eyes, nose, mouth
corners).
"""

from __future__ import annotations

import tensorflow as tf

# A positive's swap status (the ``face_swap`` host key, per pair), in
# batch.SWAP_STATUSES' order.
NOT_DRAWN, SWAPPED, NO_KEYPOINTS, DEGENERATE = 0, 1, 2, 3
# The eyes-and-brows band in face-frame units: (x, y) corners.
EYES_BROWS = ((-0.85, -0.55), (0.85, -0.55), (0.85, 0.25), (-0.85, 0.25))
# The nose-and-mouth polygon's margins (face-frame units): half-width
# about the nose and height above its tip; widening of the mouth corners;
# depth below them.
NOSE_HALF_WIDTH, NOSE_ABOVE = 0.3, 0.35
MOUTH_WIDEN, MOUTH_BELOW = 0.15, 0.45
# SSL-FER's COLOUR_CORRECT_BLUR_FRAC.
BLUR_FRACTION = 0.6
# A transform whose scale leaves this range is degenerate.
MAX_SCALE = 8.0


def _complex(points):
  """``(..., 2)`` float (x, y) -> complex64 ``(...)``."""
  points = tf.cast(points, tf.float32)
  return tf.complex(points[..., 0], points[..., 1])


def _real(z):
  return tf.stack([tf.math.real(z), tf.math.imag(z)], axis=-1)


def similarity(src, dst):
  """``(a, b)`` complex64 of the least-squares similarity ``dst ~ a * src
  + b`` over the points' last-but-one axis: ``src``, ``dst`` float
  ``(..., K, 2)``; ``a`` and ``b`` have the leading shape. ``a``'s
  modulus is the scale, its argument the rotation."""
  zs, zd = _complex(src), _complex(dst)
  ms = tf.reduce_mean(zs, axis=-1, keepdims=True)
  md = tf.reduce_mean(zd, axis=-1, keepdims=True)
  cs, cd = zs - ms, zd - md
  num = tf.reduce_sum(tf.math.conj(cs) * cd, axis=-1)
  den = tf.reduce_sum(tf.math.real(cs * tf.math.conj(cs)), axis=-1)
  a = num / tf.complex(den, tf.zeros_like(den))
  b = md[..., 0] - a * ms[..., 0]
  return a, b


def smooth_keypoints(keypoints, radius: int):
  """``(smoothed, found)``: a video's keypoints ``(T, 5, 2)`` with each
  frame's set averaged with its neighbours up to ``radius`` frames away
  (those with keypoints; a frame without takes its nearest frame's set
  first), and whether any frame has keypoints (if none: all NaN). A
  constant set is kept exactly (the average is of differences from the
  centre)."""
  kp = tf.cast(keypoints, tf.float32)
  t = tf.shape(kp)[0]
  ok = tf.reduce_all(tf.math.is_finite(kp), axis=[1, 2])
  found = tf.reduce_any(ok)
  pos = tf.range(t)
  valid = tf.boolean_mask(pos, ok)
  # (A frame 0 stands in when there is none, so argmin has a column.)
  valid = tf.concat(
    [valid, tf.zeros([1 - tf.minimum(tf.size(valid), 1)], tf.int32)], 0
  )
  # The nearest frame with keypoints (the earlier one on a tie).
  dist = tf.abs(pos[:, None] - valid[None, :])
  nearest = tf.gather(valid, tf.argmin(dist, axis=1, output_type=tf.int32))
  kp = tf.gather(kp, tf.where(found, nearest, pos))
  kp = tf.where(tf.math.is_finite(kp), kp, tf.zeros_like(kp))
  acc = tf.zeros_like(kp)
  count = tf.zeros([t], tf.float32)
  for off in range(-radius, radius + 1):
    j = tf.clip_by_value(pos + off, 0, t - 1)
    inside = tf.cast((pos + off >= 0) & (pos + off < t), tf.float32)
    acc += (tf.gather(kp, j) - kp) * inside[:, None, None]
    count += inside
  out = kp + acc / count[:, None, None]
  return tf.where(found, out, tf.fill(tf.shape(out), float("nan"))), found


def face_frame(keypoints):
  """``(origin, axis)`` complex64 of each keypoint set ``(..., 5, 2)``:
  the eye midpoint, and the eye line's vector (left eye to right eye,
  its modulus the inter-ocular distance ``d``). A face-frame point ``u``
  is at ``origin + axis * u`` in the image (y down)."""
  z = _complex(keypoints)
  return (z[..., 0] + z[..., 1]) / 2, z[..., 1] - z[..., 0]


def polygons(keypoints):
  """The mask's two polygons of each keypoint set ``(..., 5, 2)``: the
  eyes-and-brows band ``(..., 4, 2)`` and the nose-and-mouth polygon
  ``(..., 6, 2)``, vertices in image pixels, in order round each."""
  origin, axis = face_frame(keypoints)
  o, ax = origin[..., None], axis[..., None]
  band = tf.constant([complex(*p) for p in EYES_BROWS], tf.complex64)
  eyes = o + ax * band
  # The nose and mouth in face-frame units (the frame is a similarity, so
  # the polygon moves with the face).
  u = (_complex(keypoints[..., 2:5, :]) - o) / ax
  nose, left, right = u[..., 0], u[..., 1], u[..., 2]

  def c(x, y):
    return tf.complex(tf.cast(x, tf.float32), tf.cast(y, tf.float32))

  re, im = tf.math.real, tf.math.imag
  shape = [
    c(re(nose) - NOSE_HALF_WIDTH, im(nose) - NOSE_ABOVE),
    c(re(nose) + NOSE_HALF_WIDTH, im(nose) - NOSE_ABOVE),
    c(re(right) + MOUTH_WIDEN, im(right)),
    c(re(right) + MOUTH_WIDEN / 3, im(right) + MOUTH_BELOW),
    c(re(left) - MOUTH_WIDEN / 3, im(left) + MOUTH_BELOW),
    c(re(left) - MOUTH_WIDEN, im(left)),
  ]
  mouth = o + ax * tf.stack(shape, axis=-1)
  return _real(eyes), _real(mouth)


def polygon_mask(vertices, height, width):
  """1.0 where a pixel's centre is inside the polygon, else 0.0:
  ``vertices`` ``(..., V, 2)`` (x, y) pixels in order round a simple
  polygon (V static); returns ``(..., height, width)`` float32, by the
  even-odd rule: a pixel is inside when a ray from it to the left crosses
  an odd number of edges."""
  v = tf.cast(vertices, tf.float32)
  n = v.shape[-2]
  y = (tf.range(height, dtype=tf.float32) + 0.5)[:, None]  # (H, 1)
  x = tf.range(width, dtype=tf.float32) + 0.5  # (W,)
  inside = None
  for k in range(n):
    (x0, y0), (x1, y1) = (
      (v[..., i, 0, None, None], v[..., i, 1, None, None])
      for i in (k, (k + 1) % n)
    )  # each (..., 1, 1)
    spans = (y0 > y) != (y1 > y)  # (..., H, 1): the edge crosses the row
    dy = tf.where(spans, y1 - y0, tf.ones_like(y1 - y0))
    cross = x0 + (y - y0) * (x1 - x0) / dy  # (..., H, 1)
    hit = spans & (x < cross)  # (..., H, W)
    inside = hit if inside is None else tf.math.logical_xor(inside, hit)
  return tf.cast(inside, tf.float32)


def face_mask(keypoints, height, width):
  """The union of the two polygons' masks of each keypoint set
  ``(..., 5, 2)``: ``(..., height, width)`` float32 in {0, 1}."""
  eyes, mouth = polygons(keypoints)
  return tf.maximum(
    polygon_mask(eyes, height, width), polygon_mask(mouth, height, width)
  )


def blur_size(keypoints):
  """SSL-FER's Gaussian kernel size for a head's keypoints ``(5, 2)``:
  ``int(0.6 d)`` made odd (at least 1)."""
  d = tf.abs(face_frame(keypoints)[1])
  k = tf.cast(tf.math.floor(BLUR_FRACTION * d), tf.int32)
  return tf.maximum(k + 1 - tf.math.floormod(k, 2), 1)


# OpenCV's kernels of sizes 1, 3, 5 and 7 for sigma <= 0, centred in 7.
_SMALL_KERNELS = (
  (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
  (0.0, 0.0, 0.25, 0.5, 0.25, 0.0, 0.0),
  (0.0, 0.0625, 0.25, 0.375, 0.25, 0.0625, 0.0),
  (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
)


def _blur_matrix(n, g):
  """``(n, n)`` float32 ``M`` with ``x @ M`` a 1-D convolution of ``x``'s
  last axis (length ``n``) with the odd kernel ``g``, borders reflected
  without the edge pixel (OpenCV's BORDER_REFLECT_101)."""
  r = tf.shape(g)[0] // 2
  out = tf.range(n)[None, :]  # (1, n): output positions
  taps = tf.range(-r, r + 1)[:, None]  # (K, 1)
  src = out + taps  # (K, n): the source of each tap, reflected
  period = tf.maximum(2 * (n - 1), 1)
  src = tf.math.floormod(src, period)
  src = tf.where(src >= n, period - src, src)
  # M[i, j] = sum of the taps of output j that read input i.
  onehot = tf.one_hot(src, n, dtype=tf.float32)  # (K, n_out, n_in)
  return tf.einsum("k,kji->ij", g, onehot)


def gaussian_blur(images, size):
  """OpenCV's ``GaussianBlur(images, (size, size), 0)`` in float:
  ``images`` ``(N, H, W, C)``, ``size`` an odd int32 scalar (a tensor)
  below the frame's sides; the kernel is OpenCV's fixed one for sizes up
  to 7, else a Gaussian of sigma ``0.3 ((size - 1) / 2 - 1) + 0.8``
  (OpenCV 5 rounds some sizes' taps to 1/256: under one grey level
  apart); borders reflected without the edge pixel (OpenCV's default).
  Separable, each pass a product with a banded matrix."""
  images = tf.cast(images, tf.float32)
  r = size // 2
  sigma = 0.3 * (tf.cast(r, tf.float32) - 1.0) + 0.8
  x = tf.cast(tf.range(-r, r + 1), tf.float32)
  g = tf.exp(-(x**2) / (2 * sigma**2))
  g = g / tf.reduce_sum(g)
  # OpenCV's getGaussianKernel takes sizes up to 7 from a fixed table.
  g = tf.cond(
    size <= 7,
    lambda: tf.slice(
      tf.constant(_SMALL_KERNELS)[tf.minimum(r, 3)],
      [3 - tf.minimum(r, 3)],
      [2 * tf.minimum(r, 3) + 1],
    ),
    lambda: g,
  )
  h, w = tf.shape(images)[1], tf.shape(images)[2]
  out = tf.einsum("nhwc,hv->nvwc", images, _blur_matrix(h, g))
  return tf.einsum("nhwc,wv->nhvc", out, _blur_matrix(w, g))


def warp(frames, a, b, height, width):
  """Each frame ``(T, Hs, Ws, 3)`` sampled bilinearly at ``a p + b`` for
  every pixel ``p`` of a ``(height, width)`` output (``a``, ``b``
  complex64 ``(T,)`` in pixel-index coordinates: centres at integers);
  float32 ``(T, height, width, 3)``, edges clamped."""
  ar, ai = tf.math.real(a), tf.math.imag(a)
  br, bi = tf.math.real(b), tf.math.imag(b)
  zero = tf.zeros_like(ar)
  transforms = tf.stack([ar, -ai, br, ai, ar, bi, zero, zero], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
    images=tf.cast(frames, tf.float32),
    transforms=transforms,
    output_shape=tf.stack([height, width]),
    fill_value=0.0,
    interpolation="BILINEAR",
    fill_mode="NEAREST",
  )


def swap_clip(source, source_keypoints, head, head_keypoints, colour=True):
  """``(clip, status)``: the source clip's faces put on the head frame
  (the module's steps), uint8 ``(T, Hh, Wh, 3)`` in the head frame's
  size, and :data:`SWAPPED`; or the source clip as it is and
  :data:`NO_KEYPOINTS` or :data:`DEGENERATE`.

  ``source``: uint8 ``(T, Hs, Ws, 3)``; ``source_keypoints``: its frames'
  keypoints ``(T, 5, 2)``, already smoothed and filled
  (:func:`smooth_keypoints`; NaN: none); ``head``: uint8 ``(Hh, Wh, 3)``
  and its keypoints ``(5, 2)``. ``colour``: the colour correction (step
  4; off only to test the composite).
  """
  src_kp = tf.cast(source_keypoints, tf.float32)
  head_kp = tf.cast(head_keypoints, tf.float32)
  found = tf.reduce_all(tf.math.is_finite(src_kp)) & tf.reduce_all(
    tf.math.is_finite(head_kp)
  )
  src_kp = tf.where(tf.math.is_finite(src_kp), src_kp, tf.zeros_like(src_kp))
  head_kp = tf.where(
    tf.math.is_finite(head_kp), head_kp, tf.zeros_like(head_kp)
  )
  hh, hw = tf.shape(head)[0], tf.shape(head)[1]
  # Head -> source frame t, in pixel-index coordinates (centres at ints).
  a, b = similarity(
    tf.broadcast_to(head_kp - 0.5, tf.shape(src_kp)), src_kp - 0.5
  )
  scale = tf.abs(a)
  d_head = tf.abs(face_frame(head_kp)[1])
  d_src = tf.abs(face_frame(src_kp)[1])
  sound = (
    (d_head >= 1.0)
    & tf.reduce_all(d_src >= 1.0)
    & tf.reduce_all(scale >= 1.0 / MAX_SCALE)
    & tf.reduce_all(scale <= MAX_SCALE)
    & tf.reduce_all(tf.math.is_finite(_real(a)))
    & tf.reduce_all(tf.math.is_finite(_real(b)))
  )
  status = tf.where(found, tf.where(sound, SWAPPED, DEGENERATE), NO_KEYPOINTS)

  def swapped():
    warped = warp(source, a, b, hh, hw)
    # The source's polygons in head coordinates: keypoints mapped back
    # through the inverse similarity (edge coordinates, +-0.5 as above).
    back = _real((_complex(src_kp - 0.5) - b[:, None]) / a[:, None]) + 0.5
    mask = tf.maximum(
      face_mask(head_kp, hh, hw)[None], face_mask(back, hh, hw)
    )[..., None]
    head_f = tf.cast(head, tf.float32)[None]
    if colour:
      size = blur_size(head_kp)
      ratio = gaussian_blur(head_f, size) / tf.maximum(
        gaussian_blur(warped, size), 1.0
      )
      warped = warped * ratio
    out = head_f * (1.0 - mask) + tf.clip_by_value(warped, 0.0, 255.0) * mask
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

  def kept():
    return tf.cast(source, tf.uint8)

  clip = tf.cond(status == SWAPPED, swapped, kept)
  return clip, tf.cast(status, tf.int32)


def pick(candidates, seed):
  """The index of a uniformly drawn True entry of ``candidates`` (bool
  ``(N,)``), -1 if there is none."""
  where = tf.cast(tf.where(candidates)[:, 0], tf.int32)
  n = tf.shape(where)[0]
  r = tf.random.stateless_uniform([], seed, 0, tf.maximum(n, 1), dtype=tf.int32)
  return tf.concat([where, [-1]], 0)[tf.where(n > 0, r, n)]


def swap_positive(frames, keypoints, head, head_keypoints, drawn, colour):
  """``(clip, status)`` of one positive view: :func:`swap_clip` when
  ``drawn`` (a bool scalar), else the frames as they are and
  :data:`NOT_DRAWN`."""
  return tf.cond(
    drawn,
    lambda: swap_clip(frames, keypoints, head, head_keypoints, colour),
    lambda: (tf.cast(frames, tf.uint8), tf.constant(NOT_DRAWN, tf.int32)),
  )
