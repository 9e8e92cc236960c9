"""Masked video autoencoding's parts: SVFAP's exact size, tube masks, the
normalised pixel targets and the loss against NumPy, and the three defects
of SVFAP's pretraining code, each with a test that fails on it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from stclr_jax import losses
from stclr_jax import mesh as mesh_lib
from stclr_jax import train_step as train_step_lib
from stclr_jax.models import masked_autoencoder as mae
from stclr_jax.models import video_transformer as vt
from stclr_jax.pretext import masking, objectives


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_svfap_sizes_exactly():
  """SVFAP's pretraining model built at its fine-tuning width (512, 8
  heads) with the 384-wide, 6-head, 4-block decoder: 85,517,200."""
  m = nnx.eval_shape(
    lambda: mae.make_autoencoder("tpsbt_base", "base", rngs=nnx.Rngs(0))
  )
  assert _count(nnx.state(m, nnx.Param)) == 85_517_200
  assert _count(nnx.state(m.encoder, nnx.Param)) == 77_631_760
  assert _count(nnx.state(m.encoder_to_decoder, nnx.Param)) == 196_608
  assert m.mask_token.shape == (384,)
  decoder = (m.decoder_blocks, m.decoder_norm, m.head)
  assert _count(nnx.state(decoder, nnx.Param)) == 7_688_448
  assert m.out_dim == 3 * 2 * 16 * 16


def test_one_width_the_encoder_is_the_fine_tuning_encoder():
  """Defect 1 (SVFAP pretrains 768 wide and fine-tunes 512 wide): the
  autoencoder's encoder is the fine-tuning encoder of the same name, with
  the same parameter paths and shapes, so it carries over whole."""
  for name in ("tpsbt_base", "vit_base", "tpsbt_cpu"):
    m = nnx.eval_shape(
      lambda n=name: mae.make_autoencoder(n, "base", rngs=nnx.Rngs(0))
    )
    ft = nnx.eval_shape(lambda n=name: vt.make_transformer(n, rngs=nnx.Rngs(0)))
    shapes = lambda s: jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(s))
    assert shapes(nnx.state(m.encoder, nnx.Param)) == shapes(
      nnx.state(ft, nnx.Param)
    )
  with pytest.raises(ValueError, match="video transformer encoder"):
    mae.make_autoencoder("r2plus1d_18", "base", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="unknown decoder"):
    mae.make_autoencoder("vit_tiny", "huge", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("positions, visible", [(100, 10), (36, 4), (49, 5)])
def test_tube_mask_counts_order_and_disjointness(positions, visible):
  keys = jax.random.split(jax.random.key(3), 5)
  vis, msk = masking.draw(keys, positions, 0.9)
  vis, msk = np.asarray(vis), np.asarray(msk)
  assert vis.shape == (5, visible) and msk.shape == (5, positions - visible)
  for v, m in zip(vis, msk):
    assert np.all(np.diff(v) > 0) and np.all(np.diff(m) > 0)  # sorted
    np.testing.assert_array_equal(
      np.sort(np.concatenate([v, m])), np.arange(positions)
    )
  assert len({tuple(v) for v in vis}) == 5  # a mask per clip


def test_tube_mask_per_clip_key_independent_of_layout():
  """A clip's mask depends on its key only: the batch's masks equal its
  halves' (so devices and hosts draw what one device draws), and key data
  (uint32 pairs, as a batch ships them) equal typed keys."""
  keys = jax.random.split(jax.random.key(0), 8)
  whole = masking.draw(keys, 36, 0.9)
  halves = [masking.draw(keys[i : i + 4], 36, 0.9) for i in (0, 4)]
  for j in range(2):
    np.testing.assert_array_equal(
      whole[j], np.concatenate([h[j] for h in halves])
    )
  data = masking.draw(jax.random.key_data(keys), 36, 0.9)
  np.testing.assert_array_equal(whole[0], data[0])


def test_tube_mask_visible_are_the_smallest_noise():
  noise = jnp.asarray([[0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.6, 0.4, 0.0]])
  vis, msk = masking.tube_mask(noise, 0.8)
  np.testing.assert_array_equal(vis, [[1, 9]])
  np.testing.assert_array_equal(msk, [[0, 2, 3, 4, 5, 6, 7, 8]])
  for bad in (0.0, 1.0, 0.05):
    with pytest.raises(ValueError, match="mask ratio|visible"):
      masking.tube_mask(noise, bad)


def test_gather_and_flat_positions():
  t, s, c = 3, 5, 2
  tokens = np.arange(2 * t * s * c, dtype=np.float32).reshape(2, t, s, c)
  idx = jnp.asarray([[0, 3], [1, 4]])
  got = np.asarray(masking.gather_positions(jnp.asarray(tokens), idx))
  for b in range(2):
    np.testing.assert_array_equal(got[b], tokens[b][:, np.asarray(idx[b])])
  flat = np.asarray(masking.flat_positions(idx, t, s))
  np.testing.assert_array_equal(flat[0], [0, 3, 5, 8, 10, 13])
  np.testing.assert_array_equal(
    tokens.reshape(2, t * s, c)[1][flat[1]], got[1].reshape(-1, c)
  )


def _targets_numpy(video, k, p):
  b, t, h, w, c = video.shape
  out = []
  for bi in range(b):
    rows = []
    for ti in range(t // k):
      for yi in range(h // p):
        for xi in range(w // p):
          tube = video[
            bi,
            ti * k : (ti + 1) * k,
            yi * p : (yi + 1) * p,
            xi * p : (xi + 1) * p,
          ].reshape(-1, c)  # (k p p, c), in (t, y, x) order
          mu = tube.mean(0)
          sd = tube.std(0, ddof=1)
          rows.append(((tube - mu) / (sd + 1e-6)).reshape(-1))
    out.append(rows)
  return np.asarray(out)


def test_pixel_targets_equal_numpy():
  rng = np.random.RandomState(0)
  video = rng.rand(2, 4, 16, 24, 3)
  with jax.enable_x64(True):
    got = mae.pixel_targets(jnp.asarray(video, jnp.float64), 2, 8)
    np.testing.assert_allclose(
      np.asarray(got), _targets_numpy(video, 2, 8), rtol=1e-12, atol=1e-12
    )
  assert got.shape == (2, 2 * 2 * 3, 2 * 8 * 8 * 3)
  # float32 clips give float32 targets; bf16 clips are promoted.
  assert (
    mae.pixel_targets(jnp.zeros((1, 2, 8, 8, 3), jnp.bfloat16), 2, 8).dtype
    == jnp.float32
  )


def test_reconstruction_mse_equals_numpy():
  rng = np.random.RandomState(1)
  targets = rng.randn(3, 10, 6)
  masked = np.stack([np.sort(rng.permutation(10)[:7]) for _ in range(3)])
  pred = rng.randn(3, 7, 6)
  want = np.mean([(pred[b] - targets[b][masked[b]]) ** 2 for b in range(3)])
  with jax.enable_x64(True):
    got = losses.reconstruction_mse(
      jnp.asarray(pred), jnp.asarray(targets), jnp.asarray(masked)
    )
    assert float(got) == pytest.approx(want, rel=1e-12)
  with pytest.raises(ValueError, match="masked tokens"):
    losses.reconstruction_mse(
      jnp.asarray(pred[:, :6]), jnp.asarray(targets), jnp.asarray(masked)
    )


def test_fusion_adds_each_token_at_its_own_position():
  """Defect 3 (SVFAP reshapes stages 2 and 3 with the pre-downsampling
  length, then repeats): with position-coded tokens, stage k's token
  (t', s) lands on every (t, s) with t // 2^k == t', and nowhere else."""
  t, s = 8, 6
  x1 = jnp.zeros((1, t, s, 1))
  code = lambda tt, scale: (
    scale * (jnp.arange(tt)[:, None] * 100 + jnp.arange(s)[None, :] + 1)
  )[None, :, :, None]
  x2 = code(4, 1.0)
  x3 = code(2, 1e4)
  out = np.asarray(mae.fuse([x1, x2, x3]))[0, :, :, 0]
  for ti in range(t):
    for si in range(s):
      want = (100 * (ti // 2) + si + 1) + 1e4 * (100 * (ti // 4) + si + 1)
      assert out[ti, si] == want
  with pytest.raises(ValueError, match="do not divide"):
    mae.fuse([jnp.zeros((1, 8, s, 1)), jnp.zeros((1, 3, s, 1))])


def _tiny(name, seed=0):
  model = mae.make_autoencoder(name, "tiny", rngs=nnx.Rngs(seed))
  graphdef, state = nnx.split(model)
  return graphdef, state, model.encoder.size


@pytest.mark.parametrize("name", ["tpsbt_tiny", "vit_tiny"])
def test_encoder_output_ignores_masked_pixels(name):
  """Defect 2 (SVFAP's pretraining gives each stage's reverse block the
  whole clip, masked tubes included, as context): the encoder's output and
  the predictions are unchanged when the masked tubes' pixels change, and
  do change when a visible tube's pixels do."""
  graphdef, state, size = _tiny(name)
  # 4x32^2 clips in 2x8x8 tubes: T' = 2, S = 16; 75% masked, 4 visible.
  video = jax.random.uniform(jax.random.key(1), (2, 4, 32, 32, 3))
  vis, msk = masking.draw(jax.random.split(jax.random.key(2), 2), 16, 0.75)

  @jax.jit
  def run(state, video):
    m = nnx.merge(graphdef, state)
    return m.encode(video, vis), m(video, vis, msk)

  enc, pred = run(state, video)
  assert enc.shape == (2, 2, 4, size.width)
  assert pred.shape == (2, 2 * 12, 2 * 8 * 8 * 3)
  # Which pixels belong to which position: s = row * 4 + col of 8x8 cells.
  cell = np.arange(16).reshape(4, 4).repeat(8, 0).repeat(8, 1)  # (32, 32)
  noise = np.asarray(jax.random.normal(jax.random.key(3), video.shape))
  for hide, expect_same in ((msk, True), (vis, False)):
    in_set = np.stack(
      [np.isin(cell, np.asarray(hide[b])) for b in range(2)]
    )  # (2, 32, 32)
    changed = np.where(in_set[:, None, :, :, None], noise, np.asarray(video))
    enc2, pred2 = run(state, jnp.asarray(changed, jnp.float32))
    if expect_same:
      np.testing.assert_array_equal(enc2, enc)
      np.testing.assert_array_equal(pred2, pred)
    else:
      assert float(jnp.max(jnp.abs(enc2 - enc))) > 1e-3


def test_tpsbt_encode_is_fusion_of_the_fine_tuning_stages():
  """With every position visible, the autoencoder's encoder output is the
  fine-tuning encoder's stages fused and normalised: the same modules, the
  same order of blocks."""
  graphdef, state, _ = _tiny("tpsbt_tiny")
  video = jax.random.uniform(jax.random.key(4), (1, 4, 32, 32, 3))
  every = jnp.arange(16)[None]

  @jax.jit
  def run(state, video):
    m = nnx.merge(graphdef, state)
    stages = m.encoder.stages(m.encoder.tokens(video))
    want = m.encoder.fc_norm(stages[0] + jnp.repeat(stages[1], 2, axis=1))
    return m.encode(video, every), want, m.encoder(video)

  got, want, feature = run(state, video)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  assert feature.shape == (1, 32)


def _mae_batch(b=8, seed=0):
  rng = np.random.RandomState(seed)
  keys = jax.random.key_data(jax.random.split(jax.random.key(seed), b))
  return {
    "view_a": rng.rand(b, 4, 32, 32, 3),
    "mask_seed": np.asarray(keys, np.uint32),
  }


def test_the_objective_is_the_models_reconstruction_loss():
  """The objective's loss is :func:`losses.reconstruction_mse` of the
  model's predictions on the normalised visible tubes against the clip's
  targets at the masked positions, composed here by hand."""
  model = mae.make_autoencoder("tpsbt_tiny", "tiny", rngs=nnx.Rngs(0))
  batch = {
    k: jnp.asarray(v, jnp.float32) if k == "view_a" else v
    for k, v in _mae_batch(2).items()
  }
  normalize = lambda x: (x - 0.5) / 0.25
  loss, metrics = objectives.MaskedAutoencoding(0.75)(
    model, batch, normalize=normalize, mesh=None
  )
  vis, msk = masking.draw(batch["mask_seed"], 16, 0.75)
  pred = np.asarray(model(normalize(batch["view_a"]), vis, msk))
  targets = _targets_numpy(np.asarray(batch["view_a"], np.float64), 2, 8)
  flat = np.asarray(masking.flat_positions(msk, 2, 16))
  want = np.mean([(pred[b] - targets[b][flat[b]]) ** 2 for b in range(2)])
  # The model and its targets run in float32, NumPy's targets in float64:
  # float32 rounding of standardised values near 1 is about 1e-7.
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert float(metrics["visible_fraction"]) == 0.25


def test_the_step_with_masked_autoencoding_8_devices_equal_1_in_float64():
  """Two AdamW steps of the library's sharded step with the objective: 8
  devices equal 1 in the loss, the gradient norm and every parameter, to
  float64 rounding (each clip's mask comes from its own seed)."""
  with jax.enable_x64(True):
    batch = _mae_batch(8)
    runs = []
    for devices in (jax.devices()[:1], jax.devices()[:8]):
      mesh = mesh_lib.make_mesh(devices)
      model = mae.make_autoencoder(
        "tpsbt_tiny",
        "tiny",
        rngs=nnx.Rngs(0),
        dtype=jnp.float64,
        param_dtype=jnp.float64,
      )
      tx = optax.adamw(1e-3, b1=0.9, b2=0.95, weight_decay=0.05)
      graphdef, state = train_step_lib.init_state(model, tx, mesh)
      step = train_step_lib.make_train_step(
        mesh,
        graphdef,
        tx,
        lambda s: 1e-3,
        state,
        objectives.MaskedAutoencoding(0.75),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
      )
      metrics = []
      for _ in range(2):
        state, m = step(state, mesh_lib.to_global_arrays(batch, mesh))
        metrics.append(jax.device_get(m))
      runs.append((jax.device_get(state.params), metrics))
    (p1, m1), (p8, m8) = runs
    assert float(m1[1]["loss"]) < float(m1[0]["loss"])  # it trained
    for a, b in zip(m1, m8):
      for k in ("loss", "grad_norm", "update_norm"):
        np.testing.assert_allclose(float(b[k]), float(a[k]), rtol=1e-12)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
      assert np.asarray(a).dtype == np.float64
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-12)


