"""The ``prepare`` run over all inputs: the records of an earlier run
reused (``clip.load_done``), the other inputs prepared (``clip.process``)
in worker processes, each with its own face detector; the tables and
summary at the end (``report``)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import traceback
from collections.abc import Callable

from tqdm import tqdm

from stclr_jax.prepare import clip, detectors, report, sources
from stclr_jax.prepare.settings import Settings
from stclr_jax.prepare.sources import Item
from stclr_jax.video_io import BadInputError


class DetectorError(RuntimeError):
  """The face detector could not be created: nothing can be prepared."""


# -- parallel workers ---------------------------------------------------------

_WORKER = {}


def _detector(settings: Settings, factory):
  """This process's detector, built once (per settings and factory)."""
  key = (
    settings.detector,
    settings.min_face,
    settings.detect_downscale,
    factory,
  )
  if key not in _WORKER:
    _WORKER.clear()
    try:
      _WORKER[key] = (
        factory(settings.min_face)
        if factory is not None
        else detectors.make_detector(
          settings.detector, settings.min_face, settings.detect_downscale
        )
      )
    except Exception as e:
      raise DetectorError(
        f"cannot create the {settings.detector!r} face "
        f"detector: {type(e).__name__}: {e}"
      ) from e
  return _WORKER[key]


def _init_worker(threads: int):
  for var in (
    "OMP_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
  ):
    os.environ[var] = str(threads if var != "TF_NUM_INTEROP_THREADS" else 1)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _run_one(item: Item, settings: Settings, output: str, factory) -> dict:
  detector = _detector(settings, factory)
  try:
    return clip.process(item, settings, detector, output)
  except Exception as e:  # a bug or an odd file: recorded, run continues
    traceback.print_exc()
    return {
      "id": item.id,
      "source": item.source,
      "label": item.label,
      "subject": item.subject,
      "group": item.group,
      "status": "skipped",
      "kind": "error",
      "frames_in": 0,
      "frames_kept": 0,
      "fps": None,
      "reason": f"unexpected {type(e).__name__}: {e}",
    }


# -- the run ------------------------------------------------------------------


def prepare(
  input_path: str,
  output: str,
  settings: Settings = Settings(),
  workers: int = 1,
  detector_factory: Callable | None = None,
  progress: bool = True,
) -> report.Summary:
  """Prepares every video under ``input_path`` (a folder or a CSV, see
  ``sources.find_inputs``) into ``output`` (see ``cli``'s docstring).

  ``detector_factory(min_face)`` replaces the built-in detectors (it must be
  picklable when ``workers > 1``).
  """
  output = os.path.abspath(output)
  if os.path.isdir(input_path):
    inside = os.path.commonpath([output, os.path.abspath(input_path)])
    if inside == os.path.abspath(input_path):
      raise BadInputError(f"{output}: --output must not be inside --input")
  if workers < 1:
    raise ValueError(f"workers must be >= 1, got {workers}")
  items, ignored = sources.find_inputs(input_path)
  os.makedirs(output, exist_ok=True)
  records: dict[str, dict] = {}
  for it in items:
    rec = clip.load_done(it, settings, output)
    if rec is not None:
      records[it.id] = rec
  reused = len(records)
  todo = [it for it in items if it.id not in records]
  bar = tqdm(
    total=len(items),
    initial=reused,
    unit="video",
    disable=not progress,
    desc="prepare",
  )
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
        initializer=_init_worker,
        initargs=(threads,),
      ) as pool:
        futures = {
          pool.submit(_run_one, it, settings, output, detector_factory): it
          for it in todo
        }
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
  report.write_tables(output, ordered)
  return report.Summary(ordered, reused, ignored, output)
