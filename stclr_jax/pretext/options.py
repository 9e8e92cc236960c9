"""A run's pretext options, resolved and validated once at start-up.

Each method is one sub-section of ``config.pretext``, named as the
``pretext=`` config variant that turns it on, with an ``enabled`` switch
and the method's own fields (defaults: the method's published values):

* ``timeaug``: SSL-FER's TimeAug, view B's window moved by a drawn offset
  (:class:`TemporalShift`; ``offsets`` in seconds, ``weights``);
* ``hardneg``: SSL-FER's HardNeg, a second pair per video ``gap`` seconds
  away (:class:`HardNegatives`);
* ``samesubject``: batches of ``batch / m`` subjects x ``m`` videos
  (:class:`SameSubject`, ours);
* ``maskfn``: SSL-FER's MaskFN, the most alike negative (by face-part
  descriptors) made a positive of weight ``weight`` (:class:`MaskFN`);
* ``clmex``: CL-MEx's multi-view positives, batches of whole groups
  (:class:`MultiView`);
* ``faceswap``: SSL-FER's FaceSwap, a positive's inner face put on
  another subject's head (:class:`FaceSwap`);
* ``mae``: masked video autoencoding (VideoMAE; SVFAP with a TPSBT), one
  clip per video, ``ratio`` of its tubes masked, reconstructed by a
  ``decoder`` (:class:`MaskedAutoencoding`; a video transformer encoder);

and ``config.pretext.default_fps``, the frame rate of a data set without
an ``fps`` feature (TimeAug's and HardNeg's seconds become frames with it).

:meth:`Pretext.from_config` reads them; every error names the field. The
resolved :class:`Pretext` then answers what the rest of the library asks
of the options: the batch's keys (:meth:`Pretext.schema`), the host's
counters (:meth:`Pretext.counters`), the batch composition
(``videos_per_subject``, ``whole_groups``) and the face-part crops'
size. The views' TF ops (:mod:`~stclr_jax.pretext.views`), the batch plans
(:mod:`~stclr_jax.pretext.plans`) and the objectives
(:mod:`~stclr_jax.pretext.objectives`) take it from there.

This module imports neither TensorFlow nor JAX nor ml-collections: the
configs (:mod:`stclr_jax.configlib`) build their ``pretext`` section from
:func:`section_defaults`, so defaults live here only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from stclr_jax.pretext import batch as batch_lib

# SSL-FER (data_aug/data_loader.py): TimeAug's 2..6 frames at 25/6
# frames/s, weighted 5:4:3:2:1 ("distr_mode c"); HardNeg's 12 frames
# (2.88 s); MaskFN's lambda 0.8 and its 64 px face-part crops.
SSLFER_OFFSETS = (0.48, 0.72, 0.96, 1.20, 1.44)
SSLFER_WEIGHTS = (5.0, 4.0, 3.0, 2.0, 1.0)
SSLFER_GAP = 2.88
SSLFER_MASKFN_WEIGHT = 0.8
SSLFER_CROP_SIZE = 64
# Oulu-CASIA and the synthetic data sets are 25 frames/s.
DEFAULT_FPS = 25.0
# SSL-FER's FaceSwap probabilities (data_loader.py, swapCLR): the
# positive, and the hard negative's positive.
SSLFER_SWAP_PROBABILITY = 0.8
# MaskFN's face-part descriptors (stclr_jax/descriptors.py): SSL-FER's HOG,
# or the crops' pixels (ours).
DESCRIPTORS = ("hog", "pixels")


@dataclasses.dataclass(frozen=True)
class TemporalShift:
  """TimeAug: view B's window moved from view A's by a drawn offset."""

  offsets: tuple[float, ...] = SSLFER_OFFSETS
  weights: tuple[float, ...] = SSLFER_WEIGHTS

  def __post_init__(self):
    if not self.offsets or len(self.offsets) != len(self.weights):
      raise ValueError(
        "offsets and weights must be non-empty and of equal length, got "
        f"{self.offsets} and {self.weights}"
      )
    if min(self.offsets) < 0 or min(self.weights) < 0:
      raise ValueError(
        f"offsets and weights must be >= 0, got {self.offsets} and "
        f"{self.weights}"
      )
    if sum(self.weights) <= 0:
      raise ValueError(f"the weights {self.weights} sum to 0")

  @property
  def probabilities(self) -> tuple[float, ...]:
    s = float(sum(self.weights))
    return tuple(w / s for w in self.weights)


@dataclasses.dataclass(frozen=True)
class HardNegatives:
  """HardNeg: a second pair per video, ``gap`` seconds from the first."""

  gap: float = SSLFER_GAP

  def __post_init__(self):
    if not self.gap > 0:
      raise ValueError(f"gap must be > 0 s, got {self.gap}")


@dataclasses.dataclass(frozen=True)
class SameSubject:
  """Same-subject negatives: ``videos_per_subject`` videos of each of the
  batch's subjects (pretext/plans.py)."""

  videos_per_subject: int = 2

  def __post_init__(self):
    if self.videos_per_subject < 2:
      raise ValueError(
        "videos_per_subject must be >= 2 (a subject's videos are each "
        f"other's negatives), got {self.videos_per_subject}"
      )


