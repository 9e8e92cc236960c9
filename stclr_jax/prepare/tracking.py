"""From per-frame face detections to one steady face box per frame.

:func:`follow` runs a detector on every ``detect_every``-th frame, links the
detections into face tracks, keeps one track (the largest or most
persistent face), and gives every frame a square box ``(cx, cy, side)``:

* ``DETECTED``: the chosen face was found in this frame;
* ``INTERPOLATED``: a frame between two detections ``detect_every`` apart
  (not examined), box interpolated linearly;
* ``BRIDGED``: examined, no face, but in a gap of at most ``max_gap`` frames:
  the box comes from the neighbouring boxes (interpolated between them, or
  held at the start and end of the video);
* ``CUT``: in a longer face-less stretch: the frame is dropped.

Where a detection frame misses the face, the frames around it are examined
one by one, so gaps are measured to the frame even with ``detect_every > 1``.
The boxes are then smoothed over time within each uncut stretch by a
Gaussian-weighted local linear fit, which removes jitter but keeps steady
motion (and zoom) without lag.

With a detector that finds the five face keypoints (MTCNN), the chosen
face's keypoints come along (``Track.keypoints_Tx5x2``): as detected in
``DETECTED`` frames, interpolated like the boxes in ``INTERPOLATED`` and
``BRIDGED`` ones, not smoothed, NaN where cut or where the detector gives
none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

DETECTED, INTERPOLATED, BRIDGED, CUT = "D", "I", "B", "C"
CHOICES = ("auto", "largest", "persistent")


# Keypoint geometry of a plausible face (see keypoint_geometry; the
# measurements behind the bounds: BENCHMARKS.md, "Evidence for a face").
GEOMETRY = dict(
  eye_distance=(0.25, 0.75),  # inter-ocular distance / box width
  roll=45.0,  # degrees, eye line against the horizontal
  nose=(0.15, 1.2),  # below the eyes, in eye distances
  mouth=(0.5, 2.0),  # below the eyes (and below the nose)
)


@dataclasses.dataclass(frozen=True)
class TrackParams:
  """How detections become one face track. The evidence rules (a face
  detector also fires on text, textures and animals, in short isolated
  runs): detections below ``min_confidence`` or, with
  ``keypoint_geometry``, whose five keypoints are not a face's are
  dropped; a track needs ``min_track_frames`` detections spanning
  ``min_track_seconds`` (at ``fps``), found in at least
  ``min_track_density`` of the examined frames of that span (not an
  isolated run: a false positive comes and goes, a face stays)."""

  detect_every: int = 1  # run the detector on every k-th frame
  max_gap: int = 12  # longest face-less gap (frames) that is bridged
  smooth: float = 2.0  # Gaussian sigma in frames; 0 = no smoothing
  choose: str = "auto"  # auto (size x frames) | largest | persistent
  min_confidence: float = 0.0
  keypoint_geometry: bool = False
  min_track_frames: int = 1
  min_track_seconds: float = 0.0
  min_track_density: float = 0.0

  def __post_init__(self):
    if self.detect_every < 1:
      raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
    if self.max_gap < 0:
      raise ValueError(f"max_gap must be >= 0, got {self.max_gap}")
    if self.smooth < 0:
      raise ValueError(f"smooth must be >= 0, got {self.smooth}")
    if self.choose not in CHOICES:
      raise ValueError(f"choose must be one of {CHOICES}, got {self.choose!r}")
    if not 0 <= self.min_confidence <= 1:
      raise ValueError(
        f"min_confidence must be in [0, 1], got {self.min_confidence}"
      )
    if self.min_track_frames < 1:
      raise ValueError(
        f"min_track_frames must be >= 1, got {self.min_track_frames}"
      )
    if not 0 <= self.min_track_density <= 1:
      raise ValueError(
        f"min_track_density must be in [0, 1], got {self.min_track_density}"
      )
    if self.min_track_seconds < 0:
      raise ValueError(
        f"min_track_seconds must be >= 0, got {self.min_track_seconds}"
      )


@dataclasses.dataclass
class Track:
  boxes_Tx3: np.ndarray  # (cx, cy, side) per frame; NaN where cut
  states: str  # one of D/I/B/C per frame
  faces_seen: int  # distinct face tracks found
  frames_examined: int  # frames the detector ran on
  gaps_bridged: int = 0
  frames_bridged: int = 0
  segments_cut: int = 0
  frames_cut: int = 0
  keypoints_Tx5x2: np.ndarray | None = None  # (x, y) pixels; NaN: none
  # The evidence rules' work: frames whose detections were all dropped,
  # per rule, and the tracks that did not count (detections, seconds,
  # density).
  rejected: dict = dataclasses.field(default_factory=dict)
  short_tracks: list = dataclasses.field(default_factory=list)

  @property
  def kept(self) -> np.ndarray:
    return np.array([s != CUT for s in self.states], bool)


def square(boxes_Kx5: np.ndarray) -> np.ndarray:
  """``(x0, y0, x1, y1, score[, keypoints])`` -> ``(cx, cy, side)``, side =
  longer edge."""
  b = _rows(boxes_Kx5)
  return np.stack(
    [
      (b[:, 0] + b[:, 2]) / 2,
      (b[:, 1] + b[:, 3]) / 2,
      np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]),
    ],
    -1,
  )


def _rows(boxes) -> np.ndarray:
  """Detections as ``(K, 5)`` or ``(K, 15)`` float64 rows."""
  b = np.asarray(boxes, np.float64)
  return b.reshape(-1, b.shape[-1] if b.ndim == 2 else 5)


def _keypoints(boxes, i) -> np.ndarray:
  """Detection ``i``'s keypoints ``(5, 2)``, NaN if the detector gives
  none."""
  row = _rows(boxes)[i]
  if len(row) < 15:
    return np.full((5, 2), np.nan)
  return row[5:15].reshape(5, 2)


def keypoint_geometry(row) -> dict:
  """A detection's keypoints measured against a face's: the inter-ocular
  distance over the box width, the eye line's roll (degrees), and how far
  below the eyes the nose and the mouth's centre are, in eye distances
  (along the face's vertical). ``plausible``: all within
  :data:`GEOMETRY` (True for a detection without keypoints)."""
  row = np.asarray(row, np.float64)
  if len(row) < 15 or not np.isfinite(row[5:15]).all():
    return {"plausible": True}
  kp = row[5:15].reshape(5, 2)
  eye = kp[1] - kp[0]
  d = float(np.hypot(*eye))
  width = max(float(row[2] - row[0]), 1e-6)
  roll = float(np.degrees(np.arctan2(eye[1], eye[0])))
  down = np.array([-eye[1], eye[0]]) / max(d, 1e-6)  # the face's vertical
  mid = (kp[0] + kp[1]) / 2
  nose = float((kp[2] - mid) @ down) / max(d, 1e-6)
  mouth = float(((kp[3] + kp[4]) / 2 - mid) @ down) / max(d, 1e-6)
  g = GEOMETRY
  plausible = (
    g["eye_distance"][0] <= d / width <= g["eye_distance"][1]
    and abs(roll) <= g["roll"]
    and g["nose"][0] <= nose <= g["nose"][1]
    and g["mouth"][0] <= mouth <= g["mouth"][1]
    and nose < mouth
  )
  return {
    "plausible": bool(plausible),
    "eye_distance": d / width,
    "roll": roll,
    "nose": nose,
    "mouth": mouth,
  }


def evidence_filter(dets: dict, params: TrackParams) -> tuple[dict, dict]:
  """``dets`` without the detections that fail ``params``' confidence and
  geometry rules, and ``{rule: [frames]}``: the frames that had
  detections and lost all of them to that rule."""
  kept, rejected = {}, {"confidence": [], "keypoint_geometry": []}
  for t, boxes in dets.items():
    b = _rows(boxes)
    ok_score = b[:, 4] >= params.min_confidence
    ok_geom = np.array(
      [
        not params.keypoint_geometry or keypoint_geometry(r)["plausible"]
        for r in b
      ],
      bool,
    )
    kept[t] = b[ok_score & ok_geom]
    if len(b) and not len(kept[t]):
      rule = "confidence" if not ok_score.any() else "keypoint_geometry"
      rejected[rule].append(int(t))
  return kept, rejected


def _distance(a, b) -> float:
  """Centre distance in units of the larger box, inf if sizes differ by more
  than 1.6x (then they are not the same face)."""
  big, small = max(a[2], b[2]), max(min(a[2], b[2]), 1e-6)
  if big / small > 1.6:
    return np.inf
  return float(np.hypot(a[0] - b[0], a[1] - b[1]) / big)


def link(detections: dict[int, np.ndarray], max_skip: int) -> list[dict]:
  """Greedy frame-to-frame linking into face tracks ``{frame: (cx, cy,
  side)}``. A detection joins the track whose last box is nearest: within
  half a box if that track was seen at most ``max_skip`` frames ago, else
  (the face coming back after a longer absence) within one box."""
  tracks: list[dict] = []
  for t in sorted(detections):
    dets = _rows(detections[t])
    used = set()
    for i in np.argsort(-dets[:, 4], kind="stable"):
      box = square(dets[i : i + 1])[0]
      best, best_key = None, (2, 0.0)
      for j, tr in enumerate(tracks):
        last = max(tr)
        if j in used or last >= t:
          continue
        d = _distance(tr[last], box)
        key = (0, d) if t - last <= max_skip and d <= 0.5 else (1, d)
        if d <= 1.0 and key < best_key:
          best, best_key = j, key
      if best is None:
        tracks.append({t: box})
        used.add(len(tracks) - 1)
      else:
        tracks[best][t] = box
        used.add(best)
  return tracks


def choose(tracks: Sequence[dict], how: str = "auto") -> dict:
  """The track of the largest (mean side), most persistent (most frames) or,
  for ``auto``, biggest sum of sides over frames."""

  def key(tr):
    n, mean = len(tr), float(np.mean([b[2] for b in tr.values()]))
    return {
      "largest": (mean, n),
      "persistent": (n, mean),
      "auto": (n * mean, n),
    }[how]

  return max(tracks, key=key)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
  """[start, end) of the runs of True in a 1-D bool array."""
  edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
  return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def smooth_boxes(boxes_Nx3: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian-weighted local linear fit at every frame (window 3 sigma):
  jitter is averaged out, constant motion and zoom pass unchanged."""
  n = len(boxes_Nx3)
  if sigma <= 0 or n < 3:
    return boxes_Nx3.copy()
  r = max(1, int(np.ceil(3 * sigma)))
  out = np.empty_like(boxes_Nx3)
  for t in range(n):
    lo, hi = max(0, t - r), min(n, t + r + 1)
    d = np.arange(lo, hi, dtype=np.float64) - t
    w = np.exp(-0.5 * (d / sigma) ** 2)
    y = boxes_Nx3[lo:hi]
    s0, s1, s2 = w.sum(), (w * d).sum(), (w * d * d).sum()
    t0, t1 = w @ y, (w * d) @ y
    det = s0 * s2 - s1 * s1
    out[t] = (s2 * t0 - s1 * t1) / det if det > 1e-9 * s0 * s2 else t0 / s0
  return out


def follow(
  num_frames: int,
  detect: Callable[[Sequence[int]], Sequence[np.ndarray]],
  params: TrackParams = TrackParams(),
  fps: float | None = None,
) -> Track:
  """One face box per frame of a video of ``num_frames`` frames.

  ``detect(frame_indices)`` returns one ``(K, 5)`` (or ``(K, 15)``) box
  array per index. With no face anywhere, or none that passes the
  evidence rules, every frame is ``CUT`` and ``faces_seen`` is 0; the
  track's ``rejected`` and ``short_tracks`` say why. ``fps`` (frames per
  second; 25 if unknown) measures ``min_track_seconds``.
  """
  if num_frames < 1:
    raise ValueError("follow() needs at least one frame")
  k, t_max = params.detect_every, num_frames - 1
  grid = sorted(set(range(0, num_frames, k)) | {t_max})
  dets, rejected = evidence_filter(dict(zip(grid, detect(grid))), params)
  examined = set(grid)
  tracks = link(dets, max_skip=params.max_gap + k)

  def evidence(tr):
    """(detections, seconds, density) of a track."""
    span = [t for t in grid if min(tr) <= t <= max(tr)]
    sec = (max(tr) - min(tr) + 1) / (fps or 25.0)
    return len(tr), round(sec, 3), round(len(tr) / len(span), 3)

  def enough(tr):
    n, sec, density = evidence(tr)
    return (
      n >= params.min_track_frames
      and sec >= params.min_track_seconds
      and density >= params.min_track_density
    )

  short = sorted(
    (evidence(tr) for tr in tracks if not enough(tr)), reverse=True
  )
  tracks = [tr for tr in tracks if enough(tr)]
  states = np.full(num_frames, CUT)
  boxes = np.full((num_frames, 3), np.nan)
  if not tracks:
    return Track(
      boxes,
      "".join(states),
      0,
      len(examined),
      segments_cut=1,
      frames_cut=num_frames,
      rejected=rejected,
      short_tracks=short,
    )
  face = dict(choose(tracks, params.choose))
  kp = np.full((num_frames, 5, 2), np.nan)
  for t, box in face.items():  # the detection the track's box came from
    sq = square(dets[t])
    kp[t] = _keypoints(dets[t], int(np.argmin(np.abs(sq - box).sum(1))))

  if k > 1:  # examine every frame next to a detection frame that missed
    todo = [
      t
      for t in range(num_frames)
      if t not in examined
      and not ((t // k) * k in face and min((t // k + 1) * k, t_max) in face)
    ]
    if todo:
      examined.update(todo)
      seen = np.array(sorted(face))
      refined, _ = evidence_filter(dict(zip(todo, detect(todo))), params)
      for t, found in refined.items():
        near = face[int(seen[np.argmin(np.abs(seen - t))])]
        cands = square(found)
        dist = [_distance(near, c) for c in cands]
        if dist and min(dist) <= 0.5:
          face[t] = cands[int(np.argmin(dist))]
          kp[t] = _keypoints(found, int(np.argmin(dist)))

  for t, box in face.items():
    boxes[t], states[t] = box, DETECTED
  track = Track(
    boxes,
    "",
    len(tracks),
    len(examined),
    rejected=rejected,
    short_tracks=short,
  )
  for s, e in _runs(states != DETECTED):
    idx = np.arange(s, e)
    if not any(t in examined for t in idx):
      kind = INTERPOLATED  # between two grid detections
    elif e - s <= params.max_gap:
      kind = BRIDGED
      track.gaps_bridged += 1
      track.frames_bridged += int(e - s)
    else:
      states[s:e] = CUT
      track.segments_cut += 1
      track.frames_cut += int(e - s)
      continue
    before = boxes[s - 1] if s > 0 else boxes[e]
    after = boxes[e] if e < num_frames else before
    a = ((idx - (s - 1)) / (e - s + 1))[:, None]
    boxes[s:e] = (1 - a) * before + a * after
    kp_before = kp[s - 1] if s > 0 else kp[e]
    kp_after = kp[e] if e < num_frames else kp_before
    kp[s:e] = (1 - a[:, :, None]) * kp_before + a[:, :, None] * kp_after
    states[s:e] = kind
  for s, e in _runs(states != CUT):
    boxes[s:e] = smooth_boxes(boxes[s:e], params.smooth)
  track.boxes_Tx3, track.states = boxes, "".join(states)
  track.keypoints_Tx5x2 = kp
  return track
