"""The pretext options' sampling rules (stclr_jax/data/pretext.py): the
temporal shift's offset distribution and side rule, the hard-negative
segments and their gap, and the same-subject batch plan."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from stclr_jax.data import pretext, sampling

SSLFER_FPS = 25 / 6  # SSL-FER's face frames: its offsets are 2..6 frames


def _draws(n, fn):
  """``fn(seed)`` for ``n`` stateless seeds, as NumPy (one tf.data pass)."""
  d = tf.data.Dataset.range(n).map(
    lambda i: fn(tf.stack([i, tf.constant(7, tf.int64)])),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  return list(d.as_numpy_iterator())


def test_sslfer_defaults_are_its_frames_at_its_frame_rate():
  shift = pretext.TemporalShift()
  got = [int(pretext.frames(o, SSLFER_FPS)) for o in shift.offsets]
  assert got == [2, 3, 4, 5, 6]
  assert int(pretext.frames(pretext.SSLFER_GAP, SSLFER_FPS)) == 12
  np.testing.assert_allclose(
    shift.probabilities, np.array([5, 4, 3, 2, 1]) / 15
  )


def test_shift_offsets_follow_the_weights_and_both_sides_are_even():
  """On a long video every shift fits: the signed start difference of the
  two sequential views is +-(2..6) frames, with counts that pass a
  chi-square test against 5:4:3:2:1 (4 dof, critical 18.47 at p = 0.001)
  and a fair side."""
  shift = pretext.TemporalShift()
  n = 6000

  def one(seed):
    return pretext.pair_indices(
      tf.constant(0),
      tf.constant(200),
      4,
      ("sequential",),
      seed,
      shift,
      SSLFER_FPS,
    )

  rows = _draws(n, one)
  diffs = np.array([b[0] - a[0] for a, b, _ in rows])
  assert not any(c for _, _, c in rows)  # nothing cut on a long video
  counts = collections.Counter(np.abs(diffs).tolist())
  assert set(counts) == {2, 3, 4, 5, 6}
  observed = np.array([counts[k] for k in (2, 3, 4, 5, 6)])
  expected = n * np.array([5, 4, 3, 2, 1]) / 15
  chi2 = float(np.sum((observed - expected) ** 2 / expected))
  assert chi2 < 18.47, (observed, expected, chi2)
  plus = int(np.sum(diffs > 0))
  assert abs(plus - n / 2) < 4 * np.sqrt(n / 4), plus  # 4 sigma
  # The views keep their sampler: both are 4 consecutive frames.
  for a, b, _ in rows[:50]:
    assert np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)


@pytest.mark.parametrize(
  "a0,a1,delta,want,cut",
  [
    (0, 3, 3, [3], 0),  # only the right side fits
    (16, 19, 3, [-3], 0),  # only the left side fits
    (8, 11, 3, [3, -3], 0),  # both: either side
    (3, 14, 7, [5], 1),  # neither: cut to the room on the larger side
    (6, 17, 9, [-6], 1),
    (5, 14, 7, [5, -5], 1),  # neither, equal room: either side
    (0, 19, 4, [0], 1),  # a window spanning the segment cannot move
  ],
)
def test_shift_side_rule_by_hand(a0, a1, delta, want, cut):
  """Windows in a 20-frame segment [0, 20)."""
  seen = set()
  for i in range(40):
    moved, clamped = pretext.shift_window(
      a0, a1, 0, 20, tf.constant(delta), tf.constant([i, 3])
    )
    seen.add(int(moved))
    assert int(clamped) == cut
  assert seen == set(want)


def test_without_a_shift_the_pair_is_stclr_in_the_segment():
  """A cut to 0 (the uniform sampler spans the segment) gives ST-CLR's
  pair: the uniform view and an independent view in the same segment."""
  rows = _draws(
    200,
    lambda seed: pretext.pair_indices(
      tf.constant(10),
      tf.constant(30),
      6,
      ("uniform",),
      seed,
      pretext.TemporalShift(),
      25.0,
    ),
  )
  for a, b, cut in rows:
    np.testing.assert_array_equal(
      a, 10 + sampling.sample_indices(30, 6, "uniform", [0, 0]).numpy()
    )
    np.testing.assert_array_equal(a, b)
    assert cut == 1


@pytest.mark.parametrize("t,g", [(200, 20), (41, 20), (40, 20), (47, 7)])
def test_gap_policy_segments_are_disjoint_and_a_gap_apart(t, g):
  rows = _draws(
    500, lambda seed: pretext.segments(tf.constant(t), tf.constant(g), seed)
  )
  anchor_first = 0
  for lo, hard_lo, length, policy in rows:
    assert policy == pretext.GAP and length == g
    assert abs(int(hard_lo) - int(lo)) >= g
    assert 0 <= min(lo, hard_lo) and max(lo, hard_lo) + length <= t
    anchor_first += lo < hard_lo
  assert 150 < anchor_first < 350  # the anchor pair on either side
  starts = {(int(a), int(b)) for a, b, _, _ in rows}
  assert len(starts) > 1 or t == 2 * g  # the places vary where they can


@pytest.mark.parametrize("t", [2, 3, 17, 39])
def test_short_videos_use_the_halves(t):
  rows = _draws(
    200, lambda seed: pretext.segments(tf.constant(t), tf.constant(20), seed)
  )
  for lo, hard_lo, length, policy in rows:
    assert policy == pretext.HALVES and length == t // 2
    assert {int(lo), int(hard_lo)} == {0, t - t // 2}
  assert len({int(r[0]) for r in rows}) == 2


def test_a_one_frame_video_has_no_gap_and_is_kept():
  lo, hard_lo, length, policy = pretext.segments(1, 20, tf.constant([0, 1]))
  assert (int(lo), int(hard_lo), int(length), int(policy)) == (0, 0, 1, 2)


@pytest.mark.parametrize("t", [12, 25, 40, 400])
@pytest.mark.parametrize("modes", [sampling.MODES, ("sequential",), ()])
def test_hard_negative_windows_respect_the_gap(t, modes):
  """All four views of a video: the pairs stay inside their segments, and
  the segments' starts are a gap (``gap`` policy) or half the video
  (``halves``) apart, with 2 s at 25 frames/s = 50 frames."""
  hard = pretext.HardNegatives(gap=2.0)
  rows = _draws(
    150,
    lambda seed: pretext.video_indices(
      t, 8, modes, seed, shift=pretext.TemporalShift(), hard=hard, fps=25.0
    ),
  )
  for r in rows:
    lo, hlo, length = int(r["anchor_lo"]), int(r["hard_lo"]), int(r["length"])
    for k, start in (
      ("idx_a", lo),
      ("idx_b", lo),
      ("hard_a", hlo),
      ("hard_b", hlo),
    ):
      assert start <= r[k].min() and r[k].max() < start + length, (k, r)
    if t >= 100:
      assert r["gap_policy"] == pretext.GAP and abs(hlo - lo) >= 50
      assert length == 50
    else:
      assert r["gap_policy"] == pretext.HALVES
      assert abs(hlo - lo) == t - t // 2 >= length
    assert 0 <= r["shift_clamped"] <= 2


def _subjects(counts):
  return np.repeat(np.arange(len(counts)), counts)


@pytest.mark.parametrize(
  "counts,m,k",
  [
    ([6] * 10, 2, 4),  # the synthetic pool's shape
    ([6] * 10, 3, 3),
    ([5, 7, 2, 9, 4, 6, 3, 8], 2, 3),  # uneven, last groups filled in
    ([1, 1, 1, 4, 4, 4, 5], 2, 2),  # subjects too small: mixed groups
    ([20, 2, 2, 2], 2, 2),  # one large subject sets the batch count
    ([1, 1, 1, 4, 4], 2, 2),  # a short mixed group, few spare subjects
    ([1, 2, 1, 3, 3, 3], 3, 2),
  ],
)
def test_same_subject_batches_have_the_composition_and_cover_every_video(
  counts, m, k
):
  subjects = _subjects(counts)
  info = pretext.subject_plan_info(subjects, m, k)
  small = {s for s, c in enumerate(counts) if c < m}
  for epoch in range(40):
    rng = np.random.default_rng([0, epoch])
    order, fills = pretext.same_subject_plan(subjects, m, k, rng)
    assert len(order) == info.epoch_length == info.batches * k * m
    assert fills == info.fill_ins
    # Every video at least once; the slots beyond are the fill-ins.
    assert set(order.tolist()) == set(range(len(subjects)))
    assert len(order) - len(subjects) == fills
    for batch in order.reshape(-1, k, m):
      assert len(set(batch.ravel().tolist())) == k * m  # no video twice
      keys = []
      for group in batch:
        s = set(subjects[group].tolist())
        assert len(set(group.tolist())) == m  # no video twice in a group
        if len(s) > 1:  # only subjects with fewer than m videos mix
          assert s & small
          keys.append(None)
        else:
          keys.append(s.pop())
      real = [x for x in keys if x is not None]
      assert len(real) == len(set(real)), batch  # k distinct subjects
  lower = max(-(-info.groups // k), max(-(-c // m) for c in counts if c >= m))
  assert info.batches == lower


def test_same_subject_plan_reshuffles_per_epoch_and_repeats_per_seed():
  subjects = _subjects([6] * 12)
  plans = [
    pretext.same_subject_plan(subjects, 2, 4, np.random.default_rng([s]))[0]
    for s in (0, 0, 1)
  ]
  np.testing.assert_array_equal(plans[0], plans[1])
  assert not np.array_equal(plans[0], plans[2])


@pytest.mark.parametrize(
  "subjects,m,batch,match",
  [
    ([0, 0, -1, 1], 2, 2, "1 of the 4 videos have none"),
    ([0, 0, 1, 1], 1, 2, "videos_per_subject >= 2"),
    ([0, 0, 1, 1], 2, 3, "not a multiple"),
    ([0, 0, 1, 2], 2, 4, "2 subjects with at least 2 videos"),
  ],
)
def test_same_subject_errors_say_what_is_missing(subjects, m, batch, match):
  with pytest.raises(ValueError, match=match):
    pretext.check_subjects(np.array(subjects), m, batch, "shard 0")


@pytest.mark.parametrize(
  "kw,match",
  [
    ({"offsets": (0.5,), "weights": (1.0, 2.0)}, "equal length"),
    ({"offsets": (-0.5,), "weights": (1.0,)}, ">= 0"),
    ({"offsets": (0.5,), "weights": (0.0,)}, "sum to 0"),
  ],
)
def test_bad_shift_settings_raise(kw, match):
  with pytest.raises(ValueError, match=match):
    pretext.TemporalShift(**kw)
  with pytest.raises(ValueError, match="gap must be > 0"):
    pretext.HardNegatives(gap=0.0)


# MaskFN's face-part crops.


def test_face_part_crops_are_the_boxes_zero_padded_square():
  """Boxes on whole pixels and a crop size equal to the square's side: each
  crop pixel is one frame pixel, exactly. Eyes 20 px apart: the eyes' box
  is 32 x 8 px (+-0.3 and +-0.2 eye distances), the mouth's 32 x 14
  (corners +-0.05 across, 0.25 above, 0.45 below), each centred in a black
  32 x 32 square; the mouth's square runs off the frame (black too)."""
  frame = np.random.default_rng(0).integers(1, 256, (64, 64, 3), np.uint8)
  kp = np.array([[20, 30], [40, 30], [30, 40], [17, 50], [47, 50]], np.float32)
  eyes, mouth = pretext.face_part_crops(frame, kp, 32).numpy()
  want = np.zeros_like(eyes)
  want[12:20] = frame[26:34, 14:46]
  np.testing.assert_array_equal(eyes, want)
  want = np.zeros_like(mouth)
  want[9:23] = frame[45:59, 16:48]
  np.testing.assert_array_equal(mouth, want)


