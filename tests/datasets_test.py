"""Dataset builders on tiny generated data: oulu_casia and video_folder,
their bad-input errors and skips, and per-process shards."""
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from stclr_jax.data import pipeline
from stclr_jax.data.datasets import oulu_casia, video_folder, video_io

EXPR_DIRS = ("Anger", "Happiness", "Surprise")


def _write_sequence(folder, n, size=(20, 16), seed=0):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(n):
    img = rng.integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(img).save(os.path.join(folder, f"{i:03d}.jpeg"),
                              quality=95)


def _oulu_tree(root, subjects=(1, 2, 3), image_set=None, modality="VL"):
  base = os.path.join(root, image_set) if image_set else root
  for s in subjects:
    for j, e in enumerate(EXPR_DIRS):
      _write_sequence(os.path.join(base, modality, "Strong", f"P{s:03d}", e),
                      3 + j + s, seed=s * 10 + j)
  return root


def _build(name, data_dir, manual_dir=None, config=None):
  kw = {"config": config} if config is not None else {}
  builder = tfds.builder(name, data_dir=str(data_dir), **kw)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir) if manual_dir else None))
  return builder


def test_oulu_casia_reads_the_distributed_layout(tmp_path):
  root = _oulu_tree(str(tmp_path / "oulu"))
  b = _build("oulu_casia/vis_strong", tmp_path / "tfds", root)
  assert b.info.splits["train"].num_examples == 9
  rows = list(b.as_dataset(split="train").as_numpy_iterator())
  by_id = {r["video_id"].decode(): r for r in rows}
  r = by_id["P002_happiness"]
  assert r["num_frames"] == 3 + 1 + 2 and r["video"].shape == (6, 16, 20, 3)
  assert r["subject_id"] == 2
  assert b.info.features["label"].int2str(r["label"]) == "happiness"
  # Frames are stored losslessly, in order.
  first = np.asarray(Image.open(os.path.join(
      root, "VL", "Strong", "P002", "Happiness", "000.jpeg")).convert("RGB"))
  np.testing.assert_array_equal(r["video"][0], first)
  assert sorted({int(r["subject_id"]) for r in rows}) == [1, 2, 3]
  assert b.info.metadata["skipped"] == []


def test_oulu_casia_cropped_image_set(tmp_path):
  root = str(tmp_path / "oulu")
  _oulu_tree(root, subjects=(1,), image_set="OriginalImg")
  _oulu_tree(root, subjects=(4, 5), image_set="Cropped")
  b = _build("oulu_casia/vis_strong_cropped", tmp_path / "tfds", root)
  ids = {int(r["subject_id"]) for r in b.as_dataset(split="train")
         .as_numpy_iterator()}
  assert ids == {4, 5}


