"""The classifier model and its jitted functions: :class:`Classifier`, the
encoder without its projection head plus a linear layer, and :class:`Runner`,
its forward passes (features, log-probabilities, BatchNorm re-estimation) and
fine-tuning train step, shared across evaluations by :func:`runner_for`; with
the host-side prefetch helpers :func:`fetched` and :func:`started`.

Every function is one ``jax.jit`` over the ``'data'`` mesh on split NNX
state, as the pretraining step: batches are sharded, the
:class:`TrainState` is replicated and donated, BatchNorm statistics are
global.
"""

from __future__ import annotations

import collections
import itertools
import json
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stclr_jax import compiler, models
from stclr_jax import mesh as mesh_lib
from stclr_jax.evaluation import supervised
from stclr_jax.evaluation import transformer_recipe as recipe_lib
from stclr_jax.models import layers
from stclr_jax.train_step import TrainState


class Classifier(nnx.Module):
  """Encoder f without the projection head, plus a new linear layer."""

  def __init__(self, encoder, num_classes: int, *, rngs: nnx.Rngs):
    self.encoder = encoder
    self.num_classes = num_classes
    self.head = models.LinearClassifier(
      encoder.features,
      num_classes,
      param_dtype=encoder.param_dtype,  # float64 for float64 checks
      rngs=rngs,
    )

  def __call__(self, video_BxTxHxWxC: jax.Array, rng=None) -> jax.Array:
    """Logits; ``rng``: a video transformer's stochastic-depth key."""
    if rng is None:
      return self.head(self.encoder(video_BxTxHxWxC))
    return self.head(self.encoder(video_BxTxHxWxC, rng=rng))


class Runner:
  """Jitted forward and train functions for one model graph on one mesh,
  reused by every fold, and by every evaluation of the same graph in the
  process when obtained from :func:`runner_for` (one compilation)."""

  def __init__(self, model: Classifier, mesh, mean, std):
    self.mesh = mesh
    self._train_steps = {}
    # A video transformer fine-tunes with eval.transformer's recipe and
    # averages its test windows' softmax (transformer_recipe.py).
    self.transformer = isinstance(model.encoder, models.VideoTransformer)
    self.num_classes = model.num_classes
    self.num_blocks = len(model.encoder.blocks) if self.transformer else 0
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
    logp = jax.nn.log_softmax(logits).reshape(b, k, -1)
    if self.transformer:  # the windows' probabilities averaged
      return jnp.log(jnp.mean(jnp.exp(logp), 1))
    return logp.mean(1)

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

  def initial_state(
    self, tx, params, batch_stats, seed: int | None = None
  ) -> TrainState:
    """A fresh training state (``tx`` initialised, step 0) on the mesh,
    replicated: where every supervised phase starts. ``seed``: the run's
    key for a transformer step's draws (mixing, stochastic depth)."""
    rng = None
    if seed is not None:
      rng = np.asarray(jax.random.key_data(jax.random.key(seed)))
    return jax.device_put(
      TrainState(
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        step=np.int32(0),
        rng=rng,
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

  def make_transformer_step(self, recipe, steps: int, batch_size: int):
    """A video transformer's jitted, donated fine-tuning step for a run of
    ``steps`` steps at ``batch_size`` (:mod:`transformer_recipe`): the rate
    ``lr_table[step]``, the draws from ``state.rng`` folded with the step
    (:meth:`initial_state` with a seed). Returns ``(tx, step, table)``;
    ``step(state, batch, lr_scale)`` ignores ``lr_scale`` (the loop's
    schedule): the recipe's table is the schedule."""
    key = (
      "transformer",
      json.dumps(recipe.to_dict(), sort_keys=True),
      steps,
      batch_size,
    )
    if key not in self._train_steps:
      self._train_steps[key] = self._new_transformer_step(
        recipe, steps, batch_size
      )
    return self._train_steps[key]

  def _new_transformer_step(self, recipe, steps: int, batch_size: int):
    tx = recipe_lib.optimizer(recipe, self.num_blocks)
    table = recipe_lib.lr_table(
      recipe, recipe_lib.learning_rate(recipe, batch_size), steps
    )
    rates = jnp.asarray(table, jnp.float32)

    def step(state: TrainState, batch, lr_scale):
      del lr_scale
      key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
      k_mix, k_drop = jax.random.split(key)
      video, targets, _ = recipe_lib.mix(
        k_mix,
        self._normalize(batch["video"]),
        batch["label"],
        self.num_classes,
        recipe,
      )

      def loss_of(params):
        model = nnx.merge(self.graphdef, params, state.batch_stats, copy=True)
        logits = model(video, rng=k_drop)
        loss = recipe_lib.soft_cross_entropy(logits, targets)
        acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, acc

      (loss, acc), grads = jax.value_and_grad(loss_of, has_aux=True)(
        state.params
      )
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      lr = rates[jnp.minimum(state.step, len(table) - 1)]
      updates = jax.tree.map(lambda u: -lr.astype(u.dtype) * u, updates)
      new_state = TrainState(
        params=optax.apply_updates(state.params, updates),
        batch_stats=state.batch_stats,
        opt_state=opt_state,
        step=state.step + 1,
        rng=state.rng,
      )
      return new_state, {"loss": loss, "accuracy": acc, "lr": lr}

    return (
      tx,
      jax.jit(
        step,
        in_shardings=(self.replicated, self._data, self.replicated),
        out_shardings=(self.replicated, self.replicated),
        donate_argnums=(0,),
        compiler_options=self._options,
      ),
      table,
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
