"""``synthetic_expressions``: procedurally generated facial-expression videos.

Built locally, with no download; laid out like Oulu-CASIA: ``num_subjects``
subjects x 6 expressions (:data:`synthetic_sequences.EXPRESSIONS`,
Oulu-CASIA's order), one sequence each, from a neutral face to the apex of
the expression, 10 to 40 frames by default. One split, ``train``; folds by
subject are made later.

* **Subjects** (:func:`synthetic_sequences.make_subject`) differ in face
  shape, skin, hair, clothes and background tone, the placement and size of
  brows, eyes, nose and mouth, their resting mouth curve, and in how
  expressive they are (an overall gain and a gain per facial action).
* **Expressions** are facial actions only, loosely following FACS action
  units (:data:`synthetic_sequences.PROTOTYPES`): e.g. happiness = cheek
  raise + lip corner pull (mouth closed or open), surprise = brows up + eyes
  wide + jaw drop. Anger, disgust and sadness share brow lowering; fear and
  surprise share raised brows, wide eyes and an open mouth.
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
  tfds.builder("synthetic_expressions/expressive_pool", ...)  # no labels
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from typing import Union

import numpy as np
import tensorflow_datasets as tfds

from stclr_jax.data.datasets import synthetic_faces, synthetic_sequences
from stclr_jax.data.datasets.synthetic_expressions_configs import (
  CONFIGS,
  SyntheticExpressionsConfig,
)


def generate_video(
  subject_id: int,
  expression: Union[int, str],
  config: SyntheticExpressionsConfig | None = None,
  view: int = 0,
) -> np.ndarray:
  """The video of ``subject_id`` (1-based) showing ``expression`` (a name or
  an index into :data:`synthetic_sequences.EXPRESSIONS`), seen from camera
  ``view``: uint8 ``(T, H, W, 3)``.

  ``config`` is any object with :class:`SyntheticExpressionsConfig`'s
  fields (default: ``CONFIGS["default"]``). The result depends only on
  ``(config, subject_id, expression, view)``.
  """
  return generate_example(subject_id, expression, config, view)[0]


def generate_example(
  subject_id: int,
  expression: Union[int, str],
  config: SyntheticExpressionsConfig | None = None,
  view: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """``(video, keypoints)``: :func:`generate_video` and where the face's
  five keypoints are in each frame, ``(T, 5, 2)`` float32 ``(x, y)``
  pixels (:func:`synthetic_faces.keypoints`)."""
  config = config or CONFIGS["default"]
  e = synthetic_sequences.expression_index(expression)
  people = getattr(config, "people", 0)
  if people < 0:
    raise ValueError(
      f"synthetic_expressions config {config.name!r}: people "
      f"must be >= 0 (0 = one person per subject), got "
      f"{people}"
    )
  views = getattr(config, "views", 1)
  if not 0 <= view < max(views, 1):
    raise ValueError(
      f"synthetic_expressions config {config.name!r}: view {view} outside "
      f"[0, {views})"
    )
  person = (subject_id - 1) % people + 1 if people > 0 else subject_id
  subject = synthetic_sequences.make_subject(
    person, config.seed, getattr(config, "framing", "portrait")
  )
  rng = np.random.default_rng([config.seed, subject_id, 1 + e])
  actions, pose, light = synthetic_sequences.sample_sequence(
    subject, e, rng, config
  )
  if view:
    rng = np.random.default_rng([config.seed, subject_id, 1 + e, 0x71E, view])
    pose, light = _other_view(pose, light, rng, config)
  albedo = synthetic_faces.render(
    subject.identity, actions, pose, config.frame_size
  )
  video = synthetic_faces.light_and_quantise(albedo, rng, **light)
  points = synthetic_faces.keypoints(
    subject.identity, actions, pose, config.frame_size
  )
  return video, points


def _other_view(pose, light, rng, config):
  """Another camera's view of a sequence: the same head movement seen with
  a fixed offset in roll (up to 0.3 rad), scale (0.85-1.15) and position,
  and under its own lighting and noise. A 2-D proxy for CL-MEx's camera
  angles: the renderer draws frontal faces only, so there is no yaw."""
  m = max(config.head_motion, 0.0)
  pose = dict(
    dx=pose["dx"] + m * rng.uniform(-0.06, 0.06),
    dy=pose["dy"] + m * rng.uniform(-0.06, 0.06),
    rot=pose["rot"] + m * rng.uniform(-0.3, 0.3),
    scale=pose["scale"] * (1 + m * rng.uniform(-0.15, 0.15)),
  )
  lit = config.lighting
  light = dict(
    brightness=light["brightness"] * (1 + lit * rng.uniform(-0.12, 0.12)),
    gradient=light["gradient"] + lit * rng.uniform(-0.15, 0.15),
    angle=light["angle"] + rng.uniform(-np.pi, np.pi),
    cast=light["cast"] * (1 + lit * rng.uniform(-0.04, 0.04, 3)),
    noise=light["noise"],
  )
  return pose, light


def group_id(subject_id: int, expression: Union[int, str]) -> int:
  """The ``group`` of a sequence's views: one id per (subject, expression)
  that does not name the expression (a shuffle per subject, as the pool's
  video ids)."""
  order = np.random.default_rng([subject_id, 0x6A0]).permutation(
    len(synthetic_sequences.EXPRESSIONS)
  )
  e = synthetic_sequences.expression_index(expression)
  return subject_id * 10 + int(order[e])


def video_id(subject_id: int, expression: Union[int, str]) -> str:
  name = synthetic_sequences.EXPRESSIONS[
    synthetic_sequences.expression_index(expression)
  ]
  return f"S{subject_id:03d}_{name}"


def subject_ids(config) -> range:
  """The subject ids of a config: ``num_subjects`` from ``first_subject``."""
  first = getattr(config, "first_subject", 1)
  if first < 1:
    raise ValueError(
      f"synthetic_expressions config {config.name!r}: first_subject must be "
      f">= 1, got {first}"
    )
  return range(first, first + config.num_subjects)


def pool_video_id(subject_id: int, expression: Union[int, str], seed=0):
  """The id of an unlabelled pool's video: the subject and the video's
  place in a per-subject shuffle of the six, which says nothing of the
  expression."""
  e = synthetic_sequences.expression_index(expression)
  order = np.random.default_rng([seed, subject_id, 0x9001]).permutation(
    len(synthetic_sequences.EXPRESSIONS)
  )
  return f"U{subject_id:04d}_{int(order[e])}"


class SyntheticExpressions(tfds.core.GeneratorBasedBuilder):
  """Synthetic facial-expression videos: subjects x 6, neutral to apex."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.1.0": "keypoints (five per frame), group_id and view; multi-view "
    "configs",
    "1.0.0": "initial release",
  }
  BUILDER_CONFIGS = list(CONFIGS.values())
  DEFAULT_CONFIG_NAME = "default"

  def _info(self):
    cfg = self.builder_config
    size = cfg.frame_size
    features = {
      "video": tfds.features.Tensor(
        shape=(None, size, size, 3), dtype=np.uint8, encoding="zlib"
      ),
      "subject_id": tfds.features.Scalar(np.int32),
      "num_frames": tfds.features.Scalar(np.int32),
      "video_id": tfds.features.Text(),
      # MTCNN's five keypoints per frame, (x, y) pixels (KEYPOINTS order).
      "keypoints": tfds.features.Tensor(shape=(None, 5, 2), dtype=np.float32),
      # The sequence that the record is a view of (CL-MEx's positives).
      "group_id": tfds.features.Scalar(np.int32),
      "view": tfds.features.Scalar(np.int32),
    }
    if cfg.labelled:
      features["label"] = tfds.features.ClassLabel(
        names=synthetic_sequences.EXPRESSIONS
      )
    return self.dataset_info_from_configs(
      description=__doc__,
      features=tfds.features.FeaturesDict(features),
      supervised_keys=("video", "label") if cfg.labelled else None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    cfg = self.builder_config
    jobs = [
      (s, e, v)
      for s in subject_ids(cfg)
      for e in range(len(synthetic_sequences.EXPRESSIONS))
      for v in range(max(cfg.views, 1))
    ]
    for (s, e, v), (video, points) in _parallel_map(
      lambda job: generate_example(job[0], job[1], cfg, job[2]), jobs
    ):
      record = {
        "video": video,
        "subject_id": s,
        "num_frames": len(video),
        "keypoints": points,
        "group_id": group_id(s, e),
        "view": v,
      }
      if cfg.labelled:
        key = video_id(s, e)
        record["label"] = synthetic_sequences.EXPRESSIONS[e]
      else:
        key = pool_video_id(s, e, cfg.seed)
      if cfg.views > 1:
        key = f"{key}_v{v}"
      record["video_id"] = key
      yield key, record


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
