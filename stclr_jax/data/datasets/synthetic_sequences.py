"""What each ``synthetic_expressions`` video shows: subjects, expressions
and per-frame sequences of facial actions, pose and lighting.

* :data:`EXPRESSIONS` (Oulu-CASIA's order) and their :data:`PROTOTYPES`:
  variants of facial actions (:data:`synthetic_faces.ACTIONS`) at the apex,
  blended with a :data:`CONFUSABLE` expression with probability
  :data:`MIX_PROBABILITY`.
* :func:`make_subject`: a subject's appearance (:func:`synthetic_faces.
  sample_identity`, face-cropped by :func:`face_framed` for the ``face``
  framing), session lighting and expressiveness.
* :func:`sample_sequence`: one video's actions, head pose and lighting, from
  distributions that do not depend on the expression but for its actions.

Everything is drawn from the ``numpy.random.Generator`` passed in (or
seeded by ``(seed, subject)``): the order of the draws is part of the data
set's definition.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Union

import numpy as np

from stclr_jax.data.datasets import synthetic_faces

EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")

# Expression -> variants (probability, apex intensity of each action).
PROTOTYPES = {
  "anger": (
    (
      0.65,
      dict(
        brow_lower=1.0,
        upper_lid_raise=0.35,
        lid_tighten=0.6,
        lip_press=0.9,
        chin_raise=0.5,
      ),
    ),
    (
      0.35,
      dict(
        brow_lower=1.0,
        upper_lid_raise=0.5,
        lid_tighten=0.4,
        upper_lip_raise=0.6,
        lips_part=0.8,
        jaw_drop=0.15,
      ),
    ),
  ),
  "disgust": (
    (
      0.6,
      dict(
        nose_wrinkle=1.0,
        upper_lip_raise=0.9,
        brow_lower=0.5,
        lip_corner_depress=0.35,
        chin_raise=0.4,
        cheek_raise=0.35,
        lid_tighten=0.3,
      ),
    ),
    (
      0.4,
      dict(
        nose_wrinkle=0.7,
        upper_lip_raise=1.0,
        brow_lower=0.4,
        lip_corner_depress=0.5,
        lips_part=0.5,
        cheek_raise=0.2,
      ),
    ),
  ),
  "fear": (
    (
      1.0,
      dict(
        inner_brow_raise=0.9,
        outer_brow_raise=0.5,
        brow_lower=0.5,
        upper_lid_raise=0.9,
        lid_tighten=0.3,
        lip_stretch=0.9,
        lips_part=0.7,
        jaw_drop=0.3,
      ),
    ),
  ),
  "happiness": (
    (0.5, dict(cheek_raise=0.8, lip_corner_pull=1.0)),
    (
      0.5,
      dict(
        cheek_raise=0.9,
        lip_corner_pull=1.0,
        lips_part=0.8,
        jaw_drop=0.15,
        upper_lip_raise=0.2,
      ),
    ),
  ),
  "sadness": (
    (
      1.0,
      dict(
        inner_brow_raise=0.9,
        brow_lower=0.45,
        lid_droop=0.5,
        lip_corner_depress=0.9,
        chin_raise=0.6,
      ),
    ),
  ),
  "surprise": (
    (
      0.8,
      dict(
        inner_brow_raise=1.0,
        outer_brow_raise=1.0,
        upper_lid_raise=0.9,
        jaw_drop=0.9,
        lips_part=0.6,
      ),
    ),
    (
      0.2,
      dict(
        inner_brow_raise=0.9,
        outer_brow_raise=0.9,
        upper_lid_raise=0.8,
        lips_part=0.5,
        jaw_drop=0.3,
      ),
    ),
  ),
}
# Expressions often blended in (mixed, as posed expressions often are).
CONFUSABLE = {
  "anger": ("disgust", "sadness"),
  "disgust": ("anger", "sadness"),
  "fear": ("surprise", "sadness"),
  "happiness": ("surprise",),
  "sadness": ("fear", "disgust"),
  "surprise": ("fear", "happiness"),
}
MIX_PROBABILITY = 0.35
_DISTRACTORS = tuple(a for a in synthetic_faces.ACTIONS if a != "blink")


@dataclasses.dataclass(frozen=True)
class Subject:
  """A subject: appearance, session lighting and expressiveness."""

  identity: synthetic_faces.Identity
  expressiveness: float
  gains: dict
  light: dict


def expression_index(expression: Union[int, str]) -> int:
  """The index into :data:`EXPRESSIONS` of a name or an index."""
  if isinstance(expression, str):
    if expression not in EXPRESSIONS:
      raise ValueError(
        f"unknown expression {expression!r}; choose from {EXPRESSIONS}"
      )
    return EXPRESSIONS.index(expression)
  if not 0 <= int(expression) < len(EXPRESSIONS):
    raise ValueError(f"expression index {expression} not in [0, 6)")
  return int(expression)


# Face framing: face units per half frame, and the face point at the
# crop's centre (between the brows and the chin: a face box plus margin).
_FACE_CROP_UNITS = 1.0
_FACE_CROP_CENTRE_Y = 0.2


def face_framed(
  identity: synthetic_faces.Identity, rng: np.random.Generator
) -> synthetic_faces.Identity:
  """``identity`` as a face detector's crop frames it: the face centred and
  scaled to the crop, up to a residual of a few percent (detector error)."""
  scale = _FACE_CROP_UNITS * rng.uniform(0.95, 1.05)
  return dataclasses.replace(
    identity,
    face_scale=scale / 0.72,  # the renderer's 0.72 per unit
    face_x=rng.uniform(-0.03, 0.03),
    face_y=-_FACE_CROP_CENTRE_Y * scale + rng.uniform(-0.03, 0.03),
  )


def make_subject(
  subject_id: int, seed: int = 0, framing: str = "portrait"
) -> Subject:
  """Subject ``subject_id`` of data set ``seed`` (independent of the other
  config fields but ``framing``: the tiny and default configs share their
  first subjects, and the ``faces`` config shows the same people)."""
  rng = np.random.default_rng([seed, subject_id, 0])
  identity = synthetic_faces.sample_identity(rng)
  if framing == "face":
    identity = face_framed(
      identity, np.random.default_rng([seed, subject_id, 0xFACE])
    )
  elif framing != "portrait":
    raise ValueError(f"framing must be 'portrait' or 'face', got {framing!r}")
  gains = {
    a: float(np.exp(rng.normal(0, 0.35))) for a in synthetic_faces.ACTIONS
  }
  light = dict(
    brightness=rng.uniform(0.8, 1.1),
    gradient=rng.uniform(0.0, 0.3),
    angle=rng.uniform(0, 2 * np.pi),
    cast=1 + rng.uniform(-0.06, 0.06, 3),
  )
  return Subject(
    identity, float(np.clip(np.exp(rng.normal(0, 0.3)), 0.5, 1.6)), gains, light
  )


def _ramp(t, onset, rise):
  u = np.clip((t - onset) / max(rise, 1e-3), 0.0, 1.0)
  return u * u * (3 - 2 * u)


def _drift(rng, t_len, amplitude):
  """Smooth zero-mean wander: a few slow sinusoids with random phases."""
  t = np.arange(t_len) / 25.0  # seconds at 25 fps
  out = np.zeros(t_len)
  for _ in range(3):
    out += rng.normal(0, amplitude / np.sqrt(3)) * np.sin(
      2 * np.pi * rng.uniform(0.1, 0.8) * t + rng.uniform(0, 2 * np.pi)
    )
  return out


def sample_sequence(
  subject: Subject,
  expression: Union[int, str],
  rng: np.random.Generator,
  config,
) -> tuple:
  """Per-frame actions, pose and lighting of one video: ``(actions, pose,
  light)``, actions and pose as name -> ``(T,)`` arrays."""
  name = EXPRESSIONS[expression_index(expression)]
  t_len = int(rng.integers(config.min_frames, config.max_frames + 1))
  t = np.arange(t_len, dtype=np.float64)
  span = max(t_len - 1, 1)
  variants = PROTOTYPES[name]
  k = rng.choice(len(variants), p=[p for p, _ in variants])
  weights = collections.Counter(variants[k][1])
  mix_probability = getattr(config, "mix_probability", MIX_PROBABILITY)
  if rng.uniform() < mix_probability:  # a blend with a confusable expression
    other = PROTOTYPES[CONFUSABLE[name][rng.integers(len(CONFUSABLE[name]))]]
    mix = rng.uniform(0.15, 0.45)
    j = rng.choice(len(other), p=[p for p, _ in other])
    for a, w in other[j][1].items():
      weights[a] += mix * w
  apex = rng.uniform(getattr(config, "apex_min", 0.35), 1.0)
  apex *= subject.expressiveness
  onset = rng.uniform(0.05, 0.35) * span
  rise = rng.uniform(0.3, 0.6) * span
  actions = {a: np.zeros(t_len) for a in synthetic_faces.ACTIONS}
  for a, w in weights.items():
    gain = subject.gains[a] * np.exp(rng.normal(0, 0.15))
    lag = rng.normal(0, 0.06) * span
    actions[a] += apex * w * gain * _ramp(t, onset + abs(lag), rise)
  for a in _DISTRACTORS:  # unrelated small actions, in every class alike
    if rng.uniform() < 0.2:
      actions[a] += rng.uniform(0.1, 0.45) * _ramp(
        t, rng.uniform(0.05, 0.6) * span, rng.uniform(0.2, 0.5) * span
      )
  for _ in range(rng.poisson(0.5 * t_len / 25) if t_len > 2 else 0):
    b = int(rng.integers(2, t_len))  # never on the neutral first frames
    actions["blink"][b] = 1.0
    actions["blink"][b - 1] = max(actions["blink"][b - 1], 0.5)
    if b + 1 < t_len:
      actions["blink"][b + 1] = max(actions["blink"][b + 1], 0.5)
  actions = {a: np.clip(v, 0.0, 1.3) for a, v in actions.items()}
  m = config.head_motion
  pose = dict(
    dx=m * (rng.normal(0, 0.03) + _drift(rng, t_len, 0.02)),
    dy=m * (rng.normal(0, 0.03) + _drift(rng, t_len, 0.02)),
    rot=m * (rng.normal(0, 0.05) + _drift(rng, t_len, 0.04)),
    scale=1 + m * (rng.uniform(-0.05, 0.05) + _drift(rng, t_len, 0.02)),
  )
  s, lit = subject.light, config.lighting
  # (Draw order matters: the data set is a function of the seed.)
  level = s["brightness"] * rng.uniform(0.93, 1.07)
  brightness = level - 1 + rng.normal(0, 0.01, t_len)
  light = dict(
    brightness=1 + lit * brightness,
    gradient=lit * (s["gradient"] + rng.uniform(-0.05, 0.05)),
    angle=s["angle"] + rng.normal(0, 0.3),
    cast=1 + lit * (s["cast"] * (1 + rng.uniform(-0.02, 0.02, 3)) - 1),
    noise=config.noise * rng.uniform(1.5, 5.0),
  )
  return actions, pose, light
