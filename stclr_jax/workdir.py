"""A pretraining workdir's own records, and what a resumed run may change.

* :func:`read_record`, :func:`write_record`: the JSON records of a workdir
  (:data:`RECORDS`: ``config.json``, ``data_stream.json``), read with an
  error that names the file and what it holds, written atomically.
* :func:`check_resume_config`: the config fields a resumed run may not
  change (all but :data:`FREE_ON_RESUME`), compared with the run's
  ``config.json``.

What a workdir cannot continue with (a record, a config or a checkpoint)
is a :class:`WorkdirError`, whose message names the file or the fields and
what to do.

TensorFlow-free.
"""

from __future__ import annotations

import json
import os

from absl import logging

from stclr_jax.pretext import options as pretext_options


class WorkdirError(ValueError):
  """A workdir this run cannot continue as asked: a record that does not
  read, a config that does not fit the run on disk, a checkpoint of other
  shapes. The message names the file or the fields and what to do;
  ``python -m stclr_jax.main`` prints it last and exits with status 1."""


def first_line(e: BaseException) -> str:
  """An error in one line, for messages: the innermost cause's type and
  first line (Orbax wraps TensorStore's error, which names the file and the
  byte range, in a longer one)."""
  for _ in range(20):  # a chain of causes, never a cycle
    inner = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    if inner is None:
      break
    e = inner
  line = (str(e).strip().splitlines() or [""])[0]
  if len(line) > 400:
    line = line[:400] + "..."
  return f"{type(e).__name__}: {line}"


CONFIG_FILE = "config.json"
# What each record of a workdir holds, for the error that cannot read it.
RECORDS = {
  CONFIG_FILE: "the config the run was started with, which a relaunch is "
  "checked against",
  "data_stream.json": "the run's number of data shards and seed, which keep "
  "its batches the same when it resumes",
}


def read_record(workdir: str, name: str, check=None) -> dict:
  """The JSON object in ``workdir/name``, or a :class:`WorkdirError` that
  names the file, says what it holds and what to do. ``check(record)``
  returns what is wrong with a record that parses (or nothing)."""
  path = os.path.join(workdir, name)
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
  except (OSError, ValueError) as e:  # JSONDecodeError, UnicodeDecodeError
    wrong = first_line(e)
  else:
    wrong = (
      "not a JSON object"
      if not isinstance(record, dict)
      else (check(record) if check else None)
    )
    if not wrong:
      return record
  raise WorkdirError(
    f"{path} cannot be read ({wrong}). It holds {RECORDS.get(name, name)}. "
    "Restore it from a copy of the workdir, or start a new --workdir."
  )


def write_record(workdir: str, name: str, text: str) -> None:
  """Writes ``workdir/name`` atomically (another process reading it sees
  the old file or the new one, never a part)."""
  path = os.path.join(workdir, name)
  with open(f"{path}.tmp", "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(f"{path}.tmp", path)


# Config fields a resumed run may change: how long it runs, what it logs
# and keeps, where things are, and what the run's other records check.
# Every other field fixes the state's shapes or meaning (the model, its
# dtype and head, the optimiser and its schedule, the batch size, the seed,
# the data set, its clips and augmentation, the loss and pretext options).
FREE_ON_RESUME = {
  "num_steps": "how long it runs",
  "num_epochs": "how long it runs",
  "log_every_steps": "how often it logs",
  "checkpoint_every_steps": "how often it saves",
  "keep_checkpoints": "how many checkpoints it keeps",
  "profile": "a profile of a few steps",
  "init_from": "the restored state replaces the initial values",
  "data.data_dir": "where the prepared data set is",
  "data.manual_dir": "where the raw data set is",
  "data.csv_path": "where a video_folder data set's list is",
  "data.cache": "caching decoded frames (the same frames)",
  "data.num_shards": "checked against data_stream.json instead",
  "aug.placement": "where the augmentation runs (the same draws)",
  "aug.ship_size": "padding of frames shipped to the device",
}


def _flatten(tree, prefix="") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _flag(value) -> str:
  if isinstance(value, list):
    return "(" + ",".join(_flag(v) for v in value) + ")"
  if isinstance(value, str):
    return value
  return json.dumps(value).replace("true", "True").replace("false", "False")


def check_resume_config(config, workdir: str) -> None:
  """Stops a relaunch whose config changes a field that fixes the saved
  state's shapes or meaning: a :class:`WorkdirError` listing each such
  field with the run's value (``workdir/config.json``) and this one's.
  :data:`FREE_ON_RESUME` fields may change; a field the run's config does
  not have (a run from before the field) is not compared."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    logging.warning(
      "%s has checkpoints but no %s: this config cannot be compared with "
      "the run's (the checkpoint's shapes still are)",
      workdir,
      CONFIG_FILE,
    )
    return
  # A run from before each pretext method had its own config section is
  # compared in today's names (pretext/options.py, FLAT_FIELDS).
  stored = _flatten(
    pretext_options.migrate_flat(read_record(workdir, CONFIG_FILE))
  )
  asked = _flatten(json.loads(config.to_json_best_effort()))
  differ = [
    k
    for k in asked
    if k in stored and k not in FREE_ON_RESUME and stored[k] != asked[k]
  ]
  if not differ:
    return
  lines = [
    f"  {k}: {json.dumps(stored[k])} in the run, {json.dumps(asked[k])} now"
    for k in differ
  ]
  flags = " ".join(f"--config.{k}={_flag(stored[k])}" for k in differ)
  raise WorkdirError(
    f"{workdir} holds a run this config does not fit: it changes fields "
    f"that fix the saved state's shapes or meaning (the run's are in {path})"
    ":\n" + "\n".join(lines) + f"\nResume with the run's values ({flags}), "
    "or start a new --workdir. Free to change on resume: "
    + ", ".join(FREE_ON_RESUME)
    + "."
  )
