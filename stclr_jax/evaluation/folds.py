"""Cross-validation folds and label fractions (pure numpy, seeded).

Subject-independent k-fold (the paper's protocol on Oulu-CASIA): the
subjects are shuffled with the seed and dealt round-robin to ``k`` folds, so
fold sizes differ by at most one subject and no subject is in both the
training and the test part of any fold. ``fold_by="video"`` is a class-
stratified k-fold over videos, for data sets without subject ids (it is not
subject-independent; the report says so).
"""

from __future__ import annotations

import numpy as np


def subject_folds(
  subjects: np.ndarray, num_folds: int, seed: int, what: str = "the data set"
) -> list[np.ndarray]:
  """Indices of each fold's *test* videos, folding by subject."""
  subjects = np.asarray(subjects)
  missing = np.flatnonzero(subjects < 0)
  if missing.size:
    raise ValueError(
      f"{what}: {missing.size} of {subjects.size} videos have no subject id"
      " (subject_id -1), so subject-independent folds cannot be made. Give"
      " every video a subject (video_folder: the CSV's third column), or "
      "set config.eval.fold_by='video' (not subject-independent)"
    )
  unique = np.unique(subjects)
  if num_folds < 2 or unique.size < num_folds:
    raise ValueError(
      f"{what}: cannot split {unique.size} subjects into "
      f"{num_folds} folds (need 2 <= folds <= subjects)"
    )
  order = np.random.default_rng([seed, 0xF01D]).permutation(unique)
  fold_of_subject = {s: i % num_folds for i, s in enumerate(order)}
  fold = np.array([fold_of_subject[s] for s in subjects])
  return [np.flatnonzero(fold == f) for f in range(num_folds)]


def video_folds(
  labels: np.ndarray, num_folds: int, seed: int
) -> list[np.ndarray]:
  """Class-stratified k-fold over videos."""
  labels = np.asarray(labels)
  if num_folds < 2 or labels.size < num_folds:
    raise ValueError(
      f"cannot split {labels.size} videos into {num_folds} folds"
    )
  rng = np.random.default_rng([seed, 0xF01D])
  fold = np.empty(labels.size, np.int64)
  offset = 0
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    fold[idx] = (offset + np.arange(idx.size)) % num_folds
    offset += idx.size
  return [np.flatnonzero(fold == f) for f in range(num_folds)]


def make_folds(
  fold_by: str,
  labels,
  subjects,
  num_folds: int,
  seed: int,
  what: str = "the data set",
) -> list[np.ndarray]:
  if fold_by == "subject":
    return subject_folds(subjects, num_folds, seed, what)
  if fold_by == "video":
    return video_folds(labels, num_folds, seed)
  raise ValueError(
    f"config.eval.fold_by must be 'subject' or 'video', got {fold_by!r}"
  )


def train_indices(test: np.ndarray, num_videos: int) -> np.ndarray:
  return np.setdiff1d(np.arange(num_videos), test)


def label_fraction(
  train: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
  """A class-stratified subset of the training videos (Table VI): from each
  class, ``round(fraction * n_c)`` videos (at least one), drawn with the
  seed. Returns sorted indices."""
  if not 0 < fraction <= 1:
    raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
  train = np.asarray(train)
  if fraction == 1:
    return np.sort(train)
  rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 0x1ABE1])
  keep = []
  for c in np.unique(labels[train]):
    idx = train[labels[train] == c]
    n = max(1, int(round(fraction * idx.size)))
    keep.append(rng.choice(idx, size=n, replace=False))
  return np.sort(np.concatenate(keep))


SUBSETS = ("stratified", "subjects")


def subject_subset(
  train: np.ndarray, subjects: np.ndarray, fraction: float, seed
) -> np.ndarray:
  """A subject-balanced subset of the training videos: ``round(fraction *
  S)`` whole subjects (at least one) of the ``S`` in ``train``, drawn with
  the seed, with every video of each. On data with one video per subject
  and class (Oulu-CASIA, the synthetic sets) it is class-balanced too, and
  no label is given away by who shows it: every chosen subject shows every
  class. Returns sorted indices."""
  if not 0 < fraction <= 1:
    raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
  train = np.asarray(train)
  if fraction == 1:
    return np.sort(train)
  present = np.unique(subjects[train])
  if np.any(present < 0):
    raise ValueError(
      "subject-balanced label subsets need a subject id for every video "
      "(some are -1); use eval.subset='stratified'"
    )
  rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 0x5B1EC7])
  k = max(1, int(round(fraction * present.size)))
  chosen = rng.choice(present, size=k, replace=False)
  return np.sort(train[np.isin(subjects[train], chosen)])


def label_subset(
  kind: str,
  train: np.ndarray,
  labels: np.ndarray,
  subjects: np.ndarray,
  fraction: float,
  seed,
) -> np.ndarray:
  """The labelled part of a fold's training videos: ``kind`` is
  ``"stratified"`` (:func:`label_fraction`, the paper's Table VI) or
  ``"subjects"`` (:func:`subject_subset`)."""
  if kind == "stratified":
    return label_fraction(train, labels, fraction, seed)
  if kind == "subjects":
    return subject_subset(train, subjects, fraction, seed)
  raise ValueError(f"config.eval.subset must be one of {SUBSETS}, got {kind!r}")


def parse_run_folds(spec: str, num_folds: int) -> list[int]:
  """``"0,2"`` -> [0, 2]; ``""`` -> every fold."""
  if not spec.strip():
    return list(range(num_folds))
  try:
    folds = sorted({int(x) for x in spec.split(",") if x.strip()})
  except ValueError:
    raise ValueError(
      f"config.eval.run_folds={spec!r}: expected comma-separated fold numbers"
    ) from None
  bad = [f for f in folds if not 0 <= f < num_folds]
  if bad:
    raise ValueError(
      f"config.eval.run_folds: folds {bad} outside [0, {num_folds})"
    )
  return folds
