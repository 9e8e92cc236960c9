"""The ST-CLR pretraining loop: ``pretrain(config, workdir)``.

Input (tf.data, this host's shard of the global batch), the jitted step of
:mod:`stclr_jax.train_step`, Orbax checkpoints (:mod:`stclr_jax.checkpoints`),
the workdir's records (:mod:`stclr_jax.workdir`, :mod:`stclr_jax.stream_record`)
and clu metric writers. The loop dispatches step t before reading step
t-1's metrics, so the host never waits on the device; it stops on a
non-finite metric, and never checkpoints a state whose metrics it has not
checked.

Exact resume: the batch at step k is a pure function of ``(seed, k, number
of data shards)`` (see ``data/streams.py``), so a restarted run rebuilds
its input at the restored step; nothing about the tf.data iterator needs to
be saved, and a checkpoint restores onto any number of devices.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from flax import nnx
from jax.experimental import multihost_utils

from stclr_jax import checkpoints, init_from, stream_record
from stclr_jax import mesh as mesh_lib
from stclr_jax import optim as optim_lib
from stclr_jax import train_step as train_step_lib
from stclr_jax import workdir as workdir_lib
from stclr_jax.data import input as input_lib
from stclr_jax.models import factory
from stclr_jax.pretext import batch as batch_lib
from stclr_jax.pretext import objectives
from stclr_jax.pretext import options as pretext_options


def num_train_steps(config, num_examples: int) -> tuple[int, int]:
  """``(steps per epoch, total steps)`` of a split of ``num_examples``."""
  steps_per_epoch = num_examples // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(
      f"batch_size {config.batch_size} is larger than the "
      f"{num_examples} videos of the training split"
    )
  total = (
    config.num_steps
    if config.num_steps > 0
    else config.num_epochs * steps_per_epoch
  )
  return steps_per_epoch, total


def create_state(config, mesh, tx, bn_groups: int | None = None):
  """``(graphdef, state, init_info)``: the model of ``config.model``, its
  encoder initialised from ``config.init_from``, replicated on ``mesh``."""
  model = factory.create_model(config, mesh.size, bn_groups)
  info = init_from.init_encoder(config, model)
  graphdef, state = train_step_lib.init_state(model, tx, mesh)
  return graphdef, state, info


def objective(config) -> objectives.Objective:
  """``config``'s objective (:func:`stclr_jax.pretext.objectives.from_config`),
  checked against the batch its pretext options make: every key it reads
  is one of the batch's (:meth:`stclr_jax.pretext.options.Pretext.schema`)."""
  pretext = pretext_options.Pretext.from_config(config)
  obj = objectives.from_options(pretext, config.loss.temperature)
  schema = pretext.schema()
  missing = [k for k in obj.batch_keys if k not in schema.model_keys]
  if missing:
    raise ValueError(
      f"the objective {obj} reads {missing}, which the batches of "
      f"config.pretext ({pretext.enabled or 'no options'}) do not have"
    )
  return obj


def make_train_step(config, mesh, graphdef, tx, lr_fn, state):
  """The jitted step with ``config``'s objective (:func:`objective`) and
  normalisation."""
  return train_step_lib.make_train_step(
    mesh,
    graphdef,
    tx,
    lr_fn,
    state,
    objective(config),
    mean=config.data.mean,
    std=config.data.std,
  )


class Preemption:
  """Whether to save and stop at this step: a preemption notice.

  On several processes, JAX's preemption sync manager (started by
  ``jax.distributed.initialize``) catches SIGTERM and makes every process
  agree on the step (``CheckpointManager.reached_preemption``). A single
  process has nothing to agree with and JAX has no manager there, so this
  class catches SIGTERM itself while the loop runs. SIGTERM is what SLURM
  sends the tasks (``launch/slurm_gpu.sbatch``'s ``--signal=TERM@300``, and
  at the time limit), and what a preempted or stopped VM sends its
  processes (``launch/tpu_pod.sh``).
  """

  def __init__(self, mngr):
    self._mngr = mngr
    self._received = None
    self._previous = None
    self._own = (
      jax.process_count() == 1
      and threading.current_thread() is threading.main_thread()
    )

  def __enter__(self):
    if self._own:
      previous = signal.signal(signal.SIGTERM, self._handle)
      # None: a handler not installed from Python; fall back to the default.
      self._previous = signal.SIG_DFL if previous is None else previous
    return self

  def __exit__(self, *exc):
    if self._own:
      signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, signum, frame):
    del frame
    self._received = signum
    # A second SIGTERM gets the previous behaviour (by default: terminate),
    # so a run stuck before its next step can still be stopped.
    signal.signal(signal.SIGTERM, self._previous)
    logging.warning(
      "Received %s; saving at the next step and stopping.",
      signal.Signals(signum).name,
    )

  def reached(self, step: int) -> bool:
    if self._own:
      return self._received is not None
    return self._mngr.reached_preemption(step)


