"""A split's videos as the streams read them (stclr_jax/data/videos.py)."""

import numpy as np
import tensorflow as tf

from stclr_jax.data import videos


def test_cached_keypoints_scale_with_the_frames():
  ex = {
    "video": tf.zeros([3, 24, 30, 3], tf.uint8),
    "keypoints": tf.fill([3, 5, 2], 6.0),
  }
  out = videos.cacheable(ex, 12, with_label=False, with_keypoints=True)
  assert out["video"].shape[1:3] == (12, 15)
  np.testing.assert_allclose(out["keypoints"][..., 0], 3.0)  # x: 15 / 30
  np.testing.assert_allclose(out["keypoints"][..., 1], 3.0)  # y: 12 / 24
