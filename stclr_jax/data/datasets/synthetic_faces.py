"""Procedural, vectorised face renderer for ``synthetic_expressions``.

A face is drawn in *face coordinates* (x right, y down, the face about 1.4
units wide and 1.9 tall, centred on the origin) from a subject's identity
(:func:`sample_identity`: face shape, skin, hair, clothes, background and the
neutral placement and size of brows, eyes, nose and mouth) and per-frame
facial-action intensities (:data:`ACTIONS`, loosely FACS action units). All
frames of a sequence are drawn at once: every shape is a signed distance over
a ``(T, H, W)`` grid, turned into an anti-aliased coverage and composited.
Head pose (translation, rotation, scale per frame) maps pixels to face
coordinates; lighting (brightness, gradient, colour cast) and noise are
applied last (:func:`light_and_quantise`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

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


def _ellipse(x, y, cx, cy, rx, ry):
  r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
  return (r - 1.0) * np.asarray(np.minimum(rx, ry), _F32)


def _lens(x, y, cx, cy, w, up, down, curve=0.0):
  """A shape between an upper and a lower elliptic arc over ``|x - cx| < w``,
  bent so its ends sit ``curve`` higher than its middle (eyes, lips)."""
  t = (x - cx) / w
  env = np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
  ym = y - cy + curve * t * t
  return np.maximum(
    np.maximum(-up * env - ym, ym - down * env), (np.abs(t) - 1.0) * w
  )


def _stroke(x, y, x0, y0, x1, y1, thick, arch=0.0, taper=0.0):
  """A thick segment from (x0, y0) to (x1, y1) bowed up by ``arch`` in its
  middle and thinning by ``taper`` towards (x1, y1)."""
  vx, vy = x1 - x0, y1 - y0
  s = np.clip(((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy), 0, 1)
  cx = x0 + s * vx
  cy = y0 + s * vy - 4.0 * arch * s * (1.0 - s)
  return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - thick * (1.0 - taper * s)


# Canvases are channels-first, (3, T, H, W): contiguous per channel.


def _paint(canvas, alpha, color):
  """Composites ``color`` (3 floats or (3, T, 1, 1)) at coverage ``alpha``."""
  tmp = np.empty(alpha.shape, _F32)
  for c in range(3):
    np.subtract(color[c], canvas[c], out=tmp)
    tmp *= alpha
    canvas[c] += tmp


def _shade(canvas, alpha, amount):
  canvas *= 1.0 - amount * alpha


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
  _draw_head(canvas, ident, a, _Frame(ident, pose, size))
  (r0, r1), (c0, c1) = rows, cols = _feature_crop(ident, pose, size)
  crop = np.ascontiguousarray(canvas[:, :, r0:r1, c0:c1])
  _draw_features(crop, ident, a, _Frame(ident, pose, size, rows, cols))
  canvas[:, :, r0:r1, c0:c1] = crop
  return canvas


def _hairline(i, x):
  return i.hairline + 0.12 * x * x + 0.02 * np.sin(9 * x)


def _draw_head(canvas, i, a, f):
  """Background, clothes, neck, hair, ears, face outline and fringe."""
  x, y, ax = f.x, f.y, f.ax
  canvas[:] = np.asarray(i.background, _F32).reshape(3, 1, 1, 1)
  _shade(canvas, (f.gy + 1) * 0.5, 0.15)
  skin = np.asarray(i.skin, _F32)
  _paint(canvas, f.cov(_ellipse(x, y, 0, 1.85, 1.35, 0.75)), i.clothes)
  neck = np.maximum(ax - 0.3 * i.face_w / 0.7, np.abs(y - 1.0) - 0.5)
  _paint(canvas, f.cov(neck), skin * 0.8)
  back = np.maximum(
    _ellipse(x, y, 0, -0.1, i.face_w + 0.1, i.face_h + 0.08), y - i.hair_length
  )
  _paint(canvas, f.cov(back), i.hair)
  _paint(
    canvas,
    f.cov(_ellipse(ax, y, i.face_w * 0.97, i.eye_y + 0.12, 0.09, 0.16)),
    skin * 0.9,
  )
  # Face: an egg, narrower at the jaw; the chin drops with the jaw.
  half_h = np.where(y > 0, i.face_h + 0.08 * a["jaw_drop"], i.face_h)
  wy = i.face_w * (1.0 - i.jaw * (np.clip(y, 0, None) / half_h) ** 2)
  _paint(canvas, f.cov(_ellipse(x, y, 0, 0, wy, half_h)), skin)
  # Fringe down to a wavy hairline (over a slightly larger outline, so the
  # face's edge does not show through the hair).
  fringe = np.maximum(
    _ellipse(x, y, 0, 0, wy + 0.04, half_h + 0.04), y - _hairline(i, x)
  )
  _paint(canvas, f.cov(fringe), i.hair)


def _draw_features(canvas, i, a, f):
  """Wrinkles, brows, eyes, nose and mouth, moved by the actions."""
  x, y, ax, cov = f.x, f.y, f.ax, f.cov
  below_hair = cov(_hairline(i, x) - y)
  # Wrinkles: forehead (AU1/2), frown lines (AU4), nose (AU9).
  fore = np.maximum(a["inner_brow_raise"], a["outer_brow_raise"])
  for k in range(3):
    yy = i.eye_y - i.brow_gap - 0.13 - 0.06 * k
    d = _stroke(ax, y, 0.0, yy, 0.3, yy + 0.01, 0.008, arch=0.02)
    _shade(canvas, cov(d) * below_hair * np.clip(fore * 1.2 - 0.2, 0, 1), 0.3)
  d = _stroke(
    ax, y, 0.035, i.eye_y - i.brow_gap + 0.02, 0.05, i.eye_y - 0.03, 0.009
  )
  _shade(canvas, cov(d) * np.clip(a["brow_lower"] * 1.2 - 0.2, 0, 1), 0.35)
  for k in range(2):
    yy = i.eye_y + 0.07 + 0.05 * k
    d = _stroke(ax, y, 0.0, yy, 0.07, yy - 0.012, 0.008)
    _shade(canvas, cov(d) * np.clip(a["nose_wrinkle"], 0, 1), 0.35)

  # Brows: inner ends up with AU1, outer with AU2, both down and together
  # with AU4 (and a little with AU9).
  by = i.eye_y - i.brow_gap
  bx_in = 0.09 - 0.035 * a["brow_lower"] - 0.01 * a["nose_wrinkle"]
  y_in = (
    by
    - 0.085 * a["inner_brow_raise"]
    - 0.03 * a["outer_brow_raise"]
    + 0.055 * a["brow_lower"]
    + 0.025 * a["nose_wrinkle"]
  )
  y_out = (
    by
    + i.brow_tilt
    - 0.025 * a["inner_brow_raise"]
    - 0.085 * a["outer_brow_raise"]
    + 0.025 * a["brow_lower"]
    + 0.01 * a["nose_wrinkle"]
  )
  arch = i.brow_arch + 0.025 * a["outer_brow_raise"] - 0.02 * a["brow_lower"]
  d = _stroke(
    ax,
    y,
    bx_in,
    y_in,
    bx_in + i.brow_len,
    y_out,
    i.brow_thick,
    arch=arch,
    taper=0.5,
  )
  _paint(canvas, cov(d), np.asarray(i.hair, _F32) * 0.7)

  # Eyes: the opening is a lens; lids move with AU5/6/7/43 and blinks.
  close = np.clip(a["blink"], 0, 1)
  up = i.eye_h * (
    1
    + 0.75 * a["upper_lid_raise"]
    - 0.3 * a["lid_tighten"]
    - 0.25 * a["cheek_raise"]
    - 0.45 * a["lid_droop"]
  )
  down = i.eye_h * (
    1
    + 0.15 * a["upper_lid_raise"]
    - 0.35 * a["lid_tighten"]
    - 0.5 * a["cheek_raise"]
  )
  up = np.clip(up * (1 - close), 0.004, None)
  down = np.clip(down * (1 - 0.7 * close), 0.004, None)
  eye = _lens(ax, y, i.eye_dx, i.eye_y, i.eye_w, up, down, curve=-0.01)
  eye_cov = cov(eye)
  _paint(canvas, eye_cov, (0.93, 0.92, 0.9))
  r = i.eye_w * 0.5
  _paint(
    canvas, eye_cov * cov(_ellipse(ax, y, i.eye_dx, i.eye_y, r, r)), i.iris
  )
  r *= 0.45
  _paint(
    canvas,
    eye_cov * cov(_ellipse(ax, y, i.eye_dx, i.eye_y, r, r)),
    (0.03, 0.03, 0.03),
  )
  lid = (
    np.abs(
      _lens(ax, y, i.eye_dx, i.eye_y, i.eye_w * 1.05, up, down, curve=-0.01)
    )
    - 0.01
  )
  lid = np.maximum(lid, y - i.eye_y + 0.2 * down)  # upper rim only
  _paint(canvas, cov(lid), np.asarray(i.hair, _F32) * 0.4)
  fold_y = i.eye_y + down + 0.035 - 0.02 * a["cheek_raise"]
  d = _stroke(
    ax,
    y,
    i.eye_dx - i.eye_w * 0.8,
    fold_y,
    i.eye_dx + i.eye_w * 0.8,
    fold_y,
    0.008,
    arch=0.015,
  )
  _shade(canvas, cov(d) * np.clip(a["cheek_raise"] * 1.3 - 0.3, 0, 1), 0.3)

  # Nose: bridge and tip shadow, nostrils raised and flared by AU9/10.
  lift = 0.035 * a["nose_wrinkle"] + 0.02 * a["upper_lip_raise"]
  _shade(
    canvas, cov(_ellipse(x, y, 0, i.nose_y - lift, i.nose_w * 0.8, 0.05)), 0.1
  )
  d = _stroke(ax, y, 0.035, i.eye_y + 0.02, 0.05, i.nose_y - 0.06, 0.012)
  _shade(canvas, cov(d), 0.06)
  nw = i.nose_w * (0.35 + 0.12 * a["nose_wrinkle"])
  _shade(
    canvas,
    cov(_ellipse(ax, y, i.nose_w * 0.45, i.nose_y + 0.035 - lift, nw, 0.022)),
    0.5,
  )

  # Mouth: width, corner height, opening and lip thickness from AU10-27.
  jaw = a["jaw_drop"]
  mw = i.mouth_w * (
    1
    + 0.2 * a["lip_corner_pull"]
    + 0.3 * a["lip_stretch"]
    - 0.18 * a["lip_press"]
    - 0.2 * jaw
    + 0.05 * a["upper_lip_raise"]
  )
  curve = (
    i.mouth_curve
    + 0.08 * a["lip_corner_pull"]
    - 0.065 * a["lip_corner_depress"]
    - 0.015 * a["lip_stretch"]
    - 0.01 * a["nose_wrinkle"]
  )
  my = i.mouth_y - 0.02 * a["chin_raise"] + 0.01 * a["lip_corner_depress"]
  o_up = np.clip(
    0.012 * a["lips_part"] + 0.03 * a["upper_lip_raise"] + 0.03 * jaw, 0, None
  )
  o_dn = np.clip(
    0.02 * a["lips_part"]
    + 0.13 * jaw
    + 0.02 * a["lip_stretch"]
    - 0.03 * a["chin_raise"]
    - 0.02 * a["lip_press"],
    0,
    None,
  )
  th_up = i.lip_upper * (1 - 0.6 * a["lip_press"] - 0.3 * a["upper_lip_raise"])
  th_dn = i.lip_lower * (1 - 0.5 * a["lip_press"] + 0.2 * a["chin_raise"])
  fold = np.clip(
    0.25 + 0.8 * np.maximum(a["lip_corner_pull"], a["upper_lip_raise"]), 0, 1
  )
  d = _stroke(
    ax,
    y,
    i.nose_w * 0.8,
    i.nose_y + 0.02,
    mw + 0.04,
    my - curve + 0.03,
    0.009,
    arch=-0.03,
  )
  _shade(canvas, cov(d) * fold, 0.3)
  _paint(
    canvas,
    cov(_lens(x, y, 0, my, mw, o_up + th_up, o_dn + th_dn, curve)),
    i.lips,
  )
  hole = cov(_lens(x, y, 0, my, mw * 0.97, o_up, o_dn, curve))
  _paint(canvas, hole, (0.22, 0.05, 0.06))
  teeth = _lens(x, y, 0, my, mw * 0.8, o_up, 0.6 * o_up + 0.02, curve)
  _paint(canvas, hole * cov(teeth), (0.92, 0.9, 0.85))


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
