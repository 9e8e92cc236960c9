"""The CSV contract between ``prepare`` and the ``video_folder`` data set.

A manifest lists videos, one a row: ``path[,label][,subject][,group]``; a
header row starting with ``path`` is optional. With a header, columns are
found by name and other named columns are ignored, so the ``manifest.csv``
that ``python -m stclr_jax.prepare`` writes (:data:`PREPARED_COLUMNS`) is
read as it is. ``path`` is relative to the CSV's folder, or absolute.
``prepare`` also reads its ``--input`` CSV with :func:`read`.

Labels are all or nothing: either every row has one (a labelled data set,
for evaluation and supervised training) or none has (no ``label`` column,
or every label empty: an unlabelled data set, for self-supervised
pretraining). A CSV where some rows have a label and others not is refused
(:func:`read` names a row of each kind), and so is a header without a
``label`` column but with columns other than those of :data:`COLUMNS` and
:data:`PREPARED_COLUMNS` (a misnamed label column), so that no label and
no video is silently dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Iterable, Sequence

from stclr_jax.video_io import BadInputError

COLUMNS = ("path", "label", "subject", "group")
PREPARED_COLUMNS = (
  "path",
  "label",
  "subject",
  "frames_in",
  "frames_kept",
  "fps",
)


@dataclasses.dataclass(frozen=True)
class Row:
  line: int  # in the CSV file, from 1
  path: str  # resolved against the CSV's folder
  label: str
  subject: str
  group: str


def read(csv_path: str) -> list[Row]:
  """Parses and validates the CSV (paths resolved and non-empty; labels on
  every row or on none, see the module's docstring); errors name the file
  and the line. Rows without a label have ``label == ""``."""
  if not os.path.isfile(csv_path):
    raise BadInputError(f"{csv_path}: CSV file not found")
  base = os.path.dirname(os.path.abspath(csv_path))
  rows = []
  columns = None  # positions of path, label, subject, group (header)
  with open(csv_path, newline="", encoding="utf-8") as f:
    for line, rec in enumerate(csv.reader(f), start=1):
      if not rec or all(not c.strip() for c in rec):
        continue
      rec = [c.strip() for c in rec]
      if line == 1 and rec[0].lower() == "path":
        names = [c.lower() for c in rec]
        known = (*COLUMNS, *PREPARED_COLUMNS)
        unknown = [c for c in rec if c.lower() not in known]
        if "label" not in names and unknown:
          # A misnamed label column would drop every label silently.
          raise BadInputError(
            f"{csv_path}:1: the header has no 'label' column but other "
            f"columns {unknown}: name the label column 'label', or, for "
            "unlabelled videos, keep only path[,subject][,group]"
          )
        columns = [names.index(k) if k in names else None for k in COLUMNS]
        width = len(rec)
        continue
      if columns is not None:
        if len(rec) != width:
          raise BadInputError(
            f"{csv_path}:{line}: {len(rec)} fields, the header has {width}"
          )
        rec = [rec[i] if i is not None else "" for i in columns]
      elif len(rec) > 4:
        raise BadInputError(
          f"{csv_path}:{line}: expected path[,label][,subject][,group], got "
          f"{len(rec)} fields"
        )
      if not rec[0]:
        raise BadInputError(f"{csv_path}:{line}: missing path")
      rec += [""] * (4 - len(rec))
      rows.append(Row(line, os.path.join(base, rec[0]), rec[1], rec[2], rec[3]))
  if not rows:
    raise BadInputError(f"{csv_path}: empty split, no rows")
  _check_labels(csv_path, rows)
  return rows


def is_labelled(rows: Sequence[Row]) -> bool:
  """Whether the rows (of :func:`read`: all labelled or none) have labels."""
  return any(r.label for r in rows)


def _check_labels(csv_path: str, rows: Sequence[Row]) -> None:
  with_label = next((r for r in rows if r.label), None)
  without = next((r for r in rows if not r.label), None)
  if with_label and without:
    raise BadInputError(
      f"{csv_path}:{without.line}: {without.path} has no label, but "
      f"{csv_path}:{with_label.line}: {with_label.path} has one "
      f"({with_label.label!r}); labels are all or nothing: give every row a "
      "label (a labelled data set, as evaluation needs), or, for "
      "pretraining, list the unlabelled videos in a CSV of their own"
    )


def write(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> None:
  """Writes a CSV with a header row, atomically (a ``.tmp`` file renamed:
  a reader never sees half a file)."""
  tmp = path + ".tmp"
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  os.replace(tmp, path)
