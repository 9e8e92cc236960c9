"""ST-CLR pretraining: ``train_and_evaluate(config, workdir)``.

One jitted step over a ``Mesh(('data',))``: the global batch is sharded on
``'data'``, parameters and optimiser state are replicated, BatchNorm
statistics are global (or per device with ``model.bn_per_device``), NT-Xent
all-gathers negatives in ``shard_map``, and the state is donated. The loop
dispatches step t before reading step t-1's metrics.

Exact resume: the batch at step k is a pure function of ``(seed, k)`` (see
``data/pipeline.py``), so a restarted run rebuilds its input at the restored
step; nothing about the tf.data iterator needs to be saved, and a checkpoint
restores onto any number of devices or hosts.
"""
from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from stclr_jax import losses as losses_lib
from stclr_jax import models
from stclr_jax import optim as optim_lib

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make_mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices or jax.devices()), ("data",))


def create_model(config, mesh: Mesh,
                 bn_groups: int | None = None) -> models.ContrastiveModel:
  """The encoder + head of ``config.model``. BatchNorm groups default to
  the mesh size under ``bn_per_device`` (per-device statistics), else 1."""
  m = config.model
  if m.dtype not in _DTYPES:
    raise ValueError(f"config.model.dtype must be one of {sorted(_DTYPES)}")
  rngs = nnx.Rngs(config.seed)
  encoder = models.make_encoder(
      m.encoder, width=m.width, dtype=_DTYPES[m.dtype],
      bn_groups=bn_groups or (mesh.size if m.bn_per_device else 1),
      rngs=rngs)
  return models.ContrastiveModel(encoder, proj_hidden=m.proj_hidden or None,
                                 proj_dim=m.proj_dim, rngs=rngs)


def _replicate(tree, mesh):
  """Host values (identical on every process) -> replicated global arrays."""
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(
          np.shape(x), sharding, lambda idx, x=np.asarray(x): x[idx]), tree)


def load_init(config, model: models.ContrastiveModel) -> None:
  """Copies a converted (Kinetics-400) encoder into ``model.encoder``, after
  checking the architecture and the input normalisation it expects."""
  from stclr_jax.convert import torchvision as tv
  encoder, _, meta = tv.load_converted(config.init_from)
  if meta["arch"] != config.model.encoder or config.model.width != 1.0:
    raise ValueError(
        f"config.init_from={config.init_from} holds a {meta['arch']} (width "
        f"1.0); the config builds {config.model.encoder} with width "
        f"{config.model.width}")
  norm = meta.get("input", {})
  want = (tuple(norm.get("mean", ())), tuple(norm.get("std", ())))
  have = (tuple(config.data.mean), tuple(config.data.std))
  if want != ((), ()) and not np.allclose(np.ravel(want[0] + want[1]),
                                          np.ravel(have[0] + have[1])):
    raise ValueError(
        f"config.init_from={config.init_from} expects input mean {want[0]} "
        f"and std {want[1]}, the config has {have[0]} and {have[1]}: use the "
        "config variant ':init=kinetics400' or set data.mean / data.std")
  nnx.update(model.encoder, nnx.state(encoder))


def init_state(config, mesh, tx, bn_groups: int | None = None):
  """(graphdef, state) with state = params, batch_stats, opt_state, step."""
  model = create_model(config, mesh, bn_groups)
  if config.get("init_from"):
    load_init(config, model)
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  state = {"params": params, "batch_stats": batch_stats,
           "opt_state": tx.init(params), "step": np.int32(0)}
  return graphdef, _replicate(state, mesh)


def train_step(state, batch, *, graphdef, tx, lr_fn, loss_fn, mean, std):
  """One SGD step on a global batch of two views; returns (state, metrics)."""

  def normalize(x):
    return (x - mean) / std

  def loss_of(params):
    # Fresh Variables at this trace level (BatchNorm writes its statistics).
    batch_stats = jax.tree.map(lambda x: x, state["batch_stats"])
    model = nnx.merge(graphdef, params, batch_stats)
    z_a, z_b = model.embed_views(normalize(batch["view_a"]),
                                 normalize(batch["view_b"]))
    loss, metrics = loss_fn(z_a, z_b)
    return loss, (metrics, nnx.state(model, nnx.BatchStat))

  (loss, (metrics, batch_stats)), grads = jax.value_and_grad(
      loss_of, has_aux=True)(state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  new_state = {"params": params, "batch_stats": batch_stats,
               "opt_state": opt_state, "step": state["step"] + 1}
  metrics = {"loss": loss, **metrics, "learning_rate": lr_fn(state["step"]),
             "grad_norm": optax.global_norm(grads),
             "param_norm": optax.global_norm(params),
             "update_norm": optax.global_norm(updates)}
  return new_state, metrics


def make_train_step(config, mesh, graphdef, tx, lr_fn, state):
  """The jitted, donated, sharded step."""
  sharded_loss = losses_lib.make_sharded_nt_xent(mesh, "data")
  loss_fn = functools.partial(sharded_loss,
                              temperature=config.loss.temperature)
  step = functools.partial(
      train_step, graphdef=graphdef, tx=tx, lr_fn=lr_fn,
      loss_fn=lambda a, b: loss_fn(a, b),
      mean=jnp.asarray(config.data.mean, jnp.float32),
      std=jnp.asarray(config.data.std, jnp.float32))
  replicated = jax.tree.map(lambda _: NamedSharding(mesh, P()), state)
  batch_sharding = NamedSharding(mesh, P("data"))
  return jax.jit(step, in_shardings=(replicated, batch_sharding),
                 out_shardings=(replicated, NamedSharding(mesh, P())),
                 donate_argnums=(0,))


def num_train_steps(config, num_examples: int) -> tuple[int, int]:
  steps_per_epoch = num_examples // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"batch_size {config.batch_size} is larger than the "
                     f"{num_examples} videos of the training split")
  total = (config.num_steps if config.num_steps > 0
           else config.num_epochs * steps_per_epoch)
  return steps_per_epoch, total


