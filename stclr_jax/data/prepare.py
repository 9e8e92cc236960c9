r"""Bring your own videos: face-cropped clips and a manifest from raw videos.

  python -m stclr_jax.data.prepare --input=/data/raw --output=/data/faces \
      [--size=224 --margin=0.2 --workers=2 --detect_every=1 --max_gap=12]

``--input`` is a CSV of ``path,label[,subject][,group]`` rows (as for the
``video_folder`` data set; paths relative to the CSV), or a folder laid out
as ``<label>/[<subject>/]<video file or frame folder>``. Videos
(mp4/avi/mov/mkv/webm) are decoded with PyAV, frame folders
(jpg/png/bmp) with Pillow. Each video's face is found with a detector that
ships its weights in its wheel (MTCNN by default, see ``faces.py``) and
followed over time (``face_track.py``); a square box around it, enlarged by
``margin`` of the face size on every side, is cropped, resized to
``size`` x ``size`` and written as a frame folder. ``--output`` receives:

* ``clips/<id>/000000.jpg ...``: the face clips;
* ``manifest.csv``: ``path,label,subject,frames_in,frames_kept,fps``
  (``fps`` is empty for frame folders unless ``--folder_fps`` is given);
* ``videos.csv``: ``path,label,subject,group``, what the ``video_folder``
  builder reads (``--config.data.name=video_folder
  --config.data.csv_path=<output>/videos.csv``; it takes at most these four
  columns, hence a second file);
* ``skipped.csv``: ``path,kind,reason`` for every input that was not
  written (``corrupt``, ``no_face``, ``too_short``, ``error``);
* ``.prepare/<id>.json``: per input, what was done (boxes, frame states,
  counts) and for which input file and settings. A rerun reuses every
  record whose input file and settings are unchanged, so an interrupted
  run resumes where it stopped.
"""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import traceback
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from stclr_jax.data import face_track
from stclr_jax.data import faces as faces_lib
from stclr_jax.data import raw_inputs
from stclr_jax.data.raw_inputs import Item
from stclr_jax.data.datasets import video_io

