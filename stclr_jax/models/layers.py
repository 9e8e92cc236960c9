"""Building blocks shared by the video ResNets: a 3-D convolution that runs
the (2+1)D kernels as 2-D convolutions and matrix products, and a BatchNorm
with PyTorch semantics whose statistics can be global or per group of the
batch.

All tensors are channels-last: ``(batch, time, height, width, channels)``.
Parameters are created in ``param_dtype`` (float32 by default) and cast to the
compute ``dtype`` inside ``__call__`` (mixed precision).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

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


def _conv2d(x, w, strides, padding):
  return jax.lax.conv_general_dilated(
    x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def _weight_grad_gemm(x, dy, kernel_hw, strides, padding):
  """Gradient of a 2-D convolution with respect to its kernel, as one matrix
  product: the ``kh*kw`` strided taps of the padded input concatenated along
  channels (im2col) times ``dy``, contracted over batch and positions."""
  (kh, kw), (sh, sw) = kernel_hw, strides
  n, ho, wo, co = dy.shape
  c = x.shape[-1]
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  taps = [
    jax.lax.slice(
      xp,
      (0, i, j, 0),
      (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
      (1, sh, sw, 1),
    )
    for i in range(kh)
    for j in range(kw)
  ]
  cols = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
  acc = jnp.promote_types(cols.dtype, jnp.float32)  # float32, or float64
  dw = jnp.einsum("nhwk,nhwo->ko", cols, dy, preferred_element_type=acc)
  return dw.reshape(kh, kw, c, co)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d_gemm_wgrad(x, w, strides, padding):
  """NHWC/HWIO 2-D convolution, same values and gradients as
  ``lax.conv_general_dilated``, whose kernel gradient is computed by
  :func:`_weight_grad_gemm`. With XLA:CPU's YNNPACK convolutions, XLA's own
  form of that gradient (a convolution over the batch with ``dy`` as
  kernel) takes 2-6x the time of the forward convolution on R(2+1)D-18's
  shapes, the matrix product 2-4x less than it (BENCHMARKS.md, "The
  ``matmul`` lowering and its kernel-gradient rule"). The input gradient
  is XLA's."""
  return _conv2d(x, w, strides, padding)


def _conv2d_gemm_wgrad_fwd(x, w, strides, padding):
  return _conv2d(x, w, strides, padding), (x, w)


def _conv2d_gemm_wgrad_bwd(strides, padding, res, dy):
  x, w = res
  _, x_vjp = jax.vjp(lambda x_: _conv2d(x_, w, strides, padding), x)
  dw = _weight_grad_gemm(x, dy, w.shape[:2], strides, padding)
  return x_vjp(dy)[0], dw.astype(w.dtype)


conv2d_gemm_wgrad.defvjp(_conv2d_gemm_wgrad_fwd, _conv2d_gemm_wgrad_bwd)


# Where the matrix-product kernel gradient pays on XLA:CPU with YNNPACK's
# convolutions (per-layer forward + both gradients, BENCHMARKS.md "The
# ``matmul`` lowering and its kernel-gradient rule"): from 64 input
# channels, or 32 at a spatial stride; below, XLA's own gradient is faster
# (by 16-53% at 16 and 32 channels, stride 1; the RGB stem as fast).
def _gemm_wgrad_pays(channels: int, strides: tuple[int, int]) -> bool:
  return channels >= 64 or (channels >= 32 and max(strides) > 1)


LOWERINGS = ("auto", "conv2d", "matmul", "spatial2d", "conv3d")


class VideoConv(nnx.Module):
  """Bias-free 3-D convolution with kernel ``(kt, kh, kw, in, out)`` (DHWIO).

  The maths is always that of ``Conv3d(kernel, stride, padding)``; the
  ``lowering`` picks how it runs:

  * ``"conv2d"`` (measured fastest for a whole training step on XLA:CPU
    with Eigen's convolutions, ``stclr_jax.compiler``; BENCHMARKS.md,
    "Convolutions on XLA:CPU"):
    every (2+1)D kernel as a 2-D convolution with XLA's own gradients. A spatial
    ``(1, kh, kw)`` kernel with time stride 1 runs over the
    ``batch*time`` frames; a temporal ``(kt, 1, 1)`` or pointwise ``1x1x1``
    kernel without spatial padding runs as a ``(kt, 1)`` kernel over
    ``(batch, time, height*width)`` (spatial strides as slices); every other
    kernel (R3D's and MC3's) as a 3-D convolution.
  * ``"matmul"``: the spatial kernels as 2-D convolutions whose kernel
    gradient is one matrix product (:func:`conv2d_gemm_wgrad`) where that
    pays with YNNPACK's convolutions (:func:`_gemm_wgrad_pays`); a temporal
    or pointwise kernel without spatial padding as a matrix product
    (spatial strides as slices, the ``kt`` strided, zero-padded time taps
    concatenated along channels, one ``(kt*in, out)`` matmul); every other
    kernel as a 3-D convolution.
  * ``"spatial2d"``: the ``(1, kh, kw)`` kernels as 2-D convolutions with
    XLA's own gradients, every other kernel as a 3-D convolution.
  * ``"conv3d"``: the 3-D form everywhere.
  * ``"auto"`` (default): ``"conv2d"`` when JAX's default backend is the
    CPU, else ``"spatial2d"`` (measure the others there with
    ``bench/train_step.py --lowering``).

  The tests check that values and gradients of all lowerings agree.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int | Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    lowering: str = "auto",
    rngs: nnx.Rngs,
  ):
    if lowering not in LOWERINGS:
      raise ValueError(f"lowering must be one of {LOWERINGS}, got {lowering!r}")
    self.in_features = in_features
    self.out_features = out_features
    self.kernel_size = _triple(kernel_size)
    self.strides = _triple(strides)
    self.padding = _triple(padding)
    self.dtype = dtype
    self.lowering = lowering
    self.kernel = nnx.Param(
      conv_kernel_init(
        rngs.params(),
        (*self.kernel_size, in_features, out_features),
        param_dtype,
      )
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 5 or x.shape[-1] != self.in_features:
      raise ValueError(
        f"VideoConv expects (batch, time, height, width, {self.in_features}),"
        f" got shape {x.shape}"
      )
    x = x.astype(self.dtype)
    w = self.kernel[...].astype(self.dtype)
    (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = (
      self.kernel_size,
      self.strides,
      self.padding,
    )
    b, t, h, wd, c = x.shape
    lowering = self.lowering
    if lowering == "auto":
      lowering = "conv2d" if jax.default_backend() == "cpu" else "spatial2d"
    if lowering != "conv3d" and kt == 1 and st == 1 and pt == 0:
      pad = ((ph, ph), (pw, pw))
      x2 = x.reshape(b * t, h, wd, c)
      if lowering == "matmul" and _gemm_wgrad_pays(c, (sh, sw)):
        y = conv2d_gemm_wgrad(x2, w[0], (sh, sw), pad)
      else:
        y = _conv2d(x2, w[0], (sh, sw), pad)
      return y.reshape(b, t, *y.shape[1:])
    if lowering == "matmul" and kh == kw == 1 and ph == pw == 0:
      return self._temporal_matmul(x, w)
    if lowering == "conv2d" and kh == kw == 1 and ph == pw == 0:
      return self._temporal_conv2d(x, w)
    return jax.lax.conv_general_dilated(
      x,
      w,
      self.strides,
      [(p, p) for p in self.padding],
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )

  def _temporal_conv2d(self, x, w):
    """``(kt, 1, 1)`` convolution as a ``(kt, 1)`` 2-D convolution over
    ``(batch, time, height*width)`` (spatial strides as slices)."""
    (st, sh, sw), (pt, _, _) = self.strides, self.padding
    if (sh, sw) != (1, 1):
      x = x[:, :, ::sh, ::sw]
    b, t, h, wd, c = x.shape
    y = _conv2d(
      x.reshape(b, t, h * wd, c), w[:, 0], (st, 1), ((pt, pt), (0, 0))
    )
    return y.reshape(b, y.shape[1], h, wd, y.shape[-1])

  def _temporal_matmul(self, x, w):
    """``(kt, 1, 1)`` convolution as time-tap concatenation + one matmul."""
    (kt, _, _), (st, sh, sw), (pt, _, _) = (
      self.kernel_size,
      self.strides,
      self.padding,
    )
    if (sh, sw) != (1, 1):
      x = x[:, :, ::sh, ::sw]
    if pt:
      x = jnp.pad(x, ((0, 0), (pt, pt), (0, 0), (0, 0), (0, 0)))
    t_out = (x.shape[1] - kt) // st + 1
    taps = [
      jax.lax.slice_in_dim(x, k, k + st * (t_out - 1) + 1, st, axis=1)
      for k in range(kt)
    ]
    cols = taps[0] if kt == 1 else jnp.concatenate(taps, axis=-1)
    return jnp.einsum(
      "bthwc,co->bthwo",
      cols,
      w.reshape(kt * self.in_features, self.out_features),
    )


class BatchNorm(nnx.Module):
  """BatchNorm over all axes but the last, with PyTorch's semantics.

  * ``momentum`` follows PyTorch's convention: the weight of the *new* batch
    statistic in the running average (0.1 by default, as ``nn.BatchNorm3d``).
  * Normalisation uses the biased batch variance; the running variance is
    updated with the unbiased one (``n / (n - 1)``), exactly as PyTorch does.
  * Statistics are computed in float32 whatever the compute dtype (float64
    for float64 parameters, under ``jax_enable_x64``).
  * ``num_groups=1`` (default): statistics over the whole batch. Under a
    ``jax.jit`` whose batch is sharded over a mesh, this is the *global*
    (synchronised) BatchNorm: XLA inserts the cross-device reduction.
    ``num_groups=G`` splits the batch into G consecutive groups with their own
    statistics (per-device BatchNorm when G equals the number of data shards);
    the running statistics are updated with the mean over groups.
  """

  def __init__(
    self,
    num_features: int,
    *,
    momentum: float = 0.1,
    epsilon: float = 1e-5,
    num_groups: int = 1,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    use_running_average: bool = False,
    rngs: nnx.Rngs | None = None,
  ):
    del rngs  # deterministic initialisation, as PyTorch
    self.num_features = num_features
    self.momentum = momentum
    self.epsilon = epsilon
    self.num_groups = num_groups
    self.dtype = dtype
    self.use_running_average = use_running_average
    self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
    self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
    # Statistics in float32, or float64 for a float64 model.
    self.stat_dtype = jnp.promote_types(param_dtype, jnp.float32)
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), self.stat_dtype))
    self.var = nnx.BatchStat(jnp.ones((num_features,), self.stat_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[-1] != self.num_features:
      raise ValueError(f"BatchNorm({self.num_features}) got input {x.shape}")
    if self.use_running_average:
      mean, var = self.mean[...], self.var[...]
    else:
      g = self.num_groups
      if x.shape[0] % g:
        raise ValueError(
          f"batch {x.shape[0]} is not divisible by num_groups={g}"
        )
      xg = x.astype(self.stat_dtype).reshape(g, x.shape[0] // g, *x.shape[1:])
      axes = tuple(range(1, xg.ndim - 1))
      gmean = jnp.mean(xg, axis=axes, keepdims=True)
      # Centred (two-pass): E[(x - mean)^2]. The one-pass E[x^2] - mean^2
      # loses precision as mean^2 / var grows, by an amount that depends on
      # how the reduction is split across devices (BENCHMARKS.md,
      # "BatchNorm batch variance").
      gvar = jnp.mean(jnp.square(xg - gmean), axis=axes, keepdims=True)
      n = xg.size // (g * self.num_features)
      bessel = n / max(n - 1, 1)
      m = self.momentum
      self.mean[...] = (1 - m) * self.mean[...] + m * jnp.mean(
        gmean, axis=tuple(range(xg.ndim - 1))
      )
      self.var[...] = (1 - m) * self.var[...] + m * bessel * jnp.mean(
        gvar, axis=tuple(range(xg.ndim - 1))
      )
      # Fold the normalisation into one multiply-add per element.
      mul = jax.lax.rsqrt(gvar + self.epsilon) * self.scale[...]
      add = self.bias[...] - gmean * mul
      y = xg * mul + add
      return y.reshape(x.shape).astype(self.dtype)
    mul = jax.lax.rsqrt(var + self.epsilon) * self.scale[...]
    add = self.bias[...] - mean * mul
    return (x.astype(self.stat_dtype) * mul + add).astype(self.dtype)
