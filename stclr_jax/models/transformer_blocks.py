"""The parts of the video transformers (:mod:`~stclr_jax.models.
video_transformer`): tube embedding, the fixed sinusoid table, attention
with query and value biases (no key bias), pre-LayerNorm blocks, the
cross-then-self blocks and the spatial bottleneck of SVFAP's TPSBT, and
stochastic depth.

Parameter names follow SVFAP's PyTorch modules (``qkv``, ``q_bias``,
``v_bias``, ``cross_norm1``, ...), so the converter maps a state_dict key
to a path by renaming ``weight`` only. Kernels are stored (in, out).

Stochastic depth draws from a key passed to the call (``rng``), not from
module state: the training step derives it from its step counter, so a
resumed run draws what the uninterrupted one drew, and a call without a
key (evaluation, feature extraction) is deterministic.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stclr_jax.models import initializers

LN_EPS = 1e-6  # SVFAP's and VideoMAE's LayerNorm epsilon
INIT_STD = 0.02  # trunc_normal_(std=.02) of every Linear (timm's bounds
# are +-2 in absolute value, 100 std at this scale: a plain normal)


def sinusoid_table(num_positions: int, dim: int) -> np.ndarray:
  """The fixed position table of SVFAP and VideoMAE, (num_positions, dim):
  position p, dimension j -> p / 10000^(2 floor(j/2) / dim); sine on even
  dimensions, cosine on odd ones (interleaved), float64."""
  pos = np.arange(num_positions, dtype=np.float64)[:, None]
  j = np.arange(dim)
  angle = pos / np.power(10000.0, 2 * (j // 2) / dim)
  return np.where(j % 2 == 0, np.sin(angle), np.cos(angle))


def gelu(x):
  """The exact GELU (PyTorch's ``nn.GELU()``; Flax's default is tanh's)."""
  return jax.nn.gelu(x, approximate=False)


def drop_path(x, rate: float, rng):
  """Stochastic depth: each sample's branch kept with probability
  ``1 - rate`` and scaled by ``1 / (1 - rate)`` (timm's ``drop_path``);
  the identity without a key or at rate 0."""
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(
    rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1)
  )
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def split_keys(rng, n: int):
  """``n`` keys split from ``rng``, or ``n`` Nones when ``rng`` is None
  (evaluation: no drop path)."""
  return (None,) * n if rng is None else tuple(jax.random.split(rng, n))


def dense(cin, cout, *, use_bias=True, dtype, param_dtype, rngs):
  return nnx.Linear(
    cin,
    cout,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=initializers.normal(INIT_STD),
    bias_init=nnx.initializers.zeros,
    rngs=rngs,
  )


def layer_norm(dim, *, dtype, param_dtype, rngs):
  return nnx.LayerNorm(
    dim, epsilon=LN_EPS, dtype=dtype, param_dtype=param_dtype, rngs=rngs
  )


class TubeEmbed(nnx.Module):
  """A 3-D convolution with kernel = stride = ``(tubelet, patch, patch)``
  (SVFAP's ``patch_embed.proj``), as a reshape and one matmul:
  ``(B, T, H, W, C)`` -> ``(B, T/tubelet, H/patch, W/patch, dim)``.
  Initialised as PyTorch's ``Conv3d`` (U(+-1/sqrt(fan_in)), bias too)."""

  def __init__(
    self, tubelet, patch, cin, dim, *, dtype, param_dtype, rngs: nnx.Rngs
  ):
    self.tubelet, self.patch = tubelet, patch
    self.dtype = dtype
    fan_in = tubelet * patch * patch * cin
    init = initializers.fan_in_uniform(fan_in)
    self.kernel = nnx.Param(
      init(rngs.params(), (tubelet, patch, patch, cin, dim), param_dtype)
    )
    self.bias = nnx.Param(init(rngs.params(), (dim,), param_dtype))

  def __call__(self, x):
    b, t, h, w, c = x.shape
    k, p = self.tubelet, self.patch
    if t % k or h % p or w % p:
      raise ValueError(
        f"clip of {t}x{h}x{w} does not divide into {k}x{p}x{p} tubes"
      )
    x = x.reshape(b, t // k, k, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(
      b, t // k, h // p, w // p, k * p * p * c
    )
    kernel = self.kernel[...].reshape(-1, self.kernel[...].shape[-1])
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    return y + self.bias[...].astype(self.dtype)