STATE_DIR, CLIPS_DIR = ".prepare", "clips"
KINDS = ("corrupt", "no_face", "too_short", "error")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that decides the output; a change redoes a video."""
  size: int = 224
  margin: float = 0.2
  detector: str = "mtcnn"
  min_face: int = 40
  detect_every: int = 1
  max_gap: int = 12
  smooth: float = 2.0
  choose: str = "auto"
  min_frames: int = 1
  image_format: str = "jpg"
  quality: int = 95
  folder_fps: float = 0.0

  def __post_init__(self):
    if self.size < 8:
      raise ValueError(f"size must be >= 8, got {self.size}")
    if not 0 <= self.margin <= 2:
      raise ValueError(f"margin must be in [0, 2], got {self.margin}")
    if self.min_frames < 1:
      raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")
    if self.image_format not in ("jpg", "png"):
      raise ValueError(f"image_format must be jpg or png, got "
                       f"{self.image_format!r}")
    self.track_params()  # validates the tracking fields

  def track_params(self) -> face_track.TrackParams:
    return face_track.TrackParams(self.detect_every, self.max_gap,
                                  self.smooth, self.choose)


def _count_frames(folder: str) -> int:
  return len(video_io.list_frames(folder)) if os.path.isdir(folder) else -1


def _skip(output: str, record: dict, kind: str, reason: str) -> dict:
  """Records a skip; a clip left by an earlier run of this input goes."""
  shutil.rmtree(os.path.join(output, CLIPS_DIR, record["id"]),
                ignore_errors=True)
  record.update(status="skipped", kind=kind, reason=reason)
  return _save(output, record)


def process(item: Item, settings: Settings, detector, output: str) -> dict:
  """Prepares one video; returns its record (also written to
  ``.prepare/<id>.json``; never raises for bad input)."""
  record = {"id": item.id, "source": item.source, "label": item.label,
            "subject": item.subject, "group": item.group,
            "settings": dataclasses.asdict(settings),
            "frames_in": 0, "frames_kept": 0, "fps": None}
  try:
    record["source_fingerprint"] = raw_inputs.fingerprint(item.source)
    frames, fps = raw_inputs.decode(item.source, settings.folder_fps)
  except (video_io.BadInputError, OSError) as e:
    return _skip(output, record, "corrupt", str(e))
  record.update(frames_in=len(frames), fps=fps)
  track = face_track.follow(
      len(frames), lambda idx: detector.detect([frames[i] for i in idx]),
      settings.track_params())
  kept = np.flatnonzero(track.kept)
  record.update(
      frames_kept=int(len(kept)), faces_seen=track.faces_seen,
      frames_examined=track.frames_examined,
      gaps_bridged=track.gaps_bridged, frames_bridged=track.frames_bridged,
      segments_cut=track.segments_cut, frames_cut=track.frames_cut,
      states=track.states,
      boxes=[None if np.isnan(b[0]) else [round(float(v), 2) for v in b]
             for b in track.boxes_Tx3])
  if not track.faces_seen:
    return _skip(output, record, "no_face", f"no face found "
                 f"({track.frames_examined} of {len(frames)} frames "
                 f"examined, detector {settings.detector})")
  if len(kept) < settings.min_frames:
    return _skip(output, record, "too_short", f"{len(kept)} frames with a "
                 f"face, fewer than min_frames={settings.min_frames}")
  final = os.path.join(output, CLIPS_DIR, item.id)
  partial = final + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  ext = settings.image_format
  kw = {"quality": settings.quality} if ext == "jpg" else {}
  for n, t in enumerate(kept):
    face = raw_inputs.crop(frames[t], track.boxes_Tx3[t], settings.margin,
                           settings.size)
    Image.fromarray(face).save(os.path.join(partial, f"{n:06d}.{ext}"), **kw)
  shutil.rmtree(final, ignore_errors=True)
  os.replace(partial, final)
  record.update(status="prepared", path=f"{CLIPS_DIR}/{item.id}")
  return _save(output, record)


def _state_path(output: str, item_id: str) -> str:
  return os.path.join(output, STATE_DIR, item_id + ".json")


def _save(output: str, record: dict) -> dict:
  path = _state_path(output, record["id"])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(record, f)
  os.replace(path + ".tmp", path)
  return record


def load_done(item: Item, settings: Settings, output: str) -> dict | None:
  """The record of an earlier run, if it is complete and still valid for
  this input file and these settings."""
  try:
    with open(_state_path(output, item.id), encoding="utf-8") as f:
      rec = json.load(f)
    if (rec.get("source_fingerprint") != raw_inputs.fingerprint(item.source)
        or rec.get("settings") != dataclasses.asdict(settings)
        or rec.get("source") != item.source):
      return None
  except (OSError, ValueError, video_io.BadInputError):
    return None
  if rec.get("status") == "prepared" and _count_frames(os.path.join(
      output, CLIPS_DIR, item.id)) != rec["frames_kept"]:
    return None
  # Labels may change without redoing the crops.
  rec.update(label=item.label, subject=item.subject, group=item.group)
  return rec


# -- parallel workers ---------------------------------------------------------

_WORKER = {}


def _detector(settings: Settings, factory):
  """This process's detector, built once (per settings and factory)."""
  key = (settings.detector, settings.min_face, factory)
  if key not in _WORKER:
    _WORKER.clear()
    try:
      _WORKER[key] = (factory(settings.min_face) if factory is not None else
                      faces_lib.make_detector(settings.detector,
                                              settings.min_face))
    except Exception as e:
      raise DetectorError(f"cannot create the {settings.detector!r} face "
                          f"detector: {type(e).__name__}: {e}") from e
  return _WORKER[key]


class DetectorError(RuntimeError):
  """The face detector could not be created: nothing can be prepared."""


