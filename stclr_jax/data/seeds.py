"""The seed constants of the input streams, and the seeds made from them.

A run has one data seed (``config.seed``); every random draw of its input
streams is derived from it here, mixed with a constant that keeps one use
apart from the others. The values are fixed: changing one changes every
stream that uses it (and the data of every run already made).

* :data:`ROOT`: the second word of a stream's root stateless seed,
  ``[seed, ROOT + shard]`` (:func:`root`), from which each element's
  sampling and augmentation seeds are folded; the shard index keeps the
  data shards' draws apart.
* :data:`EPOCH_STRIDE`: the step of the tf.data shuffle seed per run seed,
  ``seed * EPOCH_STRIDE + epoch``, so that the epochs of nearby run seeds
  never share a shuffle (:func:`shuffle_seed`).
* :data:`PRETRAIN_SHUFFLE` and :data:`LABELLED_SHUFFLE`: the multipliers
  that keep the pretraining stream's shuffles (then ``+ shard``) apart from
  the fine-tuning epochs' shuffles.
* :data:`SUBJECT_PLAN`, :data:`GROUP_PLAN`, :data:`SWAP_ORDER` and
  :data:`STREAM_ORDER`: the last word of the NumPy generators of the
  same-subject batch plan, the whole-group batch plan, the shuffle of a
  stream held in memory for FaceSwap's heads (all three ``[seed, shard,
  epoch, ...]``) and the labelled stream's order (``[*seed, ...]``).
* :data:`FACE_SWAP`: folded into an element's seed for FaceSwap's draws
  (the head, and whether each positive is swapped), so the element's
  other draws are those of a run without it.
* :data:`MASK`: folded into an element's seed for its tube mask's key
  (masked autoencoding: ``mask_seed``).
"""

from __future__ import annotations

import tensorflow as tf

ROOT = 0x5EED
EPOCH_STRIDE = 1_000_003
PRETRAIN_SHUFFLE = 4099
LABELLED_SHUFFLE = 7919
SUBJECT_PLAN = 0x55B
GROUP_PLAN = 0x6A0
STREAM_ORDER = 0x57EB
SWAP_ORDER = 0x5A9
FACE_SWAP = 0xF5A
MASK = 0x3A5C


def root(seed, shard_index=0) -> tf.Tensor:
  """The root stateless seed of a stream: ``[seed, ROOT + shard_index]``."""
  return tf.constant([seed, ROOT + shard_index], tf.int64)


def shuffle_seed(seed, epoch, mix: int, shard_index=0):
  """The tf.data shuffle seed of one epoch: ``(seed * EPOCH_STRIDE +
  epoch) * mix + shard_index``, with ``mix`` :data:`PRETRAIN_SHUFFLE` or
  :data:`LABELLED_SHUFFLE` (Python ints stay Python ints)."""
  return (seed * EPOCH_STRIDE + epoch) * mix + shard_index
