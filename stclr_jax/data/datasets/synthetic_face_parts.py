"""The parts of a synthetic face, drawn for :mod:`.synthetic_faces`.

Every shape is a signed distance in face coordinates (< 0 inside) over a
``(T, H, W)`` grid, turned into an anti-aliased coverage by the frame
(:meth:`synthetic_faces._Frame.cov`) and composited onto a channels-first
canvas: :func:`draw_head` (background, clothes, neck, hair, ears, face
outline and fringe) on the whole frame, :func:`draw_features` (wrinkles,
brows, eyes, nose and mouth, moved by the facial actions) on the crop that
holds them.
"""

from __future__ import annotations

import numpy as np

_F32 = np.float32


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


def _hairline(i, x):
  return i.hairline + 0.12 * x * x + 0.02 * np.sin(9 * x)


def draw_head(canvas, i, a, f):
  """Background, clothes, neck, hair, ears, face outline and fringe.

  ``canvas`` is ``(3, T, H, W)``, ``i`` the :class:`synthetic_faces.Identity`,
  ``a`` action name -> ``(T, 1, 1)`` intensities and ``f`` the frame: the
  face coordinates ``x``, ``y``, ``ax = |x|`` of the canvas's pixels, their
  image row ``gy`` and ``cov`` (signed distance -> coverage).
  """
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


def mouth_shape(i, a):
  """``(half width, corner lift, centre height)`` of the mouth in face
  units under actions ``a``: its corners are at ``(+-mw, my - curve)``."""
  mw = i.mouth_w * (
    1
    + 0.2 * a["lip_corner_pull"]
    + 0.3 * a["lip_stretch"]
    - 0.18 * a["lip_press"]
    - 0.2 * a["jaw_drop"]
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
  return mw, curve, my


def draw_features(canvas, i, a, f):
  """Wrinkles, brows, eyes, nose and mouth, moved by the actions (the
  arguments are :func:`draw_head`'s)."""
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
  mw, curve, my = mouth_shape(i, a)
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
