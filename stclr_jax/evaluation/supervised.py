"""What both supervised phases share: the cross-entropy objective and the
learning rate reduced on plateau (``optax.contrib.reduce_on_plateau``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
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
  ``patience + 1``: optax gets ``patience + 1``.
  """

  def __init__(self, ev):
    self._tx = optax.contrib.reduce_on_plateau(
      factor=ev.plateau_factor,
      patience=ev.plateau_patience + 1,
      rtol=ev.plateau_rtol,
      accumulation_size=1,
    )
    self._state = self._tx.init(jnp.zeros(()))

  @property
  def scale(self) -> float:
    return float(self._state.scale)

  def end_epoch(self, mean_loss: float) -> float:
    _, self._state = self._tx.update(
      jnp.zeros(()), self._state, value=jnp.asarray(mean_loss)
    )
    return self.scale
