"""``prepare``'s inputs: a folder layout or a CSV, with labels or without,
ids, ignored files, fingerprints, and bad inputs (mixed labelled and
unlabelled videos among them) named in the errors."""

import os

import numpy as np
import pytest
from _helpers_video import write_folder

from stclr_jax import video_io
from stclr_jax.prepare import sources


def test_folder_layout_gives_labels_subjects_and_ids(tmp_path):
  write_folder(
    tmp_path / "happy" / "S1" / "take 1", np.zeros((2, 8, 8, 3), np.uint8)
  )
  os.makedirs(tmp_path / "sad")
  (tmp_path / "sad" / "v.mp4").write_bytes(b"x")
  (tmp_path / "sad" / "v.avi").write_bytes(b"x")
  (tmp_path / "sad" / "notes.txt").write_text("not a video")
  items, ignored = sources.find_inputs(str(tmp_path))
  assert [(it.id, it.label, it.subject) for it in items] == [
    ("happy/S1/take_1", "happy", "S1"),
    ("sad/v_avi", "sad", ""),
    ("sad/v_mp4", "sad", ""),
  ]
  assert ignored == [str(tmp_path / "sad" / "notes.txt")]


def test_videos_at_the_top_have_no_label(tmp_path):
  (tmp_path / "a.mp4").write_bytes(b"x")
  write_folder(tmp_path / "take 1", np.zeros((2, 8, 8, 3), np.uint8))
  (tmp_path / "notes.txt").write_text("not a video")
  items, ignored = sources.find_inputs(str(tmp_path))
  assert [(it.id, it.label, it.subject) for it in items] == [
    ("a", "", ""),
    ("take_1", "", ""),
  ]
  assert ignored == [str(tmp_path / "notes.txt")]
  # A CSV without a label column.
  (tmp_path / "l.csv").write_text("path,subject\na.mp4,S1\ntake 1,S2\n")
  items, _ = sources.find_inputs(str(tmp_path / "l.csv"))
  assert [(it.id, it.label, it.subject) for it in items] == [
    ("a", "", "S1"),
    ("take_1", "", "S2"),
  ]


def test_labelled_and_unlabelled_videos_together_are_refused(tmp_path):
  (tmp_path / "top.mp4").write_bytes(b"x")
  os.makedirs(tmp_path / "happy")
  (tmp_path / "happy" / "v.mp4").write_bytes(b"x")
  with pytest.raises(
    video_io.BadInputError,
    match=r"some videos are in label folders and some are not: .*top.mp4 is "
    r"at the top of --input \(no label\), .*happy/v.mp4 is in the label "
    r"folder 'happy'; .*an --input of their own",
  ):
    sources.find_inputs(str(tmp_path))
  (tmp_path / "l.csv").write_text("path,label\ntop.mp4,\nhappy/v.mp4,happy\n")
  with pytest.raises(
    video_io.BadInputError,
    match=r"l.csv:2: .*top.mp4 has no label, but .*l.csv:3: .*v.mp4 has one",
  ):
    sources.find_inputs(str(tmp_path / "l.csv"))


def test_fingerprint_changes_with_the_input(tmp_path):
  folder = tmp_path / "clip"
  write_folder(folder, np.zeros((2, 8, 8, 3), np.uint8))
  before = sources.fingerprint(str(folder))
  assert sources.fingerprint(str(folder)) == before
  write_folder(folder, np.zeros((3, 8, 8, 3), np.uint8))
  assert sources.fingerprint(str(folder)) != before


def test_bad_inputs_name_the_file(tmp_path):
  with pytest.raises(video_io.BadInputError, match="no videos"):
    sources.find_inputs(str(tmp_path))
  (tmp_path / "l.csv").write_text("a.mp4,x\nb.mp4,x,S,g,more\n")
  with pytest.raises(video_io.BadInputError, match=r"l.csv:2: expected"):
    sources.find_inputs(str(tmp_path / "l.csv"))
  (tmp_path / "l.csv").write_text("a.mp4,x\n./a.mp4,y\n")
  with pytest.raises(video_io.BadInputError, match="a.mp4: listed twice"):
    sources.find_inputs(str(tmp_path / "l.csv"))
  (tmp_path / "l.csv").write_text("a.mp4,x\na.avi,y\n")
  ids = [it.id for it in sources.find_inputs(str(tmp_path / "l.csv"))[0]]
  assert ids == ["a_mp4", "a_avi"]
