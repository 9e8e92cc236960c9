"""Optimisers and learning-rate schedules from ``config.optim`` (optax)."""
from __future__ import annotations

import jax
import optax


def schedule(optim, steps_per_epoch: int, total_steps: int):
  """Constant, or linear warmup then cosine decay to 0 (per step)."""
  warmup = int(round(optim.warmup_epochs * steps_per_epoch))
  lr = optim.learning_rate
  if optim.schedule == "constant":
    if warmup:
      return optax.join_schedules(
          [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)],
          [warmup])
    return optax.constant_schedule(lr)
  if optim.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1))
  raise ValueError(f"config.optim.schedule: unknown {optim.schedule!r} "
                   "(constant | cosine)")


def _not_bn_or_bias(params):
  """True for conv/dense kernels; False for BatchNorm scale/bias and biases
  (LARS excludes them from decay and trust-ratio adaptation, as SimCLR)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def make_optimizer(optim, lr_schedule) -> optax.GradientTransformation:
  """SGD as PyTorch's (weight decay added to the gradient before momentum,
  on every parameter: the paper's setting), LARS, or Adam."""
  chain = []
  if optim.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  if optim.name == "sgd":
    if optim.weight_decay:
      chain.append(optax.add_decayed_weights(optim.weight_decay))
    chain.append(optax.sgd(lr_schedule, momentum=optim.momentum or None))
  elif optim.name == "lars":
    chain.append(optax.lars(lr_schedule, weight_decay=optim.weight_decay,
                            weight_decay_mask=_not_bn_or_bias,
                            trust_ratio_mask=_not_bn_or_bias,
                            momentum=optim.momentum))
  elif optim.name == "adam":
    if optim.weight_decay:
      chain.append(optax.add_decayed_weights(optim.weight_decay))
    chain.append(optax.adam(lr_schedule))
  else:
    raise ValueError(f"config.optim.name: unknown {optim.name!r} "
                     "(sgd | lars | adam)")
  return optax.chain(*chain)
