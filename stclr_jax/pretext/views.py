"""Which frames form a video's pretraining views: ST-CLR's pair and the
pretext options that change it (SSL-FER's TimeAug and HardNeg, for clips),
in TF ops, stateless and seeded like :mod:`stclr_jax.data.sampling`.

Both are off by default: the paper's ST-CLR draws each view with its own
sampler over the whole video (:func:`view_draws` draws every view of a
video, with the options or without).

**Temporal shift** (SSL-FER's TimeAug;
:class:`~stclr_jax.pretext.options.TemporalShift`). View A is
drawn by ST-CLR's samplers as usual; its *window* is the span from its
first to its last frame. View B is drawn by its own sampler inside that
window moved by ``sign * delta`` frames, where ``delta = round(offset *
fps)`` and the offset (seconds) is drawn from ``offsets`` with ``weights``.
SSL-FER's values are the defaults: 2 to 6 frames of its 25/6 frames/s
(0.48, 0.72, 0.96, 1.20, 1.44 s), weighted 5:4:3:2:1 toward the short
ones. The side follows SSL-FER's rule: a random side when both fit, the
side that fits when one does. When neither fits (the window is too long
for the segment: always for the ``uniform`` sampler, which spans it all),
the shift is cut to the most the segment allows, on the side with more
room, and the pair is counted as ``shift_clamped``. A cut to 0 gives
ST-CLR's pair (the same distribution, drawn from other seeds). ST-CLR's
``random`` sampler also spans nearly the whole segment, so on short videos
most pairs are cut: the count says how many. SSL-FER instead dropped such
frames; nothing is dropped here.

**Hard negatives** (SSL-FER's HardNeg;
:class:`~stclr_jax.pretext.options.HardNegatives`). Each video
gives a second pair ``(NA, NP)`` from a segment whose start is at least
``gap`` seconds from the first pair's segment; the two pairs are drawn
alike (samplers, then the temporal shift if on) inside their segments. The
segments, for a video of ``T`` frames and a gap of ``g = round(gap * fps)``
frames (at least 1), by policy (the per-video ``gap_policy`` field):

* ``0`` (gap): ``T >= 2g``. Both segments are ``g`` frames long, disjoint,
  their starts ``>= g`` apart; which of the two holds the anchor pair is a
  coin flip.
* ``1`` (halves): ``2 <= T < 2g``, the short videos of Oulu-CASIA-like
  data (neutral to apex in about a second). The first and the last
  ``T // 2`` frames: the neutral start against the apex end, the anchor
  pair in either half by a coin flip.
* ``2`` (none): ``T == 1``. Both pairs come from the one frame.

Every video is kept; the policies are counted in the training log.

The frame rate is the data set's ``fps`` feature where it has one, else
``default_fps`` (25: Oulu-CASIA and the synthetic data are 25 frames/s).
"""

from __future__ import annotations

import tensorflow as tf

from stclr_jax.data import sampling
from stclr_jax.pretext.batch import HARD_A, HARD_B, VIEW_A, VIEW_B
from stclr_jax.pretext.options import (
  DEFAULT_FPS,
  HardNegatives,
  Pretext,
  TemporalShift,
)

GAP, HALVES, NO_GAP = 0, 1, 2  # batch.GAP_POLICIES' order


def frames(seconds, fps) -> tf.Tensor:
  """``round(seconds * fps)`` as int32."""
  return tf.cast(
    tf.round(tf.cast(seconds, tf.float32) * tf.cast(fps, tf.float32)),
    tf.int32,
  )


def draw_offset(shift: TemporalShift, fps, seed) -> tf.Tensor:
  """One offset in frames (int32 scalar) drawn with ``shift.weights``."""
  logits = tf.math.log(tf.constant([shift.probabilities], tf.float32))
  k = tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[0, 0]
  return frames(tf.gather(tf.constant(shift.offsets, tf.float32), k), fps)


def _in_segment(lo, length, clip_len, modes, seed):
  """Indices of one view drawn inside ``[lo, lo + length)``."""
  return lo + sampling.clip_indices(length, clip_len, modes, seed)


def shift_window(a0, a1, lo, hi, delta, seed):
  """``(shift, clamped)``: the signed frame shift of a window ``[a0, a1]``
  inside the segment ``[lo, hi)`` for a drawn ``delta`` (SSL-FER's side
  rule; cut to the room there is when it fits on neither side)."""
  room_plus = hi - 1 - a1
  room_minus = a0 - lo
  fits_plus = delta <= room_plus
  fits_minus = delta <= room_minus
  coin = tf.random.stateless_uniform([], seed) < 0.5
  plus = tf.where(
    fits_plus & fits_minus,
    coin,
    tf.where(
      fits_plus | fits_minus,
      fits_plus,
      # Neither fits: the side with more room (a coin flip on a tie).
      tf.where(room_plus == room_minus, coin, room_plus > room_minus),
    ),
  )
  fits = fits_plus | fits_minus
  size = tf.where(
    fits, delta, tf.maximum(tf.where(plus, room_plus, room_minus), 0)
  )
  return tf.where(plus, size, -size), tf.cast(~fits, tf.int32)