def test_oulu_casia_bad_inputs_raise_or_are_recorded(tmp_path):
  root = _oulu_tree(str(tmp_path / "oulu"), subjects=(1, 2))
  strong = os.path.join(root, "VL", "Strong")
  os.makedirs(os.path.join(strong, "P001", "Contempt"))
  _write_sequence(os.path.join(strong, "P001", "Contempt"), 2)
  with pytest.raises(video_io.BadInputError,
                     match=r"P001/Contempt: unknown expression folder"):
    _build("oulu_casia/vis_strong", tmp_path / "t1", root)

  for f in os.listdir(os.path.join(strong, "P001", "Contempt")):
    os.remove(os.path.join(strong, "P001", "Contempt", f))
  os.rmdir(os.path.join(strong, "P001", "Contempt"))
  os.makedirs(os.path.join(strong, "P002", "Fear"))          # zero frames
  with pytest.raises(video_io.BadInputError, match=r"P002/Fear: zero frames"):
    _build("oulu_casia/vis_strong", tmp_path / "t2", root)

  bad = os.path.join(strong, "P002", "Fear", "000.jpeg")
  _write_sequence(os.path.join(strong, "P002", "Fear"), 1)
  data = open(bad, "rb").read()
  open(bad, "wb").write(data[: len(data) // 2])               # truncated
  with pytest.raises(video_io.BadInputError,
                     match=r"Fear/000.jpeg: cannot decode image"):
    _build("oulu_casia/vis_strong", tmp_path / "t3", root)

  cfg = oulu_casia.OuluCasiaConfig(name="vis_strong_skip", skip_bad=True)
  b = _build("oulu_casia", tmp_path / "t4", root, config=cfg)
  assert b.info.splits["train"].num_examples == 6
  skipped = b.info.metadata["skipped"]
  assert len(skipped) == 1 and skipped[0][0].endswith("P002/Fear")
  assert "cannot decode image" in skipped[0][1]


def test_oulu_casia_missing_folders_and_empty_split(tmp_path):
  with pytest.raises(video_io.BadInputError, match="no modality folder"):
    _build("oulu_casia/vis_strong", tmp_path / "t", tmp_path)
  os.makedirs(tmp_path / "e" / "VL" / "Strong")
  with pytest.raises(video_io.BadInputError, match="empty split"):
    _build("oulu_casia/vis_strong", tmp_path / "t2", tmp_path / "e")


def _write_mp4(path, frames, fps=25):
  import av
  with av.open(path, "w") as c:
    s = c.add_stream("mpeg4", rate=fps)
    s.width, s.height = frames.shape[2], frames.shape[1]
    s.pix_fmt = "yuv420p"
    for f in frames:
      for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


def test_video_folder_reads_videos_and_frame_folders(tmp_path):
  frames = np.zeros((7, 32, 48, 3), np.uint8)
  frames[:, :, :24] = 200
  _write_mp4(str(tmp_path / "a.mp4"), frames)
  _write_sequence(str(tmp_path / "clipB"), 4)
  (tmp_path / "list.csv").write_text(
      "path,label,subject,group\n"
      "a.mp4,happy,S2,train\n"
      "clipB,sad,S1,test\n")
  cfg = video_folder.VideoFolderConfig(name="mine",
                                       csv_path=str(tmp_path / "list.csv"))
  b = _build("video_folder", tmp_path / "tfds", config=cfg)
  assert b.info.features["label"].names == ["happy", "sad"]
  rows = {r["video_id"].decode(): r for r in
          b.as_dataset(split="train").as_numpy_iterator()}
  a = rows["a.mp4"]
  assert a["video"].shape == (7, 32, 48, 3) and a["num_frames"] == 7
  assert abs(int(a["video"][3, 16, 5, 0]) - 200) < 12    # lossy codec
  assert a["subject_id"] == 1 and rows["clipB"]["subject_id"] == 0
  assert rows["clipB"]["group"] == b"test"


def test_video_folder_bad_rows_and_files(tmp_path):
  _write_sequence(str(tmp_path / "ok"), 3)
  (tmp_path / "broken.mp4").write_bytes(b"\x00not a video" * 50)
  csv_path = tmp_path / "l.csv"
  csv_path.write_text("ok,happy\nmissing_label\n")
  cfg = video_folder.VideoFolderConfig(name="x", csv_path=str(csv_path))
  with pytest.raises(video_io.BadInputError, match=r"l.csv:2: expected"):
    _build("video_folder", tmp_path / "t1", config=cfg)
  csv_path.write_text("ok,happy\n,sad\n")
  with pytest.raises(video_io.BadInputError, match=r"l.csv:2: missing path"):
    _build("video_folder", tmp_path / "t2", config=cfg)
  csv_path.write_text("ok,happy\nbroken.mp4,sad\nnope.avi,sad\n")
  with pytest.raises(video_io.BadInputError,
                     match=r"l.csv:2: .*broken.mp4: cannot decode video"):
    _build("video_folder", tmp_path / "t3", config=cfg)
  cfg = video_folder.VideoFolderConfig(name="y", csv_path=str(csv_path),
                                       skip_bad=True)
  b = _build("video_folder", tmp_path / "t4", config=cfg)
  assert b.info.splits["train"].num_examples == 1
  reasons = [r for _, r in b.info.metadata["skipped"]]
  assert len(reasons) == 2 and "cannot decode video" in reasons[0]
  assert "no such video file" in reasons[1]
  csv_path.write_text("path,label\n")
  with pytest.raises(video_io.BadInputError, match="empty split"):
    video_folder.read_csv(str(csv_path))
  # A header maps columns by name; other named columns are ignored.
  csv_path.write_text("path,frames,label,fps,subject\nok,3,happy,25,P7\n"
                      "ok,3\n")
  with pytest.raises(video_io.BadInputError,
                     match=r"l.csv:3: 2 fields, the header has 5"):
    video_folder.read_csv(str(csv_path))
  csv_path.write_text("path,frames,label,fps,subject\nok,3,happy,25,P7\n")
  (row,) = video_folder.read_csv(str(csv_path))
  assert (row.path, row.label, row.subject, row.group) == (
      str(tmp_path / "ok"), "happy", "P7", "")
  csv_path.write_text("path,subject\nok,P7\n")
  with pytest.raises(video_io.BadInputError, match="no 'label' column"):
    video_folder.read_csv(str(csv_path))


def test_process_shards_are_disjoint_and_complete(tmp_path):
  root = _oulu_tree(str(tmp_path / "oulu"), subjects=(1, 2, 3, 4))
  b = _build("oulu_casia/vis_strong", tmp_path / "tfds", root)
  all_ids = {r["video_id"] for r in b.as_dataset(split="train")
             .as_numpy_iterator()}
  for count in (1, 3, 5):
    shards = [{r["video_id"] for r in b.as_dataset(
        split=pipeline.shard_for_process("train", i, count))
               .as_numpy_iterator()} for i in range(count)]
    assert set().union(*shards) == all_ids
    assert sum(len(s) for s in shards) == len(all_ids)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
  with pytest.raises(ValueError, match="outside"):
    pipeline.shard_for_process("train", 3, 3)
