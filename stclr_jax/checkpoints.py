"""Orbax checkpoints: the pretraining run's own, and the one place where an
encoder is initialised from ``config.init_from``.

* :func:`manager`, :func:`save`, :func:`restore_latest`: the pretraining
  loop's asynchronous ``CheckpointManager`` in ``<workdir>/checkpoints``.
  A checkpoint is :meth:`TrainState.to_dict`; it restores onto any mesh
  (the restored arrays take the shardings of the state it restores onto).
  A checkpoint whose files no longer read is moved aside to
  ``checkpoints/corrupt-<step>`` (kept) and the one before it restored.
* :func:`read_record`, :func:`check_resume_config`: a workdir's own records
  (``config.json``, ``data_stream.json``) and the config fields a resumed
  run may not change (all but :data:`FREE_ON_RESUME`). What a workdir
  cannot continue with is a :class:`WorkdirError`, whose message names the
  file or the fields and what to do.
* :func:`init_encoder`: ``config.init_from`` names a converted Kinetics-400
  checkpoint (``python -m stclr_jax.convert.torchvision``), a pretraining
  workdir (or its ``checkpoints/`` folder: the projection head is dropped),
  or nothing (random weights, the from-scratch baseline). Pretraining and
  evaluation both start from here.

TensorFlow-free.
"""

from __future__ import annotations

import gc
import json
import logging as pylogging
import os
import pathlib
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from stclr_jax import models
from stclr_jax.convert import converted
from stclr_jax.train_step import TrainState


# --------------------------------------------------- the run's checkpoints
class WorkdirError(ValueError):
  """A workdir this run cannot continue as asked: a record that does not
  read, a config that does not fit the run on disk, a checkpoint of other
  shapes. The message names the file or the fields and what to do;
  ``python -m stclr_jax.main`` prints it last and exits with status 1."""


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """``workdir/checkpoints``: asynchronous saves, the last ``keep`` kept."""
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints"),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=True
    ),
  )


def save(mngr: ocp.CheckpointManager, step: int, state: TrainState) -> None:
  """Starts an asynchronous save of ``state`` as step ``step``."""
  mngr.save(step, args=ocp.args.StandardSave(state.to_dict()), force=True)


# Where a damaged step goes: ``checkpoints/corrupt-<step>`` (``.1``, ``.2``
# after it if that is taken). Not a step name, so Orbax lists, restores and
# deletes around it.
CORRUPT_PREFIX = "corrupt-"
_OK, _DAMAGED, _OTHER_STATE = 0, 1, 2


def restore_latest(
  mngr: ocp.CheckpointManager, state: TrainState
) -> tuple[TrainState, int | None]:
  """The newest checkpoint that restores onto ``state``'s shapes and
  shardings, and its step; ``(state, None)`` when none does.

  A checkpoint whose own files fail to read (truncated, zeroed or missing
  data, unreadable metadata: any error of its read) is moved aside to
  ``checkpoints/corrupt-<step>``, never deleted, with one warning that
  names the step and the error's first line; then the step before it is
  tried, down to a fresh start (one more warning) when none restores.
  A checkpoint whose metadata reads but holds other shapes or dtypes than
  ``state`` is not damaged but another model's state: a
  :class:`WorkdirError`, and nothing is moved.

  On several processes every process tries the same step and they decide
  together: a step that fails on any process is moved aside for all
  (process 0 moves it), so all resume from the same step.
  """
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
    state.to_dict(),
  )
  root = epath.Path(mngr.directory)
  steps = sorted(mngr.all_steps(), reverse=True)
  moved = []
  for i, step in enumerate(steps):
    # Named before anyone moves anything (the exchange below is a barrier).
    aside = _aside_path(root, step)
    restored, outcome, detail = _try_restore(root / str(step), abstract)
    outcomes = _exchange(outcome)
    if max(outcomes) == _OK:
      return TrainState.from_dict(restored), step
    if max(outcomes) == _OTHER_STATE:
      raise WorkdirError(
        detail
        if outcome == _OTHER_STATE
        else f"Checkpoint step {step} in {root} holds another state than this "
        f"config builds (found by process {outcomes.index(_OTHER_STATE)}; "
        "see its log). Resume with the run's config, or start a new "
        "--workdir"
      )
    if outcome != _DAMAGED:
      bad = [p for p, o in enumerate(outcomes) if o == _DAMAGED]
      detail = f"it failed to read on process {bad} (see its log)"
    _move_aside(root / str(step), aside, detail)
    mngr.reload()
    moved.append(step)
    then = f"trying step {steps[i + 1]}" if i + 1 < len(steps) else "none left"
    logging.warning(
      "Checkpoint step %d does not restore: %s. Moved it to %s (kept, not "
      "deleted); %s.",
      step,
      detail,
      aside,
      then,
    )
  if moved:
    logging.warning(
      "No checkpoint in %s restores (steps %s moved aside to %s<step>); "
      "starting afresh from step 0.",
      root,
      ", ".join(map(str, moved)),
      CORRUPT_PREFIX,
    )
  return state, None