def test_reconstruction_views_invert_the_targets():
  """Fed the true targets as predictions, the reconstruction is the clip
  itself (un-standardising with each tube's own statistics inverts
  :func:`pixel_targets`); the input is grey exactly on the masked tubes."""
  rng = np.random.RandomState(5)
  video = rng.rand(2, 4, 16, 16, 3)
  targets = _targets_numpy(video, 2, 8)  # (2, 8 tokens, 384)
  masked = np.asarray([[0, 3, 5], [1, 2, 7]])
  pred = np.stack([targets[b][masked[b]] for b in range(2)])
  grey, recon, clip = mae.reconstruction_views(video, pred, masked, 2, 8)
  np.testing.assert_allclose(recon, video, atol=1e-9)
  np.testing.assert_array_equal(clip, video)
  # Token 3 of clip 0 is (t-slot 0, row 1, col 1): frames 0-1, pixels 8-15.
  assert np.all(grey[0, 0:2, 8:16, 8:16] == 0.5)
  assert np.array_equal(grey[0, 0:2, 0:8, 8:16], video[0, 0:2, 0:8, 8:16])
  assert (grey == 0.5).sum() == 2 * 3 * 2 * 8 * 8 * 3
  # A wrong prediction shows: zeros give each masked tube its mean.
  _, flat, _ = mae.reconstruction_views(video, 0 * pred, masked, 2, 8)
  tube = video[0, 0:2, 8:16, 8:16]
  np.testing.assert_allclose(
    flat[0, 0:2, 8:16, 8:16], tube.mean((0, 1, 2)) + 0 * tube
  )
