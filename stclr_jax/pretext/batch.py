"""The pretraining batch: its keys, which of them a run has, and the host's
pretext counters. One schema for the producer (data/views.py), the step
and its objectives, device augmentation, the preview and the tests.

A batch is a dict of arrays with a leading batch axis:

* ``view_a``, ``view_b``: each video's positive pair, float32 clips in
  [0, 1] ``(B, T, S, S, 3)``; with ``hard``, ``hard_a`` and ``hard_b``:
  its second pair (SSL-FER's NA, NP).
* Shipped for device augmentation (``shipped``), each view ``K`` is uint8
  frames at the ship size with ``K_crop`` (its crop's sampling
  coordinates) and ``K_aug`` (flip and colour parameters);
  data/device_augment.py turns them into the float32 clips inside the step.
* ``parts_a``, ``parts_b`` (and ``parts_hard_a``, ``parts_hard_b``), with
  ``parts``: each view's eye and mouth crops, uint8 ``(B, 2, C, C, 3)``.
* ``group``, with ``group``: each video's group id (-1: none).
* ``mask_seed``, for masked autoencoding: each clip's key data, uint32
  ``(B, 2)``, from which the step draws its tube mask.
* For the host only: ``subject_id``; with ``hard``, ``gap_policy`` (the
  hard-negative policy of each video); with ``shift``, ``shift_clamped``
  (its pairs whose temporal shift was cut); with ``swap``, ``face_swap``
  (FaceSwap's status of each positive: view B, and with ``hard`` the
  hard pair's, ``(B, pairs)``; :data:`SWAP_STATUSES`).

The step reads :attr:`BatchSchema.model_keys`; the host reads the rest
(:class:`Counts`). This module imports NumPy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

VIEW_A, VIEW_B, HARD_A, HARD_B = "view_a", "view_b", "hard_a", "hard_b"
PAIR = (VIEW_A, VIEW_B)
HARD_PAIR = (HARD_A, HARD_B)
VIEWS = PAIR + HARD_PAIR
# Each view's face-part crops.
PARTS = {
  VIEW_A: "parts_a",
  VIEW_B: "parts_b",
  HARD_A: "parts_hard_a",
  HARD_B: "parts_hard_b",
}
GROUP = "group"
# Masked autoencoding: each clip's key data (uint32 (B, 2)) for its tube mask.
MASK_SEED = "mask_seed"
SUBJECT = "subject_id"
GAP_POLICY = "gap_policy"
SHIFT_CLAMPED = "shift_clamped"
FACE_SWAP = "face_swap"
# face_swap's values, as pretext/face_swap.py numbers them.
SWAP_STATUSES = ("not_drawn", "swapped", "no_keypoints", "degenerate")
# A shipped view's augmentation parameters: "<view>_crop", "<view>_aug".
SHIPPED = ("_crop", "_aug")
# gap_policy's values, as pretext/views.py numbers them.
GAP_POLICIES = ("gap", "halves", "none")


def shipped_keys(view: str) -> tuple[str, str]:
  """A shipped view's parameter keys: ``(<view>_crop, <view>_aug)``."""
  return tuple(view + s for s in SHIPPED)


def is_shipped(batch) -> bool:
  """Whether ``batch`` (a dict or its keys) was shipped for device
  augmentation."""
  return shipped_keys(VIEW_A)[0] in batch


