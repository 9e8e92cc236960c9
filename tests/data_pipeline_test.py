"""The tf.data pipeline: two-view pretraining stream and eval clips."""

import numpy as np
import pytest
import tensorflow as tf

from stclr_jax.data import augment as augment_lib
from stclr_jax.data import pipeline, sampling


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


def _subject_videos(counts, seed=0):
  """Videos of subjects with ``counts`` videos each; the video's index is
  stamped in a pixel and its subject is its subject_id."""
  rng = np.random.default_rng(seed)
  vids, subjects = [], np.repeat(np.arange(len(counts)), counts)
  for i in range(len(subjects)):
    v = rng.integers(0, 256, (int(rng.integers(4, 20)), 16, 16, 3), np.uint8)
    v[:, 0, 0, 0] = i
    vids.append(v)

  def gen():
    for i, v in enumerate(vids):
      yield {"video": v, "subject_id": subjects[i]}

  sig = {
    "video": tf.TensorSpec([None, 16, 16, 3], tf.uint8),
    "subject_id": tf.TensorSpec([], tf.int64),
  }
  return tf.data.Dataset.from_generator(gen, output_signature=sig), subjects


_PRETEXT = {
  "shift": dict(shift=pipeline.pretext.TemporalShift()),
  "hard": dict(hard_negatives=pipeline.pretext.HardNegatives()),
  "both": dict(
    shift=pipeline.pretext.TemporalShift(),
    hard_negatives=pipeline.pretext.HardNegatives(),
  ),
}


