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
from stclr_jax.models.video_transformer import (
  SIZES as TRANSFORMER_SIZES,
)
from stclr_jax.models.video_transformer import (
  VideoTransformer,
  family,
  make_transformer,
)

RESNET_NAMES = ("r2plus1d_18", "r3d_18", "mc3_18")
ENCODER_NAMES = RESNET_NAMES + tuple(TRANSFORMER_SIZES)


def make_encoder(
  name: str, *, rngs: nnx.Rngs, **options
) -> VideoResNet | VideoTransformer:
  """Builds ``r2plus1d_18`` (the paper's), ``r3d_18`` or ``mc3_18``, or a
  video transformer of :data:`TRANSFORMER_SIZES` (``tpsbt_base``,
  ``vit_small``, ...).

  ``options`` are those of :class:`VideoResNet`: ``width``, ``dtype``,
  ``param_dtype``, ``bn_momentum``, ``bn_epsilon``, ``bn_groups``,
  ``conv_lowering``; or of :class:`VideoTransformer`: ``drop_path``,
  ``dtype``, ``param_dtype``. The module maps ``(batch, time, height,
  width, 3)`` clips to ``(batch, encoder.features)`` features (``512 *
  width`` for a ResNet, the transformer's width otherwise).
  """
  if name in TRANSFORMER_SIZES:
    return make_transformer(name, rngs=rngs, **options)
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
  "RESNET_NAMES",
  "TRANSFORMER_SIZES",
  "LinearClassifier",
  "ProjectionHead",
  "VideoConv",
  "VideoResNet",
  "VideoTransformer",
  "count_params",
  "family",
  "make_encoder",
  "make_transformer",
  "mc3_18",
  "midplanes",
  "r2plus1d_18",
  "r3d_18",
]