def test_face_part_crops_resize_and_go_black_without_a_face():
  frame = np.full((48, 48, 3), 200, np.uint8)
  kp = np.array([[10, 15], [30, 15], [20, 25], [12, 35], [28, 35]], np.float32)
  crops = pretext.face_part_crops(frame, kp, 64).numpy()
  assert crops.shape == (2, 64, 64, 3) and crops.dtype == np.uint8
  # A uniform frame stays uniform inside each box: 200 where the box is.
  assert set(np.unique(crops)) == {0, 200}
  lost = kp.copy()
  lost[3] = np.nan  # a failed detection: SSL-FER's black crops
  assert not pretext.face_part_crops(frame, lost, 64).numpy().any()


# CL-MEx's whole-group batches.


def _views(groups, views, seed=0):
  ids = np.random.default_rng(seed).permutation(np.repeat(groups, views))
  return ids


@pytest.mark.parametrize("num_groups,batch", [(10, 6), (11, 6), (4, 12)])
def test_group_plan_keeps_groups_whole_and_covers_them(num_groups, batch):
  groups = _views(np.arange(num_groups) * 7 + 3, 3)
  info = pretext.group_plan_info(groups, batch, "t")
  k = batch // 3
  assert (info.groups, info.views) == (num_groups, 3)
  assert info.batches == num_groups // k
  assert info.left_over == num_groups - info.batches * k
  assert info.epoch_length == info.batches * batch
  seen = collections.Counter()
  for epoch in range(12):
    order = pretext.group_plan(groups, batch, np.random.default_rng(epoch))
    assert len(order) == info.epoch_length
    assert len(set(order.tolist())) == len(order)  # no video twice
    for b in order.reshape(-1, batch):
      ids, counts = np.unique(groups[b], return_counts=True)
      assert len(ids) == k and set(counts.tolist()) == {3}  # whole groups
    seen.update(np.unique(groups[order]).tolist())
  # Left-over groups change from epoch to epoch: all are seen in 12.
  assert len(seen) == num_groups


def test_group_plan_is_a_function_of_the_seed():
  groups = _views(np.arange(9), 2)
  a = pretext.group_plan(groups, 6, np.random.default_rng([1, 0, 3]))
  b = pretext.group_plan(groups, 6, np.random.default_rng([1, 0, 3]))
  c = pretext.group_plan(groups, 6, np.random.default_rng([1, 0, 4]))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize(
  "groups,batch,match",
  [
    ([0, 0, 1, 1, -1, 2], 4, "1 of the 6 videos have no group"),
    ([0, 0, 0, 1, 1, 2, 2, 2], 6, r"group \(videos\) 1 \(2\)"),
    ([0, 0, 1, 1, 2, 2], 5, "not a multiple of the 2 videos per group"),
    ([0, 0, 1, 1], 6, "needs 3 groups; this shard has 2"),
  ],
)
def test_group_plan_errors_say_what_is_wrong(groups, batch, match):
  with pytest.raises(ValueError, match=match):
    pretext.group_plan_info(np.array(groups), batch, "shard 0")
