"""Which videos share a batch (stclr_jax/pretext/plans.py): the
same-subject batch plan and CL-MEx's whole-group batches."""

import collections

import numpy as np
import pytest

from stclr_jax.pretext import plans


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
  info = plans.subject_plan_info(subjects, m, k)
  small = {s for s, c in enumerate(counts) if c < m}
  for epoch in range(40):
    rng = np.random.default_rng([0, epoch])
    order, fills = plans.same_subject_plan(subjects, m, k, rng)
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
  orders = [
    plans.same_subject_plan(subjects, 2, 4, np.random.default_rng([s]))[0]
    for s in (0, 0, 1)
  ]
  np.testing.assert_array_equal(orders[0], orders[1])
  assert not np.array_equal(orders[0], orders[2])


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
    plans.check_subjects(np.array(subjects), m, batch, "shard 0")


# CL-MEx's whole-group batches.


def _views(groups, views, seed=0):
  ids = np.random.default_rng(seed).permutation(np.repeat(groups, views))
  return ids


@pytest.mark.parametrize("num_groups,batch", [(10, 6), (11, 6), (4, 12)])
def test_group_plan_keeps_groups_whole_and_covers_them(num_groups, batch):
  groups = _views(np.arange(num_groups) * 7 + 3, 3)
  info = plans.group_plan_info(groups, batch, "t")
  k = batch // 3
  assert (info.groups, info.views) == (num_groups, 3)
  assert info.batches == num_groups // k
  assert info.left_over == num_groups - info.batches * k
  assert info.epoch_length == info.batches * batch
  seen = collections.Counter()
  for epoch in range(12):
    order = plans.group_plan(groups, batch, np.random.default_rng(epoch))
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
  a = plans.group_plan(groups, 6, np.random.default_rng([1, 0, 3]))
  b = plans.group_plan(groups, 6, np.random.default_rng([1, 0, 3]))
  c = plans.group_plan(groups, 6, np.random.default_rng([1, 0, 4]))
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
    plans.group_plan_info(np.array(groups), batch, "shard 0")
