"""The fine-tuning phase (Sec. III-B): the encoder without its projection
head plus a linear layer, trained whole with cross-entropy; Adam with the
learning rate reduced on plateau.

Every step is one ``jax.jit`` over the ``'data'`` mesh on split NNX state,
as the pretraining step: batches are sharded, the :class:`TrainState` is
replicated and donated, BatchNorm statistics are global. A fold starts from
the initial encoder and the fold's trained linear layer, with a fresh Adam,
and trains on augmented clips (``eval_input.labelled_epoch``).
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from stclr_jax import compiler, models
from stclr_jax import mesh as mesh_lib
from stclr_jax.data import augment as augment_lib
from stclr_jax.evaluation import input as eval_input
from stclr_jax.evaluation import supervised
from stclr_jax.models import layers
from stclr_jax.train_step import TrainState


class Classifier(nnx.Module):
  """Encoder f without the projection head, plus a new linear layer."""

  def __init__(
    self, encoder: models.VideoResNet, num_classes: int, *, rngs: nnx.Rngs
  ):
    self.encoder = encoder
    self.head = models.LinearClassifier(
      encoder.features, num_classes, rngs=rngs
    )

  def __call__(self, video_BxTxHxWxC: jax.Array) -> jax.Array:
    return self.head(self.encoder(video_BxTxHxWxC))


class Runner:
  """Jitted forward and train functions for one model graph on one mesh,
  reused by every fold, and by every evaluation of the same graph in the
  process when obtained from :func:`runner_for` (one compilation)."""

  def __init__(self, model: Classifier, mesh, mean, std):
    self.mesh = mesh
    self._train_steps = {}
    self.graphdef, _ = nnx.split(model)
    self.mean = jnp.asarray(mean, jnp.float32)
    self.std = jnp.asarray(std, jnp.float32)
    self.replicated = mesh_lib.replicated(mesh)
    self._data = mesh_lib.batch_sharded(mesh)
    model.eval()
    self._eval_graphdef, _ = nnx.split(model)
    model.train()
    self._stats_graphdef = _statistics_graph(model)
    self._options = compiler.mesh_compiler_options(mesh)
    self._features = jax.jit(
      self._features_fn,
      out_shardings=self._data,
      compiler_options=self._options,
    )
    self._logits = jax.jit(
      self._logits_fn, out_shardings=self._data, compiler_options=self._options
    )
    self._batch_stats = jax.jit(
      self._batch_stats_fn,
      out_shardings=self.replicated,
      compiler_options=self._options,
    )

  def _normalize(self, x):
    return (x - self.mean) / self.std

  def _eval_model(self, variables):
    """``variables``: ``(params, batch_stats)``."""
    return nnx.merge(self._eval_graphdef, *variables)

  def _features_fn(self, variables, video):
    """(B, K, T, H, W, 3) -> (B, D): K clips' features averaged."""
    b, k = video.shape[:2]
    h = self._eval_model(variables).encoder(
      self._normalize(video.reshape(b * k, *video.shape[2:]))
    )
    return h.astype(jnp.float32).reshape(b, k, -1).mean(1)

  def _logits_fn(self, variables, video):
    b, k = video.shape[:2]
    logits = self._eval_model(variables)(
      self._normalize(video.reshape(b * k, *video.shape[2:]))
    )
    return jax.nn.log_softmax(logits).reshape(b, k, -1).mean(1)

  def _batch_stats_fn(self, variables, video):
    """Every BatchNorm's statistics of this batch, in training mode."""
    model = nnx.merge(self._stats_graphdef, *variables)
    model.encoder(self._normalize(video.reshape(-1, *video.shape[2:])))
    return nnx.state(model, nnx.BatchStat)

  def reestimate_batch_stats(self, variables, batches: Iterable[dict]):
    """BatchNorm running statistics re-estimated on ``batches`` (evaluation
    batches, ``mask`` marking real clips): each layer's mean and unbiased
    variance in one pass in training mode, averaged over the batches
    weighted by their clips (PyTorch's ``swa_utils.update_bn``, a cumulative
    average, with partial batches counted by size). Statistics are over
    the whole batch whatever ``bn_per_device``. Returns host arrays in the
    shape of ``variables[1]``."""
    variables = jax.device_put(variables, self.replicated)

    def dispatched():
      for batch in batches:
        keep = batch["mask"].astype(bool)
        k = int(keep.sum())
        if k:
          yield self._batch_stats(variables, batch["video"][keep]), k

    total, count = None, 0
    for stats, k in fetched(dispatched()):
      stats = jax.tree.map(lambda x, k=k: np.float64(k) * x, stats)
      total = stats if total is None else jax.tree.map(np.add, total, stats)
      count += k
    if count == 0:
      raise ValueError("reestimate_batch_stats: no videos to estimate from")
    ref = jax.device_get(variables[1])
    return jax.tree.map(
      lambda t, r: (t / count).astype(np.asarray(r).dtype), total, ref
    )

  def _run(self, fn, variables, batches: Iterable[dict]):
    variables = jax.device_put(variables, self.replicated)

    def dispatched():
      for batch in batches:
        video = mesh_lib.to_global_arrays(batch["video"], self.mesh)
        yield fn(variables, video), batch["mask"].astype(bool), batch["label"]

    outs, labels = [], []
    for out, keep, label in fetched(dispatched()):
      outs.append(np.asarray(out)[keep])
      labels.append(label[keep])
    return np.concatenate(outs), np.concatenate(labels)

  def features(self, variables, batches):
    """Features of the frozen encoder (evaluation mode) and the labels;
    ``variables``: ``(params, batch_stats)``."""
    return self._run(self._features, variables, batches)

  def initial_state(self, tx, params, batch_stats) -> TrainState:
    """A fresh training state (``tx`` initialised, step 0) on the mesh,
    replicated: where every supervised phase starts."""
    return jax.device_put(
      TrainState(
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        step=np.int32(0),
      ),
      self.replicated,
    )

  def log_probs(self, variables, batches):
    """Log-probabilities (the mean over a video's clips) and labels."""
    return self._run(self._logits, variables, batches)

  def predict(self, variables, batches):
    """Predicted classes (mean log-probability over clips) and labels."""
    logp, labels = self._run(self._logits, variables, batches)
    return np.argmax(logp, -1), labels

  def make_train_step(self, learning_rate: float, head_mult: float = 1.0):
    """The jitted, donated fine-tuning step: Adam at ``learning_rate`` times
    the plateau scale (an input, so one compilation serves every fold), and
    ``head_mult`` times that for the linear layer (``eval.head_lr_mult``).
    Returns ``(tx, step)``; ``step(state, batch, lr_scale)``. The same pair
    for the same rates (its compilations are kept)."""
    key = (learning_rate, head_mult)
    if key not in self._train_steps:
      self._train_steps[key] = self._new_train_step(learning_rate, head_mult)
    return self._train_steps[key]

  def _new_train_step(self, learning_rate: float, head_mult: float = 1.0):
    tx = optax.scale_by_adam()

    def step(state: TrainState, batch, lr_scale):
      def loss_of(params):
        model = nnx.merge(self.graphdef, params, state.batch_stats, copy=True)
        logits = model(self._normalize(batch["video"]))
        loss, acc = supervised.cross_entropy(logits, batch["label"])
        return loss, (acc, nnx.state(model, nnx.BatchStat))

      (loss, (acc, batch_stats)), grads = jax.value_and_grad(
        loss_of, has_aux=True
      )(state.params)
      updates, opt_state = tx.update(grads, state.opt_state)
      updates = jax.tree.map(lambda u: -learning_rate * lr_scale * u, updates)
      if head_mult != 1.0:
        updates["head"] = jax.tree.map(lambda u: head_mult * u, updates["head"])
      new_state = TrainState(
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
        step=state.step + 1,
      )
      return new_state, {"loss": loss, "accuracy": acc}

    return tx, jax.jit(
      step,
      in_shardings=(self.replicated, self._data, self.replicated),
      out_shardings=(self.replicated, self.replicated),
      donate_argnums=(0,),
      compiler_options=self._options,
    )


