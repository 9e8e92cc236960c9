"""A pretraining run's data stream record, ``<workdir>/data_stream.json``.

The batches of a run are a function of (seed, step, number of logical data
shards) (see ``data/input.py``). :func:`data_shards` gives a run its number
of shards: a fresh run's from the config, a resumed run's from the record,
so that its batches do not change when it resumes on another number of
processes; :func:`record_stream` writes the record once per run. What
cannot continue unchanged is a :class:`~stclr_jax.workdir.WorkdirError`.
"""

from __future__ import annotations

import json
import os

from absl import logging

from stclr_jax.data import input as input_lib
from stclr_jax.workdir import WorkdirError, read_record, write_record

STREAM_FILE = "data_stream.json"


def data_shards(config, workdir: str, resuming: bool, process_count: int):
  """The number of logical data shards of this run (the batches are a
  function of (seed, step, shards), see ``data/input.py``).

  A fresh run takes ``data.num_shards``, or one per process; it is recorded
  in ``workdir/data_stream.json`` with the seed (:func:`record_stream`). A
  resumed run keeps the recorded count, so its data stream does not change
  when it resumes on another number of processes; where that cannot hold,
  or the seed changed, it stops with an error that says why.
  """
  path = os.path.join(workdir, STREAM_FILE)
  if not resuming:
    return input_lib.num_data_shards(config.data, process_count)
  if not os.path.exists(path):
    logging.warning(
      "%s has checkpoints but no %s (a run from before it was recorded): "
      "assuming data.num_shards or one shard per process, as then",
      workdir,
      STREAM_FILE,
    )
    return input_lib.num_data_shards(config.data, process_count)
  record = read_record(workdir, STREAM_FILE, _check_stream)
  recorded = record["num_shards"]
  if "seed" in record and record["seed"] != config.seed:
    raise WorkdirError(
      f"{workdir} was trained with seed {record['seed']} (see {path}); "
      f"--config.seed={config.seed} would change its data stream from the "
      f"restored step on. Set --config.seed={record['seed']}, or start a "
      "new --workdir"
    )
  asked = config.data.get("num_shards", 0)
  if asked and asked != recorded:
    raise WorkdirError(
      f"{workdir} was trained with {recorded} data shards (see {path}); "
      f"--config.data.num_shards={asked} would change its data stream from "
      f"the restored step on. Set --config.data.num_shards={recorded} (or 0)"
      ", or start a new --workdir"
    )
  if recorded % process_count:
    raise WorkdirError(
      f"{workdir} was trained with {recorded} data shards (see {path}), "
      f"which {process_count} processes cannot split evenly, so its data "
      f"stream cannot continue unchanged: resume on a number of processes "
      f"that divides {recorded}, or start a new --workdir"
    )
  if recorded != process_count and not asked:
    logging.info(
      "Keeping the run's %d data shards on %d processes (%s)",
      recorded,
      process_count,
      path,
    )
  return recorded


def _check_stream(record: dict) -> str | None:
  """What is wrong with a ``data_stream.json`` that parses, if anything."""
  shards = record.get("num_shards")
  if type(shards) is not int or shards < 1:
    return f"num_shards is {shards!r}, not a positive integer"
  if "seed" in record and type(record["seed"]) is not int:
    return f"seed is {record['seed']!r}, not an integer"
  return None


def record_stream(workdir: str, num_shards: int, seed: int) -> None:
  """Writes ``data_stream.json`` atomically, once per run (process 0; a
  resumed run reads it and never rewrites it)."""
  if os.path.exists(os.path.join(workdir, STREAM_FILE)):
    return
  write_record(
    workdir, STREAM_FILE, json.dumps({"num_shards": num_shards, "seed": seed})
  )
