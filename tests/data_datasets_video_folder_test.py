"""The ``video_folder`` builder: videos and frame folders listed in a CSV,
with labels or without (a data set for pretraining, that evaluation
refuses), bad rows and files raised or recorded, truncated videos
rejected."""

import numpy as np
import pytest
from _helpers_video import build, truncate_at_packet, write_mp4, write_sequence

from configs import finetune_synthetic, stclr_synthetic
from stclr_jax import video_io
from stclr_jax.data import input as input_lib
from stclr_jax.data.datasets import video_folder
from stclr_jax.evaluation import protocol


def test_video_folder_reads_videos_and_frame_folders(tmp_path):
  frames = np.zeros((7, 32, 48, 3), np.uint8)
  frames[:, :, :24] = 200
  write_mp4(tmp_path / "a.mp4", frames, codec="mpeg4")
  write_sequence(str(tmp_path / "clipB"), 4)
  (tmp_path / "list.csv").write_text(
    "path,label,subject,group\na.mp4,happy,S2,train\nclipB,sad,S1,test\n"
  )
  cfg = video_folder.VideoFolderConfig(
    name="mine", csv_path=str(tmp_path / "list.csv")
  )
  b = build("video_folder", tmp_path / "tfds", config=cfg)
  assert b.info.features["label"].names == ["happy", "sad"]
  assert b.info.supervised_keys == ("video", "label")
  rows = {
    r["video_id"].decode(): r
    for r in b.as_dataset(split="train").as_numpy_iterator()
  }
  assert [rows[k]["label"] for k in ("a.mp4", "clipB")] == [0, 1]
  a = rows["a.mp4"]
  assert a["video"].shape == (7, 32, 48, 3) and a["num_frames"] == 7
  assert abs(int(a["video"][3, 16, 5, 0]) - 200) < 12  # lossy codec
  assert a["subject_id"] == 1 and rows["clipB"]["subject_id"] == 0
  assert rows["clipB"]["group"] == b"test"


def test_unlabelled_csv_is_a_data_set_without_labels(tmp_path):
  """For pretraining: no label feature, no supervised keys; the pretraining
  input reads it, evaluation refuses it with its clear error, and a CSV
  with some labels missing is refused."""
  write_sequence(str(tmp_path / "a"), 5)
  write_sequence(str(tmp_path / "b"), 6, seed=1)
  csv_path = tmp_path / "l.csv"
  csv_path.write_text("path,subject\na,S1\nb,S2\n")
  data_dir = tmp_path / "tfds"
  b = build(
    "video_folder", data_dir, config=video_folder.config_for_csv(str(csv_path))
  )
  assert "label" not in b.info.features and b.info.supervised_keys is None
  rows = list(b.as_dataset(split="train").as_numpy_iterator())
  assert sorted(
    (r["video_id"], r["num_frames"], r["subject_id"]) for r in rows
  ) == [
    (b"a", 5, 0),
    (b"b", 6, 1),
  ]
  assert all("label" not in r for r in rows)

  c = stclr_synthetic.get_config("tiny=1")
  c.data.name, c.data.csv_path, c.data.data_dir = (
    "video_folder",
    str(csv_path),
    str(data_dir),
  )
  c.batch_size = 2
  batches, n = input_lib.pretrain_input(
    c, builder=b, process_index=0, process_count=1
  )
  batch = next(iter(batches.as_numpy_iterator()))
  assert n == 2 and set(batch) == {"view_a", "view_b", "subject_id"}
  assert batch["view_a"].shape[:2] == (2, c.data.clip_len)

  c = finetune_synthetic.get_config("tiny=1")
  c.data.name, c.data.csv_path, c.data.data_dir = (
    "video_folder",
    str(csv_path),
    str(data_dir),
  )
  with pytest.raises(ValueError, match="video_folder has no labels"):
    protocol.evaluate(c, str(tmp_path / "eval"))

  csv_path.write_text("path,label\na,happy\nb,\n")
  cfg = video_folder.VideoFolderConfig(name="mixed", csv_path=str(csv_path))
  with pytest.raises(
    video_io.BadInputError,
    match=r"l.csv:3: .*/b has no label, but .*l.csv:2: .*/a has one",
  ):
    build("video_folder", tmp_path / "t2", config=cfg)


