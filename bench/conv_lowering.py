"""Benchmark: R(2+1)D-18 forward+backward with VideoConv's lowerings.

Measures, side by side in one process, the median time of a jitted
forward+backward step (loss = sum of squared features) for each of
``--lowerings`` (see ``stclr_jax.models.layers.VideoConv``: ``conv2d``,
``matmul``, ``spatial2d``, ``conv3d``; ``auto`` picks by backend), compiled
with the library's XLA options (``compiler.xla_compiler_options``: Eigen's
convolutions on the CPU), and prints each one's speed-up over ``conv3d``.
Usage:

  python bench/conv_lowering.py [--batch 2 --frames 8 --size 112 --repeats 5]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stclr_jax import compiler, models


def time_step(lowering, x, repeats):
  enc = models.make_encoder(
    "r2plus1d_18", conv_lowering=lowering, rngs=nnx.Rngs(0)
  )
  graphdef, state = nnx.split(enc)
  grad = jax.jit(
    jax.grad(lambda st, v: jnp.sum(jnp.square(nnx.merge(graphdef, st)(v)))),
    compiler_options=compiler.xla_compiler_options(),
  )

  def step(_, v):
    return grad(state, v)

  t0 = time.perf_counter()
  jax.block_until_ready(step(enc, x))
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(step(enc, x))
    times.append(time.perf_counter() - t0)
  return compile_s, float(np.median(times))


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--size", type=int, default=112)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--lowerings", default="conv2d,matmul,spatial2d,conv3d")
  a = p.parse_args()
  x = jax.random.uniform(
    jax.random.key(0), (a.batch, a.frames, a.size, a.size, 3)
  )
  print(
    f"jax {jax.__version__}, {jax.devices()[0].platform}, "
    f"input {x.shape}, median of {a.repeats}"
  )
  res = {low: time_step(low, x, a.repeats) for low in a.lowerings.split(",")}
  for low, (c, t) in res.items():
    print(f"  {low:9s} compile {c:6.1f}s  step {t:6.2f}s")
  if "conv3d" in res:
    for low in res:
      print(
        f"speed-up {low} over conv3d: {res['conv3d'][1] / res[low][1]:.2f}x"
      )


if __name__ == "__main__":
  main()
