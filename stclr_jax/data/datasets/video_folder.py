"""Bring your own videos: a dataset described by a CSV file.

Each row is ``path,label[,subject][,group]``; a header row starting with
``path`` is optional. With a header, columns are found by name and other
named columns are ignored, so the ``manifest.csv`` of
``python -m stclr_jax.data.prepare`` (``path,label,subject,frames_in,
frames_kept,fps``) is read as it is. ``path`` (relative to the CSV's folder, or absolute) is
a video file (mp4/avi/mov/mkv/webm, decoded with PyAV) or a folder of frames.
``label`` is a class name or an integer; the class list is the sorted set of
labels. ``subject`` identifies the person (for subject-independent folds) and
``group`` is any free text (session, split...). Use it as::

  cfg = VideoFolderConfig(name="ckplus", csv_path="/data/ckplus/videos.csv")
  builder = tfds.builder("video_folder", config=cfg, data_dir=...)
  builder.download_and_prepare()

Bad rows and files raise errors naming the CSV line or the file; with
``skip_bad=True`` they are skipped and recorded (printed, and kept in
``info.metadata["skipped"]``).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from stclr_jax.data.datasets import video_io


@dataclasses.dataclass
class VideoFolderConfig(tfds.core.BuilderConfig):
  csv_path: str = ""
  skip_bad: bool = False


def config_for_csv(csv_path: str, name: str | None = None,
                   skip_bad: bool = False) -> VideoFolderConfig:
  """A config named after the CSV (file stem + hash of its absolute path),
  so that different CSVs get different prepared data sets."""
  if not name:
    path = os.path.abspath(csv_path)
    stem = re.sub(r"[^a-z0-9_]", "_",
                  os.path.splitext(os.path.basename(path))[0].lower())
    name = f"{stem}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
  return VideoFolderConfig(name=name, csv_path=csv_path, skip_bad=skip_bad)


@dataclasses.dataclass(frozen=True)
class Row:
  line: int
  path: str
  label: str
  subject: str
  group: str


def read_csv(csv_path: str) -> list[Row]:
  """Parses and validates the CSV (paths resolved, fields non-empty)."""
  if not csv_path:
    raise ValueError("video_folder needs VideoFolderConfig(csv_path=...)")
  if not os.path.isfile(csv_path):
    raise video_io.BadInputError(f"{csv_path}: CSV file not found")
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
          raise video_io.BadInputError(
              f"{csv_path}:1: the header has no 'label' column: {rec}")
        columns = [names.index(k) if k in names else None
                   for k in ("path", "label", "subject", "group")]
        width = len(rec)
        continue
      if columns is not None:
        if len(rec) != width:
          raise video_io.BadInputError(
              f"{csv_path}:{line}: {len(rec)} fields, the header has "
              f"{width}")
        rec = [rec[i] if i is not None else "" for i in columns]
      elif not 2 <= len(rec) <= 4:
        raise video_io.BadInputError(
            f"{csv_path}:{line}: expected path,label[,subject][,group], got "
            f"{len(rec)} fields")
      if not rec[0] or not rec[1]:
        raise video_io.BadInputError(
            f"{csv_path}:{line}: missing {'path' if not rec[0] else 'label'}")
      rec += [""] * (4 - len(rec))
      rows.append(Row(line, os.path.join(base, rec[0]), rec[1], rec[2],
                      rec[3]))
  if not rows:
    raise video_io.BadInputError(f"{csv_path}: empty split, no rows")
  return rows


def _sorted_names(values):
  values = sorted(set(values))
  if all(v.lstrip("-").isdigit() for v in values):
    values = sorted(values, key=int)
  return values


class VideoFolder(tfds.core.GeneratorBasedBuilder):
  """Videos or frame folders listed in a CSV, with labels and subjects."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [VideoFolderConfig(name="default")]

  def _info(self):
    cfg = self.builder_config
    names = (_sorted_names(r.label for r in read_csv(cfg.csv_path))
             if cfg.csv_path else ["unknown"])
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video((None, None, None, 3)),
            "label": tfds.features.ClassLabel(names=names),
            "subject_id": tfds.features.Scalar(np.int32),
            "subject": tfds.features.Text(),
            "group": tfds.features.Text(),
            "num_frames": tfds.features.Scalar(np.int32),
            "video_id": tfds.features.Text(),
        }),
        supervised_keys=("video", "label"),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(
        read_csv(self.builder_config.csv_path))}

  def _generate_examples(self, rows):
    cfg = self.builder_config
    subjects = {s: i for i, s in enumerate(_sorted_names(
        r.subject for r in rows if r.subject))}
    skipped, count = [], 0
    for row in rows:
      try:
        video = video_io.read_any(row.path)
      except video_io.BadInputError as e:
        video_io.skip_or_raise(cfg.skip_bad, skipped, row.path,
                               video_io.BadInputError(
                                   f"{cfg.csv_path}:{row.line}: {e}"))
        continue
      count += 1
      key = f"{row.line:06d}"
      yield key, {"video": video, "label": row.label,
                  "subject_id": subjects.get(row.subject, -1),
                  "subject": row.subject, "group": row.group,
                  "num_frames": len(video),
                  "video_id": os.path.relpath(
                      row.path, os.path.dirname(os.path.abspath(
                          cfg.csv_path)))}
    self.info.metadata["skipped"] = [list(s) for s in skipped]
    video_io.report_skipped(skipped, f"video_folder/{cfg.name}")
    if not count:
      raise video_io.BadInputError(f"{cfg.csv_path}: empty split, no usable "
                                   "video")