@dataclasses.dataclass(frozen=True)
class MaskFN:
  """MaskFN: per anchor, the negative whose eye and mouth crops
  (``crop_size`` px, from each frame's five keypoints) have the closest
  ``descriptor`` becomes a positive of weight ``weight``."""

  weight: float = SSLFER_MASKFN_WEIGHT
  descriptor: str = "hog"
  crop_size: int = SSLFER_CROP_SIZE

  def __post_init__(self):
    if self.descriptor not in DESCRIPTORS:
      raise ValueError(
        f"descriptor {self.descriptor!r} unknown; choose from {DESCRIPTORS}"
      )
    if not 0 <= self.weight <= 1:
      raise ValueError(f"weight must be in [0, 1], got {self.weight}")
    if self.crop_size < 4:
      raise ValueError(f"crop_size must be >= 4 px, got {self.crop_size}")


@dataclasses.dataclass(frozen=True)
class MultiView:
  """CL-MEx: batches of whole groups (a ``group_id`` per video), every
  other view of a group a positive."""


@dataclasses.dataclass(frozen=True)
class FaceSwap:
  """FaceSwap: with ``probability`` a video's positive (view B), and
  independently with ``hard_probability`` its hard pair's positive (with
  HardNeg), shows its own eyes, brows, nose and mouth on a frame of
  another subject's video (pretext/face_swap.py). ``smoothing``: the
  keypoints' moving average over +- this many frames; ``colour``: the
  colour correction to the head's skin tone (SSL-FER: on)."""

  probability: float = SSLFER_SWAP_PROBABILITY
  hard_probability: float = SSLFER_SWAP_PROBABILITY
  smoothing: int = 2
  colour: bool = True

  def __post_init__(self):
    for name in ("probability", "hard_probability"):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
    if self.smoothing < 0:
      raise ValueError(f"smoothing must be >= 0 frames, got {self.smoothing}")


# VideoMAE's and SVFAP's tube-masking ratio.
MAE_RATIO = 0.9
MAE_DECODERS = ("base", "cpu", "tiny")  # models/masked_autoencoder.py


@dataclasses.dataclass(frozen=True)
class MaskedAutoencoding:
  """Masked video autoencoding: each video gives one clip (view A); the
  step masks ``ratio`` of its tube positions, the same in every temporal
  slot (pretext/masking.py), and the model reconstructs them through the
  ``decoder`` size of models/masked_autoencoder.py."""

  ratio: float = MAE_RATIO
  decoder: str = "base"

  def __post_init__(self):
    if not 0 < self.ratio < 1:
      raise ValueError(f"ratio must be in (0, 1), got {self.ratio}")
    if self.decoder not in MAE_DECODERS:
      raise ValueError(
        f"decoder {self.decoder!r} unknown; choose from {MAE_DECODERS}"
      )


