"""``prepare``'s face detectors: choosing one by name, and detection on
shrunk frames mapped back to full-size pixels. (MTCNN on a real face:
prepare_cli_test.py.)"""

import numpy as np
import pytest

from stclr_jax.prepare import detectors


def test_unknown_detector_is_refused():
  with pytest.raises(ValueError, match="unknown face detector 'yolo'"):
    detectors.make_detector("yolo")
  with pytest.raises(ValueError, match="min_face must be >= 12"):
    detectors.FaceDetector(min_face=8)


def test_scaled_detection_maps_boxes_to_full_size():
  seen = []

  def detect(frames):
    seen.extend(f.shape for f in frames)
    return [np.array([[10, 20, 30, 40, 0.9]], np.float32) for _ in frames]

  frames = [np.zeros((120, 200, 3), np.uint8)] * 2
  boxes = detectors.detect_scaled(detect, frames, max_side=100)
  assert seen == [(60, 100, 3)] * 2
  np.testing.assert_allclose(boxes[0], [[20, 40, 60, 80, 0.9]], rtol=1e-6)
  seen.clear()
  detectors.detect_scaled(detect, frames)  # 0: full size
  assert seen == [(120, 200, 3)] * 2


def test_scaled_detection_maps_keypoints_to_full_size_too():
  """Rows with MTCNN's five keypoints: the boxes and the keypoints scale
  back, the score does not."""
  row = np.array([[10, 20, 30, 40, 0.9] + list(range(1, 11))], np.float32)
  frames = [np.zeros((120, 200, 3), np.uint8)]
  (got,) = detectors.detect_scaled(lambda fs: [row], frames, max_side=100)
  np.testing.assert_allclose(got[0, :5], [20, 40, 60, 80, 0.9], rtol=1e-6)
  np.testing.assert_allclose(got[0, 5:], 2 * np.arange(1, 11), rtol=1e-6)
