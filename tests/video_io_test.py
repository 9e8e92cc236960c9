"""The one video reader: a rotated phone video comes out upright, and the
same array, through ``prepare`` and through the ``video_folder`` builder;
errors name the file."""

import numpy as np
import pytest
from _helpers_video import build, write_folder, write_mp4

from stclr_jax import prepare, video_io
from stclr_jax.data.datasets import video_folder


def _upright_frames(n=4, w=32, h=48):
  """Portrait frames, a red top-left block and a blue bottom band (16 px
  blocks, so the codec keeps them)."""
  frames = np.full((n, h, w, 3), 60, np.uint8)
  frames[:, :16, :16] = (250, 30, 30)
  frames[:, -16:] = (30, 30, 250)
  return frames


class _SpyDetector(prepare.FaceDetector):
  """Keeps the frames ``prepare`` decoded; finds no face."""

  name = "spy"
  frames = []

  def detect_one(self, frame_HxWx3):
    _SpyDetector.frames.append(frame_HxWx3)
    return np.zeros((0, 5), np.float32)


def test_rotated_video_reads_upright_through_prepare_and_video_folder(tmp_path):
  # As a phone stores a portrait video: the sensor's landscape frames (the
  # picture turned 90 degrees clockwise) and a display matrix that turns
  # them back, 90 degrees counter-clockwise.
  upright = _upright_frames()
  write_mp4(
    tmp_path / "phone.mp4", np.rot90(upright, -1, axes=(1, 2)), rotation=90
  )
  (tmp_path / "l.csv").write_text("phone.mp4,happy\n")

  _SpyDetector.frames = []
  summary = prepare.prepare(
    str(tmp_path / "l.csv"),
    str(tmp_path / "out"),
    prepare.Settings(detector="spy", min_face=12),
    progress=False,
    detector_factory=_SpyDetector,
  )
  assert summary.records[0]["kind"] == "no_face"  # it decoded, no face
  seen_by_prepare = np.stack(_SpyDetector.frames)

  cfg = video_folder.VideoFolderConfig(
    name="phone", csv_path=str(tmp_path / "l.csv")
  )
  (row,) = (
    build("video_folder", tmp_path / "tfds", config=cfg)
    .as_dataset(split="train")
    .as_numpy_iterator()
  )
  assert row["video"].shape == upright.shape == (4, 48, 32, 3)
  np.testing.assert_array_equal(row["video"], seen_by_prepare)
  np.testing.assert_array_equal(
    row["video"], video_io.read_video(str(tmp_path / "phone.mp4"))[0]
  )
  err = np.abs(row["video"].astype(int) - upright).mean()
  assert err < 4, err  # lossy codec
  assert row["video"][0, 8, 8, 0] > 200 and row["video"][0, 40, 16, 2] > 200


def test_readers_name_the_file_and_the_problem(tmp_path):
  with pytest.raises(video_io.BadInputError, match="a.mp4: no such video"):
    video_io.read_any(str(tmp_path / "a.mp4"))
  (tmp_path / "a.gif").write_bytes(b"GIF89a")
  with pytest.raises(
    video_io.BadInputError,
    match="a.gif: neither a frame folder nor a video file",
  ):
    video_io.read_any(str(tmp_path / "a.gif"))
  with pytest.raises(video_io.BadInputError, match="a.gif: cannot decode"):
    video_io.read_video(str(tmp_path / "a.gif"))  # prepare: any name
  write_folder(tmp_path / "clip", np.zeros((3, 8, 6, 3), np.uint8))
  frames, fps = video_io.read_video(str(tmp_path / "clip"))
  assert frames.shape == (3, 8, 6, 3) and fps is None
  assert video_io.read_video(str(tmp_path / "clip"), 30.0)[1] == 30.0
  write_folder(tmp_path / "clip", np.zeros((1, 4, 4, 3), np.uint8))
  with pytest.raises(
    video_io.BadInputError, match="clip: frames have different sizes"
  ):
    video_io.read_frame_folder(str(tmp_path / "clip"))
  write_mp4(tmp_path / "v.mp4", np.zeros((5, 16, 32, 3), np.uint8))
  frames, fps = video_io.read_video_file(str(tmp_path / "v.mp4"))
  assert frames.shape == (5, 16, 32, 3) and fps == 25
