"""Video ResNet-18 encoders in Flax NNX: R(2+1)D-18, R3D-18 and MC3-18.

Built to be weight-for-weight identical to torchvision's ``r2plus1d_18``,
``r3d_18`` and ``mc3_18`` (Tran et al., CVPR 2018; Table I of the ST-CLR
paper), without the classifier. Input is channels-last
``(batch, time, height, width, 3)``; output is the globally average-pooled
feature ``(batch, 512 * width)``.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from stclr_jax.models.layers import BatchNorm, VideoConv

BlockKind = Literal["2plus1d", "3d", "2d"]
STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2
# torchvision hard-codes 45 filters for the (1,7,7) half of the R(2+1)D stem.
R2PLUS1D_STEM_MID = 45


def midplanes(in_planes: int, out_planes: int, t: int = 3, d: int = 3) -> int:
  """Width N_i of a (2+1)D block's intermediate features (paper, Sec. III-A.2).

  Chosen so that the (2+1)D factorisation has the parameter count of the full
  ``t x d x d`` 3-D convolution: ``floor(t*d*d*Mi_1*Mi / (d*d*Mi_1 + t*Mi))``.
  """
  return (t * d * d * in_planes * out_planes) // (
    d * d * in_planes + t * out_planes
  )


class _ConvBN(nnx.Module):
  """Convolution, BatchNorm and optionally ReLU."""

  def __init__(
    self, cin, cout, kernel, strides, padding, *, relu, bn_kw, conv_kw, rngs
  ):
    self.conv = VideoConv(
      cin, cout, kernel, strides=strides, padding=padding, rngs=rngs, **conv_kw
    )
    self.bn = BatchNorm(cout, **bn_kw)
    self.relu = relu

  def __call__(self, x):
    x = self.bn(self.conv(x))
    return jax.nn.relu(x) if self.relu else x


class _SpatioTemporalConv(nnx.Module):
  """One 3x3x3-equivalent convolution of a BasicBlock, BatchNorm not included.

  ``2plus1d``: (1,3,3) conv to ``mid`` channels, BN, ReLU, (3,1,1) conv.
  ``3d``: one (3,3,3) conv. ``2d``: one (1,3,3) conv (no temporal extent).
  """

  def __init__(
    self, kind: BlockKind, cin, cout, mid, stride, *, bn_kw, conv_kw, rngs
  ):
    s = stride
    self.kind = kind
    if kind == "2plus1d":
      self.spatial = _ConvBN(
        cin,
        mid,
        (1, 3, 3),
        (1, s, s),
        (0, 1, 1),
        relu=True,
        bn_kw=bn_kw,
        conv_kw=conv_kw,
        rngs=rngs,
      )
      self.temporal = VideoConv(
        mid,
        cout,
        (3, 1, 1),
        strides=(s, 1, 1),
        padding=(1, 0, 0),
        rngs=rngs,
        **conv_kw,
      )
    elif kind == "3d":
      self.conv = VideoConv(
        cin, cout, (3, 3, 3), strides=s, padding=1, rngs=rngs, **conv_kw
      )
    elif kind == "2d":
      self.conv = VideoConv(
        cin,
        cout,
        (1, 3, 3),
        strides=(1, s, s),
        padding=(0, 1, 1),
        rngs=rngs,
        **conv_kw,
      )
    else:
      raise ValueError(f"unknown block kind {kind!r}")

  def __call__(self, x):
    if self.kind == "2plus1d":
      return self.temporal(self.spatial(x))
    return self.conv(x)


class BasicBlock(nnx.Module):
  """Two spatio-temporal convolutions with BN, and a residual connection.

  The (2+1)D mid width is computed once from the block's input and output
  widths and used by both convolutions, as in torchvision. When the block
  strides or changes width, the shortcut is a strided 1x1x1 convolution + BN.
  """

  def __init__(
    self,
    kind: BlockKind,
    cin: int,
    cout: int,
    stride: int,
    *,
    bn_kw,
    conv_kw,
    rngs,
  ):
    mid = midplanes(cin, cout)
    self.conv1 = _SpatioTemporalConv(
      kind, cin, cout, mid, stride, bn_kw=bn_kw, conv_kw=conv_kw, rngs=rngs
    )
    self.bn1 = BatchNorm(cout, **bn_kw)
    self.conv2 = _SpatioTemporalConv(
      kind, cout, cout, mid, 1, bn_kw=bn_kw, conv_kw=conv_kw, rngs=rngs
    )
    self.bn2 = BatchNorm(cout, **bn_kw)
    if stride != 1 or cin != cout:
      # torchvision: (s,s,s) for 3d and (2+1)d blocks, (1,s,s) for 2d ones.
      ds = (1, stride, stride) if kind == "2d" else (stride,) * 3
      self.downsample = _ConvBN(
        cin, cout, 1, ds, 0, relu=False, bn_kw=bn_kw, conv_kw=conv_kw, rngs=rngs
      )
    else:
      self.downsample = None

  def __call__(self, x):
    residual = x if self.downsample is None else self.downsample(x)
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return jax.nn.relu(y + residual)


class VideoResNet(nnx.Module):
  """ResNet-18 for video: a stem, four stages of two BasicBlocks, avg-pool.

  Args:
    stem: ``"2plus1d"`` (45 x (1,7,7) then 64 x (3,1,1)) or ``"3d"``
      (64 x (3,7,7)); both stride (1,2,2), no pooling.
    stage_kinds: the convolution kind of each of the four stages.
    width: multiplier of every channel count (1.0 is the paper's model).
    dtype: compute dtype (e.g. ``jnp.bfloat16``); parameters stay in
      ``param_dtype``.
    bn_momentum, bn_epsilon: PyTorch-convention BatchNorm settings.
    bn_groups: 1 for whole-batch (global under a sharded jit) statistics,
      or the number of groups (devices) for per-group statistics.
  """

  def __init__(
    self,
    stem: Literal["2plus1d", "3d"],
    stage_kinds: tuple[BlockKind, ...],
    *,
    width: float = 1.0,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    bn_momentum: float = 0.1,
    bn_epsilon: float = 1e-5,
    bn_groups: int = 1,
    conv_lowering: str = "auto",
    rngs: nnx.Rngs,
  ):
    if len(stage_kinds) != 4:
      raise ValueError(f"need 4 stage kinds, got {stage_kinds}")
    if width <= 0:
      raise ValueError(f"width must be positive, got {width}")

    def scaled(c):
      return max(1, int(round(c * width)))

    bn_kw = dict(
      momentum=bn_momentum,
      epsilon=bn_epsilon,
      num_groups=bn_groups,
      dtype=dtype,
      param_dtype=param_dtype,
    )
    conv_kw = dict(dtype=dtype, param_dtype=param_dtype, lowering=conv_lowering)
    widths = [scaled(c) for c in STAGE_WIDTHS]
    self.param_dtype = param_dtype
    self.dtype = dtype
    self.features = widths[-1]
    if stem == "2plus1d":
      self.stem = nnx.Sequential(
        _ConvBN(
          3,
          scaled(R2PLUS1D_STEM_MID),
          (1, 7, 7),
          (1, 2, 2),
          (0, 3, 3),
          relu=True,
          bn_kw=bn_kw,
          conv_kw=conv_kw,
          rngs=rngs,
        ),
        _ConvBN(
          scaled(R2PLUS1D_STEM_MID),
          widths[0],
          (3, 1, 1),
          1,
          (1, 0, 0),
          relu=True,
          bn_kw=bn_kw,
          conv_kw=conv_kw,
          rngs=rngs,
        ),
      )
    elif stem == "3d":
      self.stem = _ConvBN(
        3,
        widths[0],
        (3, 7, 7),
        (1, 2, 2),
        (1, 3, 3),
        relu=True,
        bn_kw=bn_kw,
        conv_kw=conv_kw,
        rngs=rngs,
      )
    else:
      raise ValueError(f"unknown stem {stem!r}")
    blocks = []
    cin = widths[0]
    for i, (kind, cout) in enumerate(zip(stage_kinds, widths)):
      for j in range(BLOCKS_PER_STAGE):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(
          BasicBlock(
            kind, cin, cout, stride, bn_kw=bn_kw, conv_kw=conv_kw, rngs=rngs
          )
        )
        cin = cout
    self.blocks = nnx.List(blocks)

  def __call__(self, video_BxTxHxWxC: jax.Array) -> jax.Array:
    x = video_BxTxHxWxC
    if x.ndim != 5 or x.shape[-1] != 3:
      raise ValueError(
        "expected a clip batch (batch, time, height, width, 3),"
        f" got shape {x.shape}"
      )
    x = self.stem(x.astype(self.dtype))
    for block in self.blocks:
      x = block(x)
    # Global average pool over (time, height, width), accumulated in fp32
    # (fp64 for a float64 model).
    acc = jnp.promote_types(self.dtype, jnp.float32)
    return jnp.mean(x, axis=(1, 2, 3), dtype=acc).astype(self.dtype)


def r2plus1d_18(**kw) -> VideoResNet:
  return VideoResNet("2plus1d", ("2plus1d",) * 4, **kw)


def r3d_18(**kw) -> VideoResNet:
  return VideoResNet("3d", ("3d",) * 4, **kw)


def mc3_18(**kw) -> VideoResNet:
  """Mixed convolutions: 3-D in the stem and stage 1, (1,3,3) 2-D after."""
  return VideoResNet("3d", ("3d", "2d", "2d", "2d"), **kw)
