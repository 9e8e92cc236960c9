"""A split's videos as the input streams read them: the part of the split
each process (or data shard) reads, the fields kept of each video (frames
resized once, before caching), and the videos held in memory for random
access (:class:`VideoStore`: the batch plans and the labelled streams)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds


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


def cacheable(example, cache_frame_size, with_label=True, with_keypoints=False):
  """The fields the streams use, frames resized for caching. Pretraining
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


def check_nonempty(num_examples, what):
  """A clear error for an empty split."""
  if num_examples <= 0:
    raise ValueError(
      f"{what}: the split is empty (0 videos); check the "
      "dataset, the split name and the number of processes"
    )


class VideoStore:
  """A data shard's videos in memory, for streams that need random access
  (the same-subject and whole-group batch plans, the labelled streams):
  one flat uint8 buffer of frames (and one of keypoints) with offsets.
  Building it takes about twice the shard's decoded size at its peak."""

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
