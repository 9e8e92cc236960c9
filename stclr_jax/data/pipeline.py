"""tf.data assembly: per-host shards, cached frames, two ST-CLR views per
video, and host batches (``stclr_jax.mesh.to_global_arrays`` makes them
global ``jax.Array``s sharded on the ``'data'`` axis).

Determinism and resume
----------------------
The pretraining stream of a shard is a function of ``(seed, step)`` only
(the global batch: of ``(seed, step, number of shards)``, see
``data/input.py``). Epoch ``e``
visits this host's videos in a shuffle seeded by ``(seed, e)``; the video at
position ``p`` of epoch ``e`` gets the augmentation seed
``fold_in(fold_in(seed, e), p)``, from which both views' temporal samplers and
spatial augmentations are derived. Building the pipeline with
``start_step=s`` starts at the epoch and position that an uninterrupted run
reaches after ``s`` batches and skips there *before* any frame is sampled or
augmented, so a resumed run sees exactly the batches the uninterrupted run
would have seen next — it neither replays nor skips data.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from stclr_jax.data import augment as augment_lib
from stclr_jax.data import pretext, sampling

AUTOTUNE = tf.data.AUTOTUNE
PLACEMENTS = ("host", "device")


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """How a video becomes a pretraining view.

  ``temporal_modes``: the samplers each view picks from; empty means
  "without temporal augmentation" (Table IV): both views share one fixed
  uniform sub-video, so only the spatial augmentation differs.
  """

  clip_len: int = 16
  size: int = 112
  temporal_modes: tuple[str, ...] = sampling.MODES
  spatial: augment_lib.SpatialAugment = augment_lib.SpatialAugment()
  # Pretext options (data/pretext.py), off by default: SSL-FER's TimeAug
  # (``shift``) and HardNeg (``hard_negatives``), and the frame rate of a
  # data set without an ``fps`` feature.
  shift: pretext.TemporalShift | None = None
  hard_negatives: pretext.HardNegatives | None = None
  default_fps: float = pretext.DEFAULT_FPS
  # MaskFN's eye and mouth crops of each view's centre frame (``parts_*``).
  face_parts: pretext.FaceParts | None = None
  # Where the spatial augmentation runs: "host" (here, in tf.data) or
  # "device" (the step applies it: data/device_augment.py); the draws are
  # the same. ``ship_size``: the (H, W) every shipped clip is padded to on
  # the device path (None: the data set's frame size after caching).
  placement: str = "host"
  ship_size: tuple[int, int] | None = None

  def __post_init__(self):
    if self.placement not in PLACEMENTS:
      raise ValueError(
        f"augmentation placement {self.placement!r} unknown; choose from "
        f"{PLACEMENTS}"
      )


def shard_for_process(
  split: str, process_index: int, process_count: int
) -> str:
  """The TFDS sub-split read by one process: disjoint, and together complete
  (sizes differ by at most one example)."""
  if not 0 <= process_index < process_count:
    raise ValueError(
      f"process_index {process_index} outside [0, {process_count})"
    )
  return tfds.even_splits(split, n=process_count, drop_remainder=False)[
    process_index
  ]


def _cacheable(
  example, cache_frame_size, with_label=True, with_keypoints=False
):
  """The fields the pipelines use, frames resized for caching. Pretraining
  passes ``with_label=False``: its stream never holds a label, whatever
  the data set has. ``with_keypoints``: the per-frame keypoints too,
  scaled with the frames."""
  video = example["video"]
  keypoints = (
    tf.cast(example["keypoints"], tf.float32) if with_keypoints else None
  )
  if cache_frame_size:
    shape = tf.cast(tf.shape(video)[1:3], tf.float32)
    scale = cache_frame_size / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    if keypoints is not None:  # (x, y) scale as (width, height)
      keypoints = keypoints * tf.reverse(tf.cast(new, tf.float32) / shape, [0])
    video = tf.cast(
      tf.clip_by_value(
        tf.round(tf.image.resize(video, new, antialias=True)), 0, 255
      ),
      tf.uint8,
    )
  out = {
    "video": video,
    "num_frames": tf.shape(video)[0],
    "subject_id": tf.cast(example.get("subject_id", -1), tf.int32),
  }
  if with_label:
    out["label"] = tf.cast(example.get("label", -1), tf.int32)
  if keypoints is not None:
    out["keypoints"] = keypoints
  return out


def _check_nonempty(num_examples, what):
  if num_examples <= 0:
    raise ValueError(
      f"{what}: the split is empty (0 videos); check the "
      "dataset, the split name and the number of processes"
    )


def _seed_tensor(seed, shard_index=0):
  return tf.constant([seed, 0x5EED + shard_index], tf.int64)


def pretrain_dataset(
  examples: tf.data.Dataset,
  num_examples: int,
  *,
  batch_size: int,
  view: ViewSpec,
  seed: int,
  start_step: int = 0,
  cache: bool = True,
  cache_frame_size: int | None = None,
  shard_index: int = 0,
  videos_per_subject: int = 0,
  whole_groups: bool = False,
) -> tf.data.Dataset:
  """Endless stream of ``{"view_a", "view_b", "subject_id"}`` batches for
  contrastive pretraining (one host's share of the batch). Labels are
  dropped at the first step: nothing downstream can read them.

  With ``view.hard_negatives`` a batch also holds the second pair,
  ``"hard_a"`` and ``"hard_b"`` (NA and NP), and ``"gap_policy"`` per
  video; with ``view.shift``, ``"shift_clamped"`` counts the video's pairs
  whose shift was cut (data/pretext.py); with ``view.face_parts``,
  ``"parts_a"`` and ``"parts_b"`` (and ``"parts_hard_a"``,
  ``"parts_hard_b"``) hold each view's eye and mouth crops, uint8 ``(2, S,
  S, 3)``; with ``whole_groups``, ``"group"`` is each video's group id.
  With ``view.placement == "device"`` every view ``K`` is shipped
  un-augmented, uint8 at the cached frame size (padded to the ship size),
  with ``"K_crop"`` and ``"K_aug"``: the same draws, for the step to apply
  (data/device_augment.py).

  Args:
    examples: this host's videos (``video`` uint8 (T,H,W,3), optional
      ``subject_id``, ``fps``, ``keypoints`` (T,5,2), ``group_id``), a finite
      dataset of ``num_examples``.
    batch_size: videos per batch on this host (global batch / processes).
    view: clip length, output size and the augmentations.
    seed: the run's data seed.
    start_step: number of batches already consumed (resume).
    cache: keep decoded (and possibly downscaled) videos in memory.
    cache_frame_size: if set, frames are resized once, before caching, so
      that their shorter side is this many pixels.
    shard_index: index of this logical data shard; folded into the seeds so
      that shards draw independent augmentations.
    videos_per_subject: ``m > 0``: same-subject negatives, batches of
      ``batch_size / m`` subjects x ``m`` videos (:func:`_subject_stream`).
    whole_groups: every group (``group_id``: CL-MEx's views of one
      sequence) whole in one batch (:func:`_group_stream`).
  """
  _check_nonempty(num_examples, "pretrain_dataset")
  if videos_per_subject and whole_groups:
    raise ValueError(
      "pretrain_dataset: same-subject batches and whole groups are two "
      "batch compositions; choose one"
    )
  fields = examples.element_spec
  with_keypoints = view.face_parts is not None
  if with_keypoints and "keypoints" not in fields:
    raise ValueError(
      "MaskFN needs each frame's five face keypoints (a 'keypoints' feature "
      "of shape (T, 5, 2)); this data set has only "
      f"{sorted(fields)}. `prepare` stores them for your videos; the "
      "synthetic data sets have them"
    )
  if whole_groups and "group_id" not in fields:
    raise ValueError(
      "whole-group batches (multi-view positives) need a 'group_id' "
      f"feature per video; this data set has only {sorted(fields)}. Give "
      "video_folder a 'group' column, or use a synthetic views config"
    )
  default_fps = float(view.default_fps)
  ship = None
  if view.placement == "device":
    ship = ship_size(fields["video"].shape, cache_frame_size, view.ship_size)

  def cacheable(e):
    out = _cacheable(
      e, cache_frame_size, with_label=False, with_keypoints=with_keypoints
    )
    out["fps"] = (
      tf.cast(e["fps"], tf.float32) if "fps" in e else tf.constant(default_fps)
    )
    if whole_groups:
      out["group"] = tf.cast(e["group_id"], tf.int32)
    return out

  base = examples.map(cacheable, num_parallel_calls=AUTOTUNE)
  views = functools.partial(_pretrain_views, view=view, ship=ship)
  planned = dict(
    batch_size=batch_size,
    seed=seed,
    start_step=start_step,
    shard_index=shard_index,
  )
  if videos_per_subject:
    stream = _subject_stream(base, num_examples, videos_per_subject, planned)
  elif whole_groups:
    stream = _group_stream(base, num_examples, planned)
  else:
    stream = _shuffled_stream(
      base.cache() if cache else base, num_examples, **planned
    )
  stream = stream.map(views, num_parallel_calls=AUTOTUNE, deterministic=True)
  return stream.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def _shuffled_stream(
  base, num_examples, *, batch_size, seed, start_step, shard_index
):
  """``(element seed, video)``: epoch ``e`` visits the videos in a shuffle
  seeded by ``(seed, e)``, from the ``start_step``-th batch on."""
  root = _seed_tensor(seed, shard_index)

  def epoch(e):
    shuffle_seed = (
      tf.cast(seed, tf.int64) * 1_000_003 + e
    ) * 4099 + shard_index
    epoch_seed = tf.random.experimental.stateless_fold_in(root, e)
    d = base.shuffle(
      num_examples, seed=shuffle_seed, reshuffle_each_iteration=False
    )
    return d.enumerate().map(
      lambda p, ex: (
        tf.random.experimental.stateless_fold_in(epoch_seed, p),
        ex,
      )
    )

  consumed = start_step * batch_size
  first_epoch = consumed // num_examples
  stream = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
  return stream.flat_map(epoch).skip(consumed - first_epoch * num_examples)


def ship_size(video_shape, cache_frame_size, requested) -> tuple[int, int]:
  """The (H, W) of the device path's shipped frames: ``requested`` if
  given, else the data set's static frame size after caching."""
  if requested:
    return int(requested[0]), int(requested[1])
  h, w = video_shape[1], video_shape[2]
  if h is None or w is None:
    raise ValueError(
      "device augmentation ships every clip at one frame size, and this "
      f"data set's frames have no static size (video {video_shape}); set "
      "config.aug.ship_size to the largest (H, W) of its cached frames"
    )
  if cache_frame_size:
    scale = np.float32(cache_frame_size) / np.float32(min(h, w))
    h, w = (int(np.round(np.float32(v) * scale)) for v in (h, w))
  return int(h), int(w)


