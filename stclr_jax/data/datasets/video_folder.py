"""Bring your own videos: a dataset described by a CSV file.

Each row is ``path[,label][,subject][,group]`` (the contract of
``stclr_jax.manifest``; a header maps columns by name, so the
``manifest.csv`` of ``python -m stclr_jax.prepare`` is read as it is).
``path`` (relative to the CSV's folder, or absolute) is a video file
(mp4/avi/mov/mkv/webm) or a folder of frames, read by ``stclr_jax.video_io``
(turned upright by the display matrix; truncated files rejected).
``label`` is a class name or an integer; the class list is the sorted set of
labels. ``subject`` identifies the person (for subject-independent folds) and
``group`` is any free text (session, split...); ``group_id`` numbers the
groups (-1 for none), and CL-MEx's multi-view positives take the videos of
a group as views of one moment (``pretext.clmex``).

Face keypoints, for MaskFN (``pretext.maskfn``): ``keypoints.npy`` inside a
frame folder (as ``python -m stclr_jax.prepare`` writes it), or
``<video>.keypoints.npy`` beside a video file: float32 ``(T, 5, 2)``, the
five MTCNN keypoints ``(x, y)`` in pixels of each frame (NaN where no face
was found). If any video has them, the data set has a ``keypoints``
feature; videos without get NaN (black MaskFN crops), counted in
``info.metadata["without_keypoints"]`` and printed. Use it as::

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

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {
    "1.2.0": "group_id (groups numbered, -1 for none); face keypoints "
    "(keypoints.npy) where the videos have them.",
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
    if rows is not None and any(keypoints_path(r.path) for r in rows):
      features["keypoints"] = tfds.features.Tensor(
        shape=(None, 5, 2), dtype=np.float32
      )
    features.update(
      subject_id=tfds.features.Scalar(np.int32),
      subject=tfds.features.Text(),
      group=tfds.features.Text(),
      group_id=tfds.features.Scalar(np.int32),
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
    groups = {
      g: i
      for i, g in enumerate(_sorted_names(r.group for r in rows if r.group))
    }
    labelled = manifest.is_labelled(rows)
    with_keypoints = any(keypoints_path(r.path) for r in rows)
    skipped, count, without = [], 0, []
    for row in rows:
      try:
        video = video_io.read_any(row.path)
        kp = read_keypoints(row.path, len(video)) if with_keypoints else None
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
      if with_keypoints:
        if kp is None:
          without.append(row.path)
          kp = np.full((len(video), 5, 2), np.nan, np.float32)
        record["keypoints"] = kp
      record.update(
        subject_id=subjects.get(row.subject, -1),
        subject=row.subject,
        group=row.group,
        group_id=groups.get(row.group, -1),
        num_frames=len(video),
        video_id=os.path.relpath(
          row.path, os.path.dirname(os.path.abspath(cfg.csv_path))
        ),
      )
      yield f"{row.line:06d}", record
    self.info.metadata["skipped"] = [list(s) for s in skipped]
    if without:
      self.info.metadata["without_keypoints"] = without
      print(
        f"video_folder/{cfg.name}: {len(without)} of {count} videos have no "
        f"keypoints file (NaN keypoints: black MaskFN crops), e.g. "
        f"{without[0]}"
      )
    video_io.report_skipped(skipped, f"video_folder/{cfg.name}")
    if not count:
      raise video_io.BadInputError(
        f"{cfg.csv_path}: empty split, no usable video"
      )


def keypoints_path(path: str) -> str:
  """The keypoints file of a video (a frame folder's ``keypoints.npy``, a
  video file's ``<file>.keypoints.npy``), or "" if it has none."""
  kp = (
    os.path.join(path, "keypoints.npy")
    if os.path.isdir(path)
    else path + ".keypoints.npy"
  )
  return kp if os.path.isfile(kp) else ""


def read_keypoints(path: str, num_frames: int) -> np.ndarray | None:
  """A video's keypoints, float32 ``(num_frames, 5, 2)``, or None if it has
  no keypoints file; a malformed file is a BadInputError naming it."""
  kp_path = keypoints_path(path)
  if not kp_path:
    return None
  try:
    kp = np.load(kp_path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise video_io.BadInputError(
      f"{kp_path}: unreadable keypoints: {e}"
    ) from None
  if kp.shape != (num_frames, 5, 2):
    raise video_io.BadInputError(
      f"{kp_path}: keypoints of shape {kp.shape}, expected ({num_frames}, 5,"
      " 2): five (x, y) per frame of the video"
    )
  return kp.astype(np.float32)