def checkpoint_manager(workdir, config):
  """Orbax ``CheckpointManager`` in ``workdir/checkpoints``: asynchronous
  saves, keep ``config.keep_checkpoints``."""
  import orbax.checkpoint as ocp
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.keep_checkpoints,
          enable_async_checkpointing=True))


def restore_latest(mngr, state):
  """Restores the latest checkpoint onto ``state``'s shardings, if any."""
  step = mngr.latest_step()
  if step is None:
    return state, None
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      state)
  import orbax.checkpoint as ocp
  return mngr.restore(step, args=ocp.args.StandardRestore(abstract)), step


def _save(mngr, step, state):
  import orbax.checkpoint as ocp
  mngr.save(step, args=ocp.args.StandardSave(state), force=True)


def _check_finite(step, metrics, mngr):
  bad = [k for k, v in metrics.items() if not np.isfinite(v)]
  if bad:
    mngr.wait_until_finished()
    raise FloatingPointError(
        f"step {step}: non-finite {', '.join(bad)} "
        f"({', '.join(f'{k}={metrics[k]}' for k in bad)}); stopping. The last "
        f"good checkpoint is step {mngr.latest_step()} in {mngr.directory}")


def train_and_evaluate(config: "ml_collections.ConfigDict", workdir: str,
                       *, devices=None) -> dict:
  """Pretrains with ST-CLR; resumes from ``workdir`` if it has checkpoints.

  Returns ``{"last": <last logged metrics>, "history": [<all logged>]}``,
  each metrics dict with its ``step``.
  """
  from clu import metric_writers, parameter_overview, periodic_actions

  from stclr_jax.data import input as input_lib
  from stclr_jax.data import pipeline

  os.makedirs(workdir, exist_ok=True)
  mesh = make_mesh(devices)
  if config.batch_size % mesh.size:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by "
                     f"the {mesh.size} devices")
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  # Size of the split, for the schedule (the pipeline is built after the
  # restore, at the restored step).
  builder = input_lib.prepared_builder(config.data)
  num_examples = builder.info.splits[config.data.split].num_examples
  steps_per_epoch, total_steps = num_train_steps(config, num_examples)
  lr_fn = optim_lib.schedule(config.optim, steps_per_epoch, total_steps)
  tx = optim_lib.make_optimizer(config.optim, lr_fn)
  graphdef, state = init_state(config, mesh, tx)
  mngr = checkpoint_manager(workdir, config)
  state, restored = restore_latest(mngr, state)
  start = int(restored or 0)
  if restored is None:
    parameter_overview.log_parameter_overview(
        jax.device_get(state["params"].to_pure_dict()))
  else:
    logging.info("Resumed from checkpoint step %d in %s", start,
                 mngr.directory)
  step_fn = make_train_step(config, mesh, graphdef, tx, lr_fn, state)

  batches, _ = input_lib.pretrain_input(config, start_step=start)
  batch_iter = batches.as_numpy_iterator()
  hooks = [periodic_actions.ReportProgress(num_train_steps=total_steps,
                                           writer=writer)]
  if config.profile and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(num_profile_steps=5,
                                          logdir=workdir))
  logging.info("Training steps %d..%d (%d per epoch), global batch %d on %d"
               " devices", start, total_steps, steps_per_epoch,
               config.batch_size, mesh.size)

  pending, history, window = None, [], (time.time(), start)

  def read(step, metrics):
    nonlocal window
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    _check_finite(step, values, mngr)
    now = time.time()
    values["clips_per_sec"] = ((step - window[1]) * config.batch_size
                               / max(now - window[0], 1e-9))
    window = (now, step)
    writer.write_scalars(step, values)
    history.append({"step": step, **values})

  step = start
  while step < total_steps:
    host_batch = next(batch_iter)
    batch = pipeline.to_global_arrays(
        {"view_a": host_batch["view_a"], "view_b": host_batch["view_b"]}, mesh)
    state, metrics = step_fn(state, batch)
    step += 1
    if pending is not None:
      read(*pending)
      pending = None
    for h in hooks:
      h(step)
    is_ckpt = (step % config.checkpoint_every_steps == 0
               or step == total_steps or mngr.reached_preemption(step))
    if step % config.log_every_steps == 0 or is_ckpt:
      pending = (step, metrics)
    if is_ckpt:
      read(*pending)  # never checkpoint a state whose step was not finite
      pending = None
      _save(mngr, step, state)
      if mngr.reached_preemption(step) and step < total_steps:
        mngr.wait_until_finished()
        logging.warning("Preempted at step %d; checkpoint saved.", step)
        break
  if pending is not None:
    read(*pending)
  mngr.wait_until_finished()
  mngr.close()
  writer.flush()
  return {"last": history[-1] if history else {}, "history": history}
