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
        [warmup],
      )
    return optax.constant_schedule(lr)
  if optim.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
      0.0, lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1)
    )
  raise ValueError(
    f"config.optim.schedule: unknown {optim.schedule!r} (constant | cosine)"
  )


# LARS's mask by parameter name: the models' convolutions (VideoConv) and
# dense layers (nnx.Linear) call their weights ``kernel``; BatchNorm has
# ``scale`` and ``bias``, nnx.Linear ``bias``.
_DECAYED_NAMES = frozenset({"kernel"})
_NOT_DECAYED_NAMES = frozenset({"scale", "bias"})


def _param_name(path) -> str | None:
  """The parameter's name: the last key of ``path`` that is not ``value``.

  A leaf of an ``nnx.State`` flattens to ``(..., 'kernel', .value)`` (the
  Variable's value is a ``GetAttrKey('value')``); of a pure dict
  (``nnx.to_pure_dict``) to ``(..., 'kernel')``.
  """
  for k in reversed(path):
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        name = getattr(k, attr)
        break
    else:
      name = None
    if name != "value":
      return name if isinstance(name, str) else None
  return None


def _not_bn_or_bias(params):
  """LARS's weight-decay and trust-ratio mask: True for conv/dense kernels,
  False for BatchNorm scales and biases and for conv/dense biases (SimCLR
  excludes them from both).

  Decided by the parameter's name (the last key of its path that is not an
  ``nnx.Variable``'s ``value``), so that the mask is the same for the
  ``nnx.State`` the train step passes (``nnx.split(model, nnx.Param, ...)``)
  and for a pure dict: ``kernel`` is decayed, ``scale`` and ``bias`` are
  not. A parameter of any other name is decided by its rank, the usual rule
  for layers that name their weights otherwise: matrices and kernels (2-D
  or more) are decayed, vectors and scalars (norm scales, biases) are not.

  Raises ValueError for a non-empty tree with nothing to decay: LARS would
  silently be momentum SGD (a mask that could not read the paths did that).
  """

  def decayed(path, leaf):
    name = _param_name(path)
    if name in _DECAYED_NAMES:
      return True
    if name in _NOT_DECAYED_NAMES:
      return False
    return len(getattr(leaf, "shape", ())) >= 2

  mask = jax.tree_util.tree_map_with_path(decayed, params)
  leaves = jax.tree_util.tree_leaves(mask)
  if leaves and not any(leaves):
    names = sorted(
      {
        str(_param_name(p))
        for p, _ in jax.tree_util.tree_leaves_with_path(params)
      }
    )
    raise ValueError(
      "LARS mask: no kernel (weight matrix) among the parameters, whose "
      f"names are {names}; LARS would do no weight decay and no trust-ratio "
      "scaling"
    )
  return mask


def make_optimizer(optim, lr_schedule) -> optax.GradientTransformation:
  """SGD as PyTorch's (weight decay added to the gradient before momentum,
  on every parameter: the paper's setting), LARS, Adam, or AdamW (masked
  autoencoding's)."""
  chain = []
  if optim.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  if optim.name == "sgd":
    if optim.weight_decay:
      chain.append(optax.add_decayed_weights(optim.weight_decay))
    chain.append(optax.sgd(lr_schedule, momentum=optim.momentum or None))
  elif optim.name == "lars":
    chain.append(
      optax.lars(
        lr_schedule,
        weight_decay=optim.weight_decay,
        weight_decay_mask=_not_bn_or_bias,
        trust_ratio_mask=_not_bn_or_bias,
        momentum=optim.momentum,
      )
    )
  elif optim.name == "adam":
    if optim.weight_decay:
      chain.append(optax.add_decayed_weights(optim.weight_decay))
    chain.append(optax.adam(lr_schedule))
  elif optim.name == "adamw":
    # VideoMAE's and SVFAP's pretraining: decoupled weight decay on the
    # kernels only (not on biases, LayerNorm scales or the mask token, the
    # 1-D parameters), betas (0.9, optim.b2).
    chain.append(
      optax.adamw(
        lr_schedule,
        b1=0.9,
        b2=float(optim.get("b2", 0.999)),
        weight_decay=optim.weight_decay,
        mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params),
      )
    )
  else:
    raise ValueError(
      f"config.optim.name: unknown {optim.name!r} (sgd | lars | adam | adamw)"
    )
  return optax.chain(*chain)
