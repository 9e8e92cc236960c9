"""Parameter initialisers that draw their numbers on the host.

On CPU, XLA takes one to two seconds to compile each threefry random draw of
a new shape, so building an 18-layer video ResNet with ``jax.random``
initialisers costs about 20 s before the first step. These initialisers
instead seed a NumPy PCG64 generator with the raw bits of the JAX key, through
``jax.pure_callback``, so that:

* the values depend only on the key (the same under ``jax.jit``, eagerly, on
  any backend), and distinct keys give independent streams;
* they cost milliseconds, and nothing at all under ``nnx.eval_shape``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _key_bits(key: jax.Array) -> jax.Array:
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  return key


def _host_normal(bits, *, shape, std, dtype, uniform=False):
  seed = [int(b) for b in np.asarray(bits, np.uint32).ravel()]
  rng = np.random.Generator(np.random.PCG64(seed))
  if uniform:  # U(-std, std)
    return rng.uniform(-std, std, shape).astype(dtype)
  return (rng.standard_normal(shape) * std).astype(dtype)


def _host_words(bits, **kw):
  """:func:`_host_normal`'s 64-bit values as pairs of uint32 words."""
  values = _host_normal(bits, **kw)
  return values.view(np.uint32).reshape(*values.shape, 2)


def host_normal(std_fn, uniform: bool = False):
  """Initializer ``(key, shape, dtype)`` drawing N(0, std_fn(shape)^2), or
  U(-std_fn(shape), std_fn(shape)) with ``uniform``."""

  def init(key, shape, dtype=jnp.float32):
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    kw = dict(
      shape=shape, std=float(std_fn(shape)), dtype=dtype, uniform=uniform
    )
    if dtype.itemsize == 8:
      # JAX canonicalises a callback's result with the x64 setting of the
      # thread that runs it, and XLA may run it outside the caller's
      # ``jax.enable_x64`` context: a float64 draw would come back as
      # float32 (an error). Its bits cross as uint32 words instead.
      words = jax.pure_callback(
        functools.partial(_host_words, **kw),
        jax.ShapeDtypeStruct((*shape, 2), jnp.uint32),
        _key_bits(key),
      )
      return jax.lax.bitcast_convert_type(words, dtype)
    return jax.pure_callback(
      functools.partial(_host_normal, **kw),
      jax.ShapeDtypeStruct(shape, dtype),
      _key_bits(key),
    )

  return init


def _receptive(shape):
  return math.prod(shape[:-2]) if len(shape) > 2 else 1


# PyTorch kaiming_normal_(mode="fan_out", nonlinearity="relu"): torchvision's
# initialisation of every video ResNet convolution. Kernels are (..., in, out).
kaiming_normal_fan_out = host_normal(
  lambda s: math.sqrt(2.0 / (s[-1] * _receptive(s)))
)

# LeCun normal (std 1/sqrt(fan_in)), for dense layers.
lecun_normal = host_normal(lambda s: 1.0 / math.sqrt(s[-2] * _receptive(s)))


def normal(std: float):
  return host_normal(lambda s: std)


def fan_in_uniform(fan_in: int):
  """PyTorch's default for convolutions (weight and bias alike):
  U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  return host_normal(lambda s: 1.0 / math.sqrt(fan_in), uniform=True)