def pair_indices(
  lo, length, clip_len: int, modes, seed, shift=None, fps=DEFAULT_FPS
):
  """``(idx_a, idx_b, clamped)`` of a positive pair drawn inside the
  segment ``[lo, lo + length)``.

  Without ``shift``: ST-CLR's pair (each view its own sampler over the
  segment; both one uniform sub-video when ``modes`` is empty). With it:
  the module's temporal shift. ``clamped`` is 1 when the shift was cut.
  """
  modes = tuple(modes)
  s = tf.random.experimental.stateless_split(seed, 4)
  idx_a = _in_segment(lo, length, clip_len, modes, s[0])
  if shift is None:
    if modes:
      idx_b = _in_segment(lo, length, clip_len, modes, s[1])
    else:
      idx_b = idx_a
    return idx_a, idx_b, tf.constant(0, tf.int32)
  a0, a1 = idx_a[0], idx_a[-1]
  delta = draw_offset(shift, fps, s[2])
  moved, clamped = shift_window(a0, a1, lo, lo + length, delta, s[3])
  idx_b = _in_segment(a0 + moved, a1 - a0 + 1, clip_len, modes, s[1])
  return idx_a, idx_b, clamped


def segments(num_frames, gap_frames, seed):
  """``(anchor_lo, hard_lo, length, policy)`` of the two pairs' segments
  (the module's hard-negative policies)."""
  t = tf.cast(num_frames, tf.int32)
  g = tf.maximum(tf.cast(gap_frames, tf.int32), 1)
  s = tf.random.experimental.stateless_split(seed, 3)
  # gap: the earlier start e in [0, T - 2g], the later in [e + g, T - g].
  early = tf.random.stateless_uniform(
    [], s[0], 0, tf.maximum(t - 2 * g + 1, 1), dtype=tf.int32
  )
  late = tf.random.stateless_uniform(
    [], s[1], 0, tf.maximum(t - 2 * g - early + 1, 1), dtype=tf.int32
  ) + (early + g)
  half = t // 2
  policy = tf.where(t >= 2 * g, GAP, tf.where(t >= 2, HALVES, NO_GAP))
  first = tf.where(policy == GAP, early, 0)
  second = tf.where(
    policy == GAP, late, tf.where(policy == HALVES, t - half, 0)
  )
  length = tf.where(policy == GAP, g, tf.where(policy == HALVES, half, t))
  anchor_first = tf.random.stateless_uniform([], s[2]) < 0.5
  anchor_lo = tf.where(anchor_first, first, second)
  hard_lo = tf.where(anchor_first, second, first)
  return anchor_lo, hard_lo, length, policy


def video_indices(
  num_frames,
  clip_len: int,
  modes,
  seed,
  *,
  shift: TemporalShift | None = None,
  hard: HardNegatives | None = None,
  fps=DEFAULT_FPS,
) -> dict:
  """Frame indices of one video's pretraining views under the options:
  ``idx_a``, ``idx_b`` (the positive pair), and with ``hard``: ``hard_a``,
  ``hard_b`` (the second pair), ``gap_policy``, ``anchor_lo``,
  ``hard_lo`` and ``length`` (the segments); with ``shift``:
  ``shift_clamped``, the pairs whose shift was cut (0, 1 or 2)."""
  n = tf.cast(num_frames, tf.int32)
  s = tf.random.experimental.stateless_split(seed, 3)
  out = {}
  if hard is None:
    lo, length = tf.constant(0, tf.int32), n
  else:
    gap = frames(hard.gap, fps)
    lo, hard_lo, length, policy = segments(n, gap, s[2])
    out["hard_a"], out["hard_b"], hard_cut = pair_indices(
      hard_lo, length, clip_len, modes, s[1], shift, fps
    )
    out.update(
      gap_policy=tf.cast(policy, tf.int32),
      anchor_lo=lo,
      hard_lo=hard_lo,
      length=length,
    )
  out["idx_a"], out["idx_b"], cut = pair_indices(
    lo, length, clip_len, modes, s[0], shift, fps
  )
  if shift is not None:
    out["shift_clamped"] = cut + (hard_cut if hard is not None else 0)
  return out


def view_draws(
  num_frames,
  clip_len: int,
  modes,
  seed,
  pretext: Pretext = Pretext(),
  fps=None,
) -> tuple[dict, dict]:
  """``(indices, seeds)``: every pretraining view of one video, drawn from
  its element ``seed``, under the run's ``pretext`` options (TimeAug's
  shift and HardNeg's second pair; ``fps``: the video's frame rate, else
  ``pretext.default_fps``). ``indices`` are the views' frame indices as
  :func:`video_indices` names them (``idx_a``, ``idx_b``, and with the
  options its other fields); ``seeds`` the stateless seed of each view's
  spatial augmentation, by view: ``view_a``, ``view_b``, and with ``hard``
  ``hard_a`` and ``hard_b``.

  Without options: the paper's ST-CLR pair over the whole video. The
  seed's 4-way split gives both views' indices (its first two seeds, as
  :func:`pair_indices` draws them without a shift) and their augmentation
  (its last two). These draws fix the data stream of every run without
  pretext options: keep them. With options: its 5-way split gives
  :func:`video_indices` its seed (the first) and the views' augmentation
  (the next two, and the last two with ``hard``).
  """
  modes = tuple(modes)
  shift, hard = pretext.timeaug, pretext.hardneg
  if fps is None:
    fps = pretext.default_fps
  if shift is None and hard is None:
    s = tf.random.experimental.stateless_split(seed, 4)
    idx_a, idx_b, _ = pair_indices(0, num_frames, clip_len, modes, seed)
    return {"idx_a": idx_a, "idx_b": idx_b}, {VIEW_A: s[2], VIEW_B: s[3]}
  s = tf.random.experimental.stateless_split(seed, 5)
  idx = video_indices(
    num_frames, clip_len, modes, s[0], shift=shift, hard=hard, fps=fps
  )
  seeds = {VIEW_A: s[1], VIEW_B: s[2]}
  if hard is not None:
    seeds.update({HARD_A: s[3], HARD_B: s[4]})
  return idx, seeds
