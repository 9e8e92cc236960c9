"""The inputs of ``prepare``: the videos and frame folders under a folder or
listed in a CSV, their labels (or none), their output names (ids), and
fingerprints that tell whether an input changed since an earlier run.

Labels are all or nothing (as in ``stclr_jax.manifest``): videos at the top
of a folder have none, videos under ``<label>/`` have one, and a folder
with both is refused, naming one of each (nothing is dropped silently)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

from stclr_jax import manifest, video_io
from stclr_jax.video_io import BadInputError


@dataclasses.dataclass(frozen=True)
class Item:
  """One input to prepare."""

  source: str  # absolute path of the video file or frame folder
  id: str  # output name: clips/<id>, .prepare/<id>.json
  label: str  # "" for an unlabelled input
  subject: str = ""
  group: str = ""


def _make_id(rel: str, is_dir: bool) -> str:
  parts = [
    "__" if p == ".." else p
    for p in rel.replace(os.sep, "/").split("/")
    if p not in ("", ".")
  ]
  if not is_dir:
    parts[-1] = os.path.splitext(parts[-1])[0]
  return "/".join(re.sub(r"[^\w.\-]", "_", p) for p in parts)


def _dedupe_ids(items: list[Item]) -> list[Item]:
  """Two inputs named alike (a.mp4, a.avi) get the extension in their ids;
  the same input twice is an error."""
  sources, counts = set(), {}
  for it in items:
    if it.source in sources:
      raise BadInputError(f"{it.source}: listed twice in --input")
    sources.add(it.source)
    counts[it.id] = counts.get(it.id, 0) + 1
  return [
    dataclasses.replace(
      it, id=it.id + "_" + os.path.splitext(it.source)[1].lstrip(".").lower()
    )
    if counts[it.id] > 1 and not os.path.isdir(it.source)
    else it
    for it in items
  ]


def _from_csv(path: str) -> list[Item]:
  base = os.path.dirname(os.path.abspath(path))
  items = []
  for r in manifest.read(path):
    src = os.path.normpath(r.path)
    items.append(
      Item(
        src,
        _make_id(os.path.relpath(src, base), os.path.isdir(src)),
        r.label,
        r.subject,
        r.group,
      )
    )
  return _dedupe_ids(items)


def find_inputs(path: str) -> tuple[list[Item], list[str]]:
  """The videos to prepare, and the files under a folder that were ignored
  (neither video nor frame).

  ``path`` is a CSV (``stclr_jax.manifest``; with or without labels) or a
  folder laid out as ``<label>/[<subject>/]<video file or frame folder>``,
  or holding unlabelled videos and frame folders at its top (label ``""``);
  not both (an error names one of each).
  """
  if os.path.isfile(path) and path.lower().endswith(".csv"):
    return _from_csv(path), []
  if not os.path.isdir(path):
    raise BadInputError(
      f"{path}: --input must be a folder or a .csv file"
      + ("" if os.path.exists(path) else " (it does not exist)")
    )
  root = os.path.abspath(path)
  items, ignored = [], []

  def add(full, is_dir):
    rel = os.path.relpath(full, root)
    parts = rel.split(os.sep)
    items.append(
      Item(
        full,
        _make_id(rel, is_dir),
        parts[0] if len(parts) > 1 else "",  # at the top: no label
        parts[1] if len(parts) > 2 else "",
      )
    )

  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    files = sorted(f for f in filenames if not f.startswith("."))
    frames = [f for f in files if f.lower().endswith(video_io.FRAME_EXTENSIONS)]
    if frames and dirpath != root:
      add(dirpath, True)
    for f in files:
      if f.lower().endswith(video_io.VIDEO_EXTENSIONS):
        add(os.path.join(dirpath, f), False)
      elif f not in frames:
        ignored.append(os.path.join(dirpath, f))
    if frames and dirpath == root:
      ignored += [os.path.join(root, f) for f in frames]
  if not items:
    raise BadInputError(
      f"{path}: no videos ({'/'.join(video_io.VIDEO_EXTENSIONS)}) or frame "
      "folders found"
    )
  _check_labels(path, items)
  return _dedupe_ids(items), ignored


def _check_labels(path: str, items: list[Item]) -> None:
  """A folder's videos are all in label folders, or all at its top."""
  with_label = next((it for it in items if it.label), None)
  without = next((it for it in items if not it.label), None)
  if with_label and without:
    raise BadInputError(
      f"{path}: some videos are in label folders and some are not: "
      f"{without.source} is at the top of --input (no label), "
      f"{with_label.source} is in the label folder {with_label.label!r}; "
      "labels are all or nothing: put every video in a folder named after "
      "its label (<label>/[<subject>/]<video>; a labelled data set, as "
      "evaluation needs), or, for pretraining, give the unlabelled videos "
      "an --input of their own"
    )


def fingerprint(path: str) -> str:
  """Size and modification time of a file, or of every frame of a folder."""
  if os.path.isdir(path):
    entries = [
      (os.path.basename(p), os.stat(p).st_size, os.stat(p).st_mtime_ns)
      for p in video_io.list_frames(path)
    ]
  else:
    st = os.stat(path)
    entries = [(st.st_size, st.st_mtime_ns)]
  return hashlib.sha1(json.dumps(entries).encode()).hexdigest()
