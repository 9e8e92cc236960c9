"""Benchmark: one convolution on XLA:CPU, YNNPACK's kernels against Eigen's.

XLA:CPU (jaxlib 0.10) runs convolutions with YNNPACK unless a jit is
compiled with ``compiler.xla_compiler_options()`` (Eigen's, what the library's
steps use). For the stage-1 shapes of the CPU size (R(2+1)D-18 at width
0.25, 32 clips of 8 frames at 24x24), each timed as its own ``jax.jit``,
side by side in one process, median of ``--repeats``:

* the spatial (1,3,3) kernel, 16 -> 36 channels, as a 2-D convolution over
  the batch x time frames: forward, kernel gradient, input gradient;
* the temporal (3,1,1) kernel, 36 -> 16 channels, forward + both gradients
  of ``sum(y * r)``: as a (3,1) 2-D convolution over (batch, time,
  height*width) (``conv_lowering="conv2d"``), as concatenated time taps and
  one matrix product (``"matmul"``), and as a 3-D convolution.

  python bench/cpu_convolutions.py [--clips 32 --frames 8 --size 24]

Figures: BENCHMARKS.md, "Convolutions on XLA:CPU".
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "bench")):
  if path not in sys.path:
    sys.path.insert(0, path)

import timing  # noqa: E402  (bench/timing.py)

from stclr_jax import (
  compiler,  # noqa: E402
)


def _conv2d(x, w, pad):
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def spatial_ops(n, h, c, o):
  """forward, kernel gradient and input gradient of a 3x3 'same'
  convolution of (n, h, h, c) to o channels."""
  pad = ((1, 1), (1, 1))

  def forward(x, w, dy):
    return _conv2d(x, w, pad)

  def kernel_grad(x, w, dy):
    return jax.vjp(lambda w_: _conv2d(x, w_, pad), w)[1](dy)[0]

  def input_grad(x, w, dy):
    return jax.vjp(lambda x_: _conv2d(x_, w, pad), x)[1](dy)[0]

  k = jax.random.split(jax.random.key(0), 3)
  args = (
    jax.random.normal(k[0], (n, h, h, c)),
    jax.random.normal(k[1], (3, 3, c, o)) * 0.1,
    jax.random.normal(k[2], (n, h, h, o)),
  )
  return {
    "spatial 3x3: forward": forward,
    "spatial 3x3: kernel gradient": kernel_grad,
    "spatial 3x3: input gradient": input_grad,
  }, args


def temporal_ops(b, t, h, c, o):
  """forward + both gradients of a (3,1,1) 'same' convolution of
  (b, t, h, h, c) to o channels, in three forms."""

  def as_conv2d(x, w):
    y = jax.lax.conv_general_dilated(
      x.reshape(b, t, h * h, c),
      w[:, None],
      (1, 1),
      ((1, 1), (0, 0)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y.reshape(b, t, h, h, o)

  def as_matmul(x, w):
    xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    cols = jnp.concatenate([xp[:, i : i + t] for i in range(3)], -1)
    return jnp.einsum("bthwc,co->bthwo", cols, w.reshape(3 * c, o))

  def as_conv3d(x, w):
    return jax.lax.conv_general_dilated(
      x,
      w[:, None, None],
      (1, 1, 1),
      ((1, 1), (0, 0), (0, 0)),
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )

  k = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(k[0], (b, t, h, h, c))
  w = jax.random.normal(k[1], (3, c, o)) * 0.1
  r = jax.random.normal(k[2], (b, t, h, h, o))

  def fwd_bwd(form):
    grad = jax.value_and_grad(
      lambda x_, w_: jnp.sum(form(x_, w_) * r), argnums=(0, 1)
    )
    return lambda x_, w_, _: grad(x_, w_)

  return {
    "temporal 3x1x1 fwd+bwd: (3,1) 2-D conv": fwd_bwd(as_conv2d),
    "temporal 3x1x1 fwd+bwd: taps + matmul": fwd_bwd(as_matmul),
    "temporal 3x1x1 fwd+bwd: 3-D conv": fwd_bwd(as_conv3d),
  }, (x, w, None)


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--clips", type=int, default=32)
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--size", type=int, default=24)
  p.add_argument("--repeats", type=int, default=7)
  a = p.parse_args()
  eigen = compiler.xla_compiler_options("cpu")
  if eigen is None:
    sys.exit(
      "compiler.xla_compiler_options('cpu') is None (XLA_FLAGS sets the "
      "YNNPACK option, or this jaxlib lacks it): nothing to compare"
    )
  print(
    f"jax {jax.__version__}; {a.clips} clips x {a.frames} frames, "
    f"{a.size}x{a.size}; median of {a.repeats} ms",
    flush=True,
  )
  n = a.clips * a.frames
  groups = [
    spatial_ops(n, a.size, 16, 36),
    temporal_ops(a.clips, a.frames, a.size, 36, 16),
  ]
  print(f"  {'operation':44s} {'YNNPACK':>9s} {'Eigen':>9s}")
  for ops, args in groups:
    for name, fn in ops.items():
      ynn, eig = (
        1e3 * timing.median_seconds(functools.partial(f, *args), a.repeats)
        for f in (jax.jit(fn), jax.jit(fn, compiler_options=eigen))
      )
      print(f"  {name:44s} {ynn:9.1f} {eig:9.1f}", flush=True)


if __name__ == "__main__":
  main()
