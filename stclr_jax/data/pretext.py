"""Pretext options of the one ST-CLR pretraining path (SSL-FER's TimeAug and
HardNeg for clips), in TF ops, stateless and seeded like
:mod:`stclr_jax.data.sampling`.

All three are off by default: the paper's ST-CLR draws each view with its
own sampler over the whole video.

**Temporal shift** (SSL-FER's TimeAug; :class:`TemporalShift`). View A is
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

**Hard negatives** (SSL-FER's HardNeg; :class:`HardNegatives`). Each video
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

import dataclasses

import numpy as np
import tensorflow as tf

from stclr_jax.data import sampling

# SSL-FER (data_aug/data_loader.py): 2..6 frames at 25/6 frames/s, weights
# 5:4:3:2:1 ("distr_mode c"); a hard negative 12 frames (2.88 s) away.
SSLFER_OFFSETS = (0.48, 0.72, 0.96, 1.20, 1.44)
SSLFER_WEIGHTS = (5.0, 4.0, 3.0, 2.0, 1.0)
SSLFER_GAP = 2.88
DEFAULT_FPS = 25.0

GAP, HALVES, NO_GAP = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class TemporalShift:
  """View B's window moved from view A's by a drawn offset (seconds)."""

  offsets: tuple[float, ...] = SSLFER_OFFSETS
  weights: tuple[float, ...] = SSLFER_WEIGHTS

  def __post_init__(self):
    if not self.offsets or len(self.offsets) != len(self.weights):
      raise ValueError(
        "temporal shift: offsets and weights must be non-empty and of "
        f"equal length, got {self.offsets} and {self.weights}"
      )
    if min(self.offsets) < 0 or min(self.weights) < 0:
      raise ValueError(
        "temporal shift: offsets and weights must be >= 0, got "
        f"{self.offsets} and {self.weights}"
      )
    if sum(self.weights) <= 0:
      raise ValueError("temporal shift: the weights sum to 0")

  @property
  def probabilities(self) -> tuple[float, ...]:
    s = float(sum(self.weights))
    return tuple(w / s for w in self.weights)


@dataclasses.dataclass(frozen=True)
class HardNegatives:
  """A second pair per video, ``gap`` seconds from the first."""

  gap: float = SSLFER_GAP

  def __post_init__(self):
    if not self.gap > 0:
      raise ValueError(f"hard negatives: gap must be > 0 s, got {self.gap}")


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
  if modes:
    idx = sampling.sample_view_indices(length, clip_len, modes, seed)
  else:
    idx = sampling.sample_indices(length, clip_len, "uniform", seed)
  return lo + idx


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


# Same-subject negatives (ours): the batch plan, in NumPy.


@dataclasses.dataclass(frozen=True)
class SubjectPlan:
  """What :func:`same_subject_plan` makes of a shard's subjects, per epoch
  (a function of the counts only, the same every epoch)."""

  batches: int  # per epoch
  groups: int  # m-video groups that hold the shard's videos
  fill_ins: int  # extra video slots per epoch (repeats), see the plan
  mixed_groups: int  # groups of subjects with fewer than m videos
  epoch_length: int  # videos per epoch, batches * k * m


def check_subjects(subjects, videos_per_subject: int, batch_size: int, what):
  """Clear errors for data that cannot make ``k x m`` batches."""
  subjects = np.asarray(subjects)
  m = videos_per_subject
  if m < 2:
    raise ValueError(
      f"{what}: same-subject negatives need videos_per_subject >= 2, got {m}"
    )
  if batch_size % m:
    raise ValueError(
      f"{what}: the batch of {batch_size} videos (per data shard) is not "
      f"a multiple of videos_per_subject={m}"
    )
  missing = int(np.sum(subjects < 0))
  if missing:
    raise ValueError(
      f"{what}: same-subject negatives need subject ids, and {missing} of "
      f"the {len(subjects)} videos have none (subject_id -1). Give the data "
      "set a subject per video (video_folder: the manifest's subject "
      "column) or turn pretext.same_subject_negatives off"
    )
  ids, counts = np.unique(subjects, return_counts=True)
  k = batch_size // m
  if int(np.sum(counts >= m)) < k:
    raise ValueError(
      f"{what}: a batch of {k} subjects x {m} videos needs {k} subjects "
      f"with at least {m} videos each; this shard has "
      f"{int(np.sum(counts >= m))} (of {len(ids)} subjects)"
    )


def _groups(subjects, m, rng):
  """``([(key, indices)], fills, mixed)``: every video in exactly one
  group. A subject's videos make m-video groups, its last one completed
  with its own other videos (fill-ins). Subjects with fewer than m videos
  are pooled into mixed groups (negative keys); the last of those may be
  short, and :func:`same_subject_plan` completes it when it places it (from
  videos not in its batch). ``fills`` counts the fill-ins made here and
  the ones the short mixed group will take."""
  groups, short, fills = [], [], 0
  for s in np.unique(subjects):
    vids = rng.permutation(np.flatnonzero(subjects == s))
    if len(vids) < m:
      short.append(vids)
      continue
    full = len(vids) // m * m
    groups += [(int(s), vids[j : j + m]) for j in range(0, full, m)]
    rest = vids[full:]
    if len(rest):
      fill = rng.choice(vids[:full], m - len(rest), replace=False)
      groups.append((int(s), np.concatenate([rest, fill])))
      fills += len(fill)
  mixed = 0
  if short:
    pooled = rng.permutation(np.concatenate(short))
    for j in range(0, len(pooled), m):
      g = pooled[j : j + m]
      fills += m - len(g)
      mixed += 1
      groups.append((-mixed, g))
  return groups, fills, mixed


def same_subject_plan(subjects, m: int, k: int, rng) -> tuple[np.ndarray, int]:
  """One epoch's video order for batches of ``k`` groups of ``m`` videos:
  each group one subject (except the mixed groups of subjects with fewer
  than ``m`` videos), the subjects of a batch's groups distinct, and no
  video twice in a batch.

  Every video is in one group (a subject's last group is completed with
  its own other videos). Batches take the ``k`` subjects with the most
  groups left (random among ties), which uses the fewest batches,
  ``max(ceil(G / k), most groups of one subject)``; when fewer than ``k``
  subjects have groups left, the batch is completed with fresh groups of
  subjects not in it (fill-ins), and a short mixed group with videos of
  subjects not in it. Returns ``(order, fill_ins)``, ``order`` of length
  ``batches * k * m``.
  """
  subjects = np.asarray(subjects)
  groups, fills, _ = _groups(subjects, m, rng)
  queues: dict[int, list] = {}
  for key, g in groups:
    queues.setdefault(key, []).append(g)
  full_subjects = [
    int(s) for s, c in zip(*np.unique(subjects, return_counts=True)) if c >= m
  ]
  n_batches = max(-(-len(groups) // k), max(len(q) for q in queues.values()))
  order = []
  for _ in range(n_batches):
    keys = [key for key, q in queues.items() if q]
    tie = rng.random(len(keys))
    ranked = sorted(
      range(len(keys)), key=lambda i: (-len(queues[keys[i]]), tie[i])
    )
    batch = [queues[keys[i]].pop() for i in ranked[:k]]
    taken = set(subjects[np.concatenate(batch)].tolist())
    spare = [s for s in full_subjects if s not in taken]
    for s in rng.permutation(spare)[: k - len(batch)]:
      batch.append(rng.choice(np.flatnonzero(subjects == s), m, replace=False))
      taken.add(int(s))
      fills += m
    for j, g in enumerate(batch):
      if len(g) < m:  # the short mixed group: videos of other subjects
        free = np.flatnonzero(~np.isin(subjects, list(taken)))
        if len(free) < m - len(g):  # few subjects: any video not in it
          free = np.setdiff1d(np.arange(len(subjects)), np.concatenate(batch))
        batch[j] = np.concatenate([g, rng.choice(free, m - len(g), False)])
        taken |= set(subjects[batch[j]].tolist())
    order.append(np.concatenate(batch))
  if any(queues.values()):  # cannot happen (largest-first is optimal)
    raise AssertionError("same_subject_plan: groups left after the epoch")
  return np.concatenate(order).astype(np.int64), fills


def subject_plan_info(subjects, m: int, k: int) -> SubjectPlan:
  """The per-epoch shape of :func:`same_subject_plan` (it depends on the
  counts only)."""
  rng = np.random.default_rng(0)
  subjects = np.asarray(subjects)
  groups, _, mixed = _groups(subjects, m, rng)
  order, fills = same_subject_plan(subjects, m, k, rng)
  return SubjectPlan(
    batches=len(order) // (k * m),
    groups=len(groups),
    fill_ins=fills,
    mixed_groups=mixed,
    epoch_length=len(order),
  )


# Whole-group batches (CL-MEx's multi-view positives): the batch plan.


@dataclasses.dataclass(frozen=True)
class GroupPlan:
  """The per-epoch shape of :func:`group_plan` (the same every epoch)."""

  groups: int
  views: int  # videos per group
  batches: int  # per epoch
  left_over: int  # groups not drawn this epoch (a new draw each epoch)
  epoch_length: int  # videos per epoch, batches * batch_size


def group_plan_info(groups, batch_size: int, what: str) -> GroupPlan:
  """Checks that ``groups`` (one id per video) can fill batches of
  ``batch_size`` with whole groups, and returns the plan's shape.

  Every group must have the same number of videos V (the views), and V
  must divide the batch. A group with fewer videos than the others is
  reported by id: a sequence missing a view, or one split between two
  data shards (multi-host runs split the split by record ranges; keep a
  group's records together and use ``data.num_shards`` = 1 per group
  range).
  """
  groups = np.asarray(groups, np.int64)
  missing = int(np.sum(groups < 0))
  if missing:
    raise ValueError(
      f"{what}: {missing} of the {len(groups)} videos have no group id "
      "(-1); every video needs one for whole-group batches"
    )
  ids, counts = np.unique(groups, return_counts=True)
  views = int(np.max(counts))
  uneven = ids[counts != views]
  if len(uneven):
    bad = ", ".join(
      f"{int(g)} ({int(c)})"
      for g, c in zip(uneven[:5], counts[counts != views][:5])
    )
    raise ValueError(
      f"{what}: groups must all have the same number of videos; most have "
      f"{views}, but {len(uneven)} do not: group (videos) {bad}. A group "
      "split between data shards shows up here too"
    )
  if batch_size % views:
    raise ValueError(
      f"{what}: the batch of {batch_size} videos (per data shard) is not a "
      f"multiple of the {views} videos per group"
    )
  k = batch_size // views
  if len(ids) < k:
    raise ValueError(
      f"{what}: a batch of {k} groups needs {k} groups; this shard has "
      f"{len(ids)}"
    )
  batches = len(ids) // k
  return GroupPlan(
    groups=len(ids),
    views=views,
    batches=batches,
    left_over=len(ids) - batches * k,
    epoch_length=batches * batch_size,
  )


def group_plan(groups, batch_size: int, rng) -> np.ndarray:
  """One epoch's video order: the groups in a random order, each group's
  videos together, ``batch_size / V`` whole groups per batch. The groups
  that do not fill a last batch wait for a later epoch (each epoch draws
  anew). Call :func:`group_plan_info` first: it checks the groups."""
  groups = np.asarray(groups, np.int64)
  ids, inverse, counts = np.unique(
    groups, return_inverse=True, return_counts=True
  )
  k = batch_size // int(np.max(counts))
  chosen = rng.permutation(len(ids))[: len(ids) // k * k]
  members = np.argsort(inverse, kind="stable").reshape(len(ids), -1)
  return members[chosen].reshape(-1).astype(np.int64)


# MaskFN's face-part crops (SSL-FER's eyes and mouth), from MTCNN's five
# keypoints instead of dlib's 68 landmarks. In units of the inter-ocular
# distance d: the eyes' box spans both eye centres +- 0.3 d across and
# +- 0.2 d up and down (SSL-FER: landmarks 36-47 widened by 10 px up and
# down, about 0.15 d on its face crops); the mouth's spans the corners +-
# 0.05 d across, 0.25 d above and 0.45 d below them (landmarks 48-67,
# tight, with room for an open jaw).
EYE_BOX = (0.3, 0.2, 0.2)  # across, above, below
MOUTH_BOX = (0.05, 0.25, 0.45)
PARTS = ("eyes", "mouth")


@dataclasses.dataclass(frozen=True)
class FaceParts:
  """MaskFN's crops: each view's centre frame, un-augmented, gives the
  eyes' and the mouth's crop, zero-padded square and resized to ``size``
  (SSL-FER: 64)."""

  size: int = 64


def _part_box(points, d, box):
  """``(y0, x0, y1, x1)`` in pixels around ``points`` (k, 2) (x, y)."""
  across, above, below = box
  x, y = points[:, 0], points[:, 1]
  return tf.stack(
    [
      tf.reduce_min(y) - above * d,
      tf.reduce_min(x) - across * d,
      tf.reduce_max(y) + below * d,
      tf.reduce_max(x) + across * d,
    ]
  )


def face_part_crops(frame, keypoints, size: int) -> tf.Tensor:
  """The eyes' and the mouth's crops of one frame: uint8 ``(2, size, size,
  3)``.

  ``frame``: uint8 ``(H, W, 3)``; ``keypoints``: ``(5, 2)`` float ``(x,
  y)`` pixels (pixel ``k`` spans ``[k, k + 1)``) in MTCNN's order (eyes,
  nose, mouth corners). Each box (:data:`EYE_BOX`, :data:`MOUTH_BOX`) is
  padded to a square about its centre with black (SSL-FER's ``SquarePad``)
  and resized bilinearly; parts outside the frame are black too. Keypoints
  that are not finite (no face found) give two black crops, as SSL-FER's
  failed detections do.
  """
  kp = tf.cast(keypoints, tf.float32)
  ok = tf.reduce_all(tf.math.is_finite(kp))
  kp = tf.where(ok, kp, tf.zeros_like(kp))
  d = tf.maximum(tf.norm(kp[1] - kp[0]), 1.0)
  boxes = tf.stack(
    [_part_box(kp[0:2], d, EYE_BOX), _part_box(kp[3:5], d, MOUTH_BOX)]
  )
  centre = (boxes[:, :2] + boxes[:, 2:]) / 2
  half = tf.reduce_max(boxes[:, 2:] - boxes[:, :2], axis=1) / 2
  square = tf.concat(
    [centre - half[:, None], centre + half[:, None]], axis=1
  )  # (2, 4): y0, x0, y1, x1, pixel edges
  hw = tf.cast(tf.shape(frame)[:2], tf.float32)
  # crop_and_resize samples pixel centres: edge e is centre e - 0.5, and
  # the output's first and last samples sit half a sample inside the box.
  step = (square[:, 2:] - square[:, :2]) / size
  first = square[:, :2] + step / 2 - 0.5
  last = square[:, 2:] - step / 2 - 0.5
  norm = tf.concat(
    [first / (hw - 1.0), last / (hw - 1.0)], axis=1
  )  # y0, x0, y1, x1 normalised
  image = tf.cast(frame, tf.float32)[None]
  crops = tf.image.crop_and_resize(
    image, norm, tf.zeros([2], tf.int32), [size, size], extrapolation_value=0.0
  )
  # Black outside the part's own box (the square padding).
  grid = (tf.range(size, dtype=tf.float32) + 0.5)[None, :] * step[:, :1]
  ys = square[:, 0:1] + grid
  xs = (
    square[:, 1:2]
    + (tf.range(size, dtype=tf.float32) + 0.5)[None, :] * step[:, 1:2]
  )
  in_y = (ys >= boxes[:, 0:1]) & (ys <= boxes[:, 2:3])
  in_x = (xs >= boxes[:, 1:2]) & (xs <= boxes[:, 3:4])
  inside = tf.cast(in_y[:, :, None] & in_x[:, None, :], tf.float32)
  crops = crops * inside[..., None] * tf.cast(ok, tf.float32)
  return tf.cast(tf.clip_by_value(tf.round(crops), 0, 255), tf.uint8)