# The sub-sections of config.pretext, by name (the ``pretext=`` variant).
METHODS = {
  "timeaug": TemporalShift,
  "hardneg": HardNegatives,
  "samesubject": SameSubject,
  "maskfn": MaskFN,
  "clmex": MultiView,
  "faceswap": FaceSwap,
  "mae": MaskedAutoencoding,
}
# Pairs of methods that cannot run together, and why.
EXCLUSIVE = {
  ("samesubject", "clmex"): (
    "two batch compositions (k subjects x m videos, and whole groups)"
  ),
  ("maskfn", "clmex"): (
    "two losses (a false negative moved to the positives, and several "
    "positives by group)"
  ),
  **{
    (name, "mae"): (
      "a contrastive option and masked autoencoding, which has one clip "
      "per video and no positives or negatives"
    )
    for name in ("timeaug", "hardneg", "maskfn", "clmex", "faceswap")
  },
}
# config.pretext's fields before each method had its own sub-section
# (configs before 2026-12), and where each lives now.
FLAT_FIELDS = {
  "temporal_shift": "timeaug.enabled",
  "shift_offsets": "timeaug.offsets",
  "shift_weights": "timeaug.weights",
  "hard_negatives": "hardneg.enabled",
  "hard_negative_gap": "hardneg.gap",
  "same_subject_negatives": "samesubject.enabled",
  "videos_per_subject": "samesubject.videos_per_subject",
  "maskfn": "maskfn.enabled",
  "maskfn_weight": "maskfn.weight",
  "maskfn_descriptor": "maskfn.descriptor",
  "maskfn_crop_size": "maskfn.crop_size",
  "multi_view_positives": "clmex.enabled",
}


def _flat(value) -> bool:
  """Whether a ``config.pretext`` entry is a field of the flat layout
  (a value, where each method is now a section)."""
  return not (isinstance(value, Mapping) or hasattr(value, "keys"))


def section_defaults() -> dict:
  """``config.pretext`` with every method off, as plain dicts: the
  ``default_fps`` and, per method, ``enabled`` and its fields' defaults."""
  out = {"default_fps": DEFAULT_FPS}
  for name, cls in METHODS.items():
    out[name] = {"enabled": False}
    for f in dataclasses.fields(cls):
      out[name][f.name] = f.default
  return out


def _typed(value, default):
  """``value`` as ``default``'s type (tuples element by element)."""
  if isinstance(default, bool):
    if not isinstance(value, bool):
      raise TypeError(f"must be True or False, got {value!r}")
    return value
  if isinstance(default, tuple):
    if isinstance(value, str) or not hasattr(value, "__iter__"):
      raise TypeError(f"must be a sequence, got {value!r}")
    return tuple(_typed(v, default[0]) for v in value)
  if isinstance(default, int) and float(value) != int(value):
    raise ValueError(f"must be a whole number, got {value!r}")
  return type(default)(value)


def _method(name: str, section) -> object | None:
  """The method's options of ``config.pretext.<name>``, None when off."""
  cls = METHODS[name]
  where = f"config.pretext.{name}"
  if _flat(section):
    raise ValueError(
      f"{where} must be a section with 'enabled'"
      + (f" (e.g. --{where}.enabled=True)" if isinstance(section, bool) else "")
    )
  fields = {f.name: f.default for f in dataclasses.fields(cls)}
  unknown = set(section.keys()) - set(fields) - {"enabled"}
  if unknown:
    raise ValueError(
      f"{where}: unknown fields {sorted(unknown)}; it has 'enabled' and "
      f"{sorted(fields)}"
    )
  try:
    on = _typed(section.get("enabled", False), False)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}.enabled {e}") from None
  if not on:
    return None
  kw = {}
  for k, default in fields.items():
    try:
      kw[k] = _typed(section.get(k, default), default)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{where}.{k} {e}") from None
  try:
    return cls(**kw)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None


