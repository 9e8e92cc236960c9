"""How a video becomes its pretraining element: the views' spec
(:class:`ViewSpec`), their frames (:mod:`stclr_jax.pretext.views`), their
spatial augmentation here on the host or their shipping to the device (the
step augments them there: :mod:`stclr_jax.data.device_augment`, from the
same draws), MaskFN's face-part crops and FaceSwap's positives (their
heads: :class:`Heads`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from stclr_jax.data import augment as augment_lib
from stclr_jax.data import sampling
from stclr_jax.data import seeds as seeds_lib
from stclr_jax.pretext import batch as batch_lib
from stclr_jax.pretext import face_parts as face_parts_lib
from stclr_jax.pretext import face_swap as face_swap_lib
from stclr_jax.pretext import options as pretext_options
from stclr_jax.pretext import views as pretext_views

PLACEMENTS = ("host", "device")


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """How a video becomes a pretraining view.

  ``temporal_modes``: the samplers each view picks from; empty means
  "without temporal augmentation" (Table IV): both views share one fixed
  uniform sub-video, so only the spatial augmentation differs.
  """

  clip_len: int = 16
  size: int = 112
  temporal_modes: tuple[str, ...] = sampling.MODES
  spatial: augment_lib.SpatialAugment = augment_lib.SpatialAugment()
  # The run's pretext options (pretext/options.py): TimeAug and HardNeg
  # change the views' frames (pretext/views.py), MaskFN adds each view's
  # face-part crops (pretext/face_parts.py); ``Pretext()``: ST-CLR's pair.
  pretext: pretext_options.Pretext = pretext_options.Pretext()
  # Where the spatial augmentation runs: "host" (here, in tf.data) or
  # "device" (the step applies it: data/device_augment.py); the draws are
  # the same. ``ship_size``: the (H, W) every shipped clip is padded to on
  # the device path (None: the data set's frame size after caching).
  placement: str = "host"
  ship_size: tuple[int, int] | None = None

  def __post_init__(self):
    if self.placement not in PLACEMENTS:
      raise ValueError(
        f"augmentation placement {self.placement!r} unknown; choose from "
        f"{PLACEMENTS}"
      )

  @property
  def schema(self) -> batch_lib.BatchSchema:
    """The keys of the elements :func:`pretrain_views` makes."""
    return self.pretext.schema(shipped=self.placement == "device")


def ship_size(video_shape, cache_frame_size, requested) -> tuple[int, int]:
  """The (H, W) of the device path's shipped frames: ``requested`` if
  given, else the data set's static frame size after caching."""
  if requested:
    return int(requested[0]), int(requested[1])
  h, w = video_shape[1], video_shape[2]
  if h is None or w is None:
    raise ValueError(
      "device augmentation ships every clip at one frame size, and this "
      f"data set's frames have no static size (video {video_shape}); set "
      "config.aug.ship_size to the largest (H, W) of its cached frames"
    )
  if cache_frame_size:
    scale = np.float32(cache_frame_size) / np.float32(min(h, w))
    h, w = (int(np.round(np.float32(v) * scale)) for v in (h, w))
  return int(h), int(w)


def _shipped(frames, seed, view: ViewSpec, ship):
  """The device path's clip: uint8 frames padded to ``ship``, the crop's
  coordinates and the flip and colour vector, from the same draws as the
  host path's (:func:`augment.draw_params`)."""
  shape = tf.shape(frames)
  h, w = shape[1], shape[2]
  p = augment_lib.draw_params(h, w, seed, view.spatial)
  coords, vec = augment_lib.device_params(p, h, w, view.size)
  if frames.shape[1:3] != tuple(ship):
    with tf.control_dependencies(
      [
        tf.debugging.assert_less_equal(
          tf.stack([h, w]),
          tf.constant(ship, tf.int32),
          message=(
            f"device augmentation: a cached frame is larger than the ship "
            f"size {tuple(ship)} (config.aug.ship_size)"
          ),
        )
      ]
    ):
      frames = tf.pad(
        frames, [[0, 0], [0, ship[0] - h], [0, ship[1] - w], [0, 0]]
      )
  frames = tf.ensure_shape(frames, [view.clip_len, *ship, 3])
  return frames, coords, vec


class Heads:
  """FaceSwap's heads: a frame, with its keypoints, of a video of another
  subject of the same data shard (videos held in memory:
  :class:`stclr_jax.data.videos.VideoStore`). A video without a subject
  id (-1) takes any other video's frame; a video with one, a frame of a
  video whose id differs. The frame is drawn among those with keypoints
  (none: the swap is skipped and counted)."""

  def __init__(self, store, what: str):
    subjects = np.asarray(store.meta["subject_id"], np.int64)
    n = len(subjects)
    for s in np.unique(subjects):
      other = np.any(subjects != s) if s >= 0 else n > 1
      if not other:
        raise ValueError(
          f"{what}: FaceSwap puts a video's face on another subject's "
          f"head, and this data shard's {n} videos are all of subject "
          f"{s}" + (" (it has one video)" if n == 1 else "")
        )
    self._store = store
    self._subjects = tf.constant(subjects.astype(np.int32))
    self._range = tf.range(n, dtype=tf.int32)

  def draw(self, subject, index, seed):
    """``(frame, keypoints, video)``: the head of the video ``index`` of
    subject ``subject``, from ``seed`` (keypoints NaN when the drawn
    video has no frame with keypoints)."""
    s = tf.random.experimental.stateless_split(seed, 2)
    subject = tf.cast(subject, tf.int32)
    others = tf.where(
      subject >= 0,
      self._subjects != subject,
      self._range != tf.cast(index, tf.int32),
    )
    j = face_swap_lib.pick(others, s[0])
    v = self._store.fetch(j)
    kp = tf.cast(v["keypoints"], tf.float32)
    ok = tf.reduce_all(tf.math.is_finite(kp), axis=[1, 2])
    t = face_swap_lib.pick(ok, s[1])
    head_kp = tf.where(
      t >= 0, kp[tf.maximum(t, 0)], tf.fill([5, 2], float("nan"))
    )
    return v["video"][tf.maximum(t, 0)], head_kp, j


