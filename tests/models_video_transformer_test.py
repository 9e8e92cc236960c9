"""The video transformers (models/video_transformer.py and its blocks):
exact sizes, the position table, attention's biases, the spatial
bottleneck, the temporal pyramid, the tube embedding and stochastic depth,
each against a NumPy reference or a stated property."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stclr_jax import configlib, models
from stclr_jax.models import transformer_blocks as tb
from stclr_jax.models import video_transformer as vt


def _abstract(name):
  return nnx.eval_shape(lambda: models.make_encoder(name, rngs=nnx.Rngs(0)))


def test_tpsbt_base_has_svfaps_released_size():
  """SVFAP's svfap_base_patch16_160, counted: 77,635,351 parameters with a
  7-class head, 77,634,838 with 6 (the encoder, fc_norm included, plus a
  Linear(512, n))."""
  encoder = models.count_params(_abstract("tpsbt_base"))
  assert encoder == 77_631_760
  assert encoder + 512 * 7 + 7 == 77_635_351
  assert encoder + 512 * 6 + 6 == 77_634_838


def test_encoder_names_are_configlibs():
  assert configlib.ENCODERS == models.ENCODER_NAMES


def test_sinusoid_table_interleaves_sine_and_cosine():
  d = 8
  table = tb.sinusoid_table(5, d)
  assert table.shape == (5, d)
  np.testing.assert_array_equal(table[0], [0, 1] * (d // 2))
  for p in (1, 3, 4):
    for i in range(d // 2):
      angle = p / 10000 ** (2 * i / d)
      assert table[p, 2 * i] == pytest.approx(np.sin(angle), abs=1e-15)
      assert table[p, 2 * i + 1] == pytest.approx(np.cos(angle), abs=1e-15)


def _np_attention(x, ctx, wq, wk, wv, bq, bv, wo, bo, heads):
  q, k, v = x @ wq + bq, ctx @ wk, ctx @ wv + bv
  b, n, d = q.shape
  hd = d // heads

  def split(y):
    return y.reshape(b, -1, heads, hd).transpose(0, 2, 1, 3)

  q, k, v = split(q), split(k), split(v)
  s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
  s = np.exp(s - s.max(-1, keepdims=True))
  w = s / s.sum(-1, keepdims=True)
  out = (w @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
  return out @ wo + bo


@pytest.mark.parametrize("cross", [False, True])
def test_attention_has_query_and_value_biases_and_no_key_bias(cross):
  with jax.enable_x64(True):
    _check_attention(cross)


def _check_attention(cross):
  d, heads = 8, 2
  attn = tb.Attention(
    d,
    heads,
    cross=cross,
    dtype=jnp.float64,
    param_dtype=jnp.float64,
    rngs=nnx.Rngs(0),
  )
  paths = {
    "/".join(map(str, p))
    for p, _ in nnx.traversals.flatten_mapping(
      nnx.to_pure_dict(nnx.state(attn))
    ).items()
  }
  fused = ["qkv/kernel"] if not cross else ["q/kernel", "kv/kernel"]
  assert paths == {
    *fused,
    "q_bias",
    "v_bias",
    "proj/kernel",
    "proj/bias",
  }
  rng = np.random.RandomState(0)
  attn.q_bias[...] = jnp.asarray(rng.randn(d))
  attn.v_bias[...] = jnp.asarray(rng.randn(d))
  x = rng.randn(2, 5, d)
  ctx = rng.randn(2, 3, d) if cross else x
  if cross:
    wq = np.asarray(attn.q.kernel[...])
    wk, wv = np.split(np.asarray(attn.kv.kernel[...]), 2, -1)
  else:
    wq, wk, wv = np.split(np.asarray(attn.qkv.kernel[...]), 3, -1)
  out = attn(jnp.asarray(x), jnp.asarray(ctx) if cross else None)
  ref = _np_attention(
    x,
    ctx,
    wq,
    wk,
    wv,
    np.asarray(attn.q_bias[...]),
    np.asarray(attn.v_bias[...]),
    np.asarray(attn.proj.kernel[...]),
    np.asarray(attn.proj.bias[...]),
    heads,
  )
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-12, atol=1e-12)


def test_spatial_bottleneck_softmaxes_over_each_frames_tokens():
  neck = tb.SpatialBottleneck(
    8, 3, 4, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(1)
  )
  x = jnp.asarray(np.random.RandomState(0).randn(2, 3, 5, 8), jnp.float32)
  w = neck.weights(x)
  assert w.shape == (2, 3, 3, 5)  # (B, T, G, S)
  np.testing.assert_allclose(np.asarray(w.sum(-1)), 1.0, rtol=1e-6)
  pooled = neck(x)
  np.testing.assert_allclose(
    np.asarray(pooled),
    np.einsum("btgs,btsc->btgc", np.asarray(w), np.asarray(x)),
    rtol=1e-5,
    atol=1e-6,
  )
  # Another frame's tokens do not move frame 0's bottleneck tokens.
  moved = neck(x.at[:, 1:].add(3.0))
  np.testing.assert_array_equal(
    np.asarray(moved[:, 0]), np.asarray(pooled[:, 0])
  )


def test_temporal_downsample_halves_time_as_a_strided_conv():
  down = tb.TemporalDownsample(
    4, 2, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(2)
  )
  x = np.random.RandomState(1).randn(2, 6, 3, 4).astype(np.float32)
  y = np.asarray(down(jnp.asarray(x)))
  assert y.shape == (2, 3, 3, 4)
  k = np.asarray(down.kernel[...])  # (tap, in, out)
  ref = np.stack(
    [x[:, 2 * t] @ k[0] + x[:, 2 * t + 1] @ k[1] for t in range(3)], 1
  ) + np.asarray(down.bias[...])
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="do not halve"):
    down(jnp.zeros((1, 3, 3, 4)))


def test_tube_embedding_is_a_conv_with_stride_equal_to_kernel():
  emb = tb.TubeEmbed(
    2, 4, 3, 5, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(3)
  )
  x = np.random.RandomState(2).rand(1, 4, 8, 12, 3).astype(np.float32)
  y = np.asarray(emb(jnp.asarray(x)))
  assert y.shape == (1, 2, 2, 3, 5)
  k, b = np.asarray(emb.kernel[...]), np.asarray(emb.bias[...])
  for t, i, j in [(0, 0, 0), (1, 1, 2), (0, 1, 1)]:
    patch = x[0, 2 * t : 2 * t + 2, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
    ref = np.einsum("thwc,thwcd->d", patch, k) + b
    np.testing.assert_allclose(y[0, t, i, j], ref, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="does not divide"):
    emb(jnp.zeros((1, 3, 8, 8, 3)))


def test_drop_path_keeps_or_drops_whole_samples():
  x = jnp.ones((64, 3, 2))
  assert tb.drop_path(x, 0.25, None) is x
  y = np.asarray(tb.drop_path(x, 0.25, jax.random.key(0)))
  per_sample = y.reshape(64, -1)
  assert set(np.unique(per_sample)) <= {0.0, np.float32(1 / 0.75)}
  assert np.all(per_sample.min(1) == per_sample.max(1))
  assert 0 < (per_sample[:, 0] == 0).sum() < 64


@pytest.mark.parametrize("name", ["tpsbt_tiny", "vit_tiny"])
def test_stochastic_depth_only_with_a_key(name):
  enc = models.make_encoder(name, drop_path=0.5, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.RandomState(3).rand(4, 4, 32, 32, 3), jnp.float32)
  run = nnx.jit(lambda m, x, rng=None: m(x, rng=rng))  # eager: 30 s
  plain = np.asarray(run(enc, x))
  assert plain.shape == (4, 32)
  np.testing.assert_array_equal(plain, np.asarray(run(enc, x)))
  dropped = np.asarray(run(enc, x, jax.random.key(1)))
  assert not np.allclose(dropped, plain)
  rates = [blk.drop_path for blk in enc.blocks]
  np.testing.assert_allclose(rates, np.linspace(0, 0.5, len(rates)))


def test_tpsbt_stages_follow_the_token_grid():
  """The tiny TPSBT on 4x32^2 clips: 2x4x4 tokens, the pyramid halves T to
  1 with G = 2 bottleneck tokens per frame; the feature depends on every
  frame's pixels."""
  enc = models.make_encoder("tpsbt_tiny", rngs=nnx.Rngs(0))
  assert isinstance(enc.blocks[0], tb.Block)
  assert all(isinstance(b, tb.CrossSelfBlock) for b in enc.blocks[1:])
  x = np.random.RandomState(4).rand(1, 4, 32, 32, 3).astype(np.float32)
  tokens = enc.tokens(jnp.asarray(x))
  assert tokens.shape == (1, 2, 16, 32)
  run = nnx.jit(lambda m, x: m(x))  # eager: 30 s
  base = np.asarray(run(enc, jnp.asarray(x)))
  for t in range(4):
    moved = x.copy()
    moved[0, t] += 0.5
    assert not np.allclose(np.asarray(run(enc, jnp.asarray(moved))), base)


def test_unknown_names_are_errors():
  with pytest.raises(ValueError, match="unknown video transformer"):
    vt.make_transformer("tpsbt_huge", rngs=nnx.Rngs(0))
  assert vt.family("r2plus1d_18") == "resnet"
  assert vt.family("vit_base") == "vit"
