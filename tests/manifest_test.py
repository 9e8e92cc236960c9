"""The ``path[,label][,subject][,group]`` CSV contract: header mapping by
column name, rows checked with errors naming the line, labels on every row
or on none, and a written manifest read back."""

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
  csv_path.write_text("ok,happy\nok,happy,P7,g,more\n")
  with pytest.raises(
    video_io.BadInputError,
    match=r"l.csv:2: expected path\[,label\]\[,subject\]\[,group\], got 5",
  ):
    manifest.read(str(csv_path))
  csv_path.write_text("ok,happy\n,sad\n")
  with pytest.raises(video_io.BadInputError, match=r"l.csv:2: missing path"):
    manifest.read(str(csv_path))
  with pytest.raises(video_io.BadInputError, match="nope.csv: CSV file not"):
    manifest.read(str(tmp_path / "nope.csv"))


def test_labels_are_on_every_row_or_on_none(tmp_path):
  csv_path = tmp_path / "l.csv"
  for text in (
    "path,subject\na,P7\nb,\n",  # no label column
    "a\nb,,P8\n",  # no header: path[,label][,subject]
    "path,label,subject\na,,P7\nb,,\n",  # every label empty
  ):
    csv_path.write_text(text)
    rows = manifest.read(str(csv_path))
    assert [(r.path, r.label) for r in rows] == [
      (str(tmp_path / "a"), ""),
      (str(tmp_path / "b"), ""),
    ], text
    assert not manifest.is_labelled(rows)
  assert manifest.is_labelled(manifest.read(_write(csv_path, "a,x\nb,y\n")))
  with pytest.raises(
    video_io.BadInputError,
    match=r"l.csv:1: the header has no 'label' column but other columns "
    r"\['Lable'\]: name the label column 'label'",
  ):
    manifest.read(_write(csv_path, "path,Lable,subject\na,x,S\n"))
  for text, unlabelled, labelled in (
    ("a,happy\nb\n", "2: .*/b", "1: .*/a has one \\('happy'\\)"),
    ("path,label\na,\nb,sad\n", "2: .*/a", "3: .*/b has one \\('sad'\\)"),
  ):
    with pytest.raises(
      video_io.BadInputError,
      match=rf"l.csv:{unlabelled} has no label, but .*l.csv:{labelled}; "
      "labels are all or nothing: give every row a label .* in a CSV of "
      "their own",
    ):
      manifest.read(_write(csv_path, text))


def _write(path, text):
  path.write_text(text)
  return str(path)


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
  # prepare's manifest of unlabelled videos: empty labels.
  manifest.write(
    path, manifest.PREPARED_COLUMNS, [["clips/a", "", "", 12, 10, "25"]]
  )
  (row,) = manifest.read(path)
  assert (row.path, row.label) == (str(tmp_path / "clips" / "a"), "")
