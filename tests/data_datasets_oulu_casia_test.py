"""The ``oulu_casia`` builder on a tiny generated tree: the distributed
layout, the cropped image set, bad inputs raised or recorded; and
per-process shards of the built data set."""

import os

import numpy as np
import pytest
from _helpers_video import build, write_sequence
from PIL import Image

from stclr_jax import video_io
from stclr_jax.data import videos
from stclr_jax.data.datasets import oulu_casia

EXPR_DIRS = ("Anger", "Happiness", "Surprise")


def _oulu_tree(root, subjects=(1, 2, 3), image_set=None, modality="VL"):
  base = os.path.join(root, image_set) if image_set else root
  for s in subjects:
    for j, e in enumerate(EXPR_DIRS):
      write_sequence(
        os.path.join(base, modality, "Strong", f"P{s:03d}", e),
        3 + j + s,
        seed=s * 10 + j,
      )
  return root


def test_oulu_casia_reads_the_distributed_layout(tmp_path):
  root = _oulu_tree(str(tmp_path / "oulu"))
  b = build("oulu_casia/vis_strong", tmp_path / "tfds", root)
  assert b.info.splits["train"].num_examples == 9
  rows = list(b.as_dataset(split="train").as_numpy_iterator())
  by_id = {r["video_id"].decode(): r for r in rows}
  r = by_id["P002_happiness"]
  assert r["num_frames"] == 3 + 1 + 2 and r["video"].shape == (6, 16, 20, 3)
  assert r["subject_id"] == 2
  assert b.info.features["label"].int2str(r["label"]) == "happiness"
  # Frames are stored losslessly, in order.
  first = np.asarray(
    Image.open(
      os.path.join(root, "VL", "Strong", "P002", "Happiness", "000.jpeg")
    ).convert("RGB")
  )
  np.testing.assert_array_equal(r["video"][0], first)
  assert sorted({int(r["subject_id"]) for r in rows}) == [1, 2, 3]
  assert b.info.metadata["skipped"] == []


def test_oulu_casia_cropped_image_set(tmp_path):
  root = str(tmp_path / "oulu")
  _oulu_tree(root, subjects=(1,), image_set="OriginalImg")
  _oulu_tree(root, subjects=(4, 5), image_set="Cropped")
  b = build("oulu_casia/vis_strong_cropped", tmp_path / "tfds", root)
  ids = {
    int(r["subject_id"])
    for r in b.as_dataset(split="train").as_numpy_iterator()
  }
  assert ids == {4, 5}


def test_oulu_casia_bad_inputs_raise_or_are_recorded(tmp_path):
  root = _oulu_tree(str(tmp_path / "oulu"), subjects=(1, 2))
  strong = os.path.join(root, "VL", "Strong")
  os.makedirs(os.path.join(strong, "P001", "Contempt"))
  write_sequence(os.path.join(strong, "P001", "Contempt"), 2)
  with pytest.raises(
    video_io.BadInputError, match=r"P001/Contempt: unknown expression folder"
  ):
    build("oulu_casia/vis_strong", tmp_path / "t1", root)

  for f in os.listdir(os.path.join(strong, "P001", "Contempt")):
    os.remove(os.path.join(strong, "P001", "Contempt", f))
  os.rmdir(os.path.join(strong, "P001", "Contempt"))
  os.makedirs(os.path.join(strong, "P002", "Fear"))  # zero frames
  with pytest.raises(video_io.BadInputError, match=r"P002/Fear: zero frames"):
    build("oulu_casia/vis_strong", tmp_path / "t2", root)

  bad = os.path.join(strong, "P002", "Fear", "000.jpeg")
  write_sequence(os.path.join(strong, "P002", "Fear"), 1)
  data = open(bad, "rb").read()
  open(bad, "wb").write(data[: len(data) // 2])  # truncated
  with pytest.raises(
    video_io.BadInputError, match=r"Fear/000.jpeg: cannot decode image"
  ):
    build("oulu_casia/vis_strong", tmp_path / "t3", root)

  cfg = oulu_casia.OuluCasiaConfig(name="vis_strong_skip", skip_bad=True)
  b = build("oulu_casia", tmp_path / "t4", root, config=cfg)
  assert b.info.splits["train"].num_examples == 6
  skipped = b.info.metadata["skipped"]
  assert len(skipped) == 1 and skipped[0][0].endswith("P002/Fear")
  assert "cannot decode image" in skipped[0][1]


def test_oulu_casia_missing_folders_and_empty_split(tmp_path):
  with pytest.raises(video_io.BadInputError, match="no modality folder"):
    build("oulu_casia/vis_strong", tmp_path / "t", tmp_path)
  os.makedirs(tmp_path / "e" / "VL" / "Strong")
  with pytest.raises(video_io.BadInputError, match="empty split"):
    build("oulu_casia/vis_strong", tmp_path / "t2", tmp_path / "e")


def test_process_shards_are_disjoint_and_complete(tmp_path):
  root = _oulu_tree(str(tmp_path / "oulu"), subjects=(1, 2, 3, 4))
  b = build("oulu_casia/vis_strong", tmp_path / "tfds", root)
  all_ids = {
    r["video_id"] for r in b.as_dataset(split="train").as_numpy_iterator()
  }
  for count in (1, 3, 5):
    shards = [
      {
        r["video_id"]
        for r in b.as_dataset(
          split=videos.shard_for_process("train", i, count)
        ).as_numpy_iterator()
      }
      for i in range(count)
    ]
    assert set().union(*shards) == all_ids
    assert sum(len(s) for s in shards) == len(all_ids)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
  with pytest.raises(ValueError, match="outside"):
    videos.shard_for_process("train", 3, 3)
