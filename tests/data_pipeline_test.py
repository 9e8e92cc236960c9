"""Temporal samplers, clip-consistent augmentation and the tf.data pipeline."""
import numpy as np
import pytest
import tensorflow as tf

from stclr_jax.data import augment as augment_lib
from stclr_jax.data import pipeline
from stclr_jax.data import sampling


@pytest.mark.parametrize("num_frames", [1, 3, 8, 9, 40])
@pytest.mark.parametrize("mode", sampling.MODES)
def test_sampler_properties(mode, num_frames):
  n = 8
  for s in range(20):
    idx = sampling.sample_indices(num_frames, n, mode, [s, 1]).numpy()
    assert idx.shape == (n,) and idx.dtype == np.int32
    assert idx.min() >= 0 and idx.max() < num_frames
    assert np.all(np.diff(idx) >= 0)                     # temporal order kept
    if num_frames >= n:
      if mode == "random":
        assert len(set(idx)) == n                         # distinct frames
      elif mode == "sequential":
        np.testing.assert_array_equal(np.diff(idx), 1)
      else:
        assert idx[0] == 0 and idx[-1] == num_frames - 1
        assert np.ptp(np.diff(idx)) <= 1                  # evenly spaced
    else:
      assert set(idx) == set(range(num_frames))           # every frame kept


def test_samplers_are_random_where_they_should_be():
  draws = {m: {tuple(sampling.sample_indices(40, 8, m, [s, 0]).numpy())
               for s in range(30)} for m in sampling.MODES}
  assert len(draws["uniform"]) == 1
  assert len(draws["random"]) > 25 and len(draws["sequential"]) > 10
  starts = {d[0] for d in draws["sequential"]}
  assert max(starts) <= 32


def test_view_sampler_picks_every_enabled_mode_and_is_deterministic():
  seen = set()
  for s in range(60):
    idx = sampling.sample_view_indices(40, 8, sampling.MODES, [s, 3]).numpy()
    again = sampling.sample_view_indices(40, 8, sampling.MODES, [s, 3])
    np.testing.assert_array_equal(idx, again.numpy())
    if idx[0] == 0 and idx[-1] == 39 and np.ptp(np.diff(idx)) <= 1:
      seen.add("uniform")
    elif np.all(np.diff(idx) == 1):
      seen.add("sequential")
    else:
      seen.add("random")
  assert seen == set(sampling.MODES)


def test_sampler_bad_arguments():
  with pytest.raises(ValueError, match="unknown sampling mode 'reverse'"):
    sampling.sample_indices(10, 4, "reverse", [0, 0])
  with pytest.raises(ValueError, match="at least one"):
    sampling.sample_view_indices(10, 4, (), [0, 0])
  with pytest.raises(tf.errors.InvalidArgumentError, match="zero-frame"):
    sampling.sample_indices(0, 4, "uniform", [0, 0])


def _identical_frames_clip(t=6, h=40, w=52):
  frame = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), np.uint8)
  return tf.constant(np.repeat(frame, t, axis=0))


def test_augmentation_is_clip_consistent_and_views_differ():
  clip = _identical_frames_clip()
  cfg = augment_lib.SpatialAugment()
  views = [augment_lib.augment_clip(clip, tf.constant([s, 9]), 32, cfg).numpy()
           for s in range(6)]
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
  flip_only = augment_lib.SpatialAugment(crop=False, color=False,
                                         flip_prob=1.0)
  v = augment_lib.augment_clip(clip, tf.constant([1, 2]), 32,
                               flip_only).numpy()
  np.testing.assert_allclose(v, clip.numpy()[:, :, ::-1] / 255.0, atol=1e-6)
  with pytest.raises(ValueError, match="crop_area"):
    augment_lib.SpatialAugment(crop_area=(0.5, 1.5))