# Runners kept by runner_for: the most recently used few graphs.
_RUNNERS: collections.OrderedDict = collections.OrderedDict()
_MAX_RUNNERS = 4


def runner_for(model: Classifier, mesh, mean, std) -> Runner:
  """The :class:`Runner` of ``model``'s graph on ``mesh`` with this input
  normalisation, shared by every evaluation of the process that asks for
  the same: a Runner holds no weights (its functions take them as
  inputs), and a new one compiles every function again (tens of seconds
  per evaluation on a CPU; bench/synthetic_protocol.py runs dozens)."""
  key = (
    nnx.split(model)[0],
    mesh,
    tuple(float(m) for m in mean),
    tuple(float(s) for s in std),
  )
  runner = _RUNNERS.pop(key, None) or Runner(model, mesh, mean, std)
  _RUNNERS[key] = runner
  while len(_RUNNERS) > _MAX_RUNNERS:
    _RUNNERS.popitem(last=False)
  return runner


# Batches whose results may be in flight while the host waits for one.
IN_FLIGHT = 2


def fetched(dispatched: Iterable[tuple], depth: int = IN_FLIGHT) -> Iterator:
  """The tuples of ``dispatched`` in order, each with its first element (a
  device result) fetched to the host, ``depth`` tuples behind the one
  being dispatched: the host reads and sends the next batches while the
  device computes, instead of waiting for each result in turn, and at
  most ``depth + 1`` batches are held."""
  pending = collections.deque()
  for item in dispatched:
    pending.append(item)
    if len(pending) > depth:
      out, *rest = pending.popleft()
      yield (jax.device_get(out), *rest)
  while pending:
    out, *rest = pending.popleft()
    yield (jax.device_get(out), *rest)


def started(items: Iterator) -> Iterator:
  """``items`` with its first item already read: for a tf.data iterator,
  the pipeline is built and its prefetching running from then on."""
  try:
    first = next(items)
  except StopIteration:
    return iter(())
  return itertools.chain([first], items)


def _statistics_graph(model: Classifier):
  """The graph of a copy of ``model`` in training mode with every
  BatchNorm's momentum 1 (the running statistics after a batch are that
  batch's) and one group. (A copy: a graph split earlier from ``model``
  shares its modules' attributes.)"""
  model = nnx.clone(model)
  for _, m in nnx.iter_modules(model):
    if isinstance(m, layers.BatchNorm):
      m.momentum, m.num_groups = 1.0, 1
  return nnx.split(model)[0]


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
  state = runner.initial_state(tx, params, batch_stats)
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
    losses, accs = [], []
    for batch in batches:
      state, m = step_fn(
        state,
        mesh_lib.to_global_arrays(batch, runner.mesh),
        np.float32(scale),
      )
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
        "lr": ev.learning_rate * scale,
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
  state = runner.initial_state(tx, params, batch_stats)
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
        "lr": ev.learning_rate * scale,
        "seconds": round(time.time() - t0, 2),
      }
    )
    losses, accs, t0 = [], [], time.time()
    if on_epoch_end is not None:
      log[-1].update(on_epoch_end(epoch, state) or {})
    logging.info("fold %d fine-tune step %d: %s", fold, step, log[-1])
  return state, log
