"""Encoders and heads: exact sizes, shapes, dtypes, lowering, BatchNorm."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from stclr_jax import models

@nnx.jit
def forward(model, clips):
  """Jitted forward (eager op-by-op execution is slow on CPU)."""
  return model(clips)


EXPECTED_PARAMS = {
    "r2plus1d_18": 31_300_125,
    "r3d_18": 33_166_272,
    "mc3_18": 11_490_240,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_exact_parameter_count(name):
  abstract = nnx.eval_shape(
      lambda: models.make_encoder(name, rngs=nnx.Rngs(0)))
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
      lambda: models.make_encoder("r2plus1d_18", rngs=nnx.Rngs(0)))
  mids = [(b.conv1.spatial.conv.kernel.shape[-1],
           b.conv2.spatial.conv.kernel.shape[-1]) for b in enc.blocks]
  assert mids == [(144, 144), (144, 144), (230, 230), (288, 288),
                  (460, 460), (576, 576), (921, 921), (1152, 1152)]
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
  enc = models.make_encoder(name, width=0.125, dtype=jnp.bfloat16,
                            rngs=nnx.Rngs(0))
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
    enc = nnx.eval_shape(lambda: models.make_encoder(
        "r2plus1d_18", width=w, rngs=nnx.Rngs(0)))
    assert enc.features == feat


def test_unknown_encoder_and_bad_input_raise():
  with pytest.raises(ValueError, match="unknown encoder 'r50'"):
    models.make_encoder("r50", rngs=nnx.Rngs(0))
  enc = models.make_encoder("mc3_18", width=0.125, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="expected a clip batch"):
    enc(jnp.zeros((2, 8, 8, 3)))


@pytest.mark.parametrize("kernel,strides,padding", [
    ((1, 7, 7), (1, 2, 2), (0, 3, 3)),
    ((3, 1, 1), (1, 1, 1), (1, 0, 0)),
    ((3, 1, 1), (2, 1, 1), (1, 0, 0)),
    ((1, 1, 1), (2, 2, 2), (0, 0, 0)),
    ((1, 1, 1), (1, 2, 2), (0, 0, 0)),
    ((1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ((3, 3, 3), (2, 2, 2), (1, 1, 1)),
])
def test_conv_fast_lowerings_equal_conv3d(kernel, strides, padding):
  fast = models.VideoConv(5, 6, kernel, strides=strides, padding=padding,
                          rngs=nnx.Rngs(0))
  ref = models.VideoConv(5, 6, kernel, strides=strides, padding=padding,
                         lowering="conv3d", rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 7, 9, 10, 5))
  np.testing.assert_allclose(np.asarray(fast(x)), np.asarray(ref(x)),
                             rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("kernel,strides,padding", [
    ((1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ((1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ((1, 7, 7), (1, 2, 2), (0, 3, 3)),
    ((3, 1, 1), (2, 1, 1), (1, 0, 0)),
    ((1, 1, 1), (2, 2, 2), (0, 0, 0)),
])
@pytest.mark.parametrize("lowering", ["matmul", "spatial2d"])
def test_conv_fast_lowerings_have_conv3d_gradients(kernel, strides, padding,
                                                   lowering):
  # 17 input channels: the spatial kernels take the custom kernel gradient
  # (im2col matrix product), which starts at 16 channels.
  fast = models.VideoConv(17, 6, kernel, strides=strides, padding=padding,
                          lowering=lowering, rngs=nnx.Rngs(0))
  ref = models.VideoConv(17, 6, kernel, strides=strides, padding=padding,
                         lowering="conv3d", rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 7, 9, 10, 17))

  def loss(conv, x):
    y = conv(x)
    return jnp.sum(y * jnp.cos(jnp.arange(y.size).reshape(y.shape)))

  (gw_fast, gx_fast) = nnx.grad(loss, argnums=(0, 1))(fast, x)
  (gw_ref, gx_ref) = nnx.grad(loss, argnums=(0, 1))(ref, x)
  np.testing.assert_allclose(np.asarray(fast(x)), np.asarray(ref(x)),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gx_fast), np.asarray(gx_ref),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(gw_fast["kernel"][...]),
                             np.asarray(gw_ref["kernel"][...]),
                             rtol=1e-4, atol=1e-3)


def test_conv2d_gemm_wgrad_bf16_gradient_is_close():
  from stclr_jax.models import layers
  x = jax.random.normal(jax.random.key(0), (3, 9, 8, 20), jnp.bfloat16)
  w = jax.random.normal(jax.random.key(1), (3, 3, 20, 7), jnp.bfloat16)
  pad = ((1, 1), (1, 1))

  def loss(conv):
    return lambda w: jnp.sum(conv(x, w, (2, 2), pad).astype(jnp.float32)**2)

  g = jax.grad(loss(layers.conv2d_gemm_wgrad))(w)
  g_ref = jax.grad(loss(layers._conv2d))(w)
  assert g.dtype == jnp.bfloat16
  g, g_ref = np.asarray(g, np.float32), np.asarray(g_ref, np.float32)
  assert np.linalg.norm(g - g_ref) / np.linalg.norm(g_ref) < 0.02

def _torch_style_bn(x, mean, var, momentum=0.1, eps=1e-5):
  """NumPy transcription of PyTorch BatchNorm training semantics."""
  axes = tuple(range(x.ndim - 1))
  bm, bv = x.mean(axes), x.var(axes)
  n = x.size // x.shape[-1]
  y = (x - bm) / np.sqrt(bv + eps)
  return y, (1 - momentum) * mean + momentum * bm, \
      (1 - momentum) * var + momentum * bv * n / (n - 1)


def test_batchnorm_matches_pytorch_semantics():
  bn = models.BatchNorm(4)
  x = np.random.default_rng(0).normal(2.0, 3.0, size=(3, 2, 5, 5, 4))
  y = bn(jnp.array(x, jnp.float32))
  y_ref, m_ref, v_ref = _torch_style_bn(x, np.zeros(4), np.ones(4))
  np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(bn.mean[...]), m_ref, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(bn.var[...]), v_ref, rtol=1e-5)
  bn.use_running_average = True
  y_eval = bn(jnp.array(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(y_eval),
                             (x - m_ref) / np.sqrt(v_ref + 1e-5),
                             rtol=1e-4, atol=1e-4)


def test_batchnorm_groups_are_independent_halves():
  x = jax.random.normal(jax.random.key(0), (4, 3, 6, 6, 8)) * 2 + 1
  grouped = models.BatchNorm(8, num_groups=2)
  halves = [models.BatchNorm(8), models.BatchNorm(8)]
  y = grouped(x)
  y_ref = jnp.concatenate([halves[0](x[:2]), halves[1](x[2:])])
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=1e-5)
  np.testing.assert_allclose(
      np.asarray(grouped.mean[...]),
      np.asarray((halves[0].mean[...] + halves[1].mean[...]) / 2), atol=1e-6)
  with pytest.raises(ValueError, match="not divisible by num_groups=3"):
    models.BatchNorm(8, num_groups=3)(x)


def test_eval_mode_uses_running_statistics():
  enc = models.make_encoder("r2plus1d_18", width=0.125, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
  enc.eval()
  before = nnx.state(enc, nnx.BatchStat)
  h1, h2 = forward(enc, x), forward(enc, x[:1])
  np.testing.assert_allclose(np.asarray(h1[:1]), np.asarray(h2), atol=1e-5)
  after = nnx.state(enc, nnx.BatchStat)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                                   before, after))


def _sharded_vs_single(bn_groups, mesh_devices):
  """Train-mode forward under a sharded jit and on one device."""
  mesh = Mesh(np.array(mesh_devices), ("data",))
  x = jax.random.normal(jax.random.key(5), (8, 4, 16, 16, 3))

  single = models.make_encoder("r2plus1d_18", width=0.125,
                               bn_groups=bn_groups, rngs=nnx.Rngs(0))
  sharded = models.make_encoder("r2plus1d_18", width=0.125,
                                bn_groups=bn_groups, rngs=nnx.Rngs(0))
  h1 = forward(single, x)
  x_s = jax.device_put(x, NamedSharding(mesh, P("data")))
  assert len(x_s.sharding.device_set) == len(mesh_devices)
  h8 = forward(sharded, x_s)
  return single, sharded, h1, h8


def test_global_batchnorm_under_sharded_jit_equals_single_device():
  assert jax.device_count() == 8
  single, sharded, h1, h8 = _sharded_vs_single(1, jax.devices())
  # Only the float32 summation order differs (per-shard partial sums), and
  # 18 BatchNorms over few elements amplify it slightly.
  np.testing.assert_allclose(np.asarray(h8), np.asarray(h1), atol=5e-4)
  s1 = jax.tree.leaves(nnx.state(single, nnx.BatchStat))
  s8 = jax.tree.leaves(nnx.state(sharded, nnx.BatchStat))
  for a, b in zip(s1, s8):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-4)


def test_per_device_batchnorm_differs_from_global():
  _, _, h_global, _ = _sharded_vs_single(1, jax.devices())
  _, _, h_local, h_local8 = _sharded_vs_single(8, jax.devices())
  np.testing.assert_allclose(np.asarray(h_local8), np.asarray(h_local),
                             atol=5e-4)
  assert float(jnp.abs(h_local - h_global).max()) > 5e-2


def test_projection_head_and_classifier():
  head = models.ProjectionHead(512, rngs=nnx.Rngs(0))
  assert models.count_params(head) == 512 * 512 + 512 + 512 * 128 + 128
  z = head(jnp.ones((3, 512)))
  assert z.shape == (3, 128)
  head = models.ProjectionHead(64, hidden_features=32, out_features=16,
                               rngs=nnx.Rngs(0))
  assert head(jnp.ones((2, 64))).shape == (2, 16)
  clf = models.LinearClassifier(512, 6, rngs=nnx.Rngs(0))
  assert models.count_params(clf) == 512 * 6 + 6
  logits = clf(jnp.ones((2, 512), jnp.bfloat16))
  assert logits.shape == (2, 6) and logits.dtype == jnp.float32
  assert float(jnp.abs(clf.fc.bias[...]).max()) == 0.0


def test_init_is_kaiming_fan_out_and_identical_eager_or_jitted():
  enc = models.make_encoder("r3d_18", width=0.25, rngs=nnx.Rngs(3))
  jitted = nnx.jit(lambda r: models.make_encoder("r3d_18", width=0.25,
                                                 rngs=r))(nnx.Rngs(3))
  same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                      nnx.state(enc, nnx.Param), nnx.state(jitted, nnx.Param))
  assert jax.tree.all(same)
  k = np.asarray(enc.blocks[2].conv1.conv.kernel[...])   # (3,3,3,16,32)
  assert k.shape == (3, 3, 3, 16, 32)
  np.testing.assert_allclose(k.std(), np.sqrt(2.0 / (27 * 32)), rtol=0.05)
  assert abs(k.mean()) < 0.01
  other = models.make_encoder("r3d_18", width=0.25, rngs=nnx.Rngs(4))
  assert not np.allclose(k, np.asarray(other.blocks[2].conv1.conv.kernel[...]))