@pytest.mark.parametrize("option", sorted(_PRETEXT))
def test_pretext_views_are_deterministic_and_resume_exactly(option):
  ds, _ = _fake_videos()
  view = pipeline.ViewSpec(clip_len=4, size=16, **_PRETEXT[option])
  make = lambda start=0: pipeline.pretrain_dataset(
    ds, 10, batch_size=3, view=view, seed=1, start_step=start
  )
  first = _take(make(), 6)
  keys = {"view_a", "view_b", "subject_id"}
  if "hard_negatives" in _PRETEXT[option]:
    keys |= {"hard_a", "hard_b", "gap_policy"}
    # Short videos at 25 frames/s: the halves policy, every one counted.
    assert all((b["gap_policy"] == 1).all() for b in first)
  if "shift" in _PRETEXT[option]:
    keys.add("shift_clamped")
  assert set(first[0]) == keys
  for x, y in zip(first[4:], _take(make(start=4), 2)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def _stclr_element_before_the_options(elem_seed, ex, view):
  """The element function of the pretraining stream as it was before the
  pretext options (commit f3ff21b's ``two_views``), kept as a reference."""
  s = tf.random.experimental.stateless_split(elem_seed, 4)
  n, modes = ex["num_frames"], tuple(view.temporal_modes)
  if modes:
    idx_a = sampling.sample_view_indices(n, view.clip_len, modes, s[0])
    idx_b = sampling.sample_view_indices(n, view.clip_len, modes, s[1])
  else:
    idx_a = idx_b = sampling.sample_indices(n, view.clip_len, "uniform", s[0])
  aug = lambda idx, seed: augment_lib.augment_clip(
    tf.gather(ex["video"], idx), seed, view.size, view.spatial
  )
  return {"view_a": aug(idx_a, s[2]), "view_b": aug(idx_b, s[3])}


@pytest.mark.parametrize("modes", [sampling.MODES, ()])
def test_with_the_options_off_the_stream_is_the_papers_as_before(modes):
  """Options off: every element equals the pre-options reference, draw
  for draw (so runs and checkpoints made before keep their data)."""
  _, vids = _fake_videos(4)
  view = pipeline.ViewSpec(clip_len=4, size=16, temporal_modes=modes)
  for i, v in enumerate(vids):
    ex = {
      "video": tf.constant(v),
      "num_frames": tf.constant(len(v)),
      "subject_id": tf.constant(i),
      "fps": tf.constant(25.0),
    }
    for seed in ([i, 1], [7, i]):
      seed = tf.constant(seed, tf.int64)
      got = pipeline._pretrain_views(seed, ex, view)
      ref = _stclr_element_before_the_options(seed, ex, view)
      assert set(got) == {"view_a", "view_b", "subject_id"}
      for k in ref:
        np.testing.assert_array_equal(got[k].numpy(), ref[k].numpy())


def test_the_data_sets_frame_rate_sets_the_gap():
  """A data set's ``fps`` feature replaces the default 25 frames/s, where
  every one of these videos (4-19 frames) is short (halves). At 2
  frames/s the 2.88 s gap is round(5.76) = 6 frames, and the videos of
  12 frames or more host it (the gap policy)."""
  ds, vids = _fake_videos()
  view = pipeline.ViewSpec(
    clip_len=4, size=16, hard_negatives=pipeline.pretext.HardNegatives()
  )
  with_fps = ds.map(lambda e: {**e, "fps": tf.constant(2.0)})
  b = _take(
    pipeline.pretrain_dataset(with_fps, 10, batch_size=10, view=view, seed=0),
    1,
  )[0]
  lengths = np.array([len(v) for v in vids])[b["subject_id"]]
  np.testing.assert_array_equal(b["gap_policy"], np.where(lengths >= 12, 0, 1))


def test_same_subject_batches_compose_cover_and_resume_exactly():
  counts = [6, 6, 5, 6, 3, 6]
  ds, subjects = _subject_videos(counts)
  view = pipeline.ViewSpec(
    clip_len=4,
    size=16,
    spatial=augment_lib.SpatialAugment(crop=False, flip=False, color=False),
  )
  make = lambda start=0: pipeline.pretrain_dataset(
    ds,
    len(subjects),
    batch_size=6,
    view=view,
    seed=2,
    start_step=start,
    videos_per_subject=2,
  )
  info = pipeline.pretext.subject_plan_info(subjects, 2, 3)
  batches = _take(make(), 2 * info.batches)
  for b in batches:
    s = b["subject_id"].reshape(3, 2)
    assert (s[:, 0] == s[:, 1]).all() and len(set(s[:, 0])) == 3, s
    # The stamped index names a video of that subject.
    idx = np.rint(b["view_a"][:, 0, 0, 0, 0] * 255).astype(int)
    np.testing.assert_array_equal(subjects[idx], b["subject_id"])
  for e in range(2):
    seen = np.concatenate(
      [
        np.rint(b["view_a"][:, 0, 0, 0, 0] * 255).astype(int)
        for b in batches[e * info.batches : (e + 1) * info.batches]
      ]
    )
    assert set(seen.tolist()) == set(range(len(subjects)))
  for x, y in zip(batches[5:], _take(make(start=5), 3)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_same_subject_negatives_without_subject_ids_is_a_clear_error():
  ds, _ = _subject_videos([4, 4])
  ds = ds.map(lambda e: {"video": e["video"]})  # no subject_id feature
  with pytest.raises(ValueError, match="need subject ids, and 8 of the 8"):
    pipeline.pretrain_dataset(
      ds,
      8,
      batch_size=4,
      view=pipeline.ViewSpec(clip_len=4, size=16),
      seed=0,
      videos_per_subject=2,
    )


def _keypoint_videos(n=8, seed=0, groups=None):
  """Videos whose frame t is uniformly ``10 t + 5`` (the frame is named by
  its value) with fixed keypoints, and optional group ids."""
  rng = np.random.default_rng(seed)
  kp = np.array([[8, 10], [20, 10], [14, 14], [10, 18], [18, 18]], np.float32)
  lengths = rng.integers(6, 20, n)

  def gen():
    for i, t in enumerate(lengths):
      v = (10 * np.arange(t) + 5).astype(np.uint8)
      ex = {
        "video": np.broadcast_to(v[:, None, None, None], (t, 24, 28, 3)),
        "keypoints": np.broadcast_to(kp, (t, 5, 2)),
        "subject_id": i,
      }
      if groups is not None:
        ex["group_id"] = groups[i]
      yield ex

  sig = {
    "video": tf.TensorSpec([None, 24, 28, 3], tf.uint8),
    "keypoints": tf.TensorSpec([None, 5, 2], tf.float32),
    "subject_id": tf.TensorSpec([], tf.int64),
  }
  if groups is not None:
    sig["group_id"] = tf.TensorSpec([], tf.int64)
  return tf.data.Dataset.from_generator(gen, output_signature=sig)


_PLAIN = augment_lib.SpatialAugment(crop=False, flip=False, color=False)


@pytest.mark.parametrize("hard", [False, True])
def test_maskfn_crops_come_from_each_views_centre_frame(hard):
  """Each view's crops are the un-augmented centre frame's (its value
  names the frame), and the stream resumes exactly with them."""
  view = pipeline.ViewSpec(
    clip_len=4,
    size=16,
    spatial=_PLAIN,
    face_parts=pipeline.pretext.FaceParts(size=24),
    hard_negatives=pipeline.pretext.HardNegatives() if hard else None,
  )
  make = lambda start=0: pipeline.pretrain_dataset(
    _keypoint_videos(), 8, batch_size=4, view=view, seed=3, start_step=start
  )
  batches = _take(make(), 4)
  pairs = (("a", "view_a"), ("b", "view_b"))
  if hard:
    pairs += (("hard_a", "hard_a"), ("hard_b", "hard_b"))
  for b in batches:
    for key, clip in pairs:
      crops = b[f"parts_{key}"]
      assert crops.shape == (4, 2, 24, 24, 3) and crops.dtype == np.uint8
      centre = np.rint(b[clip][:, 2, 5, 5, 0] * 255)  # frame clip_len // 2
      for i in range(4):
        for part in crops[i]:
          assert set(np.unique(part)) == {0, centre[i]}
  for x, y in zip(batches[2:], _take(make(start=2), 2)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_cached_keypoints_scale_with_the_frames():
  ex = {
    "video": tf.zeros([3, 24, 30, 3], tf.uint8),
    "keypoints": tf.fill([3, 5, 2], 6.0),
  }
  out = pipeline._cacheable(ex, 12, with_label=False, with_keypoints=True)
  assert out["video"].shape[1:3] == (12, 15)
  np.testing.assert_allclose(out["keypoints"][..., 0], 3.0)  # x: 15 / 30
  np.testing.assert_allclose(out["keypoints"][..., 1], 3.0)  # y: 12 / 24


def test_whole_group_batches_compose_cover_and_resume_exactly():
  groups = np.repeat([5, 9, 2, 7, 11, 4, 3], 2)  # 7 groups of 2 views
  n = len(groups)
  view = pipeline.ViewSpec(clip_len=4, size=16, spatial=_PLAIN)
  make = lambda start=0: pipeline.pretrain_dataset(
    _keypoint_videos(n, groups=groups),
    n,
    batch_size=4,
    view=view,
    seed=1,
    start_step=start,
    whole_groups=True,
  )
  batches = _take(make(), 9)  # 3 batches per epoch, one group left over
  for b in batches:
    g = b["group"].reshape(2, 2)
    assert (g[:, 0] == g[:, 1]).all() and g[0, 0] != g[1, 0]
    np.testing.assert_array_equal(groups[b["subject_id"]], b["group"])
  for e in range(3):
    ids = np.concatenate([b["subject_id"] for b in batches[3 * e : 3 * e + 3]])
    assert len(set(ids.tolist())) == 12
  for x, y in zip(batches[4:], _take(make(start=4), 3)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_maskfn_and_groups_need_their_features():
  view = pipeline.ViewSpec(
    clip_len=4, size=16, face_parts=pipeline.pretext.FaceParts()
  )
  ds, _ = _fake_videos()
  with pytest.raises(ValueError, match="MaskFN needs each frame's five face"):
    pipeline.pretrain_dataset(ds, 10, batch_size=2, view=view, seed=0)
  plain = pipeline.ViewSpec(clip_len=4, size=16)
  with pytest.raises(ValueError, match="need a 'group_id'"):
    pipeline.pretrain_dataset(
      ds, 10, batch_size=2, view=plain, seed=0, whole_groups=True
    )
  with pytest.raises(ValueError, match="choose one"):
    pipeline.pretrain_dataset(
      ds,
      10,
      batch_size=2,
      view=plain,
      seed=0,
      whole_groups=True,
      videos_per_subject=2,
    )


@pytest.mark.parametrize("n", [5, 16, 37])
def test_stream_order_is_passes_cut_into_batches(n):
  order = pipeline.stream_order(n, num_steps=11, batch_size=16, seed=[3, 1])
  assert order.shape == (11, 16)
  flat = order.reshape(-1)
  # Whole seeded passes one after another: every video once per pass.
  for start in range(0, len(flat) - n + 1, n):
    assert sorted(flat[start : start + n]) == list(range(n))
  counts = np.bincount(flat, minlength=n)
  assert counts.max() - counts.min() <= 1
  if n < 16:  # fewer videos than the batch: repeats within a batch
    assert len(set(order[0].tolist())) == n
  again = pipeline.stream_order(n, num_steps=11, batch_size=16, seed=[3, 1])
  assert np.array_equal(order, again)
  assert not np.array_equal(order, pipeline.stream_order(n, 11, 16, [3, 2]))


def test_labelled_stream_gives_exactly_its_steps_with_their_labels():
  rng = np.random.default_rng(0)
  num = 5
  videos = tf.data.Dataset.from_tensor_slices(
    {
      "video": rng.integers(0, 255, (num, 6, 12, 12, 3), np.uint8),
      "num_frames": np.full(num, 6, np.int32),
      "label": np.arange(num, dtype=np.int64) + 10,
    }
  )
  store = pipeline.video_store(videos, num, "test")
  kw = dict(
    num_steps=4,
    batch_size=4,
    clip_len=3,
    size=8,
    temporal_modes=("uniform",),
    spatial=augment_lib.SpatialAugment(crop=True, flip=True, color=False),
    seed=7,
  )
  indices = [1, 3, 4]
  batches = list(pipeline.labelled_stream(store, indices, **kw))
  assert len(batches) == 4
  want = np.asarray(indices)[pipeline.stream_order(3, 4, 4, 7)] + 10
  got = np.stack([b["label"].numpy() for b in batches])
  assert np.array_equal(got, want)
  assert batches[0]["video"].shape == (4, 3, 8, 8, 3)
  again = list(pipeline.labelled_stream(store, indices, **kw))
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a["video"], b["video"])
