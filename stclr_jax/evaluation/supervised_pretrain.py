"""Supervised pretraining of an encoder: the benchmark's control arms
(bench/synthetic_protocol.py), on the same pool as self-supervised
pretraining and with the same evaluation after it.

``target`` names what the encoder is trained to predict from one clip of
each video (cross-entropy through a linear layer, as fine-tuning):

* ``"expression"``: the 6 expressions of a *labelled* data set, e.g.
  ``synthetic_expressions/expressive_pool_labelled``, the pool's twin
  (bit-identical videos, labels only this builder config has): the
  positive control, an upper bound on what pretraining on the pool can
  give the expression;
* ``"identity"``: the subject id (any data set with subject ids, the
  unlabelled pool itself): a negative control, features that name the
  person as ST-CLR's do;
* ``"shuffled"``: the expressions permuted across videos with a seed
  (class counts kept, every video-label link broken): a negative control
  that separates "a trained, well-scaled start" from expression
  information.

The result is a workdir that ``config.init_from`` reads as it reads a
pretraining run: ``checkpoints/<step>`` with ``params/encoder`` and
``batch_stats/encoder`` (and the linear layer under ``params/head``), and
``config.json`` with the model section. A rerun with the workdir finished
does nothing; an unfinished one starts over (minutes at CPU size).
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from flax import nnx

from stclr_jax import mesh as mesh_lib
from stclr_jax.data import input as input_lib
from stclr_jax.evaluation import finetune, supervised
from stclr_jax.evaluation import input as eval_input
from stclr_jax.evaluation import runner as runner_lib
from stclr_jax.models import factory

TARGETS = ("expression", "identity", "shuffled")
DONE_FILE = "supervised.json"


def targets(target: str, labels, subjects, seed: int) -> tuple[np.ndarray, int]:
  """The class of every video for ``target`` and the number of classes.

  ``labels``: expression labels (``None`` on an unlabelled set);
  ``subjects``: subject ids."""
  if target == "identity":
    subjects = np.asarray(subjects)
    if np.any(subjects < 0):
      raise ValueError("identity targets need a subject id for every video")
    unique, ids = np.unique(subjects, return_inverse=True)
    return ids.astype(np.int64), int(unique.size)
  if target not in ("expression", "shuffled"):
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
  if labels is None:
    raise ValueError(
      f"target={target!r} needs a labelled data set (e.g. "
      "synthetic_expressions/expressive_pool_labelled, the pool's twin)"
    )
  labels = np.asarray(labels, np.int64)
  if target == "shuffled":
    labels = np.random.default_rng([seed, 0x5F1E]).permutation(labels)
  return labels, int(labels.max()) + 1


def _metadata(builder, split):
  ds = builder.as_dataset(
    split=split,
    shuffle_files=False,
    decoders={"video": tfds.decode.SkipDecoding()},
  )
  labels, subjects = [], []
  labelled = "label" in builder.info.features
  for ex in ds.as_numpy_iterator():
    subjects.append(int(ex.get("subject_id", -1)))
    if labelled:
      labels.append(int(ex["label"]))
  return (np.asarray(labels) if labelled else None), np.asarray(subjects)


def is_done(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, DONE_FILE))


def pretrain(config, workdir: str, *, target: str, num_steps: int) -> dict:
  """Trains ``config.model``'s encoder on ``config.data`` to predict
  ``target`` for ``num_steps`` steps of ``config.batch_size`` (Adam at
  ``config.eval.learning_rate``, ``config.eval.schedule`` per step,
  fine-tuning's clips and augmentation, ``config.eval.train_*``); writes
  the workdir. Returns the log (loaded when already done)."""
  done = os.path.join(workdir, DONE_FILE)
  if is_done(workdir):
    with open(done) as f:
      return json.load(f)
  t0 = time.time()
  os.makedirs(workdir, exist_ok=True)
  builder = input_lib.prepared_builder(config.data)
  split = config.data.split
  n = builder.info.splits[split].num_examples
  labels, subjects = _metadata(builder, split)
  y, num_classes = targets(target, labels, subjects, config.seed)

  mesh = mesh_lib.make_mesh()
  model = runner_lib.Classifier(
    factory.create_model(config, mesh.size).encoder,
    num_classes,
    rngs=nnx.Rngs(config.seed + 1),
  )
  runner = runner_lib.Runner(model, mesh, config.data.mean, config.data.std)
  tx, step_fn = runner.make_train_step(config.eval.learning_rate)
  params = nnx.state(model, nnx.Param)
  batch_stats = nnx.state(model, nnx.BatchStat)

  table = tf.constant(y, tf.int64)
  videos = (
    eval_input.cached_videos(
      builder.as_dataset(split=split, shuffle_files=False),
      config.data.cache_frame_size or None,
    )
    .enumerate()
    .map(lambda i, ex: {**ex, "label": tf.gather(table, i)})
  )
  store = eval_input.video_store(videos, n, f"{config.data.name} ({target})")
  batch = config.batch_size - config.batch_size % mesh.size
  ev = config.eval
  modes = tuple(
    m.strip() for m in ev.train_temporal_modes.split(",") if m.strip()
  )
  stream = eval_input.labelled_stream(
    store,
    np.arange(n),
    num_steps=num_steps,
    batch_size=batch,
    clip_len=config.data.clip_len,
    size=config.data.size,
    temporal_modes=modes,
    spatial=finetune.train_augment(ev),
    seed=config.seed * 7919 + 1,
  )
  per_epoch = max(1, n // batch)
  sched = supervised.StepSchedule(ev, num_steps, per_epoch)
  state = runner.initial_state(tx, params, batch_stats)
  log, losses, accs = [], [], []
  every = max(1, num_steps // 20)
  for step, b in enumerate(stream.as_numpy_iterator(), 1):
    state, m = step_fn(
      state, mesh_lib.to_global_arrays(b, mesh), np.float32(sched.scale)
    )
    sched.end_step(m["loss"])
    losses.append(m["loss"])
    accs.append(m["accuracy"])
    if step % every == 0 or step == num_steps:
      loss = float(np.mean(jax.device_get(losses)))
      if not np.isfinite(loss):
        raise FloatingPointError(f"{target} pretraining step {step}: {loss}")
      log.append(
        {
          "step": step,
          "loss": loss,
          "accuracy": float(np.mean(jax.device_get(accs))),
        }
      )
      logging.info("supervised pretraining (%s): %s", target, log[-1])
      losses, accs = [], []
  state = jax.device_get(state)
  item = {
    "params": nnx.to_pure_dict(state.params),
    "batch_stats": nnx.to_pure_dict(state.batch_stats),
  }
  with ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints"),
    item_handlers=ocp.StandardCheckpointHandler(),
  ) as mngr:
    mngr.save(num_steps, args=ocp.args.StandardSave(item), force=True)
    mngr.wait_until_finished()
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  out = {
    "target": target,
    "data": config.data.name,
    "classes": num_classes,
    "videos": int(n),
    "steps": num_steps,
    "batch_size": batch,
    "log": log,
    "seconds": round(time.time() - t0, 1),
  }
  with open(done, "w") as f:
    json.dump(out, f, indent=2)
  return out
