"""Clip-consistent spatial augmentation and its switches."""

import numpy as np
import pytest
import tensorflow as tf

from stclr_jax.data import augment as augment_lib


def _identical_frames_clip(t=6, h=40, w=52):
  frame = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), np.uint8)
  return tf.constant(np.repeat(frame, t, axis=0))


def test_augmentation_is_clip_consistent_and_views_differ():
  clip = _identical_frames_clip()
  cfg = augment_lib.SpatialAugment()
  views = [
    augment_lib.augment_clip(clip, tf.constant([s, 9]), 32, cfg).numpy()
    for s in range(6)
  ]
  for v in views:
    assert v.shape == (6, 32, 32, 3) and v.dtype == np.float32
    assert 0.0 <= v.min() and v.max() <= 1.0
    np.testing.assert_array_equal(v, np.repeat(v[:1], 6, axis=0))
  diffs = [np.abs(views[i] - views[i + 1]).mean() for i in range(5)]
  assert min(diffs) > 1e-3
  again = augment_lib.augment_clip(clip, tf.constant([0, 9]), 32, cfg)
  np.testing.assert_array_equal(views[0], again.numpy())


def test_switches_turn_each_augmentation_off():
  clip = _identical_frames_clip(t=2, h=32, w=32)
  off = augment_lib.SpatialAugment(crop=False, flip=False, color=False)
  v = augment_lib.augment_clip(clip, tf.constant([1, 2]), 32, off).numpy()
  np.testing.assert_allclose(v, clip.numpy() / 255.0, atol=1e-6)
  flip_only = augment_lib.SpatialAugment(crop=False, color=False, flip_prob=1.0)
  v = augment_lib.augment_clip(clip, tf.constant([1, 2]), 32, flip_only).numpy()
  np.testing.assert_allclose(v, clip.numpy()[:, :, ::-1] / 255.0, atol=1e-6)
  with pytest.raises(ValueError, match="crop_area"):
    augment_lib.SpatialAugment(crop_area=(0.5, 1.5))
