"""VideoResNet encoders: exact sizes, Table I widths, shapes and dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers_models import forward
from flax import nnx

from stclr_jax import models

EXPECTED_PARAMS = {
  "r2plus1d_18": 31_300_125,
  "r3d_18": 33_166_272,
  "mc3_18": 11_490_240,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_exact_parameter_count(name):
  abstract = nnx.eval_shape(lambda: models.make_encoder(name, rngs=nnx.Rngs(0)))
  assert models.count_params(abstract) == EXPECTED_PARAMS[name]
  assert abstract.features == 512


def test_r2plus1d_mid_widths_follow_table_1():
  # Table I: 144 | 230, 288 | 460, 576 | 921, 1152 (first block | second).
  assert models.midplanes(64, 64) == 144
  assert models.midplanes(64, 128) == 230
  assert models.midplanes(128, 128) == 288
  assert models.midplanes(128, 256) == 460
  assert models.midplanes(256, 256) == 576
  assert models.midplanes(256, 512) == 921
  assert models.midplanes(512, 512) == 1152
  enc = nnx.eval_shape(
    lambda: models.make_encoder("r2plus1d_18", rngs=nnx.Rngs(0))
  )
  mids = [
    (
      b.conv1.spatial.conv.kernel.shape[-1],
      b.conv2.spatial.conv.kernel.shape[-1],
    )
    for b in enc.blocks
  ]
  assert mids == [
    (144, 144),
    (144, 144),
    (230, 230),
    (288, 288),
    (460, 460),
    (576, 576),
    (921, 921),
    (1152, 1152),
  ]
  assert enc.stem.layers[0].conv.kernel.shape == (1, 7, 7, 3, 45)
  assert enc.stem.layers[1].conv.kernel.shape == (3, 1, 1, 45, 64)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
@pytest.mark.parametrize("shape", [(2, 8, 32, 32), (1, 5, 27, 41)])
def test_output_shape_and_finite(name, shape):
  enc = models.make_encoder(name, width=0.125, rngs=nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(1), (*shape, 3))
  h = forward(enc, x)
  assert h.shape == (shape[0], 64) and enc.features == 64
  assert bool(jnp.all(jnp.isfinite(h)))


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_bf16_compute_keeps_fp32_params(name):
  enc = models.make_encoder(
    name, width=0.125, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)
  )
  x = jax.random.normal(jax.random.key(2), (2, 4, 24, 24, 3))
  h = forward(enc, x)
  assert h.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(h)))
  dtypes = {p.dtype for p in jax.tree.leaves(nnx.state(enc, nnx.Param))}
  assert dtypes == {jnp.dtype(jnp.float32)}
  # Against fp32 in eval mode (BatchNorm on running statistics, so that tiny
  # batch statistics do not amplify rounding): relative L2 error of bf16.
  ref = models.make_encoder(name, width=0.125, rngs=nnx.Rngs(0))
  forward(ref, x)  # the same running-statistics update as enc's
  enc.eval()
  ref.eval()
  h16 = np.asarray(forward(enc, x), np.float32)
  h32 = np.asarray(forward(ref, x))
  assert np.linalg.norm(h16 - h32) / np.linalg.norm(h32) < 0.05


def test_width_multiplier_scales_features():
  for w, feat in [(0.25, 128), (0.5, 256), (2.0, 1024)]:
    enc = nnx.eval_shape(
      lambda w=w: models.make_encoder("r2plus1d_18", width=w, rngs=nnx.Rngs(0))
    )
    assert enc.features == feat
