"""MaskFN's face-part crops (stclr_jax/pretext/face_parts.py)."""

import numpy as np

from stclr_jax.pretext import face_parts


def test_face_part_crops_are_the_boxes_zero_padded_square():
  """Boxes on whole pixels and a crop size equal to the square's side: each
  crop pixel is one frame pixel, exactly. Eyes 20 px apart: the eyes' box
  is 32 x 8 px (+-0.3 and +-0.2 eye distances), the mouth's 32 x 14
  (corners +-0.05 across, 0.25 above, 0.45 below), each centred in a black
  32 x 32 square; the mouth's square runs off the frame (black too)."""
  frame = np.random.default_rng(0).integers(1, 256, (64, 64, 3), np.uint8)
  kp = np.array([[20, 30], [40, 30], [30, 40], [17, 50], [47, 50]], np.float32)
  eyes, mouth = face_parts.face_part_crops(frame, kp, 32).numpy()
  want = np.zeros_like(eyes)
  want[12:20] = frame[26:34, 14:46]
  np.testing.assert_array_equal(eyes, want)
  want = np.zeros_like(mouth)
  want[9:23] = frame[45:59, 16:48]
  np.testing.assert_array_equal(mouth, want)


def test_face_part_crops_resize_and_go_black_without_a_face():
  frame = np.full((48, 48, 3), 200, np.uint8)
  kp = np.array([[10, 15], [30, 15], [20, 25], [12, 35], [28, 35]], np.float32)
  crops = face_parts.face_part_crops(frame, kp, 64).numpy()
  assert crops.shape == (2, 64, 64, 3) and crops.dtype == np.uint8
  # A uniform frame stays uniform inside each box: 200 where the box is.
  assert set(np.unique(crops)) == {0, 200}
  lost = kp.copy()
  lost[3] = np.nan  # a failed detection: SSL-FER's black crops
  assert not face_parts.face_part_crops(frame, lost, 64).numpy().any()
