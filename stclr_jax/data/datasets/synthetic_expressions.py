"""``synthetic_expressions``: procedurally generated facial-expression videos.

Built locally, with no download; laid out like Oulu-CASIA: ``num_subjects``
subjects x 6 expressions (:data:`EXPRESSIONS`, Oulu-CASIA's order), one
sequence each, from a neutral face to the apex of the expression, 10 to 40
frames by default. One split, ``train``; folds by subject are made later.

* **Subjects** (:func:`synthetic_faces.sample_identity`) differ in face
  shape, skin, hair, clothes and background tone, the placement and size of
  brows, eyes, nose and mouth, their resting mouth curve, and in how
  expressive they are (an overall gain and a gain per facial action).
* **Expressions** are facial actions only, loosely following FACS action
  units (:data:`PROTOTYPES`): e.g. happiness = cheek raise + lip corner pull
  (mouth closed or open), surprise = brows up + eyes wide + jaw drop. Anger,
  disgust and sadness share brow lowering; fear and surprise share raised
  brows, wide eyes and an open mouth.
* **Each sequence** draws its length, onset, speed and apex intensity, a lag
  per action, unrelated small actions and blinks (as often in every class),
  a head pose drifting over time (translation, rotation, scale), lighting
  (brightness, gradient, colour cast, flicker) and sensor noise, all from
  distributions that do not depend on the expression: the expression can
  be read only from the facial configuration and how it changes.

Everything is a function of ``(seed, subject, expression)``, so any video can
be made on its own (:func:`generate_video`), in any order or worker.

  tfds.builder("synthetic_expressions/tiny", data_dir=...)  # tests, seconds
  tfds.builder("synthetic_expressions", data_dir=...)       # 80 x 6, 112 px
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
from typing import Union

import numpy as np
import tensorflow_datasets as tfds

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


@dataclasses.dataclass
class SyntheticExpressionsConfig(tfds.core.BuilderConfig):
  """What to generate. ``head_motion``, ``lighting`` and ``noise`` scale the
  nuisance variation (0 turns it off: a fixed pose, even light, no noise).

  ``framing``: ``"portrait"`` shows head, shoulders and background, placed
  and sized per subject (like Oulu-CASIA's ``OriginalImg``); ``"face"`` is
  the frame a face detector's crop gives (like Oulu-CASIA's ``Cropped`` set
  and ``stclr_jax.prepare``: the face box plus a margin, about two face
  widths square): the face fills the frame, centred and sized up to a small
  per-subject residual, so hair, clothes and background are mostly cut
  away. Head motion within a sequence is kept (a crop fixed per video).

  ``people``: 0 gives every subject their own appearance, session light and
  expressiveness; ``k > 0`` makes subject ``s`` a recording of person
  ``(s - 1) % k + 1`` (their sequences still differ), which removes identity
  as a cue: ``faces_one_person`` is the diagnosis of BENCHMARKS.md."""

  num_subjects: int = 80
  frame_size: int = 112
  min_frames: int = 10
  max_frames: int = 40
  seed: int = 0
  head_motion: float = 1.0
  lighting: float = 1.0
  noise: float = 1.0
  framing: str = "portrait"
  people: int = 0


CONFIGS = {
  "default": SyntheticExpressionsConfig(
    name="default", description="80 subjects x 6, 112x112, 10-40 frames"
  ),
  "faces": SyntheticExpressionsConfig(
    name="faces",
    framing="face",
    description="80 subjects x 6, 112x112, 10-40 frames, face crops",
  ),
  "faces_one_person": SyntheticExpressionsConfig(
    name="faces_one_person",
    framing="face",
    people=1,
    description="as faces, but all 80 subjects are one person",
  ),
  "tiny": SyntheticExpressionsConfig(
    name="tiny",
    num_subjects=6,
    frame_size=32,
    min_frames=6,
    max_frames=12,
    description="6 subjects x 6, 32x32, 6-12 frames",
  ),
}


@dataclasses.dataclass(frozen=True)
class Subject:
  """A subject: appearance, session lighting and expressiveness."""

  identity: synthetic_faces.Identity
  expressiveness: float
  gains: dict
  light: dict


def _expression_index(expression: Union[int, str]) -> int:
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
  name = EXPRESSIONS[_expression_index(expression)]
  t_len = int(rng.integers(config.min_frames, config.max_frames + 1))
  t = np.arange(t_len, dtype=np.float64)
  span = max(t_len - 1, 1)
  variants = PROTOTYPES[name]
  k = rng.choice(len(variants), p=[p for p, _ in variants])
  weights = collections.Counter(variants[k][1])
  if rng.uniform() < MIX_PROBABILITY:  # a blend with a confusable expression
    other = PROTOTYPES[CONFUSABLE[name][rng.integers(len(CONFUSABLE[name]))]]
    mix = rng.uniform(0.15, 0.45)
    j = rng.choice(len(other), p=[p for p, _ in other])
    for a, w in other[j][1].items():
      weights[a] += mix * w
  apex = rng.uniform(0.35, 1.0) * subject.expressiveness
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


def generate_video(
  subject_id: int,
  expression: Union[int, str],
  config: SyntheticExpressionsConfig | None = None,
) -> np.ndarray:
  """The video of ``subject_id`` (1-based) showing ``expression`` (a name or
  an index into :data:`EXPRESSIONS`): uint8 ``(T, H, W, 3)``.

  ``config`` is any object with :class:`SyntheticExpressionsConfig`'s
  fields (default: ``CONFIGS["default"]``). The result depends only on
  ``(config, subject_id, expression)``.
  """
  config = config or CONFIGS["default"]
  e = _expression_index(expression)
  people = getattr(config, "people", 0)
  if people < 0:
    raise ValueError(
      f"synthetic_expressions config {config.name!r}: people "
      f"must be >= 0 (0 = one person per subject), got "
      f"{people}"
    )
  person = (subject_id - 1) % people + 1 if people > 0 else subject_id
  subject = make_subject(
    person, config.seed, getattr(config, "framing", "portrait")
  )
  rng = np.random.default_rng([config.seed, subject_id, 1 + e])
  actions, pose, light = sample_sequence(subject, e, rng, config)
  albedo = synthetic_faces.render(
    subject.identity, actions, pose, config.frame_size
  )
  return synthetic_faces.light_and_quantise(albedo, rng, **light)


def video_id(subject_id: int, expression: Union[int, str]) -> str:
  return f"S{subject_id:03d}_{EXPRESSIONS[_expression_index(expression)]}"


class SyntheticExpressions(tfds.core.GeneratorBasedBuilder):
  """Synthetic facial-expression videos: subjects x 6, neutral to apex."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = list(CONFIGS.values())
  DEFAULT_CONFIG_NAME = "default"

  def _info(self):
    size = self.builder_config.frame_size
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          "video": tfds.features.Tensor(
            shape=(None, size, size, 3), dtype=np.uint8, encoding="zlib"
          ),
          "label": tfds.features.ClassLabel(names=EXPRESSIONS),
          "subject_id": tfds.features.Scalar(np.int32),
          "num_frames": tfds.features.Scalar(np.int32),
          "video_id": tfds.features.Text(),
        }
      ),
      supervised_keys=("video", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    cfg = self.builder_config
    jobs = [
      (s, e)
      for s in range(1, cfg.num_subjects + 1)
      for e in range(len(EXPRESSIONS))
    ]
    for (s, e), video in _parallel_map(
      lambda job: generate_video(*job, cfg), jobs
    ):
      key = video_id(s, e)
      yield (
        key,
        {
          "video": video,
          "label": EXPRESSIONS[e],
          "subject_id": s,
          "num_frames": len(video),
          "video_id": key,
        },
      )


def _parallel_map(fn, jobs, workers: int | None = None):
  """``(job, fn(job))`` in the order of ``jobs``, computed by a few threads
  (numpy releases the GIL in its array loops), at most ``2 * workers``
  ahead of the consumer."""
  workers = workers or min(4, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    for job in jobs:
      pending.append((job, pool.submit(fn, job)))
      if len(pending) > 2 * workers:
        job0, future = pending.popleft()
        yield job0, future.result()
    while pending:
      job0, future = pending.popleft()
      yield job0, future.result()
