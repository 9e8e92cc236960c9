"""The linear phase: a linear layer trained on the frozen encoder's
features, computed once per video in evaluation mode (BatchNorm running
statistics) from the deterministic test view. A frozen encoder maps a clip
to one feature, so this is the same model as running the encoder every
step, without the cost.

The plateau is measured on the training loss (mean per epoch): the folds
have no validation part, and the test part must not steer training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stclr_jax.evaluation import input as eval_input
from stclr_jax.evaluation import supervised

_TX = optax.scale_by_adam()


@jax.jit
def _step(params, opt_state, x_all, y_all, idx, lr):
  """One Adam step on the minibatch ``idx`` of ``(x_all, y_all)``. At module
  level, so that it compiles once per shape in a process, not once per
  fold; the minibatch is gathered inside (one dispatch per step)."""

  def loss_of(p):
    return supervised.cross_entropy(x_all[idx] @ p["w"] + p["b"], y_all[idx])

  (loss, acc), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
  updates, opt_state = _TX.update(grads, opt_state)
  updates = jax.tree.map(lambda u: -lr * u, updates)
  return optax.apply_updates(params, updates), opt_state, loss, acc


def train_linear(
  features,
  labels,
  num_classes: int,
  *,
  epochs: int,
  batch_size: int,
  learning_rate: float,
  ev,
  seed: int,
  init_scale: float = 0.01,
  standardize: bool = False,
  steps: int = 0,
):
  """The linear phase on frozen features: ``(W, b)`` and per-epoch logs.

  W starts N(0, ``init_scale``) and b at zero, as ``LinearClassifier``;
  minibatches are a seeded shuffle per epoch, full batches only; Adam with
  the learning rate scaled by ``ev.schedule`` (``supervised.schedule``).

  ``standardize``: train on features standardised with the training set's
  mean and std per dimension, then fold that affine map into the returned
  ``(W, b)``, so they apply to the raw features: still one linear layer on
  the frozen encoder, but well conditioned. Pooled ReLU features sit on a
  large offset with a small spread, where Adam barely moves the training
  loss off ln C: measured in BENCHMARKS.md at 6b7ade2 (Synthetic
  protocol, Diagnosis, item 6) and tested in tests/evaluation_linear_test.py.

  ``steps`` > 0: a budget of ``steps`` optimisation steps instead of
  ``epochs`` (``eval.budget="steps"``), whatever the number of videos:
  minibatches in :func:`eval_input.stream_order` (seeded passes, repeats
  within a batch when it is larger than the set), the schedule per step
  (:class:`supervised.StepSchedule`), one log line per epoch's worth of
  steps.
  """
  features = np.asarray(features, np.float32)
  n, d = features.shape
  if standardize:
    mean = features.mean(0)
    std = features.std(0)
    std = np.where(std > 1e-6 * max(float(std.max()), 1e-30), std, 1.0)
    features = (features - mean) / std
  if steps > 0:
    per_epoch = max(1, n // batch_size)
  else:
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
  rng = np.random.default_rng([seed, 0x11EA])
  params = {
    "w": jnp.asarray(rng.normal(0, init_scale, (d, num_classes)), jnp.float32),
    "b": jnp.zeros((num_classes,), jnp.float32),
  }
  opt_state = _TX.init(params)
  x_all = jnp.asarray(features, jnp.float32)
  y_all = jnp.asarray(labels, jnp.int32)
  log = []

  def run(order, lr_of, end_step):
    nonlocal params, opt_state
    losses, accs = [], []
    for idx in order.astype(np.int32):
      lr = lr_of()
      params, opt_state, loss, acc = _step(
        params, opt_state, x_all, y_all, idx, lr
      )
      end_step(loss)
      losses.append(loss)
      accs.append(acc)
    # One transfer per epoch (the steps above only queue work).
    losses, accs = jax.device_get((losses, accs))
    return float(np.mean(losses)), float(np.mean(accs))

  if steps > 0:
    sched = supervised.StepSchedule(ev, steps, per_epoch)
    order = eval_input.stream_order(n, steps, batch_size, [seed, 0x11EA])
    for start in range(0, steps, per_epoch):
      lr0 = learning_rate * sched.scale
      loss, acc = run(
        order[start : start + per_epoch],
        lambda: learning_rate * sched.scale,
        sched.end_step,
      )
      log.append(
        {
          "step": min(start + per_epoch, steps),
          "loss": loss,
          "accuracy": acc,
          "lr": lr0,
        }
      )
  else:
    sched = supervised.schedule(ev, epochs)
    for epoch in range(epochs):
      lr = learning_rate * sched.scale
      order = rng.permutation(n)[: per_epoch * batch_size]
      loss, acc = run(
        order.reshape(per_epoch, -1), lambda lr=lr: lr, lambda _: None
      )
      sched.end_epoch(loss)
      log.append({"epoch": epoch + 1, "loss": loss, "accuracy": acc, "lr": lr})
  params = jax.device_get(params)
  if standardize:  # W (x - m) / s + b == (W / s) x + (b - (m / s) W)
    w = np.asarray(params["w"], np.float64) / std[:, None]
    params = {
      "w": w.astype(np.float32),
      "b": (
        np.asarray(params["b"], np.float64) - mean.astype(np.float64) @ w
      ).astype(np.float32),
    }
  return params, log


def linear_logits(params, features) -> np.ndarray:
  """``features @ W + b``: the linear layer's logits, float32."""
  return (np.asarray(features) @ params["w"] + params["b"]).astype(np.float32)


def linear_predict(params, features) -> np.ndarray:
  """Predicted classes of ``features`` under ``(W, b)``."""
  return np.argmax(np.asarray(features) @ params["w"] + params["b"], -1)