def _check_finite(step: int, metrics: dict, mngr) -> None:
  bad = [k for k, v in metrics.items() if not np.isfinite(v)]
  if bad:
    mngr.wait_until_finished()
    raise FloatingPointError(
      f"step {step}: non-finite {', '.join(bad)} "
      f"({', '.join(f'{k}={metrics[k]}' for k in bad)}); stopping. The last "
      f"good checkpoint is step {mngr.latest_step()} in {mngr.directory}"
    )


def pretrain(
  config: ml_collections.ConfigDict, workdir: str, *, devices=None
) -> dict:
  """Pretrains with ST-CLR; resumes from ``workdir`` if it has checkpoints.

  Returns ``{"last": <last logged metrics>, "history": [<all logged>]}``,
  each metrics dict with its ``step``.

  A resumed run checks, before it restores anything, that its config fits
  the run in ``workdir`` (:func:`~stclr_jax.workdir.check_resume_config`):
  only the fields of :data:`~stclr_jax.workdir.FREE_ON_RESUME` may change,
  namely ``num_steps``, ``num_epochs`` (the schedule is then the new
  length's), ``log_every_steps``, ``checkpoint_every_steps``,
  ``keep_checkpoints``, ``profile``, the paths ``init_from``,
  ``data.data_dir``, ``data.manual_dir`` and ``data.csv_path``,
  ``data.cache``, ``aug.placement`` and ``aug.ship_size``;
  ``data.num_shards`` is checked against ``data_stream.json``
  (:func:`~stclr_jax.stream_record.data_shards`). Every other field (the
  model, its width, dtype and head, the optimiser and its schedule, the
  batch size, the seed, the data set, its clips and augmentation, the loss
  and pretext options) is an error that lists each changed field. A record
  of the workdir that does not read is an error naming the file. A
  checkpoint whose files do not read is moved aside to
  ``checkpoints/corrupt-<step>`` and the one before it restored
  (:func:`checkpoints.restore_latest`). Those errors are
  :class:`~stclr_jax.workdir.WorkdirError`, raised with the checkpoint
  manager closed.
  """
  os.makedirs(workdir, exist_ok=True)
  mngr = checkpoints.manager(workdir, config.keep_checkpoints)
  try:
    return _pretrain(config, workdir, mngr, devices)
  finally:
    mngr.close()


def _live_model(graphdef, state):
  """The model of a training state, on this process's first device (the
  parameters are replicated)."""
  local = jax.tree.map(
    lambda x: x.addressable_data(0), (state.params, state.batch_stats)
  )
  return nnx.merge(graphdef, *local)


def _picture(pictures, step, graphdef, state) -> None:
  """Masked autoencoding's reconstruction picture of ``step``; a failure
  is logged, not raised: a picture never stops a run."""
  try:
    pictures(step, _live_model(graphdef, state))
  except Exception as e:  # noqa: BLE001 (TensorFlow, PIL, the disk)
    logging.warning(
      "reconstruction picture of step %d not written: %s: %s",
      step,
      type(e).__name__,
      e,
    )