def _init_worker(threads: int):
  for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
              "TF_NUM_INTEROP_THREADS"):
    os.environ[var] = str(threads if var != "TF_NUM_INTEROP_THREADS" else 1)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _run_one(item: Item, settings: Settings, output: str, factory) -> dict:
  detector = _detector(settings, factory)
  try:
    return process(item, settings, detector, output)
  except Exception as e:  # a bug or an odd file: recorded, run continues
    traceback.print_exc()
    return {"id": item.id, "source": item.source, "label": item.label,
            "subject": item.subject, "group": item.group, "status": "skipped",
            "kind": "error", "frames_in": 0, "frames_kept": 0, "fps": None,
            "reason": f"unexpected {type(e).__name__}: {e}"}


# -- the run ------------------------------------------------------------------

@dataclasses.dataclass
class Summary:
  records: list[dict]
  reused: int
  ignored: list[str]
  output: str

  @property
  def prepared(self) -> list[dict]:
    return [r for r in self.records if r["status"] == "prepared"]

  @property
  def skipped(self) -> list[dict]:
    return [r for r in self.records if r["status"] != "prepared"]

  def text(self) -> str:
    p, s = self.prepared, self.skipped
    tot = lambda k, rs=p: sum(r.get(k, 0) for r in rs)  # noqa: E731
    lines = [
        f"prepare: {len(self.records)} videos -> {self.output}",
        f"  prepared {len(p)} ({self.reused} reused from an earlier run): "
        f"{tot('frames_kept')} of {tot('frames_in')} frames kept; "
        f"{tot('gaps_bridged')} face-less gaps bridged "
        f"({tot('frames_bridged')} frames); {tot('segments_cut')} face-less "
        f"segments cut ({tot('frames_cut')} frames)"]
    kinds = {k: sum(r["kind"] == k for r in s) for k in KINDS}
    by_kind = ", ".join(f"{k} {n}" for k, n in kinds.items() if n)
    lines.append(f"  skipped {len(s)}" + (
        f": {by_kind} (see skipped.csv)" if s else ""))
    for r in s:
      lines.append(f"    {r['source']}: {r['kind']}: {r['reason']}")
    if self.ignored:
      shown = ", ".join(self.ignored[:5])
      more = (f" and {len(self.ignored) - 5} more"
              if len(self.ignored) > 5 else "")
      lines.append(f"  ignored {len(self.ignored)} files that are neither "
                   f"videos nor frames: {shown}{more}")
    lines.append(f"  manifest: {os.path.join(self.output, 'manifest.csv')}; "
                 "train with --config.data.name=video_folder "
                 "--config.data.csv_path="
                 f"{os.path.join(self.output, 'videos.csv')}")
    return "\n".join(lines)


