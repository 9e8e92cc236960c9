"""The evaluation's input: a split's labels, subjects and video ids
(:func:`split_metadata`), deterministic clips of labelled videos for
features and testing (:func:`eval_dataset`, :func:`eval_batches`), the
split's videos cached once and selected by fold (:func:`cached_videos`,
:func:`select`), and the supervised training streams (fine-tuning,
supervised pretraining): epochs (:func:`labelled_epoch`) or a fixed number
of steps (:func:`labelled_stream` over a :func:`video_store`, in
:func:`stream_order`, which also orders the linear phase's minibatches)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from stclr_jax.data import augment as augment_lib
from stclr_jax.data import sampling, seeds
from stclr_jax.data import videos as videos_lib

AUTOTUNE = tf.data.AUTOTUNE


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
  videos_lib.check_nonempty(num_examples, "eval_dataset")
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
    lambda e: videos_lib.cacheable(e, cache_frame_size),
    num_parallel_calls=AUTOTUNE,
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
    lambda e: videos_lib.cacheable(e, cache_frame_size),
    num_parallel_calls=AUTOTUNE,
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
    idx = sampling.clip_indices(n, clip_len, modes, s[0])
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
  videos_lib.check_nonempty(num_examples, "labelled_epoch")
  root = tf.random.experimental.stateless_fold_in(seeds.root(seed), epoch)
  clip = _labelled_clip(clip_len, size, temporal_modes, spatial)
  d = videos.shuffle(
    num_examples,
    seed=seeds.shuffle_seed(seed, epoch, seeds.LABELLED_SHUFFLE),
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
  videos_lib.check_nonempty(num_examples, "stream_order")
  need = num_steps * batch_size
  rng = np.random.default_rng(
    [*np.atleast_1d(seed).tolist(), seeds.STREAM_ORDER]
  )
  passes = -(-need // num_examples)
  order = np.concatenate([rng.permutation(num_examples) for _ in range(passes)])
  return order[:need].reshape(num_steps, batch_size)


def video_store(videos: tf.data.Dataset, num_examples: int, what: str):
  """``videos`` (e.g. :func:`cached_videos`) held in memory for random
  access by :func:`labelled_stream`."""
  videos_lib.check_nonempty(num_examples, what)
  return videos_lib.VideoStore(videos, num_examples, what)


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
  root = seeds.root(seed)
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


def split_metadata(builder, split: str) -> dict:
  """Labels, subject ids and video ids of a split, in reading order,
  without decoding the frames."""
  ds = builder.as_dataset(
    split=split,
    shuffle_files=False,
    decoders={"video": tfds.decode.SkipDecoding()},
  )
  rows = {"label": [], "subject_id": [], "video_id": []}
  for ex in ds.as_numpy_iterator():
    rows["label"].append(int(ex["label"]))
    rows["subject_id"].append(int(ex.get("subject_id", -1)))
    vid = ex.get("video_id", b"")
    rows["video_id"].append(
      vid.decode() if isinstance(vid, bytes) else str(vid)
    )
  return {k: np.asarray(v) for k, v in rows.items()}


def test_windows(config) -> int:
  """Clips per video at test time: one (the uniform sampler) for a
  ResNet; a video transformer's ``eval.transformer.test_windows``."""
  from stclr_jax.models.video_transformer import family  # JAX, not TF

  if family(config.model.encoder) == "resnet":
    return 1
  return int(config.eval.transformer.test_windows)


def eval_batches(videos, n, indices, config, batch_size):
  """Evaluation batches (:func:`eval_dataset`, as numpy) of the videos
  ``indices`` of ``videos``, the cached split of ``n``; :func:`test_windows`
  clips of each."""
  return eval_dataset(
    select(videos, n, indices),
    len(indices),
    batch_size=batch_size,
    clip_len=config.data.clip_len,
    size=config.data.size,
    num_clips=test_windows(config),
  ).as_numpy_iterator()
