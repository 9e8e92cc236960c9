"""The CSV contract between ``prepare`` and the ``video_folder`` data set.

A manifest lists videos, one a row: ``path,label[,subject][,group]``; a
header row starting with ``path`` is optional. With a header, columns are
found by name and other named columns are ignored, so the ``manifest.csv``
that ``python -m stclr_jax.prepare`` writes (:data:`PREPARED_COLUMNS`) is
read as it is. ``path`` is relative to the CSV's folder, or absolute.
``prepare`` also reads its ``--input`` CSV with :func:`read`.
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
  """Parses and validates the CSV (paths resolved, path and label
  non-empty); errors name the file and the line."""
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
        if "label" not in names:
          raise BadInputError(
            f"{csv_path}:1: the header has no 'label' column: {rec}"
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
      elif not 2 <= len(rec) <= 4:
        raise BadInputError(
          f"{csv_path}:{line}: expected path,label[,subject][,group], got "
          f"{len(rec)} fields"
        )
      if not rec[0] or not rec[1]:
        raise BadInputError(
          f"{csv_path}:{line}: missing {'path' if not rec[0] else 'label'}"
        )
      rec += [""] * (4 - len(rec))
      rows.append(Row(line, os.path.join(base, rec[0]), rec[1], rec[2], rec[3]))
  if not rows:
    raise BadInputError(f"{csv_path}: empty split, no rows")
  return rows


def write(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> None:
  """Writes a CSV with a header row, atomically (a ``.tmp`` file renamed:
  a reader never sees half a file)."""
  tmp = path + ".tmp"
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  os.replace(tmp, path)
