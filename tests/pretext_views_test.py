"""Which frames form a video's views (stclr_jax/pretext/views.py): the
temporal shift's offset distribution and side rule, and the hard-negative
segments and their gap."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from stclr_jax.data import sampling
from stclr_jax.pretext import options, views

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
  shift = options.TemporalShift()
  got = [int(views.frames(o, SSLFER_FPS)) for o in shift.offsets]
  assert got == [2, 3, 4, 5, 6]
  assert int(views.frames(options.SSLFER_GAP, SSLFER_FPS)) == 12
  np.testing.assert_allclose(
    shift.probabilities, np.array([5, 4, 3, 2, 1]) / 15
  )


def test_shift_offsets_follow_the_weights_and_both_sides_are_even():
  """On a long video every shift fits: the signed start difference of the
  two sequential views is +-(2..6) frames, with counts that pass a
  chi-square test against 5:4:3:2:1 (4 dof, critical 18.47 at p = 0.001)
  and a fair side."""
  shift = options.TemporalShift()
  n = 6000

  def one(seed):
    return views.pair_indices(
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
    moved, clamped = views.shift_window(
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
    lambda seed: views.pair_indices(
      tf.constant(10),
      tf.constant(30),
      6,
      ("uniform",),
      seed,
      options.TemporalShift(),
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
    500, lambda seed: views.segments(tf.constant(t), tf.constant(g), seed)
  )
  anchor_first = 0
  for lo, hard_lo, length, policy in rows:
    assert policy == views.GAP and length == g
    assert abs(int(hard_lo) - int(lo)) >= g
    assert 0 <= min(lo, hard_lo) and max(lo, hard_lo) + length <= t
    anchor_first += lo < hard_lo
  assert 150 < anchor_first < 350  # the anchor pair on either side
  starts = {(int(a), int(b)) for a, b, _, _ in rows}
  assert len(starts) > 1 or t == 2 * g  # the places vary where they can


@pytest.mark.parametrize("t", [2, 3, 17, 39])
def test_short_videos_use_the_halves(t):
  rows = _draws(
    200, lambda seed: views.segments(tf.constant(t), tf.constant(20), seed)
  )
  for lo, hard_lo, length, policy in rows:
    assert policy == views.HALVES and length == t // 2
    assert {int(lo), int(hard_lo)} == {0, t - t // 2}
  assert len({int(r[0]) for r in rows}) == 2


def test_a_one_frame_video_has_no_gap_and_is_kept():
  lo, hard_lo, length, policy = views.segments(1, 20, tf.constant([0, 1]))
  assert (int(lo), int(hard_lo), int(length), int(policy)) == (0, 0, 1, 2)


@pytest.mark.parametrize("t", [12, 25, 40, 400])
@pytest.mark.parametrize("modes", [sampling.MODES, ("sequential",), ()])
def test_hard_negative_windows_respect_the_gap(t, modes):
  """All four views of a video: the pairs stay inside their segments, and
  the segments' starts are a gap (``gap`` policy) or half the video
  (``halves``) apart, with 2 s at 25 frames/s = 50 frames."""
  hard = options.HardNegatives(gap=2.0)
  rows = _draws(
    150,
    lambda seed: views.video_indices(
      t, 8, modes, seed, shift=options.TemporalShift(), hard=hard, fps=25.0
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
      assert r["gap_policy"] == views.GAP and abs(hlo - lo) >= 50
      assert length == 50
    else:
      assert r["gap_policy"] == views.HALVES
      assert abs(hlo - lo) == t - t // 2 >= length
    assert 0 <= r["shift_clamped"] <= 2


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
    options.TemporalShift(**kw)
  with pytest.raises(ValueError, match="gap must be > 0"):
    options.HardNegatives(gap=0.0)