def _try_restore(step_dir: epath.Path, abstract) -> tuple:
  """``(restored, outcome, detail)`` of one step: its metadata compared
  with ``abstract`` (``_OTHER_STATE`` and the message when it differs),
  then its arrays read (``_DAMAGED`` and the error's first line when any
  read fails)."""
  item = step_dir / ocp.checkpoint_manager.DEFAULT_ITEM_NAME
  handler = ocp.StandardCheckpointHandler()
  try:
    try:
      stored = _flat_shapes(handler.metadata(item).tree)
    except Exception as e:  # any failure to read is damage
      return None, _DAMAGED, f"its metadata does not read ({_first_line(e)})"
    wanted = _flat_shapes(abstract)
    if stored != wanted:
      return None, _OTHER_STATE, _other_state(step_dir, stored, wanted)
    undo = _quiet_orphaned_reads(f"{step_dir}{os.sep}")
    try:
      # Orbax's handler (not the manager): no barrier inside, so a
      # process whose read fails still meets the others in _exchange.
      restored = handler.restore(item, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # Orbax raises a plain Exception
      detail = _first_line(e)
    else:
      undo()
      return restored, _OK, ""
    gc.collect()  # what of the failed restore can go now goes quietly
    return None, _DAMAGED, detail
  finally:
    handler.close()


def _flat_shapes(tree) -> dict[str, tuple]:
  """``{"params.encoder...kernel.value": (shape, dtype)}``, Orbax's names."""
  return {
    k: (tuple(v.shape), np.dtype(v.dtype).name)
    for k, v in ocp.tree.to_flat_dict(tree, sep=".").items()
  }


def _other_state(step_dir, stored: dict, wanted: dict) -> str:
  def show(entry):
    return "absent" if entry is None else f"{entry[0]} {entry[1]}"

  keys = sorted(
    k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k)
  )
  lines = [
    f"  {k}: {show(stored.get(k))} in the checkpoint, "
    f"{show(wanted.get(k))} in this config's state"
    for k in keys[:5]
  ]
  more = f"\n  ... and {len(keys) - 5} more" if len(keys) > 5 else ""
  return (
    f"Checkpoint step {step_dir.name} in {step_dir.parent} holds another "
    f"model's or optimiser's state than this config builds ({len(keys)} "
    "arrays differ):\n" + "\n".join(lines) + more + "\nIts files read: it "
    "is not damaged. Resume with the config it was trained with, or start "
    "a new --workdir."
  )


def _first_line(e: BaseException) -> str:
  """The innermost cause's type and first line (Orbax wraps TensorStore's
  error, which names the file and the byte range, in a longer one)."""
  for _ in range(20):  # a chain of causes, never a cycle
    inner = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    if inner is None:
      break
    e = inner
  line = (str(e).strip().splitlines() or [""])[0]
  if len(line) > 400:
    line = line[:400] + "..."
  return f"{type(e).__name__}: {line}"


def _exchange(outcome: int) -> list[int]:
  """Every process's outcome of the same step, in process order."""
  if jax.process_count() == 1:
    return [outcome]
  return [int(o) for o in multihost_utils.process_allgather(np.int32(outcome))]


def _aside_path(root: epath.Path, step: int) -> epath.Path:
  path, n = root / f"{CORRUPT_PREFIX}{step}", 0
  while path.exists():
    n += 1
    path = root / f"{CORRUPT_PREFIX}{step}.{n}"
  return path