def _pretrain(config, workdir: str, mngr, devices) -> dict:
  # The run's records and config, and its pretext options, are checked
  # before anything is built, written or restored.
  pretext_options.Pretext.from_config(config)
  resuming = bool(mngr.all_steps())
  if resuming:
    workdir_lib.check_resume_config(config, workdir)
  shards = stream_record.data_shards(
    config, workdir, resuming, jax.process_count()
  )
  mesh = mesh_lib.make_mesh(devices)
  if config.batch_size % mesh.size:
    raise ValueError(
      f"batch_size {config.batch_size} is not divisible by the {mesh.size}"
      " devices"
    )
  if jax.process_count() > 1:  # every process must cut the same shards
    multihost_utils.assert_equal(np.int32(shards), "data shards differ")
  writer = metric_writers.create_default_writer(
    workdir, just_logging=jax.process_index() > 0
  )

  # Size of the split, for the schedule (the pipeline is built after the
  # restore, at the restored step), and the keys of its batches.
  builder = input_lib.prepared_builder(config.data)
  schema = input_lib.view_spec(
    config, builder.info.features["video"].shape
  ).schema
  num_examples = builder.info.splits[config.data.split].num_examples
  steps_per_epoch, total_steps = num_train_steps(config, num_examples)
  lr_fn = optim_lib.schedule(config.optim, steps_per_epoch, total_steps)
  tx = optim_lib.make_optimizer(config.optim, lr_fn)
  graphdef, state, _ = create_state(config, mesh, tx)
  state, restored = checkpoints.restore_latest(mngr, state)
  # The records are written once the workdir's state is known to fit.
  if jax.process_index() == 0:
    workdir_lib.write_record(
      workdir, workdir_lib.CONFIG_FILE, config.to_json_best_effort(indent=2)
    )
    stream_record.record_stream(workdir, shards, config.seed)
  start = int(restored or 0)
  if restored is None:
    parameter_overview.log_parameter_overview(
      jax.device_get(state.params.to_pure_dict())
    )
  else:
    logging.info("Resumed from checkpoint step %d in %s", start, mngr.directory)
  step_fn = make_train_step(config, mesh, graphdef, tx, lr_fn, state)
  batches, _ = input_lib.pretrain_input(
    config, start_step=start, num_shards=shards, builder=builder
  )
  batch_iter = batches.as_numpy_iterator()
  hooks = [
    periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
  ]
  if config.profile and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(num_profile_steps=5, logdir=workdir))
  logging.info(
    "Training steps %d..%d (%d per epoch), global batch %d on %d devices",
    start,
    total_steps,
    steps_per_epoch,
    config.batch_size,
    mesh.size,
  )

  pictures = None  # masked autoencoding: its reconstructions at checkpoints
  if (
    pretext_options.Pretext.from_config(config).mae is not None
    and jax.process_index() == 0
  ):
    from stclr_jax.data import preview  # the host's stream, TensorFlow

    pictures = preview.ReconstructionWriter(config, workdir, writer)

  pending, history, window = None, [], (time.time(), start)
  counts = batch_lib.Counts()

  def read(step, metrics, counted):
    nonlocal window
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    _check_finite(step, values, mngr)
    now = time.time()
    values["clips_per_sec"] = (
      (step - window[1]) * config.batch_size / max(now - window[0], 1e-9)
    )
    values.update(counted)
    window = (now, step)
    writer.write_scalars(step, values)
    history.append({"step": step, **values})

  step = start
  with Preemption(mngr) as preemption:
    while step < total_steps:
      host_batch = next(batch_iter)
      counts.add(host_batch)
      batch = mesh_lib.to_global_arrays(schema.model_inputs(host_batch), mesh)
      state, metrics = step_fn(state, batch)
      step += 1
      if pending is not None:
        read(*pending)
        pending = None
      for h in hooks:
        h(step)
      preempted = preemption.reached(step)
      is_ckpt = (
        step % config.checkpoint_every_steps == 0
        or step == total_steps
        or preempted
      )
      if step % config.log_every_steps == 0 or is_ckpt:
        pending = (step, metrics, counts.read())
      if is_ckpt:
        read(*pending)  # never checkpoint a state whose step was not finite
        pending = None
        checkpoints.save(mngr, step, state)
        if pictures is not None and not preempted:
          _picture(pictures, step, graphdef, state)
        if preempted and step < total_steps:
          mngr.wait_until_finished()
          logging.warning("Preempted at step %d; checkpoint saved.", step)
          break
  if pending is not None:
    read(*pending)
  mngr.wait_until_finished()
  writer.flush()
  return {"last": history[-1] if history else {}, "history": history}
