"""The pretraining stream (stclr_jax/data/streams.py): batches, determinism
and exact resume, with every pretext option and batch plan."""

import numpy as np
import pytest
import tensorflow as tf
from _helpers_data import fake_videos

from stclr_jax.data import augment as augment_lib
from stclr_jax.data import streams, views
from stclr_jax.pretext import options, plans


def _take(ds, k):
  return list(ds.take(k).as_numpy_iterator())


def test_pretrain_batches_shapes_determinism_and_resume():
  ds, _ = fake_videos()
  view = views.ViewSpec(clip_len=4, size=16)
  make = lambda start=0, seed=1: streams.pretrain_dataset(
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
  ds, vids = fake_videos(4)
  no_spatial = augment_lib.SpatialAugment(crop=False, flip=False, color=False)
  view = views.ViewSpec(
    clip_len=4, size=24, temporal_modes=(), spatial=no_spatial
  )
  b = _take(
    streams.pretrain_dataset(ds, 4, batch_size=4, view=view, seed=0), 1
  )[0]
  np.testing.assert_array_equal(b["view_a"], b["view_b"])
  view = views.ViewSpec(clip_len=4, size=24, spatial=no_spatial)
  b = _take(
    streams.pretrain_dataset(ds, 4, batch_size=4, view=view, seed=0), 1
  )[0]
  assert not np.array_equal(b["view_a"], b["view_b"])


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


_SAME_SUBJECT = options.Pretext(samesubject=options.SameSubject(2))
_GROUPS = options.Pretext(clmex=options.MultiView())
_PRETEXT = {
  "shift": options.Pretext(timeaug=options.TemporalShift()),
  "hard": options.Pretext(hardneg=options.HardNegatives()),
  "both": options.Pretext(
    timeaug=options.TemporalShift(), hardneg=options.HardNegatives()
  ),
}


@pytest.mark.parametrize("option", sorted(_PRETEXT))
def test_pretext_views_are_deterministic_and_resume_exactly(option):
  ds, _ = fake_videos()
  view = views.ViewSpec(clip_len=4, size=16, pretext=_PRETEXT[option])
  make = lambda start=0: streams.pretrain_dataset(
    ds, 10, batch_size=3, view=view, seed=1, start_step=start
  )
  first = _take(make(), 6)
  keys = {"view_a", "view_b", "subject_id"}
  if _PRETEXT[option].hardneg is not None:
    keys |= {"hard_a", "hard_b", "gap_policy"}
    # Short videos at 25 frames/s: the halves policy, every one counted.
    assert all((b["gap_policy"] == 1).all() for b in first)
  if _PRETEXT[option].timeaug is not None:
    keys.add("shift_clamped")
  assert set(first[0]) == keys
  for x, y in zip(first[4:], _take(make(start=4), 2)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_the_data_sets_frame_rate_sets_the_gap():
  """A data set's ``fps`` feature replaces the default 25 frames/s, where
  every one of these videos (4-19 frames) is short (halves). At 2
  frames/s the 2.88 s gap is round(5.76) = 6 frames, and the videos of
  12 frames or more host it (the gap policy)."""
  ds, vids = fake_videos()
  view = views.ViewSpec(
    clip_len=4,
    size=16,
    pretext=options.Pretext(hardneg=options.HardNegatives()),
  )
  with_fps = ds.map(lambda e: {**e, "fps": tf.constant(2.0)})
  b = _take(
    streams.pretrain_dataset(with_fps, 10, batch_size=10, view=view, seed=0),
    1,
  )[0]
  lengths = np.array([len(v) for v in vids])[b["subject_id"]]
  np.testing.assert_array_equal(b["gap_policy"], np.where(lengths >= 12, 0, 1))


def test_same_subject_batches_compose_cover_and_resume_exactly():
  counts = [6, 6, 5, 6, 3, 6]
  ds, subjects = _subject_videos(counts)
  view = views.ViewSpec(
    clip_len=4,
    size=16,
    spatial=augment_lib.SpatialAugment(crop=False, flip=False, color=False),
    pretext=_SAME_SUBJECT,
  )
  make = lambda start=0: streams.pretrain_dataset(
    ds,
    len(subjects),
    batch_size=6,
    view=view,
    seed=2,
    start_step=start,
  )
  info = plans.subject_plan_info(subjects, 2, 3)
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
    streams.pretrain_dataset(
      ds,
      8,
      batch_size=4,
      view=views.ViewSpec(clip_len=4, size=16, pretext=_SAME_SUBJECT),
      seed=0,
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
  view = views.ViewSpec(
    clip_len=4,
    size=16,
    spatial=_PLAIN,
    pretext=options.Pretext(
      maskfn=options.MaskFN(crop_size=24),
      hardneg=options.HardNegatives() if hard else None,
    ),
  )
  make = lambda start=0: streams.pretrain_dataset(
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


def test_whole_group_batches_compose_cover_and_resume_exactly():
  groups = np.repeat([5, 9, 2, 7, 11, 4, 3], 2)  # 7 groups of 2 views
  n = len(groups)
  view = views.ViewSpec(clip_len=4, size=16, spatial=_PLAIN, pretext=_GROUPS)
  make = lambda start=0: streams.pretrain_dataset(
    _keypoint_videos(n, groups=groups),
    n,
    batch_size=4,
    view=view,
    seed=1,
    start_step=start,
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
  maskfn = options.Pretext(maskfn=options.MaskFN())
  view = views.ViewSpec(clip_len=4, size=16, pretext=maskfn)
  ds, _ = fake_videos()
  with pytest.raises(ValueError, match="MaskFN needs each frame's five face"):
    streams.pretrain_dataset(ds, 10, batch_size=2, view=view, seed=0)
  groups = views.ViewSpec(clip_len=4, size=16, pretext=_GROUPS)
  with pytest.raises(ValueError, match="need a 'group_id'"):
    streams.pretrain_dataset(ds, 10, batch_size=2, view=groups, seed=0)
