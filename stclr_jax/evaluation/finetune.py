"""The fine-tuning phase (Sec. III-B): the encoder without its projection
head plus a linear layer, trained whole with cross-entropy; Adam with the
learning rate reduced on plateau.

The model and its jitted train step are
:mod:`~stclr_jax.evaluation.runner`'s. A fold starts from the initial
encoder and the fold's trained linear layer, with a fresh Adam, and trains
on augmented clips (``eval_input.labelled_epoch``, or
``eval_input.labelled_stream`` with ``eval.budget="steps"``).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import logging
from flax import nnx

from stclr_jax import mesh as mesh_lib
from stclr_jax.data import augment as augment_lib
from stclr_jax.evaluation import input as eval_input
from stclr_jax.evaluation import supervised
from stclr_jax.evaluation.runner import Runner, started
from stclr_jax.train_step import TrainState


def with_head(params, w, b):
  """A copy of the classifier's ``params`` with the linear layer set to
  ``(w, b)`` (the fold's trained linear phase)."""
  pure = nnx.to_pure_dict(params)
  pure["head"]["fc"]["kernel"] = np.asarray(w)
  pure["head"]["fc"]["bias"] = np.asarray(b)
  params = jax.tree.map(lambda x: x, params)
  nnx.replace_by_pure_dict(params, pure)
  return params


def train_augment(ev) -> augment_lib.SpatialAugment:
  """Fine-tuning clips: crop and flip as configured, colour left alone."""
  return augment_lib.SpatialAugment(
    crop=ev.train_crop,
    crop_area=tuple(ev.train_crop_area),
    flip=ev.train_flip,
    color=False,
  )


def finetune_fold(
  runner: Runner,
  step_fn,
  tx,
  *,
  params,
  batch_stats,
  videos,
  num_videos: int,
  train_idx: np.ndarray,
  config,
  batch_size: int,
  fold: int,
  on_epoch_end=None,
  store=None,
  seed: int | None = None,
) -> tuple[TrainState, list[dict]]:
  """``config.eval.finetune_epochs`` epochs of fine-tuning on the videos
  ``train_idx`` of ``videos`` (the cached split of ``num_videos``); returns
  the final state and a log line per epoch.

  ``on_epoch_end(epoch, state)``, if given, is called after each epoch
  (1-based) and may return a dict of extra fields for its log line (the
  learning curve of ``eval.log_test_every``); it cannot change training.

  ``eval.budget="steps"``: ``eval.finetune_steps`` steps instead, from
  :func:`eval_input.labelled_stream` over ``store`` (:func:`eval_input.
  video_store` of the split), the schedule per step; "epoch" in the log
  and for ``on_epoch_end`` is then an epoch's worth of steps
  (``len(train_idx) // batch_size``, at least 1). ``seed``: the training
  seed (default ``config.seed * 1009 + fold``).
  """
  ev = config.eval
  if seed is None:
    seed = config.seed * 1009 + fold
  if budget(ev) == "steps":
    return _finetune_steps(
      runner,
      step_fn,
      tx,
      params=params,
      batch_stats=batch_stats,
      store=store,
      train_idx=train_idx,
      config=config,
      batch_size=batch_size,
      fold=fold,
      seed=seed,
      on_epoch_end=on_epoch_end,
    )
  modes = tuple(
    m.strip() for m in ev.train_temporal_modes.split(",") if m.strip()
  )
  sched = supervised.schedule(ev, ev.finetune_epochs)
  state = runner.initial_state(
    tx, params, batch_stats, seed if runner.transformer else None
  )
  subset = eval_input.select(videos, num_videos, train_idx)
  spatial = train_augment(ev)

  def epoch_batches(epoch):
    return started(
      eval_input.labelled_epoch(
        subset,
        len(train_idx),
        batch_size=batch_size,
        clip_len=config.data.clip_len,
        size=config.data.size,
        temporal_modes=modes,
        spatial=spatial,
        seed=seed,
        epoch=epoch,
      ).as_numpy_iterator()
    )

  log = []
  batches = epoch_batches(0) if ev.finetune_epochs > 0 else None
  for epoch in range(ev.finetune_epochs):
    t0 = time.time()
    scale = sched.scale
    lr = ev.learning_rate * scale
    losses, accs = [], []
    for batch in batches:
      state, m = step_fn(
        state,
        mesh_lib.to_global_arrays(batch, runner.mesh),
        np.float32(scale),
      )
      lr = m.get("lr", ev.learning_rate * scale)
      losses.append(m["loss"])
      accs.append(m["accuracy"])
    if epoch + 1 < ev.finetune_epochs:
      # The next epoch's input pipeline, built and started while this
      # epoch's steps run (its batches do not depend on them), not after.
      batches = epoch_batches(epoch + 1)
    mean_loss = float(np.mean(jax.device_get(losses)))
    if not np.isfinite(mean_loss):
      raise FloatingPointError(
        f"fold {fold}, fine-tuning epoch {epoch + 1}: non-finite loss "
        f"{mean_loss}"
      )
    sched.end_epoch(mean_loss)
    log.append(
      {
        "epoch": epoch + 1,
        "loss": mean_loss,
        "accuracy": float(np.mean(jax.device_get(accs))),
        "lr": float(lr),
        "seconds": round(time.time() - t0, 2),
      }
    )
    if on_epoch_end is not None:
      log[-1].update(on_epoch_end(epoch + 1, state) or {})
    logging.info("fold %d fine-tune epoch %d: %s", fold, epoch + 1, log[-1])
  return state, log


BUDGETS = ("epochs", "steps")


def budget(ev) -> str:
  """``eval.budget``: ``"epochs"`` (the paper's: ``linear_epochs`` and
  ``finetune_epochs`` over the labelled videos, so fewer steps at fewer
  labels) or ``"steps"`` (``linear_steps`` and ``finetune_steps``, the same
  at every label fraction)."""
  name = ev.get("budget", "epochs")
  if name not in BUDGETS:
    raise ValueError(f"eval.budget must be one of {BUDGETS}, got {name!r}")
  return name


def _finetune_steps(
  runner,
  step_fn,
  tx,
  *,
  params,
  batch_stats,
  store,
  train_idx,
  config,
  batch_size: int,
  fold: int,
  seed: int,
  on_epoch_end,
):
  """:func:`finetune_fold` with a budget of ``eval.finetune_steps``."""
  ev = config.eval
  if store is None:
    raise ValueError("eval.budget='steps' needs the split's video store")
  steps = int(ev.finetune_steps)
  per_epoch = max(1, len(train_idx) // batch_size)
  sched = supervised.StepSchedule(ev, steps, per_epoch)
  state = runner.initial_state(
    tx, params, batch_stats, seed if runner.transformer else None
  )
  modes = tuple(
    m.strip() for m in ev.train_temporal_modes.split(",") if m.strip()
  )
  batches = (
    started(
      eval_input.labelled_stream(
        store,
        train_idx,
        num_steps=steps,
        batch_size=batch_size,
        clip_len=config.data.clip_len,
        size=config.data.size,
        temporal_modes=modes,
        spatial=train_augment(ev),
        seed=seed,
      ).as_numpy_iterator()
    )
    if steps > 0
    else iter(())
  )
  log, losses, accs, t0 = [], [], [], time.time()
  for step, batch in enumerate(batches, 1):
    scale = sched.scale
    state, m = step_fn(
      state, mesh_lib.to_global_arrays(batch, runner.mesh), np.float32(scale)
    )
    lr = m.get("lr", ev.learning_rate * scale)
    sched.end_step(m["loss"])
    losses.append(m["loss"])
    accs.append(m["accuracy"])
    if step % per_epoch and step != steps:
      continue
    mean_loss = float(np.mean(jax.device_get(losses)))
    if not np.isfinite(mean_loss):
      raise FloatingPointError(
        f"fold {fold}, fine-tuning step {step}: non-finite loss {mean_loss}"
      )
    epoch = -(-step // per_epoch)
    log.append(
      {
        "epoch": epoch,
        "step": step,
        "loss": mean_loss,
        "accuracy": float(np.mean(jax.device_get(accs))),
        "lr": float(lr),
        "seconds": round(time.time() - t0, 2),
      }
    )
    losses, accs, t0 = [], [], time.time()
    if on_epoch_end is not None:
      log[-1].update(on_epoch_end(epoch, state) or {})
    logging.info("fold %d fine-tune step %d: %s", fold, step, log[-1])
  return state, log
