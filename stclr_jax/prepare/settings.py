"""What decides a ``prepare`` run's output: :class:`Settings` (the crop, the
face detector, tracking and the evidence that a track is a face, the image
format). A record whose settings differ from the run's is redone."""

from __future__ import annotations

import dataclasses

from stclr_jax.prepare import tracking


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that decides the output; a change redoes a video."""

  size: int = 224
  margin: float = 0.2
  detector: str = "mtcnn"
  min_face: int = 40
  detect_every: int = 1
  max_gap: int = 12
  smooth: float = 2.0
  choose: str = "auto"
  min_frames: int = 1
  image_format: str = "jpg"
  quality: int = 95
  folder_fps: float = 0.0
  # Evidence that a track is a face (tracking.TrackParams; thresholds and
  # their measurements: BENCHMARKS.md, "Evidence for a face").
  min_confidence: float = 0.95
  keypoint_geometry: bool = True
  min_track_frames: int = 3
  min_track_seconds: float = 0.2
  min_track_density: float = 0.5
  # MTCNN: shrink frames so a min_face face is 20 px (faster), or not.
  detect_downscale: bool = True

  @classmethod
  def no_evidence_rules(cls, **kw) -> Settings:
    """The settings before the evidence rules (every detection counts and
    a one-frame track is a face), with ``kw`` on top."""
    off = dict(
      min_confidence=0.0,
      keypoint_geometry=False,
      min_track_frames=1,
      min_track_seconds=0.0,
      min_track_density=0.0,
    )
    return cls(**{**off, **kw})

  def __post_init__(self):
    if self.size < 8:
      raise ValueError(f"size must be >= 8, got {self.size}")
    if not 0 <= self.margin <= 2:
      raise ValueError(f"margin must be in [0, 2], got {self.margin}")
    if self.min_frames < 1:
      raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")
    if self.image_format not in ("jpg", "png"):
      raise ValueError(
        f"image_format must be jpg or png, got {self.image_format!r}"
      )
    self.track_params()  # validates the tracking fields

  def track_params(self) -> tracking.TrackParams:
    return tracking.TrackParams(
      self.detect_every,
      self.max_gap,
      self.smooth,
      self.choose,
      min_confidence=self.min_confidence,
      keypoint_geometry=self.keypoint_geometry,
      min_track_frames=self.min_track_frames,
      min_track_seconds=self.min_track_seconds,
      min_track_density=self.min_track_density,
    )
