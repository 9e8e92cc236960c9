"""The pretraining stream of a data shard: its videos cached, visited epoch
after epoch in a shuffle or a batch plan (:mod:`stclr_jax.pretext.plans`),
each made into its views (:mod:`stclr_jax.data.views`), in host batches
(``stclr_jax.mesh.to_global_arrays`` makes them global ``jax.Array``s
sharded on the ``'data'`` axis).

Determinism and resume
----------------------
The pretraining stream of a shard is a function of ``(seed, step)`` only
(the global batch: of ``(seed, step, number of shards)``, see
``data/input.py``). Epoch ``e`` visits the shard's videos in a shuffle (or
a batch plan) seeded by ``(seed, shard, e)``; the video at position ``p``
of epoch ``e`` gets the element seed ``fold_in(fold_in(root, e), p)``
(``root``: :func:`seeds.root` of the seed and the shard), from which all
its views' temporal samplers and spatial augmentations are derived.
Building the stream with ``start_step=s`` starts at the epoch and position
that an uninterrupted run reaches after ``s`` batches (:func:`epochs`) and
skips there *before* any frame is sampled or augmented, so a resumed run
sees exactly the batches the uninterrupted run would have seen next — it
neither replays nor skips data.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
from absl import logging

from stclr_jax.data import seeds, videos
from stclr_jax.data import views as views_lib
from stclr_jax.pretext import plans

AUTOTUNE = tf.data.AUTOTUNE


def pretrain_dataset(
  examples: tf.data.Dataset,
  num_examples: int,
  *,
  batch_size: int,
  view: views_lib.ViewSpec,
  seed: int,
  start_step: int = 0,
  cache: bool = True,
  cache_frame_size: int | None = None,
  shard_index: int = 0,
) -> tf.data.Dataset:
  """Endless stream of pretraining batches (one host's share of the
  batch), with the keys of ``view.schema``
  (:class:`stclr_jax.pretext.batch.BatchSchema`): ``view_a``, ``view_b``
  and ``subject_id``, and what ``view.pretext``'s options add. Labels are
  dropped at the first step: nothing downstream can read them.

  The options (:class:`stclr_jax.pretext.options.Pretext`) also choose
  which videos share a batch: same-subject batches of ``batch_size / m``
  subjects x ``m`` videos (``samesubject``, :func:`_subject_stream`),
  every group (``group_id``: CL-MEx's views of one sequence) whole in one
  batch (``clmex``, :func:`_group_stream`), or a shuffle.

  Args:
    examples: this host's videos (``video`` uint8 (T,H,W,3), optional
      ``subject_id``, ``fps``, ``keypoints`` (T,5,2), ``group_id``), a finite
      dataset of ``num_examples``.
    batch_size: videos per batch on this host (global batch / processes).
    view: clip length, output size, the augmentations and the pretext
      options.
    seed: the run's data seed.
    start_step: number of batches already consumed (resume).
    cache: keep decoded (and possibly downscaled) videos in memory.
    cache_frame_size: if set, frames are resized once, before caching, so
      that their shorter side is this many pixels.
    shard_index: index of this logical data shard; folded into the seeds so
      that shards draw independent augmentations.
  """
  videos.check_nonempty(num_examples, "pretrain_dataset")
  pretext = view.pretext
  fields = examples.element_spec
  with_keypoints = pretext.keypoints
  if with_keypoints and "keypoints" not in fields:
    users = " and ".join(
      n
      for n, on in (("MaskFN", pretext.maskfn), ("FaceSwap", pretext.faceswap))
      if on
    )
    raise ValueError(
      f"{users} needs each frame's five face keypoints (a 'keypoints' "
      "feature of shape (T, 5, 2)); this data set has only "
      f"{sorted(fields)}. `prepare` stores them for your videos; the "
      "synthetic data sets have them"
    )
  if pretext.whole_groups and "group_id" not in fields:
    raise ValueError(
      "whole-group batches (multi-view positives) need a 'group_id' "
      f"feature per video; this data set has only {sorted(fields)}. Give "
      "video_folder a 'group' column, or use a synthetic views config"
    )
  default_fps = float(pretext.default_fps)
  ship = None
  if view.placement == "device":
    ship = views_lib.ship_size(
      fields["video"].shape, cache_frame_size, view.ship_size
    )

  def cached(e):
    out = videos.cacheable(
      e, cache_frame_size, with_label=False, with_keypoints=with_keypoints
    )
    out["fps"] = (
      tf.cast(e["fps"], tf.float32) if "fps" in e else tf.constant(default_fps)
    )
    if pretext.whole_groups:
      out["group"] = tf.cast(e["group_id"], tf.int32)
    return out

  base = examples.map(cached, num_parallel_calls=AUTOTUNE)
  planned = dict(
    batch_size=batch_size,
    seed=seed,
    start_step=start_step,
    shard_index=shard_index,
  )
  heads = None
  if pretext.random_access:
    what = f"pretraining videos held in memory (data shard {shard_index})"
    store = _store(base, num_examples, what, seed)
    if pretext.faceswap is not None:
      heads = views_lib.Heads(store, f"FaceSwap (data shard {shard_index})")
  element = functools.partial(
    views_lib.pretrain_views, view=view, ship=ship, heads=heads
  )
  if pretext.videos_per_subject:
    m = pretext.videos_per_subject
    stream = _subject_stream(store, m, planned)
  elif pretext.whole_groups:
    stream = _group_stream(store, planned)
  elif pretext.random_access:
    stream = _store_shuffled_stream(store, planned)
  else:
    stream = _shuffled_stream(
      base.cache() if cache else base, num_examples, planned
    )
  stream = stream.map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
  return stream.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def epochs(items, epoch_length, *, batch_size, seed, start_step, shard_index):
  """``(element seed, item)`` of epoch after epoch, endless: epoch ``e`` is
  ``items(e)`` (a dataset of ``epoch_length`` items), and its position
  ``p`` is seeded by ``fold_in(fold_in(root, e), p)``. From the
  ``start_step``-th batch of ``batch_size`` on: the epoch and position an
  uninterrupted run reaches after ``start_step`` batches, skipped to
  before any item is made."""
  root = seeds.root(seed, shard_index)

  def epoch(e):
    epoch_seed = tf.random.experimental.stateless_fold_in(root, e)
    return (
      items(e)
      .enumerate()
      .map(
        lambda p, x: (
          tf.random.experimental.stateless_fold_in(epoch_seed, p),
          x,
        )
      )
    )

  consumed = start_step * batch_size
  first_epoch = consumed // epoch_length
  stream = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
  return stream.flat_map(epoch).skip(consumed - first_epoch * epoch_length)


def _shuffled_stream(base, num_examples, planned):
  """``(element seed, video)``: epoch ``e`` visits the videos in a shuffle
  seeded by ``(seed, shard, e)``, from the ``start_step``-th batch on."""
  seed, shard = planned["seed"], planned["shard_index"]

  def shuffled(e):
    shuffle_seed = seeds.shuffle_seed(
      tf.cast(seed, tf.int64), e, seeds.PRETRAIN_SHUFFLE, shard
    )
    return base.shuffle(
      num_examples, seed=shuffle_seed, reshuffle_each_iteration=False
    )

  return epochs(shuffled, num_examples, **planned)


def _planned_stream(store, plan, epoch_length, planned):
  """``(element seed, video)`` in the order of ``plan(epoch)`` (a NumPy
  function of the epoch returning ``epoch_length`` video indices), from
  the ``start_step``-th batch on."""

  def ordered(e):
    order = tf.numpy_function(plan, [e], tf.int64, stateful=False)
    order = tf.ensure_shape(order, [epoch_length])
    return tf.data.Dataset.from_tensor_slices(order)

  stream = epochs(ordered, epoch_length, **planned)
  return stream.map(lambda s, i: (s, {**store.fetch(i), "index": i}))


def _store(base, num_examples, what, seed):
  if seed < 0:
    raise ValueError(f"{what}: the seed must be >= 0, got {seed}")
  return videos.VideoStore(base, num_examples, what)


def _store_shuffled_stream(store, planned):
  """``(element seed, video)`` of videos held in memory (for FaceSwap's
  heads): epoch ``e`` visits them in a permutation seeded by ``(seed,
  shard, e)``, from the ``start_step``-th batch on."""
  seed, shard = planned["seed"], planned["shard_index"]

  def plan(e):
    rng = np.random.default_rng([seed, shard, int(e), seeds.SWAP_ORDER])
    return rng.permutation(store.size).astype(np.int64)

  return _planned_stream(store, plan, store.size, planned)


def _subject_stream(store, m, planned):
  """``(element seed, video)`` in same-subject batch order: per epoch,
  :func:`plans.same_subject_plan` seeded by ``(seed, shard, epoch)``.
  The plan needs random access, so the shard's videos are held in memory
  whatever ``cache`` says (:class:`videos.VideoStore`)."""
  seed, shard, batch_size = (
    planned[k] for k in ("seed", "shard_index", "batch_size")
  )
  what = f"same-subject negatives (data shard {shard})"
  num_examples = store.size
  subjects = store.meta["subject_id"].astype(np.int64)
  plans.check_subjects(subjects, m, batch_size, what)
  info = plans.subject_plan_info(subjects, m, batch_size // m)
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
    rng = np.random.default_rng([seed, shard, int(e), seeds.SUBJECT_PLAN])
    return plans.same_subject_plan(subjects, m, batch_size // m, rng)[0]

  return _planned_stream(store, plan, info.epoch_length, planned)


def _group_stream(store, planned):
  """``(element seed, video)`` with every group whole in one batch: per
  epoch, :func:`plans.group_plan` seeded by ``(seed, shard, epoch)``
  (videos in memory, as :func:`_subject_stream`)."""
  seed, shard, batch_size = (
    planned[k] for k in ("seed", "shard_index", "batch_size")
  )
  what = f"whole-group batches (data shard {shard})"
  num_examples = store.size
  groups = store.meta["group"].astype(np.int64)
  info = plans.group_plan_info(groups, batch_size, what)
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
    rng = np.random.default_rng([seed, shard, int(e), seeds.GROUP_PLAN])
    return plans.group_plan(groups, batch_size, rng)

  return _planned_stream(store, plan, info.epoch_length, planned)