# Each view's frame indices' key in the draws (pretext/views.py).
_INDICES = {
  batch_lib.VIEW_A: "idx_a",
  batch_lib.VIEW_B: "idx_b",
  batch_lib.HARD_A: "hard_a",
  batch_lib.HARD_B: "hard_b",
}


# FaceSwap's positives and the option's probability of each.
_SWAPPED = {
  batch_lib.VIEW_B: "probability",
  batch_lib.HARD_B: "hard_probability",
}


def mask_seed(elem_seed) -> tf.Tensor:
  """Masked autoencoding's key data of a clip (uint32 ``(2,)``: the step
  draws its tube mask from it), the element seed folded with
  :data:`~stclr_jax.data.seeds.MASK`: the clip's other draws are unchanged."""
  s = tf.random.experimental.stateless_fold_in(elem_seed, seeds_lib.MASK)
  return tf.bitcast(tf.cast(s, tf.int32), tf.uint32)


def pretrain_views(elem_seed, ex, view: ViewSpec, ship=None, heads=None):
  """One video's pretraining element from its element seed and its cached
  fields ``ex`` (see :func:`stclr_jax.data.streams.pretrain_dataset`):
  the views that :func:`stclr_jax.pretext.views.view_draws` draws,
  FaceSwap's positives put on a head drawn from ``heads``
  (:class:`Heads`; ``ex`` then has its ``index`` in them), augmented here
  or shipped for the device (``ship``: the device path's frame size,
  :func:`ship_size`), with the options' fields and MaskFN's crops; its
  keys are ``view.schema``'s
  (:class:`stclr_jax.pretext.batch.BatchSchema`)."""
  n = ex["num_frames"]
  shape = [view.clip_len, view.size, view.size, 3]
  pretext = view.pretext
  schema = view.schema
  out = {}

  def clip(key, frames, s):
    if view.placement == "device":
      crop, aug = batch_lib.shipped_keys(key)
      out[key], out[crop], out[aug] = _shipped(frames, s, view, ship)
    else:
      out[key] = tf.ensure_shape(
        augment_lib.augment_clip(frames, s, view.size, view.spatial), shape
      )

  def parts(idx):
    """The un-augmented eye and mouth crops of the clip's centre frame."""
    t = idx[view.clip_len // 2]
    size = pretext.crop_size
    return tf.ensure_shape(
      face_parts_lib.face_part_crops(ex["video"][t], ex["keypoints"][t], size),
      [len(face_parts_lib.PARTS), size, size, 3],
    )

  idx, seeds = pretext_views.view_draws(
    n,
    view.clip_len,
    view.temporal_modes,
    elem_seed,
    pretext,
    fps=ex["fps"],
  )
  swap = pretext.faceswap
  if swap is not None:
    s = tf.random.experimental.stateless_split(
      tf.random.experimental.stateless_fold_in(elem_seed, seeds_lib.FACE_SWAP),
      1 + len(_SWAPPED),
    )
    head, head_kp, _ = heads.draw(ex["subject_id"], ex["index"], s[0])
    swap_draws = dict(zip(_SWAPPED, tf.unstack(s[1:])))
    smoothed, _ = face_swap_lib.smooth_keypoints(
      ex["keypoints"], swap.smoothing
    )
    status = []
  for key in schema.views:
    frames = tf.gather(ex["video"], idx[_INDICES[key]])
    if swap is not None and key in _SWAPPED:
      drawn = tf.random.stateless_uniform([], swap_draws[key]) < getattr(
        swap, _SWAPPED[key]
      )
      frames, st = face_swap_lib.swap_positive(
        frames,
        tf.gather(smoothed, idx[_INDICES[key]]),
        head,
        head_kp,
        drawn,
        swap.colour,
      )
      status.append(st)
    clip(key, frames, seeds[key])
  for key, parts_key in zip(schema.views, schema.parts_keys):
    out[parts_key] = parts(idx[_INDICES[key]])
  out[batch_lib.SUBJECT] = ex["subject_id"]
  for key in (batch_lib.GAP_POLICY, batch_lib.SHIFT_CLAMPED):
    if key in schema.host_keys:
      out[key] = idx[key]
  if schema.group:
    out[batch_lib.GROUP] = ex["group"]
  if schema.swap:
    out[batch_lib.FACE_SWAP] = tf.stack(status)
  if schema.masked:
    out[batch_lib.MASK_SEED] = mask_seed(elem_seed)
  schema.check(out, "pretrain_views")
  return out