class Mlp(nnx.Module):
  """Linear -> exact GELU -> Linear."""

  def __init__(self, dim, hidden, out=None, *, dtype, param_dtype, rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc1 = dense(dim, hidden, **kw)
    self.fc2 = dense(hidden, out or dim, **kw)

  def __call__(self, x):
    return self.fc2(gelu(self.fc1(x)))


class Attention(nnx.Module):
  """Multi-head attention with a bias on queries and values and none on
  keys (BEiT's, VideoMAE's, SVFAP's ``qkv_bias=True``). Self-attention
  (``cross=False``) has one fused ``qkv`` projection; cross-attention
  (SVFAP's ``GeneralAttention``) has ``q`` from the queries and ``kv``
  from the context. Scores are softmaxed in float32 at least."""

  def __init__(
    self, dim, heads, *, cross=False, dtype, param_dtype, rngs: nnx.Rngs
  ):
    if dim % heads:
      raise ValueError(f"width {dim} does not split into {heads} heads")
    self.heads, self.cross, self.dtype = heads, cross, dtype
    kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if cross:
      self.q = dense(dim, dim, **kw)
      self.kv = dense(dim, 2 * dim, **kw)
    else:
      self.qkv = dense(dim, 3 * dim, **kw)
    self.q_bias = nnx.Param(jnp.zeros((dim,), param_dtype))
    self.v_bias = nnx.Param(jnp.zeros((dim,), param_dtype))
    self.proj = dense(dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x, context=None):
    b, n, dim = x.shape
    if self.cross:
      q = self.q(x)
      k, v = jnp.split(self.kv(x if context is None else context), 2, -1)
    else:
      q, k, v = jnp.split(self.qkv(x), 3, -1)
    q = q + self.q_bias[...].astype(q.dtype)
    v = v + self.v_bias[...].astype(v.dtype)
    h = self.heads

    def heads(y):
      return y.reshape(b, y.shape[1], h, dim // h)

    q, k, v = heads(q), heads(k), heads(v)
    scale = 1.0 / math.sqrt(dim // h)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k)
    weights = jax.nn.softmax(
      scores.astype(jnp.promote_types(scores.dtype, jnp.float32)), axis=-1
    ).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, dim)
    return self.proj(out)


class Block(nnx.Module):
  """A pre-LayerNorm transformer block: ``x + attn(norm1(x))``, then
  ``x + mlp(norm2(x))``, each branch under stochastic depth."""

  def __init__(
    self, dim, heads, *, mlp_ratio, drop_path, dtype, param_dtype, rngs
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = layer_norm(dim, **kw)
    self.attn = Attention(dim, heads, **kw)
    self.norm2 = layer_norm(dim, **kw)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), **kw)
    self.drop_path = drop_path

  def __call__(self, x, rng=None):
    r1, r2 = split_keys(rng, 2)
    x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, r1)
    return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, r2)


class CrossSelfBlock(nnx.Module):
  """SVFAP's ``CSBlock``: cross-attention from ``x`` to ``context`` (each
  normalised by its own LayerNorm), then self-attention among ``x``, then
  the MLP; pre-LayerNorm residual branches under stochastic depth."""

  def __init__(
    self, dim, heads, *, mlp_ratio, drop_path, dtype, param_dtype, rngs
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.cross_attn = Attention(dim, heads, cross=True, **kw)
    self.cross_norm1 = layer_norm(dim, **kw)
    self.cross_norm2 = layer_norm(dim, **kw)
    self.norm1 = layer_norm(dim, **kw)
    self.attn = Attention(dim, heads, **kw)
    self.norm2 = layer_norm(dim, **kw)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), **kw)
    self.drop_path = drop_path

  def __call__(self, x, context, rng=None):
    r0, r1, r2 = split_keys(rng, 3)
    cross = self.cross_attn(self.cross_norm1(x), self.cross_norm2(context))
    x = x + drop_path(cross, self.drop_path, r0)
    x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, r1)
    return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, r2)


class SpatialBottleneck(nnx.Module):
  """SVFAP's ``SpatialAttention``: each frame's S tokens pooled into G
  bottleneck tokens, ``softmax_over_S(mlp(norm(x)))^T x``, with the MLP
  ``dim -> hidden -> G`` (GELU). ``(B, T, S, C)`` -> ``(B, T, G, C)``."""

  def __init__(self, dim, tokens, hidden, *, dtype, param_dtype, rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = layer_norm(dim, **kw)
    self.mlp = Mlp(dim, hidden, tokens, **kw)

  def weights(self, x):
    """The pooling weights (B, T, G, S): each row sums to 1 over S."""
    logits = self.mlp(self.norm(x))  # (B, T, S, G)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return jax.nn.softmax(jnp.swapaxes(logits, -1, -2), axis=-1)

  def __call__(self, x):
    w = self.weights(x).astype(x.dtype)
    return jnp.einsum("btgs,btsc->btgc", w, x)


class TemporalDownsample(nnx.Module):
  """SVFAP's temporal pyramid step: a 1-D convolution over time with
  kernel = stride = ``k`` at every spatial position (a ``Conv1d``,
  initialised as PyTorch's). ``(B, T, S, C)`` -> ``(B, T/k, S, C)``."""

  def __init__(self, dim, k, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.k, self.dtype = k, dtype
    init = initializers.fan_in_uniform(k * dim)
    self.kernel = nnx.Param(init(rngs.params(), (k, dim, dim), param_dtype))
    self.bias = nnx.Param(init(rngs.params(), (dim,), param_dtype))

  def __call__(self, x):
    b, t, s, c = x.shape
    if t % self.k:
      raise ValueError(
        f"{t} token frames do not halve by the temporal kernel {self.k}"
      )
    x = x.reshape(b, t // self.k, self.k, s, c)
    y = jnp.einsum("btksc,kcd->btsd", x, self.kernel[...].astype(self.dtype))
    return y + self.bias[...].astype(self.dtype)
