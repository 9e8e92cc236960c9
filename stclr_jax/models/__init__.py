"""Encoders and heads. Use :func:`make_encoder` to build an encoder by name."""

from __future__ import annotations

import jax
from flax import nnx

from stclr_jax.models.contrastive import ContrastiveModel
from stclr_jax.models.heads import LinearClassifier, ProjectionHead
from stclr_jax.models.layers import BatchNorm, VideoConv
from stclr_jax.models.video_resnet import (
  VideoResNet,
  mc3_18,
  midplanes,
  r2plus1d_18,
  r3d_18,
)

ENCODER_NAMES = ("r2plus1d_18", "r3d_18", "mc3_18")


def make_encoder(name: str, *, rngs: nnx.Rngs, **options) -> VideoResNet:
  """Builds ``r2plus1d_18`` (the paper's), ``r3d_18`` or ``mc3_18``.

  ``options`` are those of :class:`VideoResNet`: ``width``, ``dtype``,
  ``param_dtype``, ``bn_momentum``, ``bn_epsilon``, ``bn_groups``,
  ``conv_lowering``. The module maps ``(batch, time, height, width, 3)`` clips
  to ``(batch, encoder.features)`` features, ``features = 512 * width``.
  """
  if name == "r2plus1d_18":
    return r2plus1d_18(rngs=rngs, **options)
  elif name == "r3d_18":
    return r3d_18(rngs=rngs, **options)
  elif name == "mc3_18":
    return mc3_18(rngs=rngs, **options)
  raise ValueError(
    f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}"
  )


def count_params(module: nnx.Module) -> int:
  """Number of trainable parameters (``nnx.Param``); BatchNorm running
  statistics are not parameters, as in PyTorch's ``parameters()``."""
  state = nnx.state(module, nnx.Param)
  return sum(int(x.size) for x in jax.tree.leaves(state))


__all__ = [
  "BatchNorm",
  "ContrastiveModel",
  "ENCODER_NAMES",
  "LinearClassifier",
  "ProjectionHead",
  "VideoConv",
  "VideoResNet",
  "count_params",
  "make_encoder",
  "mc3_18",
  "midplanes",
  "r2plus1d_18",
  "r3d_18",
]
