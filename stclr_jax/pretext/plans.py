"""Which videos share a pretraining batch, in NumPy: the batch plans of the
pretext options that compose batches. Each plan is one epoch's video order,
drawn from a generator the caller seeds (the streams of
:mod:`stclr_jax.data.streams` seed it by run seed, data shard and epoch),
and its per-epoch shape depends on the counts only.

**Same-subject negatives** (ours; :func:`same_subject_plan`): batches of
``k`` subjects x ``m`` videos, so that a video's negatives include other
videos of its own subject.

**Whole-group batches** (CL-MEx's multi-view positives;
:func:`group_plan`): every group (the views of one moment) whole in one
batch.

Without either, the stream is a plain per-epoch shuffle.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Same-subject negatives (ours).


@dataclasses.dataclass(frozen=True)
class SubjectPlan:
  """What :func:`same_subject_plan` makes of a shard's subjects, per epoch
  (a function of the counts only, the same every epoch)."""

  batches: int  # per epoch
  groups: int  # m-video groups that hold the shard's videos
  fill_ins: int  # extra video slots per epoch (repeats), see the plan
  mixed_groups: int  # groups of subjects with fewer than m videos
  epoch_length: int  # videos per epoch, batches * k * m


def check_subjects(subjects, videos_per_subject: int, batch_size: int, what):
  """Clear errors for data that cannot make ``k x m`` batches."""
  subjects = np.asarray(subjects)
  m = videos_per_subject
  if m < 2:
    raise ValueError(
      f"{what}: same-subject negatives need videos_per_subject >= 2, got {m}"
    )
  if batch_size % m:
    raise ValueError(
      f"{what}: the batch of {batch_size} videos (per data shard) is not "
      f"a multiple of videos_per_subject={m}"
    )
  missing = int(np.sum(subjects < 0))
  if missing:
    raise ValueError(
      f"{what}: same-subject negatives need subject ids, and {missing} of "
      f"the {len(subjects)} videos have none (subject_id -1). Give the data "
      "set a subject per video (video_folder: the manifest's subject "
      "column) or turn pretext.samesubject off"
    )
  ids, counts = np.unique(subjects, return_counts=True)
  k = batch_size // m
  if int(np.sum(counts >= m)) < k:
    raise ValueError(
      f"{what}: a batch of {k} subjects x {m} videos needs {k} subjects "
      f"with at least {m} videos each; this shard has "
      f"{int(np.sum(counts >= m))} (of {len(ids)} subjects)"
    )


def _groups(subjects, m, rng):
  """``([(key, indices)], fills, mixed)``: every video in exactly one
  group. A subject's videos make m-video groups, its last one completed
  with its own other videos (fill-ins). Subjects with fewer than m videos
  are pooled into mixed groups (negative keys); the last of those may be
  short, and :func:`same_subject_plan` completes it when it places it (from
  videos not in its batch). ``fills`` counts the fill-ins made here and
  the ones the short mixed group will take."""
  groups, short, fills = [], [], 0
  for s in np.unique(subjects):
    vids = rng.permutation(np.flatnonzero(subjects == s))
    if len(vids) < m:
      short.append(vids)
      continue
    full = len(vids) // m * m
    groups += [(int(s), vids[j : j + m]) for j in range(0, full, m)]
    rest = vids[full:]
    if len(rest):
      fill = rng.choice(vids[:full], m - len(rest), replace=False)
      groups.append((int(s), np.concatenate([rest, fill])))
      fills += len(fill)
  mixed = 0
  if short:
    pooled = rng.permutation(np.concatenate(short))
    for j in range(0, len(pooled), m):
      g = pooled[j : j + m]
      fills += m - len(g)
      mixed += 1
      groups.append((-mixed, g))
  return groups, fills, mixed


def same_subject_plan(subjects, m: int, k: int, rng) -> tuple[np.ndarray, int]:
  """One epoch's video order for batches of ``k`` groups of ``m`` videos:
  each group one subject (except the mixed groups of subjects with fewer
  than ``m`` videos), the subjects of a batch's groups distinct, and no
  video twice in a batch.

  Every video is in one group (a subject's last group is completed with
  its own other videos). Batches take the ``k`` subjects with the most
  groups left (random among ties), which uses the fewest batches,
  ``max(ceil(G / k), most groups of one subject)``; when fewer than ``k``
  subjects have groups left, the batch is completed with fresh groups of
  subjects not in it (fill-ins), and a short mixed group with videos of
  subjects not in it. Returns ``(order, fill_ins)``, ``order`` of length
  ``batches * k * m``.
  """
  subjects = np.asarray(subjects)
  groups, fills, _ = _groups(subjects, m, rng)
  queues: dict[int, list] = {}
  for key, g in groups:
    queues.setdefault(key, []).append(g)
  full_subjects = [
    int(s) for s, c in zip(*np.unique(subjects, return_counts=True)) if c >= m
  ]
  n_batches = max(-(-len(groups) // k), max(len(q) for q in queues.values()))
  order = []
  for _ in range(n_batches):
    keys = [key for key, q in queues.items() if q]
    tie = rng.random(len(keys))
    ranked = sorted(
      range(len(keys)), key=lambda i: (-len(queues[keys[i]]), tie[i])
    )
    batch = [queues[keys[i]].pop() for i in ranked[:k]]
    taken = set(subjects[np.concatenate(batch)].tolist())
    spare = [s for s in full_subjects if s not in taken]
    for s in rng.permutation(spare)[: k - len(batch)]:
      batch.append(rng.choice(np.flatnonzero(subjects == s), m, replace=False))
      taken.add(int(s))
      fills += m
    for j, g in enumerate(batch):
      if len(g) < m:  # the short mixed group: videos of other subjects
        free = np.flatnonzero(~np.isin(subjects, list(taken)))
        if len(free) < m - len(g):  # few subjects: any video not in it
          free = np.setdiff1d(np.arange(len(subjects)), np.concatenate(batch))
        batch[j] = np.concatenate([g, rng.choice(free, m - len(g), False)])
        taken |= set(subjects[batch[j]].tolist())
    order.append(np.concatenate(batch))
  if any(queues.values()):  # cannot happen (largest-first is optimal)
    raise AssertionError("same_subject_plan: groups left after the epoch")
  return np.concatenate(order).astype(np.int64), fills


def subject_plan_info(subjects, m: int, k: int) -> SubjectPlan:
  """The per-epoch shape of :func:`same_subject_plan` (it depends on the
  counts only)."""
  rng = np.random.default_rng(0)
  subjects = np.asarray(subjects)
  groups, _, mixed = _groups(subjects, m, rng)
  order, fills = same_subject_plan(subjects, m, k, rng)
  return SubjectPlan(
    batches=len(order) // (k * m),
    groups=len(groups),
    fill_ins=fills,
    mixed_groups=mixed,
    epoch_length=len(order),
  )


# Whole-group batches (CL-MEx's multi-view positives).


@dataclasses.dataclass(frozen=True)
class GroupPlan:
  """The per-epoch shape of :func:`group_plan` (the same every epoch)."""

  groups: int
  views: int  # videos per group
  batches: int  # per epoch
  left_over: int  # groups not drawn this epoch (a new draw each epoch)
  epoch_length: int  # videos per epoch, batches * batch_size


def group_plan_info(groups, batch_size: int, what: str) -> GroupPlan:
  """Checks that ``groups`` (one id per video) can fill batches of
  ``batch_size`` with whole groups, and returns the plan's shape.

  Every group must have the same number of videos V (the views), and V
  must divide the batch. A group with fewer videos than the others is
  reported by id: a sequence missing a view, or one split between two
  data shards (multi-host runs split the split by record ranges; keep a
  group's records together and use ``data.num_shards`` = 1 per group
  range).
  """
  groups = np.asarray(groups, np.int64)
  missing = int(np.sum(groups < 0))
  if missing:
    raise ValueError(
      f"{what}: {missing} of the {len(groups)} videos have no group id "
      "(-1); every video needs one for whole-group batches"
    )
  ids, counts = np.unique(groups, return_counts=True)
  views = int(np.max(counts))
  uneven = ids[counts != views]
  if len(uneven):
    bad = ", ".join(
      f"{int(g)} ({int(c)})"
      for g, c in zip(uneven[:5], counts[counts != views][:5])
    )
    raise ValueError(
      f"{what}: groups must all have the same number of videos; most have "
      f"{views}, but {len(uneven)} do not: group (videos) {bad}. A group "
      "split between data shards shows up here too"
    )
  if batch_size % views:
    raise ValueError(
      f"{what}: the batch of {batch_size} videos (per data shard) is not a "
      f"multiple of the {views} videos per group"
    )
  k = batch_size // views
  if len(ids) < k:
    raise ValueError(
      f"{what}: a batch of {k} groups needs {k} groups; this shard has "
      f"{len(ids)}"
    )
  batches = len(ids) // k
  return GroupPlan(
    groups=len(ids),
    views=views,
    batches=batches,
    left_over=len(ids) - batches * k,
    epoch_length=batches * batch_size,
  )


def group_plan(groups, batch_size: int, rng) -> np.ndarray:
  """One epoch's video order: the groups in a random order, each group's
  videos together, ``batch_size / V`` whole groups per batch. The groups
  that do not fill a last batch wait for a later epoch (each epoch draws
  anew). Call :func:`group_plan_info` first: it checks the groups."""
  groups = np.asarray(groups, np.int64)
  ids, inverse, counts = np.unique(
    groups, return_inverse=True, return_counts=True
  )
  k = batch_size // int(np.max(counts))
  chosen = rng.permutation(len(ids))[: len(ids) // k * k]
  members = np.argsort(inverse, kind="stable").reshape(len(ids), -1)
  return members[chosen].reshape(-1).astype(np.int64)
