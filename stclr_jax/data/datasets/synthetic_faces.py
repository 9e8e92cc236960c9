"""Procedural, vectorised face renderer for ``synthetic_expressions``.

A face is drawn in *face coordinates* (x right, y down, the face about 1.4
units wide and 1.9 tall, centred on the origin) from a subject's identity
(:func:`sample_identity`: face shape, skin, hair, clothes, background and the
neutral placement and size of brows, eyes, nose and mouth) and per-frame
facial-action intensities (:data:`ACTIONS`, loosely FACS action units). All
frames of a sequence are drawn at once: every shape is a signed distance over
a ``(T, H, W)`` grid, turned into an anti-aliased coverage and composited
(the head and the facial features: :mod:`.synthetic_face_parts`). Head
pose (translation, rotation, scale per frame) maps pixels to face
coordinates; lighting (brightness, gradient, colour cast) and noise are
applied last (:func:`light_and_quantise`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stclr_jax.data.datasets import synthetic_face_parts

# Facial actions (roughly FACS AUs): each a (T,) intensity, 0 = neutral.
ACTIONS = (
  "inner_brow_raise",  # AU1
  "outer_brow_raise",  # AU2
  "brow_lower",  # AU4: brows down and together, frown lines
  "upper_lid_raise",  # AU5: eyes wide
  "cheek_raise",  # AU6: lower lids up, eyes narrower, under-eye fold
  "lid_tighten",  # AU7
  "lid_droop",  # AU43-like: upper lids lower
  "blink",
  "nose_wrinkle",  # AU9
  "upper_lip_raise",  # AU10
  "lip_corner_pull",  # AU12
  "lip_corner_depress",  # AU15
  "chin_raise",  # AU17: lower lip pushed up
  "lip_stretch",  # AU20
  "lip_press",  # AU23/24: thinner, narrower lips
  "lips_part",  # AU25
  "jaw_drop",  # AU26/27
)

_F32 = np.float32


@dataclasses.dataclass(frozen=True)
class Identity:
  """A subject's appearance and neutral facial configuration (face units;
  colours are RGB in [0, 1])."""

  face_w: float
  face_h: float
  jaw: float  # narrowing of the lower face
  skin: tuple
  lips: tuple
  hair: tuple
  iris: tuple
  clothes: tuple
  background: tuple
  hairline: float
  hair_length: float
  eye_y: float
  eye_dx: float
  eye_w: float
  eye_h: float
  brow_gap: float
  brow_len: float
  brow_thick: float
  brow_arch: float
  brow_tilt: float
  nose_y: float
  nose_w: float
  mouth_y: float
  mouth_w: float
  lip_upper: float
  lip_lower: float
  mouth_curve: float  # resting corner height (>0: corners up)
  face_x: float  # resting position in the frame (image units, [-1, 1])
  face_y: float
  face_scale: float


def _color(rng, base, spread):
  return tuple(
    float(c)
    for c in np.clip(
      np.asarray(base) + rng.uniform(-spread, spread, 3), 0.02, 0.98
    )
  )


def sample_identity(rng: np.random.Generator) -> Identity:
  """A random subject. Only ``rng`` decides it."""
  u = rng.uniform
  tone = u(0.25, 0.95)  # dark to light skin
  skin = _color(
    rng,
    np.array([0.55, 0.36, 0.25]) + tone * np.array([0.42, 0.45, 0.45]),
    0.04,
  )
  hair_kind = rng.integers(4)
  hair = [
    (0.08, 0.06, 0.05),
    (0.35, 0.22, 0.12),
    (0.75, 0.6, 0.35),
    (0.55, 0.53, 0.5),
  ][hair_kind]
  return Identity(
    face_w=u(0.62, 0.76),
    face_h=u(0.88, 1.0),
    jaw=u(0.05, 0.35),
    skin=skin,
    lips=_color(rng, np.array(skin) * np.array([0.95, 0.62, 0.62]), 0.04),
    hair=_color(rng, hair, 0.05),
    iris=_color(
      rng,
      [
        (0.3, 0.18, 0.08),
        (0.25, 0.4, 0.6),
        (0.3, 0.45, 0.3),
        (0.12, 0.08, 0.05),
      ][rng.integers(4)],
      0.05,
    ),
    clothes=_color(rng, rng.uniform(0.1, 0.9, 3), 0.0),
    background=_color(rng, rng.uniform(0.25, 0.85, 3), 0.0),
    hairline=u(-0.78, -0.45),
    hair_length=u(-0.1, 0.9),
    eye_y=u(-0.2, -0.08),
    eye_dx=u(0.27, 0.33),
    eye_w=u(0.12, 0.15),
    eye_h=u(0.055, 0.08),
    brow_gap=u(0.12, 0.16),
    brow_len=u(0.2, 0.26),
    brow_thick=u(0.03, 0.045),
    brow_arch=u(0.0, 0.05),
    brow_tilt=u(-0.03, 0.03),
    nose_y=u(0.12, 0.22),
    nose_w=u(0.08, 0.12),
    mouth_y=u(0.4, 0.5),
    mouth_w=u(0.2, 0.26),
    lip_upper=u(0.03, 0.05),
    lip_lower=u(0.035, 0.06),
    mouth_curve=u(-0.015, 0.015),
    face_x=u(-0.06, 0.06),
    face_y=u(-0.1, 0.02),
    face_scale=u(0.92, 1.05),
  )


# Face-coordinate box holding every feature (brows to lower lip, at the
# largest action intensities): drawn on that crop of the frame only.
_FEATURE_BOX = ((-0.64, -0.74), (0.64, -0.74), (-0.64, 0.88), (0.64, 0.88))


class _Frame:
  """Face coordinates of the pixels of a crop of the frames, per frame."""

  def __init__(self, ident, pose, size, rows=None, cols=None):
    rows, cols = rows or (0, size), cols or (0, size)
    g = (np.arange(size, dtype=_F32) + 0.5) / size * 2 - 1
    gx = g[cols[0] : cols[1]].reshape(1, 1, -1)
    gy = g[rows[0] : rows[1]].reshape(1, -1, 1)
    self.unit = _F32(0.72) * ident.face_scale * pose["scale"]
    self.px = self.unit * (size / 2)  # pixels per face unit, (T, 1, 1)
    cos, sin = np.cos(pose["rot"]), np.sin(pose["rot"])
    rx = gx - (ident.face_x + pose["dx"])
    ry = gy - (ident.face_y + pose["dy"])
    self.x = (cos * rx + sin * ry) / self.unit
    self.y = (cos * ry - sin * rx) / self.unit
    self.ax = np.abs(self.x)  # symmetric features: drawn once, mirrored
    self.gy = gy

  def cov(self, d):
    """Anti-aliased coverage of a signed distance (face units, < 0 in)."""
    return np.clip(0.5 - d * self.px, 0.0, 1.0)


def _feature_crop(ident, pose, size):
  """Pixel rows and columns covering :data:`_FEATURE_BOX` in all frames."""
  unit = 0.72 * ident.face_scale * pose["scale"]
  cos, sin = np.cos(pose["rot"]), np.sin(pose["rot"])
  xs, ys = [], []
  for fx, fy in _FEATURE_BOX:
    xs.append(ident.face_x + pose["dx"] + unit * (cos * fx - sin * fy))
    ys.append(ident.face_y + pose["dy"] + unit * (sin * fx + cos * fy))

  def span(v):
    lo = int(np.floor((np.min(v) + 1) / 2 * size)) - 1
    hi = int(np.ceil((np.max(v) + 1) / 2 * size)) + 1
    return max(lo, 0), min(max(hi, lo + 1), size)

  return span(ys), span(xs)


def render(ident: Identity, act: dict, pose: dict, size: int) -> np.ndarray:
  """Albedo frames, channels first: ``(3, T, size, size)`` float32 in
  [0, 1].

  Args:
    ident: the subject.
    act: action name -> ``(T,)`` intensities (missing actions are 0).
    pose: ``dx``, ``dy`` (image units, frame = [-1, 1]^2), ``rot`` (radians),
      ``scale`` (relative), each ``(T,)``, added to the resting pose.
    size: frame height and width in pixels.
  """
  t_len = len(pose["dx"])
  a = {
    k: np.asarray(act.get(k, np.zeros(t_len)), _F32).reshape(-1, 1, 1)
    for k in ACTIONS
  }
  pose = {k: np.asarray(v, _F32).reshape(-1, 1, 1) for k, v in pose.items()}
  canvas = np.empty((3, t_len, size, size), _F32)
  synthetic_face_parts.draw_head(canvas, ident, a, _Frame(ident, pose, size))
  (r0, r1), (c0, c1) = rows, cols = _feature_crop(ident, pose, size)
  crop = np.ascontiguousarray(canvas[:, :, r0:r1, c0:c1])
  synthetic_face_parts.draw_features(
    crop, ident, a, _Frame(ident, pose, size, rows, cols)
  )
  canvas[:, :, r0:r1, c0:c1] = crop
  return canvas


# The five keypoints of a face detector (MTCNN's order: the eye on the
# image's left, the other eye, the nose tip, the mouth corner on the left,
# the other corner).
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def keypoints(ident: Identity, act: dict, pose: dict, size: int) -> np.ndarray:
  """Where :func:`render` draws the five :data:`KEYPOINTS` in each frame:
  ``(T, 5, 2)`` float32 ``(x, y)`` in pixels (pixel ``k`` spans ``[k,
  k + 1)``). The eyes' centres and the nose tip are fixed on the face; the
  mouth corners move with the actions (:func:`synthetic_face_parts.
  mouth_shape`); all follow the head pose."""
  t_len = len(pose["dx"])
  a = {k: np.asarray(act.get(k, np.zeros(t_len)), np.float64) for k in ACTIONS}
  mw, curve, my = synthetic_face_parts.mouth_shape(ident, a)
  zero = np.zeros(t_len)
  fx = np.stack(
    [zero - ident.eye_dx, zero + ident.eye_dx, zero, -mw, mw], axis=1
  )
  fy = np.stack(
    [zero + ident.eye_y, zero + ident.eye_y, zero + ident.nose_y,
     my - curve, my - curve],
    axis=1,
  )  # fmt: skip
  p = {k: np.asarray(v, np.float64).reshape(-1, 1) for k, v in pose.items()}
  unit = 0.72 * ident.face_scale * p["scale"]
  cos, sin = np.cos(p["rot"]), np.sin(p["rot"])
  gx = ident.face_x + p["dx"] + unit * (cos * fx - sin * fy)
  gy = ident.face_y + p["dy"] + unit * (sin * fx + cos * fy)
  return ((np.stack([gx, gy], axis=-1) + 1) / 2 * size).astype(_F32)


def light_and_quantise(
  albedo: np.ndarray,
  rng: np.random.Generator,
  *,
  brightness,
  gradient,
  angle,
  cast,
  noise,
) -> np.ndarray:
  """Lighting and sensor noise on albedo ``(3, T, H, W)`` from
  :func:`render`; uint8 ``(T, H, W, 3)``.

  ``brightness`` is ``(T,)`` (flicker allowed); ``gradient`` the relative
  change of light across the frame along direction ``angle``; ``cast`` an
  RGB gain; ``noise`` the Gaussian noise std in 8-bit levels.
  """
  _, t_len, h, w = albedo.shape
  g = (np.arange(h, dtype=_F32) + 0.5) / h * 2 - 1
  ramp = (
    np.cos(angle) * g.reshape(1, 1, -1) + np.sin(angle) * g.reshape(1, -1, 1)
  ).astype(_F32)
  light = (
    np.asarray(brightness, _F32).reshape(-1, 1, 1) * (1 + _F32(gradient) * ramp)
  ) * _F32(255)
  out = albedo * light * np.asarray(cast, _F32).reshape(3, 1, 1, 1)
  if noise > 0:
    out += rng.standard_normal(out.shape, dtype=_F32) * _F32(noise)
  out += 0.5
  np.clip(out, 0, 255, out=out)
  return out.astype(np.uint8).transpose(1, 2, 3, 0).copy()
