"""Benchmark: BatchNorm's batch variance in float32, one-pass against
centred, on 1 and 8 devices, against a float64 reference.

The batch variance is computed two ways on the same float32 activations
(per channel over batch, time and space, as ``models.layers.BatchNorm``):

* ``one-pass``: ``E[x^2] - E[x]^2`` (clamped at 0), the form BatchNorm used
  before; its rounding error grows with mean^2 / var and depends on how the
  reduction is split across devices;
* ``centred``: the library's BatchNorm as it is now (``E[(x - E[x])^2]``),
  read back from its running variance after one step with momentum 1.

Each is jitted with the batch sharded over a ``('data',)`` mesh of 1 and of
8 devices (XLA inserts the cross-device reduction). The error is the
largest relative error over the channels against NumPy's float64 variance
of the same float32 values. Run as a script (it asks for 8 CPU devices
before JAX starts):

  python bench/batchnorm_variance.py [--batch 16 --channels 64]
"""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stclr_jax import mesh as mesh_lib
from stclr_jax.models import layers


def one_pass(x):
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axis=axes)
  return jnp.maximum(jnp.mean(jnp.square(x), axis=axes) - jnp.square(mean), 0)


def centred(x):
  bn = layers.BatchNorm(x.shape[-1], momentum=1.0)
  bn(x)
  n = x.size // x.shape[-1]
  return bn.var[...] * (n - 1) / n  # the running var holds the unbiased one


def activations(ratio, shape, seed=0):
  """float32 values with mean^2 / var = ``ratio`` in every channel (std 1,
  mean sqrt(ratio), per-channel spread of the mean's sign)."""
  rng = np.random.default_rng(seed)
  sign = rng.choice([-1.0, 1.0], shape[-1])
  x = rng.normal(0.0, 1.0, shape) + sign * np.sqrt(ratio)
  return x.astype(np.float32)


def max_rel_error(got, x):
  want = x.astype(np.float64).reshape(-1, x.shape[-1]).var(0)
  return float(np.max(np.abs(np.asarray(got, np.float64) - want) / want))


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--size", type=int, default=28)
  p.add_argument("--channels", type=int, default=64)
  p.add_argument("--ratios", default="1,1e2,1e3,1e4")
  p.add_argument("--seeds", type=int, default=3)
  a = p.parse_args()
  shape = (a.batch, a.frames, a.size, a.size, a.channels)
  print(
    f"jax {jax.__version__}, {jax.devices()[0].platform}; activations "
    f"{shape} float32; largest relative error over channels vs float64, "
    f"max over {a.seeds} seeds"
  )
  print(
    "| mean^2/var | one-pass, 1 dev | one-pass, 8 dev | centred, 1 dev "
    "| centred, 8 dev |"
  )
  print("| --- | --- | --- | --- | --- |")
  for ratio in [float(r) for r in a.ratios.split(",")]:
    errors = {}
    for seed in range(a.seeds):
      x = activations(ratio, shape, seed)
      for n in (1, 8):
        mesh = mesh_lib.make_mesh(jax.devices()[:n])
        xs = jax.device_put(x, mesh_lib.batch_sharded(mesh))
        for name, fn in (("one-pass", one_pass), ("centred", centred)):
          err = max_rel_error(jax.jit(fn)(xs), x)
          key = (name, n)
          errors[key] = max(errors.get(key, 0.0), err)
    cells = [
      f"{errors[(m, n)]:.1e}" for m in ("one-pass", "centred") for n in (1, 8)
    ]
    print(f"| {ratio:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