def _move_aside(step_dir: epath.Path, aside: epath.Path, detail: str) -> None:
  """Process 0 renames ``step_dir`` to ``aside`` (the checkpoint folder is
  shared); every process learns whether it could."""
  error = ""
  if jax.process_index() == 0:
    try:
      step_dir.rename(aside)
    except OSError as e:
      error = _first_line(e)
  if max(_exchange(int(bool(error)))):  # on several processes, a barrier
    raise WorkdirError(
      f"Checkpoint step {step_dir.name} in {step_dir.parent} does not "
      f"restore ({detail}), and it could not be moved aside to {aside} ("
      f"{error or 'on process 0, see its log'}). Move it out of "
      f"{step_dir.parent} yourself, then relaunch to resume from the step "
      "before it."
    )


_ORBAX_SOURCE = f"{os.sep}orbax{os.sep}"


def _quiet_orphaned_reads(step_dir: str):
  """Silences the leftovers of a restore of ``step_dir`` that fails
  part-way; returns the function that puts things back (for a restore
  that succeeded).

  When one read fails, Orbax's restore raises and closes its event loop
  while its other reads of the step are still in flight. Each of them
  then reports, when it ends or is garbage-collected (during the restore,
  later in the run or at exit): ``RuntimeError: Event loop is closed`` or
  an exception ignored in an Orbax coroutine (``sys.unraisablehook``), or
  asyncio's "... exception was never retrieved" or "Task was destroyed but
  it is pending" for an Orbax task or a read of ``step_dir`` (the
  ``asyncio`` logger): hundreds of tracebacks among the run's own lines.
  Exactly those are dropped; everything else passes. After a failed
  restore this stays for the rest of the process, since the reads may end
  any time.
  """
  previous = sys.unraisablehook

  def hook(unraisable):
    e, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
      return
    if code is not None and _ORBAX_SOURCE in code.co_filename:
      return
    previous(unraisable)

  def keep(record) -> bool:
    text = record.getMessage()
    return _ORBAX_SOURCE not in text and step_dir not in text

  sys.unraisablehook = hook
  asyncio_log = pylogging.getLogger("asyncio")
  asyncio_log.addFilter(keep)

  def undo():
    if sys.unraisablehook is hook:
      sys.unraisablehook = previous
    asyncio_log.removeFilter(keep)

  return undo


# ------------------------------------------------------- the run's records
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
    wrong = _first_line(e)
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
  stored = _flatten(read_record(workdir, CONFIG_FILE))
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


# ------------------------------------------------ an encoder's initial values
def init_encoder(config, model: models.ContrastiveModel) -> dict:
  """Loads ``config.init_from`` into ``model.encoder`` (nothing when it is
  empty); returns a description of the initial values for reports."""
  if not config.get("init_from"):
    return {"init": "random", "seed": config.seed}
  path = pathlib.Path(config.init_from).absolute()
  if not path.is_dir():
    raise FileNotFoundError(f"config.init_from={path}: no such directory")
  if (path / converted.METADATA_FILE).is_file():
    load_converted(config, model)
    return {"init": "converted", "path": str(path)}
  return restore_pretrained(config, model)


def load_converted(config, model: models.ContrastiveModel) -> None:
  """Copies a converted (Kinetics-400) encoder into ``model.encoder``, after
  checking the architecture and the input normalisation it expects."""
  encoder, _, meta = converted.load_converted(config.init_from)
  if meta["arch"] != config.model.encoder or config.model.width != 1.0:
    raise ValueError(
      f"config.init_from={config.init_from} holds a {meta['arch']} (width "
      f"1.0); the config builds {config.model.encoder} with width "
      f"{config.model.width}"
    )
  norm = meta.get("input", {})
  want = (tuple(norm.get("mean", ())), tuple(norm.get("std", ())))
  have = (tuple(config.data.mean), tuple(config.data.std))
  if want != ((), ()) and not np.allclose(
    np.ravel(want[0] + want[1]), np.ravel(have[0] + have[1])
  ):
    raise ValueError(
      f"config.init_from={config.init_from} expects input mean {want[0]} "
      f"and std {want[1]}, the config has {have[0]} and {have[1]}: use the "
      "config variant ':init=kinetics400' or set data.mean / data.std"
    )
  nnx.update(model.encoder, nnx.state(encoder))


