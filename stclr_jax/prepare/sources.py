"""The inputs of ``prepare``: the videos and frame folders under a folder or
listed in a CSV, their output names (ids), and fingerprints that tell
whether an input changed since an earlier run."""

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
  label: str
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

  ``path`` is a CSV (``stclr_jax.manifest``) or a folder laid out as
  ``<label>/[<subject>/]<video file or frame folder>``.
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
    if len(parts) < 2:
      raise BadInputError(
        f"{full}: at the top of --input; put each video in a folder named "
        "after its label (<label>/[<subject>/]<video>) or list it in a CSV"
      )
    items.append(
      Item(
        full,
        _make_id(rel, is_dir),
        parts[0],
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
  return _dedupe_ids(items), ignored


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