@dataclasses.dataclass(frozen=True)
class Pretext:
  """The resolved options: each method's (None when off) and the frame
  rate of data sets without an ``fps`` feature. ``Pretext()`` is the
  paper's ST-CLR."""

  timeaug: TemporalShift | None = None
  hardneg: HardNegatives | None = None
  samesubject: SameSubject | None = None
  maskfn: MaskFN | None = None
  clmex: MultiView | None = None
  faceswap: FaceSwap | None = None
  mae: MaskedAutoencoding | None = None
  default_fps: float = DEFAULT_FPS

  def __post_init__(self):
    if not self.default_fps > 0:
      raise ValueError(
        f"config.pretext.default_fps must be > 0, got {self.default_fps}"
      )
    for (a, b), why in EXCLUSIVE.items():
      if getattr(self, a) is not None and getattr(self, b) is not None:
        raise ValueError(f"config.pretext: {a} and {b} are {why}; turn one off")

  @classmethod
  def from_config(cls, config) -> Pretext:
    """The options of a config's ``pretext`` section (a config without
    one, e.g. an evaluation config: none)."""
    p = config.get("pretext") if hasattr(config, "get") else None
    if p is None:
      return cls()
    flat = sorted(k for k in p.keys() if k in FLAT_FIELDS and _flat(p[k]))
    if flat:
      raise ValueError(
        "config.pretext uses the fields of before each method had its "
        "own section: "
        + ", ".join(f"{k} is now pretext.{FLAT_FIELDS[k]}" for k in flat)
      )
    unknown = set(p.keys()) - set(METHODS) - {"default_fps"}
    if unknown:
      raise ValueError(
        f"config.pretext: unknown fields {sorted(unknown)}; it has "
        f"default_fps and the methods {sorted(METHODS)}"
      )
    kw = {name: _method(name, p[name]) for name in METHODS if name in p}
    try:
      fps = float(p.get("default_fps", DEFAULT_FPS))
    except (TypeError, ValueError):
      raise ValueError(
        f"config.pretext.default_fps must be a number, got "
        f"{p.get('default_fps')!r}"
      ) from None
    return cls(**kw, default_fps=fps)

  @property
  def enabled(self) -> tuple[str, ...]:
    """The methods turned on, in :data:`METHODS`' order."""
    return tuple(n for n in METHODS if getattr(self, n) is not None)

  @property
  def videos_per_subject(self) -> int:
    """``m`` of same-subject batches; 0 when off."""
    return self.samesubject.videos_per_subject if self.samesubject else 0

  @property
  def whole_groups(self) -> bool:
    return self.clmex is not None

  @property
  def keypoints(self) -> bool:
    """Whether the stream needs each frame's five keypoints (MaskFN's
    crops, FaceSwap's faces)."""
    return self.maskfn is not None or self.faceswap is not None

  @property
  def random_access(self) -> bool:
    """Whether the stream holds its videos in memory for random access
    (the batch plans, FaceSwap's heads)."""
    return bool(self.videos_per_subject or self.whole_groups or self.faceswap)

  @property
  def crop_size(self) -> int | None:
    """MaskFN's face-part crops' size; None without MaskFN."""
    return self.maskfn.crop_size if self.maskfn else None

  def schema(self, shipped: bool = False) -> batch_lib.BatchSchema:
    """The keys of this run's batches; ``shipped``: as the host ships them
    for device augmentation (before the step's augmentation)."""
    return batch_lib.BatchSchema(
      hard=self.hardneg is not None,
      parts=self.maskfn is not None,
      group=self.clmex is not None,
      shift=self.timeaug is not None,
      swap=self.faceswap is not None,
      masked=self.mae is not None,
      shipped=shipped,
    )

  def counters(self) -> tuple[str, ...]:
    """The metric names of the host's pretext counters
    (:class:`~stclr_jax.pretext.batch.Counts`)."""
    return self.schema().counters


def migrate_flat(config: dict) -> dict:
  """A config dict (a workdir's ``config.json``) whose ``pretext`` section
  has the flat fields of :data:`FLAT_FIELDS`, moved to their sub-sections
  (a copy; other configs are returned as they are)."""
  p = config.get("pretext")
  if not isinstance(p, dict) or not any(
    k in FLAT_FIELDS and _flat(v) for k, v in p.items()
  ):
    return config
  new = section_defaults()
  new["default_fps"] = p.get("default_fps", DEFAULT_FPS)
  for old, path in FLAT_FIELDS.items():
    if old in p:
      name, field = path.split(".")
      new[name][field] = p[old]
  return {**config, "pretext": new}
