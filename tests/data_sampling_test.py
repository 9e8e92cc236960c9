"""Temporal samplers: order, coverage, randomness, bad arguments."""

import numpy as np
import pytest
import tensorflow as tf

from stclr_jax.data import sampling


@pytest.mark.parametrize("num_frames", [1, 3, 8, 9, 40])
@pytest.mark.parametrize("mode", sampling.MODES)
def test_sampler_properties(mode, num_frames):
  n = 8
  for s in range(20):
    idx = sampling.sample_indices(num_frames, n, mode, [s, 1]).numpy()
    assert idx.shape == (n,) and idx.dtype == np.int32
    assert idx.min() >= 0 and idx.max() < num_frames
    assert np.all(np.diff(idx) >= 0)  # temporal order kept
    if num_frames >= n:
      if mode == "random":
        assert len(set(idx)) == n  # distinct frames
      elif mode == "sequential":
        np.testing.assert_array_equal(np.diff(idx), 1)
      else:
        assert idx[0] == 0 and idx[-1] == num_frames - 1
        assert np.ptp(np.diff(idx)) <= 1  # evenly spaced
    else:
      assert set(idx) == set(range(num_frames))  # every frame kept


def test_samplers_are_random_where_they_should_be():
  draws = {
    m: {
      tuple(sampling.sample_indices(40, 8, m, [s, 0]).numpy())
      for s in range(30)
    }
    for m in sampling.MODES
  }
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


@pytest.mark.parametrize("mode", sampling.MODES)
def test_a_seed_that_is_not_shape_2_is_a_clear_error(mode):
  for bad in (7, [1, 2, 3], [[1, 2]]):
    with pytest.raises(ValueError, match=r"seed must be a shape-\[2\]"):
      sampling.sample_indices(10, 4, mode, bad)
  with pytest.raises(ValueError, match=r"seed must be a shape-\[2\]"):
    sampling.sample_view_indices(10, 4, sampling.MODES, 7)
  with pytest.raises(ValueError, match="seed must be integers"):
    sampling.sample_indices(10, 4, mode, [0.5, 1.5])
  # Inside a tf.function with a known shape, the same check.
  fn = tf.function(lambda s: sampling.sample_indices(10, 4, mode, s))
  with pytest.raises(ValueError, match=r"seed must be a shape-\[2\]"):
    fn(tf.constant(3))
  assert fn(tf.constant([3, 4])).shape == (4,)
