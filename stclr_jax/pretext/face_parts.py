"""MaskFN's face-part crops (SSL-FER's eyes and mouth), from MTCNN's five
keypoints instead of dlib's 68 landmarks. In units of the inter-ocular
distance d: the eyes' box spans both eye centres +- 0.3 d across and
+- 0.2 d up and down (SSL-FER: landmarks 36-47 widened by 10 px up and
down, about 0.15 d on its face crops); the mouth's spans the corners +-
0.05 d across, 0.25 d above and 0.45 d below them (landmarks 48-67,
tight, with room for an open jaw).
"""

from __future__ import annotations

import tensorflow as tf

EYE_BOX = (0.3, 0.2, 0.2)  # across, above, below
MOUTH_BOX = (0.05, 0.25, 0.45)
PARTS = ("eyes", "mouth")


def _part_box(points, d, box):
  """``(y0, x0, y1, x1)`` in pixels around ``points`` (k, 2) (x, y)."""
  across, above, below = box
  x, y = points[:, 0], points[:, 1]
  return tf.stack(
    [
      tf.reduce_min(y) - above * d,
      tf.reduce_min(x) - across * d,
      tf.reduce_max(y) + below * d,
      tf.reduce_max(x) + across * d,
    ]
  )


def face_part_crops(frame, keypoints, size: int) -> tf.Tensor:
  """The eyes' and the mouth's crops of one frame: uint8 ``(2, size, size,
  3)``.

  ``frame``: uint8 ``(H, W, 3)``; ``keypoints``: ``(5, 2)`` float ``(x,
  y)`` pixels (pixel ``k`` spans ``[k, k + 1)``) in MTCNN's order (eyes,
  nose, mouth corners). Each box (:data:`EYE_BOX`, :data:`MOUTH_BOX`) is
  padded to a square about its centre with black (SSL-FER's ``SquarePad``)
  and resized bilinearly; parts outside the frame are black too. Keypoints
  that are not finite (no face found) give two black crops, as SSL-FER's
  failed detections do.
  """
  kp = tf.cast(keypoints, tf.float32)
  ok = tf.reduce_all(tf.math.is_finite(kp))
  kp = tf.where(ok, kp, tf.zeros_like(kp))
  d = tf.maximum(tf.norm(kp[1] - kp[0]), 1.0)
  boxes = tf.stack(
    [_part_box(kp[0:2], d, EYE_BOX), _part_box(kp[3:5], d, MOUTH_BOX)]
  )
  centre = (boxes[:, :2] + boxes[:, 2:]) / 2
  half = tf.reduce_max(boxes[:, 2:] - boxes[:, :2], axis=1) / 2
  square = tf.concat(
    [centre - half[:, None], centre + half[:, None]], axis=1
  )  # (2, 4): y0, x0, y1, x1, pixel edges
  hw = tf.cast(tf.shape(frame)[:2], tf.float32)
  # crop_and_resize samples pixel centres: edge e is centre e - 0.5, and
  # the output's first and last samples sit half a sample inside the box.
  step = (square[:, 2:] - square[:, :2]) / size
  first = square[:, :2] + step / 2 - 0.5
  last = square[:, 2:] - step / 2 - 0.5
  norm = tf.concat(
    [first / (hw - 1.0), last / (hw - 1.0)], axis=1
  )  # y0, x0, y1, x1 normalised
  image = tf.cast(frame, tf.float32)[None]
  crops = tf.image.crop_and_resize(
    image, norm, tf.zeros([2], tf.int32), [size, size], extrapolation_value=0.0
  )
  # Black outside the part's own box (the square padding).
  grid = (tf.range(size, dtype=tf.float32) + 0.5)[None, :] * step[:, :1]
  ys = square[:, 0:1] + grid
  xs = (
    square[:, 1:2]
    + (tf.range(size, dtype=tf.float32) + 0.5)[None, :] * step[:, 1:2]
  )
  in_y = (ys >= boxes[:, 0:1]) & (ys <= boxes[:, 2:3])
  in_x = (xs >= boxes[:, 1:2]) & (xs <= boxes[:, 3:4])
  inside = tf.cast(in_y[:, :, None] & in_x[:, None, :], tf.float32)
  crops = crops * inside[..., None] * tf.cast(ok, tf.float32)
  return tf.cast(tf.clip_by_value(tf.round(crops), 0, 255), tf.uint8)