def write_tables(output: str, records: Sequence[dict]) -> None:
  def write(name, header, rows):
    tmp = os.path.join(output, name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
      w = csv.writer(f)
      w.writerow(header)
      w.writerows(rows)
    os.replace(tmp, os.path.join(output, name))

  done = [r for r in records if r["status"] == "prepared"]
  write("manifest.csv",
        ["path", "label", "subject", "frames_in", "frames_kept", "fps"],
        [[r["path"], r["label"], r["subject"], r["frames_in"],
          r["frames_kept"], "" if r["fps"] is None else f"{r['fps']:g}"]
         for r in done])
  write("videos.csv", ["path", "label", "subject", "group"],
        [[r["path"], r["label"], r["subject"], r["group"]] for r in done])
  write("skipped.csv", ["path", "kind", "reason"],
        [[r["source"], r["kind"], r["reason"]] for r in records
         if r["status"] != "prepared"])


def prepare(input_path: str, output: str, settings: Settings = Settings(),
            workers: int = 1, detector_factory: Callable | None = None,
            progress: bool = True) -> Summary:
  """Prepares every video under ``input_path``; see the module docstring.

  ``detector_factory(min_face)`` replaces the built-in detectors (it must be
  picklable when ``workers > 1``).
  """
  from tqdm import tqdm
  output = os.path.abspath(output)
  if os.path.isdir(input_path):
    inside = os.path.commonpath([output, os.path.abspath(input_path)])
    if inside == os.path.abspath(input_path):
      raise video_io.BadInputError(
          f"{output}: --output must not be inside --input")
  if workers < 1:
    raise ValueError(f"workers must be >= 1, got {workers}")
  items, ignored = raw_inputs.find_inputs(input_path)
  os.makedirs(output, exist_ok=True)
  records: dict[str, dict] = {}
  for it in items:
    rec = load_done(it, settings, output)
    if rec is not None:
      records[it.id] = rec
  reused = len(records)
  todo = [it for it in items if it.id not in records]
  bar = tqdm(total=len(items), initial=reused, unit="video",
             disable=not progress, desc="prepare")
  try:
    if workers == 1 or len(todo) <= 1:
      for it in todo:
        records[it.id] = _run_one(it, settings, output, detector_factory)
        bar.update()
    else:
      threads = max(1, (os.cpu_count() or 1) // workers)
      with concurrent.futures.ProcessPoolExecutor(
          max_workers=min(workers, len(todo)),
          mp_context=multiprocessing.get_context("spawn"),
          initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(_run_one, it, settings, output,
                               detector_factory): it for it in todo}
        try:
          for fut in concurrent.futures.as_completed(futures):
            records[futures[fut].id] = fut.result()
            bar.update()
        except BaseException:
          pool.shutdown(wait=False, cancel_futures=True)
          raise
  finally:
    bar.close()
  ordered = [records[it.id] for it in items]
  write_tables(output, ordered)
  return Summary(ordered, reused, ignored, output)


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  settings = Settings(
      size=f.size, margin=f.margin, detector=f.detector, min_face=f.min_face,
      detect_every=f.detect_every, max_gap=f.max_gap, smooth=f.smooth,
      choose=f.choose, min_frames=f.min_frames, image_format=f.format,
      quality=f.quality, folder_fps=f.folder_fps)
  try:
    summary = prepare(f.input, f.output, settings, workers=f.workers,
                      progress=f.progress)
  except (video_io.BadInputError, DetectorError, ValueError) as e:
    print(f"prepare: error: {e}", file=sys.stderr)
    return 2
  print(summary.text())
  if not summary.prepared:
    print("prepare: error: no video was prepared", file=sys.stderr)
    return 1
  return 0


def _define_flags():
  from absl import flags
  flags.DEFINE_string("input", None, "Folder (<label>/[<subject>/]<video>) "
                      "or CSV (path,label[,subject][,group]).")
  flags.DEFINE_string("output", None, "Folder for clips/, manifest.csv, "
                      "videos.csv, skipped.csv.")
  d = Settings()
  flags.DEFINE_integer("size", d.size, "Output frame side, pixels.")
  flags.DEFINE_float("margin", d.margin, "Added around the face box on "
                     "every side, as a fraction of the face size.")
  flags.DEFINE_enum("detector", d.detector, list(faces_lib.DETECTORS),
                    "Face detector (see stclr_jax/data/faces.py).")
  flags.DEFINE_integer("min_face", d.min_face, "Smallest face, pixels.")
  flags.DEFINE_integer("detect_every", d.detect_every, "Detect on every "
                       "k-th frame, interpolate the box in between.")
  flags.DEFINE_integer("max_gap", d.max_gap, "Face-less gaps up to this "
                       "many frames are bridged; longer ones are cut.")
  flags.DEFINE_float("smooth", d.smooth, "Temporal smoothing of the box "
                     "(Gaussian sigma, frames; 0 = off).")
  flags.DEFINE_enum("choose", d.choose, list(face_track.CHOICES),
                    "Which face when there are several: largest, most "
                    "persistent, or auto (size x frames).")
  flags.DEFINE_integer("min_frames", d.min_frames, "Skip videos with fewer "
                       "face frames.")
  flags.DEFINE_enum("format", d.image_format, ["jpg", "png"], "Frame files.")
  flags.DEFINE_integer("quality", d.quality, "JPEG quality.")
  flags.DEFINE_float("folder_fps", d.folder_fps, "Frame rate recorded for "
                     "frame folders (0: unknown, left empty).")
  flags.DEFINE_integer("workers", 1, "Parallel worker processes.")
  flags.DEFINE_bool("progress", True, "Show a progress bar.")
  flags.mark_flags_as_required(["input", "output"])


if __name__ == "__main__":
  from absl import app
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before MTCNN loads TF
  _define_flags()
  app.run(main)  # exits with main's return code
