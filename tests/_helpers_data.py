"""Helpers shared by the input tests (not a test module): a small data set
of videos, as the streams read them."""

import numpy as np
import tensorflow as tf


def fake_videos(n=10, seed=0):
  """``n`` videos of 4 to 19 frames of 24 x 30, each one's index stamped in
  a pixel, with labels and subjects: ``(dataset, frames)``."""
  rng = np.random.default_rng(seed)
  vids = []
  for i in range(n):
    t = int(rng.integers(4, 20))
    v = rng.integers(0, 256, (t, 24, 30, 3), np.uint8)
    v[:, 0, 0, 0] = i  # video id stamped in a pixel
    vids.append(v)

  def gen():
    for i, v in enumerate(vids):
      yield {"video": v, "label": i % 6, "subject_id": i}

  sig = {
    "video": tf.TensorSpec([None, 24, 30, 3], tf.uint8),
    "label": tf.TensorSpec([], tf.int64),
    "subject_id": tf.TensorSpec([], tf.int64),
  }
  return tf.data.Dataset.from_generator(gen, output_signature=sig), vids