def test_video_folder_bad_rows_and_files(tmp_path):
  write_sequence(str(tmp_path / "ok"), 3)
  (tmp_path / "broken.mp4").write_bytes(b"\x00not a video" * 50)
  csv_path = tmp_path / "l.csv"
  csv_path.write_text("ok,happy\nok,happy,S,g,more\n")
  cfg = video_folder.VideoFolderConfig(name="x", csv_path=str(csv_path))
  with pytest.raises(video_io.BadInputError, match=r"l.csv:2: expected"):
    build("video_folder", tmp_path / "t1", config=cfg)
  csv_path.write_text("ok,happy\n,sad\n")
  with pytest.raises(video_io.BadInputError, match=r"l.csv:2: missing path"):
    build("video_folder", tmp_path / "t2", config=cfg)
  csv_path.write_text("ok,happy\nbroken.mp4,sad\nnope.avi,sad\n")
  with pytest.raises(
    video_io.BadInputError, match=r"l.csv:2: .*broken.mp4: cannot decode video"
  ):
    build("video_folder", tmp_path / "t3", config=cfg)
  cfg = video_folder.VideoFolderConfig(
    name="y", csv_path=str(csv_path), skip_bad=True
  )
  b = build("video_folder", tmp_path / "t4", config=cfg)
  assert b.info.splits["train"].num_examples == 1
  reasons = [r for _, r in b.info.metadata["skipped"]]
  assert len(reasons) == 2 and "cannot decode video" in reasons[0]
  assert "no such video file" in reasons[1]
  with pytest.raises(ValueError, match="needs VideoFolderConfig"):
    video_folder.read_rows(video_folder.VideoFolderConfig(name="z"))


def test_video_folder_rejects_a_truncated_video(tmp_path):
  """An mp4 with its index first, cut after 8 of its 12 frames, decodes
  without an error; the frame count its container declares gives it away
  (the reader ``prepare`` uses, now the builder's too)."""
  frames = np.random.default_rng(0).integers(0, 256, (12, 32, 48, 3), np.uint8)
  write_mp4(tmp_path / "cut.mp4", frames, faststart=True)
  truncate_at_packet(tmp_path / "cut.mp4", 8)
  write_sequence(str(tmp_path / "ok"), 3)
  (tmp_path / "l.csv").write_text("ok,happy\ncut.mp4,sad\n")
  cfg = video_folder.VideoFolderConfig(
    name="x", csv_path=str(tmp_path / "l.csv")
  )
  with pytest.raises(
    video_io.BadInputError,
    match=r"l.csv:2: .*cut.mp4: truncated or corrupt: 8 of "
    r"the 12 frames",
  ):
    build("video_folder", tmp_path / "t1", config=cfg)
  cfg = video_folder.VideoFolderConfig(
    name="y", csv_path=str(tmp_path / "l.csv"), skip_bad=True
  )
  b = build("video_folder", tmp_path / "t2", config=cfg)
  assert b.info.splits["train"].num_examples == 1
  ((path, reason),) = b.info.metadata["skipped"]
  assert path.endswith("cut.mp4") and "truncated" in reason


def test_keypoints_files_and_group_ids(tmp_path, capsys):
  """A frame folder's keypoints.npy and a video's <file>.keypoints.npy make
  a ``keypoints`` feature; a video without gets NaN, counted; groups are
  numbered in name order, -1 for none."""
  write_sequence(str(tmp_path / "c1"), 4)
  write_sequence(str(tmp_path / "c2"), 3)
  write_mp4(tmp_path / "v.mp4", np.zeros((5, 16, 16, 3), np.uint8))
  kp1 = np.arange(40, dtype=np.float32).reshape(4, 5, 2)
  np.save(tmp_path / "c1" / "keypoints.npy", kp1)
  np.save(tmp_path / "v.mp4.keypoints.npy", np.ones((5, 5, 2), np.float32))
  (tmp_path / "list.csv").write_text(
    "path,subject,group\nc1,a,takeB\nc2,a,takeA\nv.mp4,b,\n"
  )
  cfg = video_folder.VideoFolderConfig(
    name="kp", csv_path=str(tmp_path / "list.csv")
  )
  b = build("video_folder", tmp_path / "tfds", config=cfg)
  rows = {
    r["video_id"].decode(): r
    for r in b.as_dataset(split="train").as_numpy_iterator()
  }
  np.testing.assert_array_equal(rows["c1"]["keypoints"], kp1)
  assert rows["c2"]["keypoints"].shape == (3, 5, 2)
  assert np.isnan(rows["c2"]["keypoints"]).all()
  assert (rows["v.mp4"]["keypoints"] == 1).all()
  assert [rows[k]["group_id"] for k in ("c1", "c2", "v.mp4")] == [1, 0, -1]
  assert "1 of 3 videos have no keypoints file" in capsys.readouterr().out
  # A keypoints file that does not fit its video names itself.
  np.save(tmp_path / "c2" / "keypoints.npy", np.zeros((2, 5, 2)))
  cfg = video_folder.VideoFolderConfig(
    name="kp_bad", csv_path=str(tmp_path / "list.csv")
  )
  with pytest.raises(
    video_io.BadInputError, match=r"c2/keypoints.npy: keypoints of shape"
  ):
    build("video_folder", tmp_path / "tfds2", config=cfg)
