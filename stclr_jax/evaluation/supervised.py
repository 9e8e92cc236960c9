"""What both supervised phases share: the cross-entropy objective and the
learning-rate schedule (``eval.schedule``): the paper's reduce-on-plateau
(``optax.contrib.reduce_on_plateau``), a cosine decay, or constant."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array):
  """Mean softmax cross-entropy and mean accuracy."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = jnp.argmax(logits, -1) == labels
  return jnp.mean(loss), jnp.mean(correct.astype(jnp.float32))


class Plateau:
  """The learning-rate scale of PyTorch's ``ReduceLROnPlateau`` (mode min,
  relative threshold ``plateau_rtol``, no cooldown): multiplied by
  ``plateau_factor`` once the epoch's mean training loss has failed to
  improve for more than ``plateau_patience`` epochs in a row.

  It is ``optax.contrib.reduce_on_plateau`` stepped once per epoch on the
  host (so the jitted step takes the scale as an input and compiles once).
  optax reduces after ``patience`` epochs without improvement, PyTorch after
  ``patience + 1``: optax gets ``patience + 1``. Its update runs jitted,
  compiled once per process for each setting (:func:`_plateau`): run
  eagerly, its ``lax.cond`` compiled anew at every epoch (0.1 s each).
  """

  def __init__(self, ev):
    self._tx, self._update = _plateau(
      ev.plateau_factor, ev.plateau_patience + 1, ev.plateau_rtol
    )
    self._state = self._tx.init(jnp.zeros(()))

  @property
  def scale(self) -> float:
    return float(self._state.scale)

  def end_epoch(self, mean_loss: float) -> float:
    _, self._state = self._update(
      jnp.zeros(()), self._state, value=jnp.asarray(mean_loss)
    )
    return self.scale


@functools.cache
def _plateau(factor: float, patience: int, rtol: float):
  """``(transform, jitted update)`` of ``reduce_on_plateau`` with these
  settings, shared by every :class:`Plateau` of the process."""
  tx = optax.contrib.reduce_on_plateau(
    factor=factor, patience=patience, rtol=rtol, accumulation_size=1
  )
  return tx, jax.jit(tx.update)


class Cosine:
  """The learning-rate scale ``(1 + cos(pi * e / epochs)) / 2`` in epoch
  ``e`` (0-based): from 1 down to near 0 over the phase, whatever the loss
  does."""

  def __init__(self, epochs: int):
    self._epochs = max(int(epochs), 1)
    self._epoch = 0

  @property
  def scale(self) -> float:
    return 0.5 * (1 + math.cos(math.pi * self._epoch / self._epochs))

  def end_epoch(self, mean_loss: float) -> float:
    del mean_loss
    self._epoch += 1
    return self.scale


class Constant:
  """Scale 1 throughout."""

  scale = 1.0

  def end_epoch(self, mean_loss: float) -> float:
    del mean_loss
    return self.scale


SCHEDULES = ("plateau", "cosine", "constant")


class StepSchedule:
  """The learning-rate scale of a phase set in optimisation steps
  (``eval.budget="steps"``): ``"cosine"`` decays per step,
  ``(1 + cos(pi * t / num_steps)) / 2`` at step ``t``; ``"constant"`` is
  1; ``"plateau"`` is :class:`Plateau` fed the mean training loss of every
  ``steps_per_epoch`` steps (an epoch's worth of the labelled set, at
  least one step). ``.scale`` for the coming step, ``.end_step(loss)``
  after it (the loss may be a device array: it is read only by the
  plateau rule, once per ``steps_per_epoch``)."""

  def __init__(self, ev, num_steps: int, steps_per_epoch: int):
    self.name = ev.get("schedule", "plateau")
    if self.name not in SCHEDULES:
      raise ValueError(
        f"eval.schedule must be one of {SCHEDULES}, got {self.name!r}"
      )
    self._steps = max(int(num_steps), 1)
    self._per_epoch = max(int(steps_per_epoch), 1)
    self._plateau = Plateau(ev) if self.name == "plateau" else None
    self._step = 0
    self._losses = []

  @property
  def scale(self) -> float:
    if self.name == "cosine":
      return 0.5 * (1 + math.cos(math.pi * self._step / self._steps))
    if self._plateau is not None:
      return self._plateau.scale
    return 1.0

  def end_step(self, loss) -> None:
    self._step += 1
    if self._plateau is None:
      return
    self._losses.append(loss)
    if len(self._losses) == self._per_epoch:
      self._plateau.end_epoch(float(np.mean(jax.device_get(self._losses))))
      self._losses = []


def schedule(ev, epochs: int):
  """The learning-rate scale of a supervised phase of ``epochs`` epochs, as
  ``ev.schedule`` names it (``"plateau"``: :class:`Plateau`, the paper's
  rule); ``.scale`` for the coming epoch, ``.end_epoch(mean_loss)`` after
  it."""
  name = ev.get("schedule", "plateau")
  if name == "plateau":
    return Plateau(ev)
  if name == "cosine":
    return Cosine(epochs)
  if name == "constant":
    return Constant()
  raise ValueError(f"eval.schedule must be one of {SCHEDULES}, got {name!r}")
