"""Bring your own videos: a dataset described by a CSV file.

Each row is ``path[,label][,subject][,group]`` (the contract of
``stclr_jax.manifest``; a header maps columns by name, so the
``manifest.csv`` of ``python -m stclr_jax.prepare`` is read as it is).
``path`` (relative to the CSV's folder, or absolute) is a video file
(mp4/avi/mov/mkv/webm) or a folder of frames, read by ``stclr_jax.video_io``
(turned upright by the display matrix; truncated files rejected).
``label`` is a class name or an integer; the class list is the sorted set of
labels. ``subject`` identifies the person (for subject-independent folds) and
``group`` is any free text (session, split...). Use it as::

  cfg = VideoFolderConfig(name="ckplus", csv_path="/data/ckplus/videos.csv")
  builder = tfds.builder("video_folder", config=cfg, data_dir=...)
  builder.download_and_prepare()

A CSV without labels (no ``label`` column, or every label empty) makes an
unlabelled data set, for self-supervised pretraining: as the unlabelled
pools of ``synthetic_expressions``, it has no ``label`` feature at all and
no supervised keys, so nothing downstream can read a label (evaluation
refuses it with a clear error). Labels are all or nothing: a CSV with some
rows labelled and others not is an error naming one of each.

Bad rows and files raise errors naming the CSV line or the file; with
``skip_bad=True`` they are skipped and recorded (printed, and kept in
``info.metadata["skipped"]``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from stclr_jax import manifest, video_io


@dataclasses.dataclass
class VideoFolderConfig(tfds.core.BuilderConfig):
  csv_path: str = ""
  skip_bad: bool = False


def config_for_csv(
  csv_path: str, name: str | None = None, skip_bad: bool = False
) -> VideoFolderConfig:
  """A config named after the CSV (file stem + hash of its absolute path),
  so that different CSVs get different prepared data sets."""
  if not name:
    path = os.path.abspath(csv_path)
    stem = re.sub(
      r"[^a-z0-9_]", "_", os.path.splitext(os.path.basename(path))[0].lower()
    )
    name = f"{stem}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
  return VideoFolderConfig(name=name, csv_path=csv_path, skip_bad=skip_bad)


def read_rows(cfg: VideoFolderConfig) -> list[manifest.Row]:
  """The config's CSV, parsed and validated (see ``stclr_jax.manifest``)."""
  if not cfg.csv_path:
    raise ValueError("video_folder needs VideoFolderConfig(csv_path=...)")
  return manifest.read(cfg.csv_path)


def _sorted_names(values):
  values = sorted(set(values))
  if all(v.lstrip("-").isdigit() for v in values):
    values = sorted(values, key=int)
  return values


class VideoFolder(tfds.core.GeneratorBasedBuilder):
  """Videos or frame folders listed in a CSV, with labels (or none) and
  subjects."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.1.0": "Videos turned upright by their display matrix; truncated "
    "video files rejected (stclr_jax.video_io, as prepare).",
  }
  BUILDER_CONFIGS = [VideoFolderConfig(name="default")]

  def _info(self):
    cfg = self.builder_config
    rows = read_rows(cfg) if cfg.csv_path else None
    features = {"video": tfds.features.Video((None, None, None, 3))}
    labelled = rows is None or manifest.is_labelled(rows)
    if labelled:
      features["label"] = tfds.features.ClassLabel(
        names=_sorted_names(r.label for r in rows) if rows else ["unknown"]
      )
    features.update(
      subject_id=tfds.features.Scalar(np.int32),
      subject=tfds.features.Text(),
      group=tfds.features.Text(),
      num_frames=tfds.features.Scalar(np.int32),
      video_id=tfds.features.Text(),
    )
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(features),
      supervised_keys=("video", "label") if labelled else None,
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(read_rows(self.builder_config))}

  def _generate_examples(self, rows):
    cfg = self.builder_config
    subjects = {
      s: i
      for i, s in enumerate(_sorted_names(r.subject for r in rows if r.subject))
    }
    labelled = manifest.is_labelled(rows)
    skipped, count = [], 0
    for row in rows:
      try:
        video = video_io.read_any(row.path)
      except video_io.BadInputError as e:
        video_io.skip_or_raise(
          cfg.skip_bad,
          skipped,
          row.path,
          video_io.BadInputError(f"{cfg.csv_path}:{row.line}: {e}"),
        )
        continue
      count += 1
      record = {"video": video}
      if labelled:
        record["label"] = row.label
      record.update(
        subject_id=subjects.get(row.subject, -1),
        subject=row.subject,
        group=row.group,
        num_frames=len(video),
        video_id=os.path.relpath(
          row.path, os.path.dirname(os.path.abspath(cfg.csv_path))
        ),
      )
      yield f"{row.line:06d}", record
    self.info.metadata["skipped"] = [list(s) for s in skipped]
    video_io.report_skipped(skipped, f"video_folder/{cfg.name}")
    if not count:
      raise video_io.BadInputError(
        f"{cfg.csv_path}: empty split, no usable video"
      )
