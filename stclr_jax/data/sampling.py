"""ST-CLR temporal sampling ("temporal augmentation", Sec. III-A.1), in TF ops.

Three samplers pick ``n`` frame indices from a video of ``T`` frames:

* ``random``: n distinct frames drawn uniformly at random, then sorted;
* ``uniform``: n evenly spaced frames, the first and the last included;
* ``sequential``: n consecutive frames from a uniformly random start.

Each sub-video picks one of the enabled samplers uniformly at random
(:func:`sample_view_indices`); with none enabled (no temporal
augmentation), a clip is the ``uniform`` sub-video (:func:`clip_indices`).
All randomness is stateless: the same ``seed`` (a shape-[2] int tensor)
gives the same indices, in graph or eager mode.

Short videos (``T < n``) never fail. The policy is to keep every frame and
repeat frames, in temporal order:

* ``uniform`` and ``sequential``: ``round(linspace(0, T-1, n))`` — a
  nearest-neighbour temporal stretch of the whole video;
* ``random``: every frame once plus ``n - T`` extra frames drawn at random,
  sorted — so the repeats fall at random places.

In all cases the indices are non-decreasing and lie in ``[0, T)``.
"""

from __future__ import annotations

import tensorflow as tf

MODES = ("random", "uniform", "sequential")


def _seed(seed) -> tf.Tensor:
  """A stateless TF seed: a shape-[2] integer tensor, or a clear error."""
  seed = tf.convert_to_tensor(seed)
  if seed.shape.rank is not None and seed.shape.as_list() != [2]:
    raise ValueError(
      "sampling: seed must be a shape-[2] integer tensor (a stateless TF "
      f"seed, e.g. (seed, index)); got shape {seed.shape.as_list()} "
      f"({seed!r})"
    )
  if seed.dtype not in (tf.int32, tf.int64):
    if not seed.dtype.is_integer:
      raise ValueError(
        f"sampling: seed must be integers, got dtype {seed.dtype.name}"
      )
    seed = tf.cast(seed, tf.int64)
  return tf.reshape(seed, [2])


def _uniform(num_frames, n):
  return tf.cast(
    tf.round(tf.linspace(0.0, tf.cast(num_frames - 1, tf.float32), n)), tf.int32
  )


def _random(num_frames, n, seed):
  def distinct():
    u = tf.random.stateless_uniform([num_frames], seed)
    return tf.sort(tf.math.top_k(u, k=n).indices)

  def with_repeats():
    extra = tf.random.stateless_uniform(
      [n - num_frames], seed, 0, num_frames, dtype=tf.int32
    )
    return tf.sort(tf.concat([tf.range(num_frames), extra], axis=0))

  return tf.cond(num_frames >= n, distinct, with_repeats)


def _sequential(num_frames, n, seed):
  def run():
    start = tf.random.stateless_uniform(
      [], seed, 0, num_frames - n + 1, dtype=tf.int32
    )
    return start + tf.range(n)

  return tf.cond(num_frames >= n, run, lambda: _uniform(num_frames, n))


def sample_indices(num_frames, clip_len: int, mode: str, seed) -> tf.Tensor:
  """Frame indices (int32, shape [clip_len]) of one sub-video.

  Args:
    num_frames: length T of the video (scalar int tensor or int), T >= 1.
    clip_len: n, the number of frames to sample.
    mode: ``"random"``, ``"uniform"`` or ``"sequential"``.
    seed: stateless seed, shape [2] (ignored by ``uniform``).
  """
  if mode not in MODES:
    raise ValueError(f"unknown sampling mode {mode!r}; choose from {MODES}")
  if clip_len < 1:
    raise ValueError(f"clip_len must be >= 1, got {clip_len}")
  seed = _seed(seed)  # checked in every mode, so a bad seed never hides
  num_frames = tf.cast(num_frames, tf.int32)
  tf.debugging.assert_positive(
    num_frames, message="cannot sample from a zero-frame video"
  )
  if mode == "uniform":
    idx = _uniform(num_frames, clip_len)
  elif mode == "random":
    idx = _random(num_frames, clip_len, seed)
  else:
    idx = _sequential(num_frames, clip_len, seed)
  return tf.ensure_shape(idx, [clip_len])


def sample_view_indices(num_frames, clip_len: int, modes, seed) -> tf.Tensor:
  """Indices of one sub-video, its sampler drawn uniformly from ``modes``."""
  modes = tuple(modes)
  if not modes:
    raise ValueError("at least one sampling mode must be enabled")
  for m in modes:
    if m not in MODES:
      raise ValueError(f"unknown sampling mode {m!r}; choose from {MODES}")
  seed = _seed(seed)
  if len(modes) == 1:
    return sample_indices(num_frames, clip_len, modes[0], seed)
  choice_seed, mode_seed = tf.unstack(
    tf.random.experimental.stateless_split(seed, 2)
  )
  choice = tf.random.stateless_uniform(
    [], choice_seed, 0, len(modes), dtype=tf.int32
  )
  branches = [
    lambda m=m: sample_indices(num_frames, clip_len, m, mode_seed)
    for m in modes
  ]
  return tf.ensure_shape(tf.switch_case(choice, branches), [clip_len])


def clip_indices(num_frames, clip_len: int, modes, seed) -> tf.Tensor:
  """Indices of one clip: :func:`sample_view_indices` over ``modes``, or
  the ``uniform`` sub-video when ``modes`` is empty (no temporal
  augmentation)."""
  modes = tuple(modes)
  if modes:
    return sample_view_indices(num_frames, clip_len, modes, seed)
  return sample_indices(num_frames, clip_len, "uniform", seed)
