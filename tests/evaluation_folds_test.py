"""Cross-validation folds and label fractions
(stclr_jax/evaluation/folds.py)."""

import numpy as np
import pytest

from stclr_jax.evaluation import folds as folds_lib


def test_subject_folds_are_disjoint_complete_and_balanced():
  rng = np.random.default_rng(0)
  subjects = np.repeat(np.arange(1, 81), 6)[rng.permutation(480)]
  folds = folds_lib.subject_folds(subjects, 10, seed=3)
  assert sorted(np.concatenate(folds).tolist()) == list(range(480))
  per_fold = [set(subjects[f].tolist()) for f in folds]
  assert all(len(s) == 8 for s in per_fold)
  for i in range(10):
    train_subjects = set(
      subjects[folds_lib.train_indices(folds[i], 480)].tolist()
    )
    assert not per_fold[i] & train_subjects
  # Deterministic in the seed, different across seeds.
  again = folds_lib.subject_folds(subjects, 10, seed=3)
  assert all(np.array_equal(a, b) for a, b in zip(folds, again))
  other = folds_lib.subject_folds(subjects, 10, seed=4)
  assert not all(np.array_equal(a, b) for a, b in zip(folds, other))
  # 7 subjects in 3 folds: 3/2/2 subjects.
  small = folds_lib.subject_folds(np.arange(7), 3, seed=0)
  assert sorted(len(f) for f in small) == [2, 2, 3]


def test_fold_errors_are_clear():
  with pytest.raises(ValueError, match=r"2 of 4 videos have no subject id"):
    folds_lib.subject_folds(np.array([1, -1, 2, -1]), 2, 0, what="my_data")
  with pytest.raises(ValueError, match="cannot split 3 subjects into 10"):
    folds_lib.subject_folds(np.array([1, 2, 3]), 10, 0)
  with pytest.raises(ValueError, match="fold_by"):
    folds_lib.make_folds("person", [0], [1], 2, 0)
  assert folds_lib.parse_run_folds("", 4) == [0, 1, 2, 3]
  assert folds_lib.parse_run_folds("2, 0", 4) == [0, 2]
  with pytest.raises(ValueError, match=r"folds \[4\] outside"):
    folds_lib.parse_run_folds("1,4", 4)


def test_video_folds_are_stratified():
  labels = np.repeat(np.arange(6), 20)
  folds = folds_lib.video_folds(labels, 10, seed=0)
  assert sorted(np.concatenate(folds).tolist()) == list(range(120))
  for f in folds:
    assert np.bincount(labels[f], minlength=6).tolist() == [2] * 6


@pytest.mark.parametrize("fraction", [0.75, 0.5, 0.25, 0.1])
def test_label_fraction_is_stratified_and_nested_in_train(fraction):
  labels = np.repeat(np.arange(6), [30, 31, 32, 33, 34, 35])
  train = np.arange(0, labels.size, 1)[::1]
  keep = folds_lib.label_fraction(train, labels, fraction, seed=1)
  assert len(set(keep.tolist())) == keep.size and np.all(np.diff(keep) > 0)
  counts = np.bincount(labels[keep], minlength=6)
  want = [max(1, round(fraction * n)) for n in (30, 31, 32, 33, 34, 35)]
  assert counts.tolist() == want
  assert np.array_equal(
    keep, folds_lib.label_fraction(train, labels, fraction, seed=1)
  )
  assert np.array_equal(folds_lib.label_fraction(train, labels, 1.0, 0), train)
  with pytest.raises(ValueError, match="label fraction"):
    folds_lib.label_fraction(train, labels, 0.0, 0)


def _population(num_subjects=80):
  subjects = np.repeat(np.arange(1, num_subjects + 1), 6)
  labels = np.tile(np.arange(6), num_subjects)
  return labels, subjects


def test_subject_balanced_subsets_take_whole_subjects():
  labels, subjects = _population()
  folds = folds_lib.subject_folds(subjects, 10, seed=0)
  train = folds_lib.train_indices(folds[0], 480)  # 72 subjects
  keep = folds_lib.subject_subset(train, subjects, 0.1, seed=[0, 0, 1])
  chosen = np.unique(subjects[keep])
  assert chosen.size == 7  # round(0.1 * 72)
  # Every video of each chosen subject, none of the others, none tested.
  assert np.array_equal(keep, np.flatnonzero(np.isin(subjects, chosen)))
  assert not set(keep) & set(folds[0])
  # Balanced in class: one video of every class per subject.
  assert np.bincount(labels[keep], minlength=6).tolist() == [7] * 6
  # Deterministic in the seed; draws differ.
  again = folds_lib.subject_subset(train, subjects, 0.1, seed=[0, 0, 1])
  assert np.array_equal(keep, again)
  draws = {
    tuple(folds_lib.subject_subset(train, subjects, 0.1, [0, 0, d]))
    for d in range(3)
  }
  assert len(draws) == 3
  assert np.array_equal(
    folds_lib.subject_subset(train, subjects, 1.0, 0), np.sort(train)
  )
  with pytest.raises(ValueError, match="subject id"):
    folds_lib.subject_subset(train, np.full(480, -1), 0.1, 0)


def test_stratified_subsets_leave_subjects_with_one_video():
  """The identity shortcut that subject-balanced subsets remove: at 10%,
  class-stratified draws give most chosen subjects a single video, whose
  label the subject alone then names."""
  labels, subjects = _population()
  folds = folds_lib.subject_folds(subjects, 10, seed=0)
  train = folds_lib.train_indices(folds[0], 480)
  keep = folds_lib.label_subset("stratified", train, labels, subjects, 0.1, 5)
  assert np.bincount(labels[keep], minlength=6).tolist() == [7] * 6
  per_subject = np.unique(subjects[keep], return_counts=True)[1]
  assert np.mean(per_subject == 1) > 0.5
  balanced = folds_lib.label_subset("subjects", train, labels, subjects, 0.1, 5)
  assert set(np.unique(subjects[balanced], return_counts=True)[1]) == {6}
  with pytest.raises(ValueError, match="eval.subset must be one of"):
    folds_lib.label_subset("random", train, labels, subjects, 0.1, 5)
