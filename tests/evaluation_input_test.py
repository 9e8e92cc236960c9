"""The evaluation's input (stclr_jax/evaluation/input.py): evaluation clips
and the labelled streams."""

import numpy as np
import pytest
import tensorflow as tf
from _helpers_data import fake_videos

from stclr_jax.data import augment as augment_lib
from stclr_jax.evaluation import input as eval_input


def test_eval_dataset_is_deterministic_padded_and_complete():
  ds, vids = fake_videos(7)
  out = list(
    eval_input.eval_dataset(
      ds, 7, batch_size=3, clip_len=4, size=12, num_clips=2
    ).as_numpy_iterator()
  )
  assert len(out) == 3
  assert out[0]["video"].shape == (3, 2, 4, 12, 12, 3)
  mask = np.concatenate([b["mask"] for b in out])
  np.testing.assert_array_equal(mask, [1] * 7 + [0, 0])
  idx = eval_input.eval_clip_indices(10, 4, 3).numpy()
  np.testing.assert_array_equal(idx, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
  np.testing.assert_array_equal(
    eval_input.eval_clip_indices(10, 4, 1).numpy(), [[0, 3, 6, 9]]
  )
  with pytest.raises(ValueError, match="empty"):
    eval_input.eval_dataset(ds, 0, batch_size=3, clip_len=4, size=12)


@pytest.mark.parametrize("n", [5, 16, 37])
def test_stream_order_is_passes_cut_into_batches(n):
  order = eval_input.stream_order(n, num_steps=11, batch_size=16, seed=[3, 1])
  assert order.shape == (11, 16)
  flat = order.reshape(-1)
  # Whole seeded passes one after another: every video once per pass.
  for start in range(0, len(flat) - n + 1, n):
    assert sorted(flat[start : start + n]) == list(range(n))
  counts = np.bincount(flat, minlength=n)
  assert counts.max() - counts.min() <= 1
  if n < 16:  # fewer videos than the batch: repeats within a batch
    assert len(set(order[0].tolist())) == n
  again = eval_input.stream_order(n, num_steps=11, batch_size=16, seed=[3, 1])
  assert np.array_equal(order, again)
  assert not np.array_equal(order, eval_input.stream_order(n, 11, 16, [3, 2]))


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
  store = eval_input.video_store(videos, num, "test")
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
  batches = list(eval_input.labelled_stream(store, indices, **kw))
  assert len(batches) == 4
  want = np.asarray(indices)[eval_input.stream_order(3, 4, 4, 7)] + 10
  got = np.stack([b["label"].numpy() for b in batches])
  assert np.array_equal(got, want)
  assert batches[0]["video"].shape == (4, 3, 8, 8, 3)
  again = list(eval_input.labelled_stream(store, indices, **kw))
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a["video"], b["video"])
