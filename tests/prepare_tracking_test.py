"""From detections to one face box per frame, on exact synthetic
detections: face-less gaps bridged or cut, the choice of face, smoothing."""

import numpy as np

from stclr_jax.prepare import tracking


def _detections(present, box=(40, 30, 80, 70), speed=1.0):
  def detect(idx):
    detect.examined += list(idx)
    return [
      np.array([[box[0] + speed * t, box[1], box[2] + speed * t, box[3], 0.9]])
      if present(t)
      else np.zeros((0, 5))
      for t in idx
    ]

  detect.examined = []
  return detect


def test_gaps_are_bridged_or_cut_and_counted():
  present = lambda t: not (10 <= t <= 12 or 20 <= t <= 29)  # noqa: E731
  want = "D" * 10 + "B" * 3 + "D" * 7 + "C" * 10 + "D" * 10
  for k in (1, 3):
    det = _detections(present)
    tr = tracking.follow(
      40, det, tracking.TrackParams(detect_every=k, max_gap=4, smooth=0)
    )
    assert tr.states.replace("I", "D") == want, (k, tr.states)
    assert (tr.gaps_bridged, tr.frames_bridged) == (1, 3)
    assert (tr.segments_cut, tr.frames_cut) == (1, 10)
    assert tr.kept.sum() == 30
    assert np.isnan(tr.boxes_Tx3[20:30]).all()
    # Bridged boxes continue the motion (the face moves 1 px a frame).
    np.testing.assert_allclose(tr.boxes_Tx3[10:13, 0], [70, 71, 72])
    if k == 3:  # every frame near a miss examined, not the rest
      grid = set(range(0, 40, 3)) | {39}
      assert set(det.examined) == grid | {10, 11, 13, 14} | set(range(19, 30))
      assert tr.states[16:18] == "II" and tr.frames_examined == 26
  # Edges: a short face-less start is bridged (held), a long end is cut.
  tr = tracking.follow(
    30,
    _detections(lambda t: 3 <= t < 15),
    tracking.TrackParams(max_gap=4, smooth=0),
  )
  assert tr.states == "B" * 3 + "D" * 12 + "C" * 15
  np.testing.assert_allclose(tr.boxes_Tx3[:3, 0], 63)
  tr = tracking.follow(8, _detections(lambda t: False))
  assert tr.faces_seen == 0 and tr.states == "C" * 8


def test_choose_largest_or_most_persistent_face():
  big = [50, 40, 150, 140, 0.9]  # 100 px, in frames 0-9 only
  small = [300, 50, 340, 90, 0.99]  # 40 px, in all 20 frames

  def detect(idx):
    return [np.array([big, small] if t < 10 else [small]) for t in idx]

  params = dict(max_gap=2, smooth=0)
  tr = tracking.follow(
    20, detect, tracking.TrackParams(choose="largest", **params)
  )
  assert tr.faces_seen == 2 and tr.states == "D" * 10 + "C" * 10
  assert tr.boxes_Tx3[0, 2] == 100
  tr = tracking.follow(
    20, detect, tracking.TrackParams(choose="persistent", **params)
  )
  assert tr.states == "D" * 20 and tr.boxes_Tx3[0, 2] == 40
  tr = tracking.follow(
    20, detect, tracking.TrackParams(choose="auto", **params)
  )  # 10 x 100 > 20 x 40
  assert tr.boxes_Tx3[0, 2] == 100


def test_smoothing_removes_jitter_and_keeps_motion():
  t = np.arange(30, dtype=np.float64)
  line = np.stack([10 + 2 * t, 50 - t, 40 + 0.5 * t], -1)
  np.testing.assert_allclose(tracking.smooth_boxes(line, 2.0), line, atol=1e-9)
  jitter = np.random.default_rng(0).normal(0, 2, line.shape)
  smooth = tracking.smooth_boxes(line + jitter, 2.0)
  assert np.abs(smooth - line).std() < 0.5 * jitter.std()


# The evidence rules.

_FACE = np.array(  # box (0, 0, 100, 100), eyes 40 apart, nose, mouth
  [0, 0, 100, 100, 0.99, 30, 40, 70, 40, 50, 60, 35, 80, 65, 80], float
)


def _rotated(row, degrees):
  """The keypoints turned about the eyes' midpoint (the box kept)."""
  a = np.radians(degrees)
  rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  kp = row[5:].reshape(5, 2) - [50, 40]
  return np.concatenate([row[:5], (kp @ rot.T + [50, 40]).ravel()])


def test_keypoint_geometry_measures_a_face():
  g = tracking.keypoint_geometry(_FACE)
  assert g["plausible"]
  np.testing.assert_allclose(
    [g["eye_distance"], g["roll"], g["nose"], g["mouth"]], [0.4, 0, 0.5, 1.0]
  )
  g = tracking.keypoint_geometry(_rotated(_FACE, 30))  # a tilted head
  assert g["plausible"]
  np.testing.assert_allclose([g["roll"], g["nose"], g["mouth"]], [30, 0.5, 1])
  assert not tracking.keypoint_geometry(_rotated(_FACE, 180))["plausible"]
  assert not tracking.keypoint_geometry(_rotated(_FACE, 60))["plausible"]
  squashed = _FACE.copy()
  squashed[[12, 14]] = 55  # the mouth above the nose
  assert not tracking.keypoint_geometry(squashed)["plausible"]
  assert tracking.keypoint_geometry(_FACE[:5])["plausible"]  # no keypoints


def test_evidence_filter_drops_detections_and_names_the_frames():
  low = _FACE.copy()
  low[4] = 0.5
  upside = _rotated(_FACE, 180)
  dets = {
    0: [_FACE],
    1: [low],
    2: [upside],
    3: [low, _FACE],
    4: np.zeros((0, 5)),
  }
  params = tracking.TrackParams(min_confidence=0.9, keypoint_geometry=True)
  kept, rejected = tracking.evidence_filter(dets, params)
  assert [len(kept[t]) for t in range(5)] == [1, 0, 0, 1, 0]
  assert rejected == {"confidence": [1], "keypoint_geometry": [2]}
  kept, rejected = tracking.evidence_filter(dets, tracking.TrackParams())
  assert [len(kept[t]) for t in range(5)] == [1, 1, 1, 2, 0]


def test_tracks_without_enough_evidence_are_not_faces():
  """A face found in every frame stays; one found in every 4th frame (an
  isolated run, as a false positive comes and goes) or in 2 frames does
  not, and the track says why: (detections, seconds, density)."""
  params = tracking.TrackParams(
    min_track_frames=3, min_track_seconds=0.2, min_track_density=0.5
  )
  tr = tracking.follow(20, _detections(lambda t: True), params, fps=25)
  assert tr.faces_seen == 1 and tr.short_tracks == []
  tr = tracking.follow(20, _detections(lambda t: t % 4 == 0), params, fps=25)
  assert tr.faces_seen == 0 and set(tr.states) == {"C"}
  assert tr.short_tracks == [(5, 0.68, 0.294)]
  tr = tracking.follow(20, _detections(lambda t: t in (3, 4)), params, fps=25)
  assert tr.faces_seen == 0 and tr.short_tracks == [(2, 0.08, 1.0)]
  # 3 detections in 3 frames: enough frames, too short at 25 frames/s,
  # long enough at 10.
  three = _detections(lambda t: t in (3, 4, 5))
  assert tracking.follow(20, three, params, fps=25).faces_seen == 0
  assert tracking.follow(20, three, params, fps=10).faces_seen == 1