def pure(tree):
  """A checkpointed NNX state as ``nnx.to_pure_dict`` gives it: variables
  saved as ``{"value": x}`` unwrapped, list indices as ints."""
  if isinstance(tree, dict):
    if set(tree) == {"value"}:
      return tree["value"]
    return {
      (int(k) if isinstance(k, str) and k.isdigit() else k): pure(v)
      for k, v in tree.items()
    }
  return tree


def _paths(tree) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in flat}


def _check_pretraining_config(config, workdir: pathlib.Path) -> None:
  """The pretraining run's model section must match the evaluation's."""
  path = workdir / CONFIG_FILE
  if not path.is_file():
    return
  model = read_record(str(workdir), CONFIG_FILE).get("model", {})
  for key in ("encoder", "width"):
    if key in model and model[key] != config.model[key]:
      raise ValueError(
        f"config.init_from={workdir} was pretrained with model.{key}="
        f"{model[key]!r} (see {path}); this config builds "
        f"model.{key}={config.model[key]!r}. Set --config.model.{key}="
        f"{model[key]!r} (or point init_from at a matching run)"
      )


def _pretraining_checkpoints(path: pathlib.Path):
  """``(workdir, checkpoint dir)`` of a pretraining workdir or of its
  ``checkpoints/`` folder."""
  if (path / "checkpoints").is_dir():
    return path, path / "checkpoints"
  return path.parent, path


def restore_pretrained(config, model: models.ContrastiveModel) -> dict:
  """Loads a pretraining checkpoint's encoder (and BatchNorm statistics)
  into ``model.encoder``: step ``config.init_step`` (< 0: the latest)."""
  path = pathlib.Path(config.init_from).absolute()
  workdir, ckpt_dir = _pretraining_checkpoints(path)
  _check_pretraining_config(config, workdir)
  mngr = ocp.CheckpointManager(
    ckpt_dir, item_handlers=ocp.StandardCheckpointHandler()
  )
  steps = mngr.all_steps()
  if not steps:
    raise FileNotFoundError(
      f"config.init_from={path}: no Orbax checkpoint in {ckpt_dir} (empty, "
      "or not a pretraining workdir or a converted checkpoint)"
    )
  init_step = config.get("init_step", -1)
  step = mngr.latest_step() if init_step < 0 else init_step
  if step not in steps:
    raise ValueError(
      f"config.init_step={step}: {ckpt_dir} has steps {sorted(steps)}"
    )
  meta = mngr.item_metadata(step)
  meta = getattr(meta, "tree", meta)
  if (
    not isinstance(meta, dict)
    or "params" not in meta
    or "encoder" not in meta["params"]
  ):
    raise ValueError(
      f"{ckpt_dir}/{step}: not an ST-CLR pretraining checkpoint (no "
      "params/encoder)"
    )
  params = nnx.state(model.encoder, nnx.Param)
  batch_stats = nnx.state(model.encoder, nnx.BatchStat)
  want = {
    "params": nnx.to_pure_dict(params),
    "batch_stats": nnx.to_pure_dict(batch_stats),
  }
  have = {k: pure(meta[k]["encoder"]) for k in want}
  want_shapes, have_shapes = _paths(want), _paths(have)
  if want_shapes != have_shapes:
    diff = sorted(set(want_shapes.items()) ^ set(have_shapes.items()))[:3]
    raise ValueError(
      f"{ckpt_dir}/{step} holds an encoder of another architecture or "
      f"width than config.model ({config.model.encoder}, width "
      f"{config.model.width}); first differences (path, shape): {diff}"
    )
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta
  )
  restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  mngr.close()
  nnx.replace_by_pure_dict(params, pure(restored["params"]["encoder"]))
  nnx.replace_by_pure_dict(
    batch_stats, pure(restored["batch_stats"]["encoder"])
  )
  nnx.update(model.encoder, params, batch_stats)
  return {"init": "st-clr", "path": str(ckpt_dir), "step": int(step)}
