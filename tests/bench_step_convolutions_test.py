"""bench/step_convolutions.py reads every convolution of the library's
pretraining step from its jaxpr and sorts them into forward, input
gradient and kernel gradient. Its bound is only as good as that census:
each of the encoder's 37 kernels must appear once per kind (the stem's
input gradient excepted), with the kernel's own size."""

import collections
import os
import sys

import jax
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))

import step_convolutions as sc  # noqa: E402
import train_step as step_bench  # noqa: E402

from stclr_jax import (
  compiler,  # noqa: E402
)

N_KERNELS = 37  # R(2+1)D-18: stem 2 + 8 blocks x 2 x (spatial, temporal) + 3


def _out_size(conv):
  lhs, rhs, params = conv
  out = jax.eval_shape(
    lambda x, w: jax.lax.conv_general_dilated_p.bind(x, w, **params), lhs, rhs
  )
  return int(np.prod(out.shape))


@pytest.mark.parametrize("lowering", ["conv2d", "conv3d"])
def test_the_census_finds_every_kernel_once_per_kind(lowering):
  step, state, data, model = step_bench.jax_pretrain_step(
    2, 4, 16, "fp32", 0.25, None, lowering, "adam"
  )
  convs = sc.convolutions(step.trace(state, data).jaxpr)
  kinds = sc.classify(convs, sc.forward_numbers(convs))
  counts = {k: len(v) for k, v in kinds.items()}
  assert counts == {
    "forward": N_KERNELS,
    "input gradient": N_KERNELS - 1,  # none for the stem: data has none
    "kernel gradient": N_KERNELS,
  }
  kernels = [
    int(np.prod(v.shape))
    for path, v in nnx.to_flat_state(nnx.state(model.encoder, nnx.Param))
    if v.ndim == 5
  ]
  assert len(kernels) == N_KERNELS
  want = collections.Counter(kernels)
  # Forward convolutions take the kernels; kernel gradients produce them.
  fwd = collections.Counter(int(np.prod(c[1].shape)) for c in kinds["forward"])
  assert fwd == want
  wgrad = collections.Counter(_out_size(c) for c in kinds["kernel gradient"])
  assert wgrad == want
  # Input gradients produce the forward convolutions' inputs, all but the
  # stem's (the first).
  fwd_inputs = collections.Counter(
    int(np.prod(c[0].shape)) for c in kinds["forward"][1:]
  )
  dgrad = collections.Counter(_out_size(c) for c in kinds["input gradient"])
  assert dgrad == fwd_inputs


def test_the_runner_computes_the_convolutions_it_was_given():
  """The barriers that serialise the runner change no value."""
  step, state, data, _ = step_bench.jax_pretrain_step(
    2, 4, 16, "fp32", 0.25, None, "conv2d", "adam"
  )
  convs = sc.convolutions(step.trace(state, data).jaxpr)[:6]
  options = compiler.xla_compiler_options("cpu")
  fn, ops = sc.runner(convs, options)
  got = fn(ops)
  for (x, w), (_, _, params), y in zip(ops, convs, got):
    # The same kernels (the same compiler options), so the same bits.
    conv = jax.jit(
      lambda x, w, p=params: jax.lax.conv_general_dilated_p.bind(x, w, **p),
      compiler_options=options,
    )
    np.testing.assert_array_equal(np.asarray(y), np.asarray(conv(x, w)))


def test_an_unknown_layout_is_an_error_naming_it():
  lhs = jax.ShapeDtypeStruct((1, 4, 4, 2), np.float32)
  rhs = jax.ShapeDtypeStruct((3, 3, 2, 2), np.float32)
  fwd = jax.lax.conv_dimension_numbers(
    lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")
  )
  odd = jax.lax.conv_dimension_numbers(
    lhs.shape, rhs.shape, ("NWHC", "HWIO", "NHWC")
  )
  with pytest.raises(ValueError, match="unknown kind"):
    sc.classify([(lhs, rhs, {"dimension_numbers": odd})], fwd)
