"""The ``path,label[,subject][,group]`` CSV contract: header mapping by
column name, rows checked with errors naming the line, and a written
manifest read back."""

import pytest

from stclr_jax import manifest, video_io


def test_header_maps_columns_by_name_and_rows_are_checked(tmp_path):
  csv_path = tmp_path / "l.csv"
  csv_path.write_text("path,label\n")
  with pytest.raises(video_io.BadInputError, match="empty split"):
    manifest.read(str(csv_path))
  # A header maps columns by name; other named columns are ignored.
  csv_path.write_text("path,frames,label,fps,subject\nok,3,happy,25,P7\nok,3\n")
  with pytest.raises(
    video_io.BadInputError, match=r"l.csv:3: 2 fields, the header has 5"
  ):
    manifest.read(str(csv_path))
  csv_path.write_text("path,frames,label,fps,subject\nok,3,happy,25,P7\n")
  (row,) = manifest.read(str(csv_path))
  assert (row.line, row.path, row.label, row.subject, row.group) == (
    2,
    str(tmp_path / "ok"),
    "happy",
    "P7",
    "",
  )
  csv_path.write_text("path,subject\nok,P7\n")
  with pytest.raises(video_io.BadInputError, match="no 'label' column"):
    manifest.read(str(csv_path))
  with pytest.raises(video_io.BadInputError, match="nope.csv: CSV file not"):
    manifest.read(str(tmp_path / "nope.csv"))


def test_written_manifest_reads_back(tmp_path):
  path = str(tmp_path / "manifest.csv")
  manifest.write(
    path,
    manifest.PREPARED_COLUMNS,
    [["clips/a", "happy", "S1", 12, 10, "25"], ["/abs/b", "sad", "", 8, 8, ""]],
  )
  assert not (tmp_path / "manifest.csv.tmp").exists()
  rows = manifest.read(path)
  assert [(r.path, r.label, r.subject, r.group) for r in rows] == [
    (str(tmp_path / "clips" / "a"), "happy", "S1", ""),
    ("/abs/b", "sad", "", ""),
  ]
  manifest.write(path, manifest.COLUMNS, [["a", "x", "S", "train"]])
  (row,) = manifest.read(path)
  assert (row.label, row.subject, row.group) == ("x", "S", "train")