@dataclasses.dataclass(frozen=True)
class BatchSchema:
  """Which keys a run's batches have (module docstring)."""

  hard: bool = False
  parts: bool = False
  group: bool = False
  shift: bool = False
  swap: bool = False
  masked: bool = False
  shipped: bool = False

  @classmethod
  def of(cls, batch) -> BatchSchema:
    """The schema a batch (a dict or its keys) has, checked."""
    keys = set(batch)
    schema = cls(
      hard=HARD_A in keys,
      parts=PARTS[VIEW_A] in keys,
      group=GROUP in keys,
      shift=SHIFT_CLAMPED in keys,
      swap=FACE_SWAP in keys,
      masked=MASK_SEED in keys,
      shipped=is_shipped(keys),
    )
    schema.check(keys, "BatchSchema.of")
    return schema

  @property
  def views(self) -> tuple[str, ...]:
    if self.masked:
      return (VIEW_A,)  # masked autoencoding: one clip per video
    return VIEWS if self.hard else PAIR

  @property
  def parts_keys(self) -> tuple[str, ...]:
    return tuple(PARTS[v] for v in self.views) if self.parts else ()

  @property
  def model_keys(self) -> tuple[str, ...]:
    """What the step reads."""
    keys = list(self.views)
    if self.shipped:
      keys += [k for v in self.views for k in shipped_keys(v)]
    keys += self.parts_keys
    if self.group:
      keys.append(GROUP)
    if self.masked:
      keys.append(MASK_SEED)
    return tuple(keys)

  @property
  def host_keys(self) -> tuple[str, ...]:
    """What only the host reads."""
    keys = [SUBJECT]
    if self.hard:
      keys.append(GAP_POLICY)
    if self.shift:
      keys.append(SHIFT_CLAMPED)
    if self.swap:
      keys.append(FACE_SWAP)
    return tuple(keys)

  @property
  def keys(self) -> tuple[str, ...]:
    return self.model_keys + self.host_keys

  @property
  def counters(self) -> tuple[str, ...]:
    """The metric names of :class:`Counts` for this schema."""
    out = []
    if self.shift:
      out.append("pretext/shift_clamped")
    if self.hard:
      out += [f"pretext/gap_policy_{p}" for p in GAP_POLICIES]
    if self.swap:
      out += [f"pretext/face_swap_{s}" for s in SWAP_STATUSES]
    return tuple(out)

  def check(self, keys: Iterable[str], where: str) -> None:
    """Raises a ValueError naming ``where`` and every missing or
    unexpected key, unless ``keys`` are exactly :attr:`keys`."""
    keys = set(keys)
    missing = [k for k in self.keys if k not in keys]
    extra = sorted(keys - set(self.keys))
    if missing or extra:
      raise ValueError(
        f"{where}: the batch does not match its schema {self}: "
        f"missing {missing}, unexpected {extra}"
      )

  def model_inputs(self, batch: dict) -> dict:
    """The entries the step reads, after :meth:`check` of ``batch``."""
    self.check(batch, "host batch")
    return {k: batch[k] for k in self.model_keys}


class Counts:
  """This host's pretext counters between two logged steps: the share of
  pairs whose temporal shift was cut (``pretext/shift_clamped``), of
  videos under each hard-negative policy (``pretext/gap_policy_<name>``),
  and of positives by FaceSwap status (``pretext/face_swap_<status>``:
  not drawn, swapped, or skipped for want of keypoints or for a
  degenerate transform); none without TimeAug, HardNeg and FaceSwap."""

  def __init__(self):
    self._clamped, self._pairs = 0, 0
    self._policy = np.zeros(len(GAP_POLICIES), np.int64)
    self._swap = np.zeros(len(SWAP_STATUSES), np.int64)

  def add(self, host_batch: dict) -> None:
    pairs = 2 if HARD_A in host_batch else 1
    if SHIFT_CLAMPED in host_batch:
      self._clamped += int(np.sum(host_batch[SHIFT_CLAMPED]))
      self._pairs += len(host_batch[SHIFT_CLAMPED]) * pairs
    if GAP_POLICY in host_batch:
      n = len(GAP_POLICIES)
      self._policy += np.bincount(host_batch[GAP_POLICY], minlength=n)[:n]
    if FACE_SWAP in host_batch:
      n = len(SWAP_STATUSES)
      status = np.asarray(host_batch[FACE_SWAP]).reshape(-1)
      self._swap += np.bincount(status, minlength=n)[:n]

  def read(self) -> dict:
    """The counters since the last read, then reset."""
    out = {}
    if self._pairs:
      out["pretext/shift_clamped"] = self._clamped / self._pairs
    if self._policy.sum():
      for name, c in zip(GAP_POLICIES, self._policy / self._policy.sum()):
        out[f"pretext/gap_policy_{name}"] = float(c)
    if self._swap.sum():
      for name, c in zip(SWAP_STATUSES, self._swap / self._swap.sum()):
        out[f"pretext/face_swap_{name}"] = float(c)
    self.__init__()
    return out