def _shipped(frames, seed, view: ViewSpec, ship):
  """The device path's clip: uint8 frames padded to ``ship``, the crop's
  coordinates and the flip and colour vector, from the same draws as the
  host path's (:func:`augment.draw_params`)."""
  shape = tf.shape(frames)
  h, w = shape[1], shape[2]
  p = augment_lib.draw_params(h, w, seed, view.spatial)
  coords, vec = augment_lib.device_params(p, h, w, view.size)
  if frames.shape[1:3] != tuple(ship):
    with tf.control_dependencies(
      [
        tf.debugging.assert_less_equal(
          tf.stack([h, w]),
          tf.constant(ship, tf.int32),
          message=(
            f"device augmentation: a cached frame is larger than the ship "
            f"size {tuple(ship)} (config.aug.ship_size)"
          ),
        )
      ]
    ):
      frames = tf.pad(
        frames, [[0, 0], [0, ship[0] - h], [0, ship[1] - w], [0, 0]]
      )
  frames = tf.ensure_shape(frames, [view.clip_len, *ship, 3])
  return frames, coords, vec


def _pretrain_views(elem_seed, ex, view: ViewSpec, ship=None):
  """One video's pretraining element (see :func:`pretrain_dataset`)."""
  modes = tuple(view.temporal_modes)
  n = ex["num_frames"]
  shape = [view.clip_len, view.size, view.size, 3]
  out = {}

  def clip(key, idx, s):
    frames = tf.gather(ex["video"], idx)
    if view.placement == "device":
      out[key], out[f"{key}_crop"], out[f"{key}_aug"] = _shipped(
        frames, s, view, ship
      )
    else:
      out[key] = tf.ensure_shape(
        augment_lib.augment_clip(frames, s, view.size, view.spatial), shape
      )

  def parts(idx):
    """The un-augmented eye and mouth crops of the clip's centre frame."""
    t = idx[view.clip_len // 2]
    size = view.face_parts.size
    return tf.ensure_shape(
      pretext.face_part_crops(ex["video"][t], ex["keypoints"][t], size),
      [len(pretext.PARTS), size, size, 3],
    )

  if view.shift is None and view.hard_negatives is None:
    # The paper's ST-CLR (these seeds and draws fix the data stream of
    # every run without pretext options: keep them).
    s = tf.random.experimental.stateless_split(elem_seed, 4)
    if modes:
      idx_a = sampling.sample_view_indices(n, view.clip_len, modes, s[0])
      idx_b = sampling.sample_view_indices(n, view.clip_len, modes, s[1])
    else:
      idx_a = idx_b = sampling.sample_indices(n, view.clip_len, "uniform", s[0])
    idx = {"idx_a": idx_a, "idx_b": idx_b}
    clip("view_a", idx_a, s[2])
    clip("view_b", idx_b, s[3])
    out["subject_id"] = ex["subject_id"]
  else:
    s = tf.random.experimental.stateless_split(elem_seed, 5)
    idx = pretext.video_indices(
      n,
      view.clip_len,
      modes,
      s[0],
      shift=view.shift,
      hard=view.hard_negatives,
      fps=ex["fps"],
    )
    clip("view_a", idx["idx_a"], s[1])
    clip("view_b", idx["idx_b"], s[2])
    out["subject_id"] = ex["subject_id"]
    if view.hard_negatives is not None:
      clip("hard_a", idx["hard_a"], s[3])
      clip("hard_b", idx["hard_b"], s[4])
      out["gap_policy"] = idx["gap_policy"]
    if view.shift is not None:
      out["shift_clamped"] = idx["shift_clamped"]
  if view.face_parts is not None:
    for key, clip_idx in (
      ("a", "idx_a"),
      ("b", "idx_b"),
      ("hard_a", "hard_a"),
      ("hard_b", "hard_b"),
    ):
      if clip_idx in idx:
        out[f"parts_{key}"] = parts(idx[clip_idx])
  if "group" in ex:
    out["group"] = ex["group"]
  return out


class _VideoStore:
  """A data shard's videos in memory, for batch plans that need random
  access (same-subject and whole-group batches): one flat uint8 buffer of
  frames (and one of keypoints) with offsets. Building it takes about
  twice the shard's decoded size at its peak."""

  def __init__(self, base, num_examples, what):
    videos = list(base.as_numpy_iterator())
    if len(videos) != num_examples:
      raise ValueError(
        f"{what}: read {len(videos)} videos where the split has {num_examples}"
      )
    self.size = len(videos)
    self.meta = {
      k: np.array([v[k] for v in videos])
      for k in videos[0]
      if k not in ("video", "keypoints")
    }
    self._ragged = {}
    for key in ("video", "keypoints"):
      if key not in videos[0]:
        continue
      shapes = [v[key].shape for v in videos]
      sizes = np.array([v[key].size for v in videos], np.int64)
      ends = np.cumsum(sizes)
      flat = np.empty(int(ends[-1]), videos[0][key].dtype)
      for v, end, size in zip(videos, ends, sizes):
        flat[end - size : end] = v[key].reshape(-1)
        v[key] = None  # free the frames as they are copied
      self._ragged[key] = (
        tf.constant(flat),
        tf.constant(ends - sizes, tf.int64),
        tf.constant(ends, tf.int64),
        tf.constant(shapes, tf.int32),
      )
      del flat
    self._meta_t = {k: tf.constant(v) for k, v in self.meta.items()}

  def fetch(self, i):
    """Video ``i`` as the element function reads it."""
    out = {k: v[i] for k, v in self._meta_t.items()}
    for key, (values, starts, ends, shapes) in self._ragged.items():
      out[key] = tf.reshape(values[starts[i] : ends[i]], shapes[i])
    return out


def _planned_stream(
  store, plan, epoch_length, *, batch_size, seed, start_step, shard_index
):
  """``(element seed, video)`` in the order of ``plan(epoch)`` (a NumPy
  function of the epoch returning ``epoch_length`` video indices), from
  the ``start_step``-th batch on."""
  root = _seed_tensor(seed, shard_index)

  def epoch(e):
    order = tf.numpy_function(plan, [e], tf.int64, stateful=False)
    order = tf.ensure_shape(order, [epoch_length])
    epoch_seed = tf.random.experimental.stateless_fold_in(root, e)
    return (
      tf.data.Dataset.from_tensor_slices(order)
      .enumerate()
      .map(
        lambda p, i: (
          tf.random.experimental.stateless_fold_in(epoch_seed, p),
          i,
        )
      )
    )

  consumed = start_step * batch_size
  first_epoch = consumed // epoch_length
  stream = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
  stream = stream.flat_map(epoch).skip(consumed - first_epoch * epoch_length)
  return stream.map(lambda s, i: (s, store.fetch(i)))


def _store(base, num_examples, what, seed):
  if seed < 0:
    raise ValueError(f"{what}: the seed must be >= 0, got {seed}")
  return _VideoStore(base, num_examples, what)


def _subject_stream(base, num_examples, m, planned):
  """``(element seed, video)`` in same-subject batch order: per epoch,
  :func:`pretext.same_subject_plan` seeded by ``(seed, shard, epoch)``.
  The plan needs random access, so the shard's videos are held in memory
  whatever ``cache`` says (:class:`_VideoStore`)."""
  seed, shard, batch_size = (
    planned[k] for k in ("seed", "shard_index", "batch_size")
  )
  what = f"same-subject negatives (data shard {shard})"
  store = _store(base, num_examples, what, seed)
  subjects = store.meta["subject_id"].astype(np.int64)
  pretext.check_subjects(subjects, m, batch_size, what)
  info = pretext.subject_plan_info(subjects, m, batch_size // m)
  logging.info(
    "%s: %d subjects, %d videos in %d groups of %d (%d mixed), %d batches"
    " of %d subjects per epoch, %d fill-in videos per epoch",
    what,
    len(np.unique(subjects)),
    num_examples,
    info.groups,
    m,
    info.mixed_groups,
    info.batches,
    batch_size // m,
    info.fill_ins,
  )

  def plan(e):
    rng = np.random.default_rng([seed, shard, int(e), 0x55B])
    return pretext.same_subject_plan(subjects, m, batch_size // m, rng)[0]

  return _planned_stream(store, plan, info.epoch_length, **planned)


def _group_stream(base, num_examples, planned):
  """``(element seed, video)`` with every group whole in one batch: per
  epoch, :func:`pretext.group_plan` seeded by ``(seed, shard, epoch)``
  (videos in memory, as :func:`_subject_stream`)."""
  seed, shard, batch_size = (
    planned[k] for k in ("seed", "shard_index", "batch_size")
  )
  what = f"whole-group batches (data shard {shard})"
  store = _store(base, num_examples, what, seed)
  groups = store.meta["group"].astype(np.int64)
  info = pretext.group_plan_info(groups, batch_size, what)
  logging.info(
    "%s: %d videos in %d groups of %d views; %d batches of %d groups per "
    "epoch, %d groups wait for a later epoch (a new draw each epoch)",
    what,
    num_examples,
    info.groups,
    info.views,
    info.batches,
    batch_size // info.views,
    info.left_over,
  )

  def plan(e):
    rng = np.random.default_rng([seed, shard, int(e), 0x6A0])
    return pretext.group_plan(groups, batch_size, rng)

  return _planned_stream(store, plan, info.epoch_length, **planned)


def eval_clip_indices(num_frames, clip_len: int, num_clips: int):
  """Deterministic evaluation indices, shape (num_clips, clip_len).

  One clip: the uniform sampler over the whole video (first and last frame
  included). K > 1 clips: K windows of consecutive frames whose starts are
  evenly spaced from the first frame to ``T - n`` (short videos: every
  window is the uniform stretch of the whole video).
  """
  if num_clips == 1:
    return sampling.sample_indices(num_frames, clip_len, "uniform", [0, 0])[
      None
    ]
  t = tf.cast(num_frames, tf.int32)
  span = tf.maximum(t - clip_len, 0)
  starts = tf.cast(
    tf.round(tf.linspace(0.0, tf.cast(span, tf.float32), num_clips)), tf.int32
  )
  windows = starts[:, None] + tf.range(clip_len)[None, :]
  stretched = tf.tile(
    sampling.sample_indices(t, clip_len, "uniform", [0, 0])[None],
    [num_clips, 1],
  )
  return tf.where(t >= clip_len, windows, stretched)


def eval_dataset(
  examples: tf.data.Dataset,
  num_examples: int,
  *,
  batch_size: int,
  clip_len: int,
  size: int,
  num_clips: int = 1,
  crop_fraction: float = 1.0,
  num_batches: int | None = None,
  cache_frame_size: int | None = None,
) -> tf.data.Dataset:
  """Finite, ordered evaluation batches ``{"video", "label", "subject_id",
  "mask"}``; ``video`` is (B, K, n, size, size, 3). The last batch is padded
  (``mask`` 0) so every batch is full; pass ``num_batches`` (the maximum over
  hosts) so that all hosts run the same number of steps."""
  _check_nonempty(num_examples, "eval_dataset")
  needed = -(-num_examples // batch_size)
  num_batches = num_batches or needed
  if num_batches < needed:
    raise ValueError(
      f"num_batches={num_batches} cannot hold {num_examples}"
      f" videos in batches of {batch_size}"
    )

  def view(ex):
    idx = eval_clip_indices(ex["num_frames"], clip_len, num_clips)
    clips = tf.map_fn(
      lambda i: augment_lib.center_crop_resize(
        tf.gather(ex["video"], i), size, crop_fraction
      ),
      idx,
      fn_output_signature=tf.float32,
    )
    return {
      "video": tf.ensure_shape(clips, [num_clips, clip_len, size, size, 3]),
      "label": ex["label"],
      "subject_id": ex["subject_id"],
      "mask": tf.constant(1, tf.int32),
    }

  d = examples.map(
    lambda e: _cacheable(e, cache_frame_size), num_parallel_calls=AUTOTUNE
  ).map(view, num_parallel_calls=AUTOTUNE, deterministic=True)
  pad = num_batches * batch_size - num_examples
  if pad:
    filler = d.take(1).map(lambda ex: {**ex, "mask": tf.constant(0, tf.int32)})
    d = d.concatenate(filler.repeat(pad))
  return d.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def cached_videos(
  examples: tf.data.Dataset, cache_frame_size: int | None = None
) -> tf.data.Dataset:
  """Videos decoded (and resized) once and kept in memory; every dataset
  derived from the result (e.g. by :func:`select`) shares the cache."""
  return examples.map(
    lambda e: _cacheable(e, cache_frame_size), num_parallel_calls=AUTOTUNE
  ).cache()


def select(
  videos: tf.data.Dataset, num_examples: int, indices: Sequence[int]
) -> tf.data.Dataset:
  """The videos at ``indices`` (positions in ``videos``), in ``videos``'
  order."""
  keep = np.zeros(num_examples, bool)
  keep[np.asarray(indices, np.int64)] = True
  keep = tf.constant(keep)

  def kept(i, ex):
    del ex
    return tf.gather(keep, i)

  def drop_index(i, ex):
    del i
    return ex

  return videos.enumerate().filter(kept).map(drop_index)


def _labelled_clip(clip_len, size, temporal_modes, spatial):
  """The element function of the supervised streams: one clip of a video
  from the enabled temporal samplers (uniform when none), clip-consistent
  spatial augmentation, and its label."""
  modes = tuple(temporal_modes)

  def clip(elem_seed, ex):
    s = tf.random.experimental.stateless_split(elem_seed, 2)
    n = ex["num_frames"]
    if modes:
      idx = sampling.sample_view_indices(n, clip_len, modes, s[0])
    else:
      idx = sampling.sample_indices(n, clip_len, "uniform", s[0])
    video = augment_lib.augment_clip(
      tf.gather(ex["video"], idx), s[1], size, spatial
    )
    return {
      "video": tf.ensure_shape(video, [clip_len, size, size, 3]),
      "label": ex["label"],
    }

  return clip


def labelled_epoch(
  videos: tf.data.Dataset,
  num_examples: int,
  *,
  batch_size: int,
  clip_len: int,
  size: int,
  temporal_modes: Sequence[str],
  spatial: augment_lib.SpatialAugment,
  seed: int,
  epoch: int,
) -> tf.data.Dataset:
  """One epoch of supervised training batches ``{"video", "label"}``
  (fine-tuning): a shuffle seeded by ``(seed, epoch)``, one clip per video
  from the enabled temporal samplers (uniform when none), clip-consistent
  spatial augmentation, and full batches only."""
  _check_nonempty(num_examples, "labelled_epoch")
  root = tf.random.experimental.stateless_fold_in(_seed_tensor(seed), epoch)
  clip = _labelled_clip(clip_len, size, temporal_modes, spatial)
  d = videos.shuffle(
    num_examples,
    seed=(seed * 1_000_003 + epoch) * 7919,
    reshuffle_each_iteration=False,
  )
  d = d.enumerate().map(
    lambda p, ex: clip(tf.random.experimental.stateless_fold_in(root, p), ex),
    num_parallel_calls=AUTOTUNE,
    deterministic=True,
  )
  return d.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def stream_order(num_examples: int, num_steps: int, batch_size: int, seed):
  """The video positions of ``num_steps`` batches of ``batch_size``: seeded
  permutations of ``range(num_examples)`` one after another, cut into
  batches across their boundaries (so every video is drawn equally often
  up to one pass, and a set smaller than the batch fills it with repeats:
  drawing with replacement). Shape ``(num_steps, batch_size)``."""
  _check_nonempty(num_examples, "stream_order")
  need = num_steps * batch_size
  rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 0x57EB])
  passes = -(-need // num_examples)
  order = np.concatenate([rng.permutation(num_examples) for _ in range(passes)])
  return order[:need].reshape(num_steps, batch_size)


def video_store(videos: tf.data.Dataset, num_examples: int, what: str):
  """``videos`` (e.g. :func:`cached_videos`) held in memory for random
  access by :func:`labelled_stream`."""
  _check_nonempty(num_examples, what)
  return _VideoStore(videos, num_examples, what)


def labelled_stream(
  store,
  indices: Sequence[int],
  *,
  num_steps: int,
  batch_size: int,
  clip_len: int,
  size: int,
  temporal_modes: Sequence[str],
  spatial: augment_lib.SpatialAugment,
  seed: int,
) -> tf.data.Dataset:
  """Exactly ``num_steps`` supervised training batches from the videos
  ``indices`` of ``store`` (:func:`video_store`), whatever their number: a
  step budget, equal at every label fraction. The order is
  :func:`stream_order`'s; clips and augmentation as :func:`labelled_epoch`,
  each draw of a video seeded by its position in the stream."""
  indices = np.asarray(indices, np.int64)
  order = stream_order(len(indices), num_steps, batch_size, seed)
  order = indices[order.reshape(-1)]
  root = _seed_tensor(seed)
  clip = _labelled_clip(clip_len, size, temporal_modes, spatial)
  d = tf.data.Dataset.from_tensor_slices(order).enumerate()
  d = d.map(
    lambda p, i: clip(
      tf.random.experimental.stateless_fold_in(root, p), store.fetch(i)
    ),
    num_parallel_calls=AUTOTUNE,
    deterministic=True,
  )
  return d.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)
