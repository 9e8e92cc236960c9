"""The pretraining run's Orbax checkpoints in ``<workdir>/checkpoints``.

* :func:`manager`, :func:`save`: the pretraining loop's asynchronous
  ``CheckpointManager``, the last ``keep`` kept. A checkpoint is
  :meth:`TrainState.to_dict`.
* :func:`restore_latest`: the newest checkpoint that restores onto a
  state, on any mesh (the restored arrays take the shardings of the state
  it restores onto). A checkpoint whose files no longer read is moved
  aside to ``checkpoints/corrupt-<step>`` (kept) and the one before it
  restored; one that holds another model's state is a
  :class:`~stclr_jax.workdir.WorkdirError`.

TensorFlow-free.
"""

from __future__ import annotations

import gc
import logging as pylogging
import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from stclr_jax.train_step import TrainState
from stclr_jax.workdir import WorkdirError, first_line


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
  :class:`~stclr_jax.workdir.WorkdirError`, and nothing is moved.

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
      return None, _DAMAGED, f"its metadata does not read ({first_line(e)})"
    wanted = _flat_shapes(abstract)
    if stored != wanted:
      return None, _OTHER_STATE, _other_state(step_dir, stored, wanted)
    undo = _quiet_orphaned_reads(f"{step_dir}{os.sep}")
    try:
      # Orbax's handler (not the manager): no barrier inside, so a
      # process whose read fails still meets the others in _exchange.
      restored = handler.restore(item, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # Orbax raises a plain Exception
      detail = first_line(e)
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
      error = first_line(e)
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
