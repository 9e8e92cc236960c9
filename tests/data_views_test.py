"""A video's pretraining element (stclr_jax/data/views.py)."""

import numpy as np
import pytest
import tensorflow as tf
from _helpers_data import fake_videos

from stclr_jax.data import augment as augment_lib
from stclr_jax.data import sampling, views


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
  _, vids = fake_videos(4)
  view = views.ViewSpec(clip_len=4, size=16, temporal_modes=modes)
  for i, v in enumerate(vids):
    ex = {
      "video": tf.constant(v),
      "num_frames": tf.constant(len(v)),
      "subject_id": tf.constant(i),
      "fps": tf.constant(25.0),
    }
    for seed in ([i, 1], [7, i]):
      seed = tf.constant(seed, tf.int64)
      got = views.pretrain_views(seed, ex, view)
      ref = _stclr_element_before_the_options(seed, ex, view)
      assert set(got) == {"view_a", "view_b", "subject_id"}
      for k in ref:
        np.testing.assert_array_equal(got[k].numpy(), ref[k].numpy())
