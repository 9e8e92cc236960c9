"""Building blocks shared by the video ResNets: a 3-D convolution that runs
purely spatial kernels as 2-D convolutions, and a BatchNorm with PyTorch
semantics whose statistics can be global or per group of the batch.

All tensors are channels-last: ``(batch, time, height, width, channels)``.
Parameters are created in ``param_dtype`` (float32 by default) and cast to the
compute ``dtype`` inside ``__call__`` (mixed precision).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from stclr_jax.models import initializers

Triple = tuple[int, int, int]

# PyTorch's kaiming_normal_(mode="fan_out", nonlinearity="relu"), used by
# torchvision's video ResNets for every convolution (drawn on the host: see
# models/initializers.py).
conv_kernel_init = initializers.kaiming_normal_fan_out


def _triple(v: int | Sequence[int]) -> Triple:
  if isinstance(v, int):
    return (v, v, v)
  v = tuple(int(x) for x in v)
  if len(v) != 3:
    raise ValueError(f"expected an int or 3 ints, got {v}")
  return v  # type: ignore[return-value]


class VideoConv(nnx.Module):
  """Bias-free 3-D convolution with kernel ``(kt, kh, kw, in, out)`` (DHWIO).

  The maths is always that of ``Conv3d(kernel, stride, padding)``. A purely
  spatial ``(1, kh, kw)`` kernel with time stride 1 runs as a 2-D convolution
  over ``batch*time`` frames, which XLA:CPU executes about 1.3x faster for a
  whole R(2+1)D-18 step than the 3-D form (see BENCHMARKS.md); every other
  kernel runs as a 3-D convolution (lowering the temporal ``(kt, 1, 1)`` and
  the ``1x1x1`` kernels to 1-D convolutions or matrix products measured
  slower on CPU). ``lowering="conv3d"`` forces the 3-D form everywhere (the
  tests check both agree).
  """

  def __init__(self, in_features: int, out_features: int,
               kernel_size: int | Sequence[int], *,
               strides: int | Sequence[int] = 1,
               padding: int | Sequence[int] = 0,
               dtype=jnp.float32, param_dtype=jnp.float32,
               lowering: str = "auto", rngs: nnx.Rngs):
    if lowering not in ("auto", "conv3d"):
      raise ValueError(f"lowering must be 'auto' or 'conv3d', got {lowering!r}")
    self.in_features = in_features
    self.out_features = out_features
    self.kernel_size = _triple(kernel_size)
    self.strides = _triple(strides)
    self.padding = _triple(padding)
    self.dtype = dtype
    self.lowering = lowering
    self.kernel = nnx.Param(conv_kernel_init(
        rngs.params(), (*self.kernel_size, in_features, out_features),
        param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 5 or x.shape[-1] != self.in_features:
      raise ValueError(
          f"VideoConv expects (batch, time, height, width, {self.in_features}),"
          f" got shape {x.shape}")
    x = x.astype(self.dtype)
    w = self.kernel[...].astype(self.dtype)
    (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = (
        self.kernel_size, self.strides, self.padding)
    b, t, h, wd, c = x.shape
    if self.lowering == "auto" and kt == 1 and st == 1 and pt == 0:
      y = jax.lax.conv_general_dilated(
          x.reshape(b * t, h, wd, c), w[0], (sh, sw), ((ph, ph), (pw, pw)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
      return y.reshape(b, t, *y.shape[1:])
    return jax.lax.conv_general_dilated(
        x, w, self.strides, [(p, p) for p in self.padding],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


class BatchNorm(nnx.Module):
  """BatchNorm over all axes but the last, with PyTorch's semantics.

  * ``momentum`` follows PyTorch's convention: the weight of the *new* batch
    statistic in the running average (0.1 by default, as ``nn.BatchNorm3d``).
  * Normalisation uses the biased batch variance; the running variance is
    updated with the unbiased one (``n / (n - 1)``), exactly as PyTorch does.
  * Statistics are computed in float32 whatever the compute dtype.
  * ``num_groups=1`` (default): statistics over the whole batch. Under a
    ``jax.jit`` whose batch is sharded over a mesh, this is the *global*
    (synchronised) BatchNorm: XLA inserts the cross-device reduction.
    ``num_groups=G`` splits the batch into G consecutive groups with their own
    statistics (per-device BatchNorm when G equals the number of data shards);
    the running statistics are updated with the mean over groups.
  """

  def __init__(self, num_features: int, *, momentum: float = 0.1,
               epsilon: float = 1e-5, num_groups: int = 1,
               dtype=jnp.float32, param_dtype=jnp.float32,
               use_running_average: bool = False, rngs: nnx.Rngs | None = None):
    del rngs  # deterministic initialisation, as PyTorch
    self.num_features = num_features
    self.momentum = momentum
    self.epsilon = epsilon
    self.num_groups = num_groups
    self.dtype = dtype
    self.use_running_average = use_running_average
    self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
    self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[-1] != self.num_features:
      raise ValueError(f"BatchNorm({self.num_features}) got input {x.shape}")
    if self.use_running_average:
      mean, var = self.mean[...], self.var[...]
    else:
      g = self.num_groups
      if x.shape[0] % g:
        raise ValueError(
            f"batch {x.shape[0]} is not divisible by num_groups={g}")
      xg = x.astype(jnp.float32).reshape(g, x.shape[0] // g, *x.shape[1:])
      axes = tuple(range(1, xg.ndim - 1))
      gmean = jnp.mean(xg, axis=axes, keepdims=True)
      gvar = jnp.maximum(
          jnp.mean(jnp.square(xg), axis=axes, keepdims=True)
          - jnp.square(gmean), 0.0)
      n = xg.size // (g * self.num_features)
      bessel = n / max(n - 1, 1)
      m = self.momentum
      self.mean[...] = ((1 - m) * self.mean[...]
                        + m * jnp.mean(gmean, axis=tuple(range(xg.ndim - 1))))
      self.var[...] = ((1 - m) * self.var[...] + m * bessel
                       * jnp.mean(gvar, axis=tuple(range(xg.ndim - 1))))
      # Fold the normalisation into one multiply-add per element.
      mul = jax.lax.rsqrt(gvar + self.epsilon) * self.scale[...]
      add = self.bias[...] - gmean * mul
      y = xg * mul + add
      return y.reshape(x.shape).astype(self.dtype)
    mul = jax.lax.rsqrt(var + self.epsilon) * self.scale[...]
    add = self.bias[...] - mean * mul
    return (x.astype(jnp.float32) * mul + add).astype(self.dtype)
