"""The tf.data pipeline: two-view pretraining stream and eval clips."""

import numpy as np
import pytest
import tensorflow as tf

from stclr_jax.data import augment as augment_lib
from stclr_jax.data import pipeline


def _fake_videos(n=10, seed=0):
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


def _take(ds, k):
  return list(ds.take(k).as_numpy_iterator())


def test_pretrain_batches_shapes_determinism_and_resume():
  ds, _ = _fake_videos()
  view = pipeline.ViewSpec(clip_len=4, size=16)
  make = lambda start=0, seed=1: pipeline.pretrain_dataset(
    ds, 10, batch_size=3, view=view, seed=seed, start_step=start
  )
  first = _take(make(), 8)  # 24 videos: crosses two epoch boundaries
  b = first[0]
  assert (
    b["view_a"].shape == (3, 4, 16, 16, 3) and b["view_a"].dtype == np.float32
  )
  # Pretraining never sees a label, even where the data set has them.
  assert set(b) == {"view_a", "view_b", "subject_id"}
  assert not np.allclose(b["view_a"], b["view_b"])
  for x, y in zip(first, _take(make(), 8)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  resumed = _take(make(start=5), 3)
  for x, y in zip(first[5:], resumed):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  other = _take(make(seed=2), 1)[0]
  assert not np.allclose(other["view_a"], b["view_a"])
  # Each epoch visits every video exactly once (subject_id is the index).
  ids = np.concatenate([x["subject_id"] for x in first])
  assert sorted(ids[:10].tolist()) == list(range(10))
  assert sorted(ids[10:20].tolist()) == list(range(10))
  assert ids[:10].tolist() != ids[10:20].tolist()  # reshuffled per epoch


def test_without_temporal_augmentation_views_share_frames():
  ds, vids = _fake_videos(4)
  no_spatial = augment_lib.SpatialAugment(crop=False, flip=False, color=False)
  view = pipeline.ViewSpec(
    clip_len=4, size=24, temporal_modes=(), spatial=no_spatial
  )
  b = _take(
    pipeline.pretrain_dataset(ds, 4, batch_size=4, view=view, seed=0), 1
  )[0]
  np.testing.assert_array_equal(b["view_a"], b["view_b"])
  view = pipeline.ViewSpec(clip_len=4, size=24, spatial=no_spatial)
  b = _take(
    pipeline.pretrain_dataset(ds, 4, batch_size=4, view=view, seed=0), 1
  )[0]
  assert not np.array_equal(b["view_a"], b["view_b"])


def test_eval_dataset_is_deterministic_padded_and_complete():
  ds, vids = _fake_videos(7)
  out = list(
    pipeline.eval_dataset(
      ds, 7, batch_size=3, clip_len=4, size=12, num_clips=2
    ).as_numpy_iterator()
  )
  assert len(out) == 3
  assert out[0]["video"].shape == (3, 2, 4, 12, 12, 3)
  mask = np.concatenate([b["mask"] for b in out])
  np.testing.assert_array_equal(mask, [1] * 7 + [0, 0])
  idx = pipeline.eval_clip_indices(10, 4, 3).numpy()
  np.testing.assert_array_equal(idx, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
  np.testing.assert_array_equal(
    pipeline.eval_clip_indices(10, 4, 1).numpy(), [[0, 3, 6, 9]]
  )
  with pytest.raises(ValueError, match="empty"):
    pipeline.eval_dataset(ds, 0, batch_size=3, clip_len=4, size=12)
