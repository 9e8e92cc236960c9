"""The ``synthetic_expressions`` data set's builder configs: what each of
its named configs (``synthetic_expressions/<name>``) generates.

:class:`SyntheticExpressionsConfig` holds the knobs (subjects, frame size
and length, framing, nuisance variation, people, labels, expression
strength, camera views); :data:`CONFIGS` the named configs, the builder's
``BUILDER_CONFIGS`` in this order.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from stclr_jax.data.datasets import synthetic_sequences


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
  as a cue: ``faces_one_person`` is the diagnosis data of BENCHMARKS.md at
  6b7ade2 ("Synthetic protocol", "Diagnosis").

  ``first_subject``: subjects are ``first_subject ..
  first_subject + num_subjects - 1`` (people are drawn from the subject id,
  so configs with disjoint ranges show disjoint people). ``labelled=False``
  makes an unlabelled pool, as for self-supervised pretraining: the records
  hold no label and their ids do not name the expression (each subject's
  six videos are numbered in a shuffled order)."""

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
  first_subject: int = 1
  labelled: bool = True
  # Expression strength: the apex intensity is drawn from [apex_min, 1]
  # (times the subject's expressiveness), and a video blends in a
  # confusable expression with probability mix_probability.
  apex_min: float = 0.35
  mix_probability: float = synthetic_sequences.MIX_PROBABILITY
  # Camera views per sequence (CL-MEx's multi-view positives, as a proxy):
  # view 0 is the video as with views=1; views 1.. render the same facial
  # actions and head movement under their own head pose offset (roll,
  # scale, position) and their own lighting and sensor noise. The records
  # of one sequence share a ``group_id``.
  views: int = 1


# The CPU benchmark's data (BENCHMARKS.md, "The calibrated benchmark"):
# face crops with clear expressions (apex intensity from 0.8, no blends),
# at 64 px; a from-scratch encoder learns it at CPU size, where on "faces"
# it stays at chance (BENCHMARKS.md at 6b7ade2, "Synthetic benchmark").
_EXPRESSIVE = SyntheticExpressionsConfig(
  name="expressive",
  framing="face",
  frame_size=64,
  apex_min=0.8,
  mix_probability=0.0,
  description="80 subjects x 6, 64x64 face crops, clear expressions",
)

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
  "expressive": _EXPRESSIVE,
  # Its unlabelled pretraining pool: 400 other people (2,400 videos, 5x
  # the labelled 480), rendered alike, with no labels.
  "expressive_pool": dataclasses.replace(
    _EXPRESSIVE,
    name="expressive_pool",
    num_subjects=400,
    first_subject=1001,
    labelled=False,
    description="expressive's unlabelled pool: subjects 1001-1400 x 6",
  ),
  # A multi-view pool as large (2,448 videos): 136 other people x 6
  # sequences x 3 views (CL-MEx's benchmark arm).
  "expressive_views_pool": dataclasses.replace(
    _EXPRESSIVE,
    name="expressive_views_pool",
    num_subjects=136,
    first_subject=2001,
    labelled=False,
    views=3,
    description="unlabelled, subjects 2001-2136 x 6 sequences x 3 views",
  ),
  # The calibrated benchmark's other populations (bench/
  # synthetic_protocol.py; BENCHMARKS.md, "The calibrated benchmark"):
  # every one its own people.
  # A labelled twin of the pool: the same subjects and bit-identical
  # videos, with labels, read only by the supervised control arm
  # (``supervised_pool``); self-supervised pretraining reads the pool.
  "expressive_pool_labelled": dataclasses.replace(
    _EXPRESSIVE,
    name="expressive_pool_labelled",
    num_subjects=400,
    first_subject=1001,
    description="expressive_pool with its labels (the supervised control)",
  ),
  # Held out: scored by every fold's final model, never trained or tuned
  # on; what the benchmark ranks by.
  "expressive_heldout": dataclasses.replace(
    _EXPRESSIVE,
    name="expressive_heldout",
    num_subjects=200,
    first_subject=3001,
    description="held-out population: subjects 3001-3200 x 6, labelled",
  ),
  # Development: where every knob of the benchmark is chosen.
  "expressive_dev": dataclasses.replace(
    _EXPRESSIVE,
    name="expressive_dev",
    num_subjects=80,
    first_subject=4001,
    description="development population: subjects 4001-4080 x 6, labelled",
  ),
  "tiny": SyntheticExpressionsConfig(
    name="tiny",
    num_subjects=6,
    frame_size=32,
    min_frames=6,
    max_frames=12,
    description="6 subjects x 6, 32x32, 6-12 frames",
  ),
  "tiny_pool": SyntheticExpressionsConfig(
    name="tiny_pool",
    num_subjects=12,
    first_subject=1001,
    labelled=False,
    frame_size=32,
    min_frames=6,
    max_frames=12,
    description="tiny's unlabelled pool: 12 other subjects x 6",
  ),
  "tiny_pool_labelled": SyntheticExpressionsConfig(
    name="tiny_pool_labelled",
    num_subjects=12,
    first_subject=1001,
    frame_size=32,
    min_frames=6,
    max_frames=12,
    description="tiny_pool with its labels",
  ),
  "tiny_heldout": SyntheticExpressionsConfig(
    name="tiny_heldout",
    num_subjects=4,
    first_subject=3001,
    frame_size=32,
    min_frames=6,
    max_frames=12,
    description="tiny's held-out population: 4 other subjects x 6",
  ),
  "tiny_views": SyntheticExpressionsConfig(
    name="tiny_views",
    num_subjects=6,
    frame_size=32,
    min_frames=6,
    max_frames=12,
    views=3,
    description="tiny with 3 views per sequence (6 x 6 x 3)",
  ),
}