def _fake_videos(n=10, seed=0):
  rng = np.random.default_rng(seed)
  vids = []
  for i in range(n):
    t = int(rng.integers(4, 20))
    v = rng.integers(0, 256, (t, 24, 30, 3), np.uint8)
    v[:, 0, 0, 0] = i          # video id stamped in a pixel
    vids.append(v)

  def gen():
    for i, v in enumerate(vids):
      yield {"video": v, "label": i % 6, "subject_id": i // 6}

  sig = {"video": tf.TensorSpec([None, 24, 30, 3], tf.uint8),
         "label": tf.TensorSpec([], tf.int64),
         "subject_id": tf.TensorSpec([], tf.int64)}
  return tf.data.Dataset.from_generator(gen, output_signature=sig), vids


def _take(ds, k):
  return list(ds.take(k).as_numpy_iterator())


def test_pretrain_batches_shapes_determinism_and_resume():
  ds, _ = _fake_videos()
  view = pipeline.ViewSpec(clip_len=4, size=16)
  make = lambda start=0, seed=1: pipeline.pretrain_dataset(
      ds, 10, batch_size=3, view=view, seed=seed, start_step=start)
  first = _take(make(), 8)       # 24 videos: crosses two epoch boundaries
  b = first[0]
  assert b["view_a"].shape == (3, 4, 16, 16, 3) and b["view_a"].dtype == np.float32
  assert b["label"].dtype == np.int32
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
  # Each epoch visits every video exactly once (ids are label + 6*subject).
  ids = np.concatenate([x["label"] + 6 * x["subject_id"] for x in first])
  assert sorted(ids[:10].tolist()) == list(range(10))
  assert sorted(ids[10:20].tolist()) == list(range(10))
  assert ids[:10].tolist() != ids[10:20].tolist()   # reshuffled per epoch


def test_without_temporal_augmentation_views_share_frames():
  ds, vids = _fake_videos(4)
  no_spatial = augment_lib.SpatialAugment(crop=False, flip=False, color=False)
  view = pipeline.ViewSpec(clip_len=4, size=24, temporal_modes=(),
                           spatial=no_spatial)
  b = _take(pipeline.pretrain_dataset(ds, 4, batch_size=4, view=view,
                                      seed=0), 1)[0]
  np.testing.assert_array_equal(b["view_a"], b["view_b"])
  view = pipeline.ViewSpec(clip_len=4, size=24, spatial=no_spatial)
  b = _take(pipeline.pretrain_dataset(ds, 4, batch_size=4, view=view,
                                      seed=0), 1)[0]
  assert not np.array_equal(b["view_a"], b["view_b"])


def test_eval_dataset_is_deterministic_padded_and_complete():
  ds, vids = _fake_videos(7)
  out = list(pipeline.eval_dataset(ds, 7, batch_size=3, clip_len=4, size=12,
                                   num_clips=2).as_numpy_iterator())
  assert len(out) == 3
  assert out[0]["video"].shape == (3, 2, 4, 12, 12, 3)
  mask = np.concatenate([b["mask"] for b in out])
  np.testing.assert_array_equal(mask, [1] * 7 + [0, 0])
  idx = pipeline.eval_clip_indices(10, 4, 3).numpy()
  np.testing.assert_array_equal(idx, [[0, 1, 2, 3], [3, 4, 5, 6],
                                      [6, 7, 8, 9]])
  np.testing.assert_array_equal(pipeline.eval_clip_indices(10, 4, 1).numpy(),
                                [[0, 3, 6, 9]])
  with pytest.raises(ValueError, match="empty"):
    pipeline.eval_dataset(ds, 0, batch_size=3, clip_len=4, size=12)


def test_global_arrays_on_8_devices():
  import jax
  from jax.sharding import Mesh
  mesh = Mesh(np.array(jax.devices()), ("data",))
  batch = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3)}
  g = pipeline.to_global_arrays(batch, mesh)
  assert g["x"].shape == (16, 3) and len(g["x"].sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(g["x"]), batch["x"])
