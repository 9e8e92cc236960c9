"""NT-Xent: exact values, properties, stability and the all-gather form."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stclr_jax import losses as losses_lib


def numpy_nt_xent(za, zb, tau):
  """Independent reference: eq. (1) written as loops over anchors."""
  z = np.concatenate([za, zb]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n2 = len(z)
  n = n2 // 2
  total, hits = 0.0, 0
  for i in range(n2):
    j = (i + n) % n2
    sims = {k: float(z[i] @ z[k]) / tau for k in range(n2) if k != i}
    denom = sum(math.exp(s) for s in sims.values())
    total += -math.log(math.exp(sims[j]) / denom)
    hits += max(sims, key=sims.get) == j
  return total / n2, hits / n2


def test_hand_computed_two_pairs():
  za = np.array([[1.0, 0.0], [0.0, 1.0]])
  zb = np.array([[1.0, 1.0], [1.0, -1.0]])
  tau = 0.5
  r = 1 / math.sqrt(2)
  # Cosines: a0.a1=0, a0.b0=r, a0.b1=r, a1.b0=r, a1.b1=-r, b0.b1=0.
  e = lambda c: math.exp(c / tau)
  l_a0 = -math.log(e(r) / (e(0) + e(r) + e(r)))
  l_a1 = -math.log(e(-r) / (e(0) + e(r) + e(-r)))
  l_b0 = -math.log(e(r) / (e(r) + e(r) + e(0)))
  l_b1 = -math.log(e(-r) / (e(r) + e(-r) + e(0)))
  expected = (l_a0 + l_a1 + l_b0 + l_b1) / 4
  got = losses_lib.nt_xent(jnp.array(za), jnp.array(zb), tau)
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)
  assert expected == pytest.approx(1.950183, abs=1e-6)


@pytest.mark.parametrize("n,d,tau", [(4, 8, 0.1), (16, 128, 0.5), (7, 3, 1.0)])
def test_matches_numpy_reference(n, d, tau):
  rng = np.random.default_rng(n)
  za, zb = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  loss, m = losses_lib.nt_xent_with_metrics(jnp.array(za), jnp.array(zb), tau)
  ref_loss, ref_top1 = numpy_nt_xent(za, zb, tau)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  assert float(m["contrastive_top1"]) == pytest.approx(ref_top1)


def test_symmetric_in_views_and_invariant_to_pair_order():
  rng = np.random.default_rng(0)
  za, zb = (
    jnp.array(rng.normal(size=(9, 16))),
    jnp.array(rng.normal(size=(9, 16))),
  )
  base = losses_lib.nt_xent(za, zb, 0.2)
  np.testing.assert_allclose(losses_lib.nt_xent(zb, za, 0.2), base, rtol=1e-6)
  perm = rng.permutation(9)
  np.testing.assert_allclose(
    losses_lib.nt_xent(za[perm], zb[perm], 0.2), base, rtol=1e-6
  )
  # Permuting only one view breaks the pairs: the loss must change.
  assert abs(float(losses_lib.nt_xent(za[perm], zb, 0.2)) - float(base)) > 1e-3


def test_scale_invariant_cosine():
  rng = np.random.default_rng(1)
  za, zb = (
    jnp.array(rng.normal(size=(5, 4))),
    jnp.array(rng.normal(size=(5, 4))),
  )
  np.testing.assert_allclose(
    losses_lib.nt_xent(3.0 * za, 0.5 * zb, 0.3),
    losses_lib.nt_xent(za, zb, 0.3),
    rtol=1e-6,
  )


def test_stable_at_low_temperature_with_identical_embeddings():
  z = jnp.ones((8, 128))
  loss, grads = jax.value_and_grad(losses_lib.nt_xent, argnums=(0, 1))(
    z, z, 0.01
  )
  # All 2N-1 candidates tie: loss = log(2N - 1) exactly, self never wins.
  np.testing.assert_allclose(float(loss), math.log(15), rtol=1e-5)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
  # Far-apart embeddings at tau=0.01 saturate without overflow.
  za = jnp.eye(8)
  loss = losses_lib.nt_xent(za, za, 0.01)
  assert bool(jnp.isfinite(loss)) and float(loss) < 1e-6


def test_top1_counts_nearest_candidate_and_never_self():
  za = jnp.eye(4)
  zb = jnp.eye(4)
  _, m = losses_lib.nt_xent_with_metrics(za, zb, 0.1)
  assert float(m["contrastive_top1"]) == 1.0
  _, m = losses_lib.nt_xent_with_metrics(za, jnp.roll(zb, 1, axis=0), 0.1)
  assert float(m["contrastive_top1"]) == 0.0


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="equal shape"):
    losses_lib.nt_xent(jnp.ones((4, 8)), jnp.ones((3, 8)), 0.1)


def test_sharded_all_gather_equals_single_device_value_and_gradient():
  devices = jax.devices()
  assert len(devices) == 8, "the test must run on 8 (fake) devices"
  mesh = Mesh(np.array(devices), ("data",))
  rng = np.random.default_rng(3)
  za = jnp.array(rng.normal(size=(32, 24)), jnp.float32)
  zb = jnp.array(rng.normal(size=(32, 24)), jnp.float32)
  sharding = NamedSharding(mesh, P("data"))
  za_s, zb_s = jax.device_put(za, sharding), jax.device_put(zb, sharding)
  assert len(za_s.sharding.device_set) == 8
  assert za_s.addressable_shards[0].data.shape == (4, 24)

  sharded = losses_lib.make_sharded_nt_xent(mesh, "data")
  f_sharded = jax.jit(
    jax.value_and_grad(lambda a, b: sharded(a, b, 0.1)[0], argnums=(0, 1))
  )
  f_single = jax.value_and_grad(
    lambda a, b: losses_lib.nt_xent(a, b, 0.1), argnums=(0, 1)
  )

  (v_s, (ga_s, gb_s)) = f_sharded(za_s, zb_s)
  (v_1, (ga_1, gb_1)) = f_single(za, zb)
  np.testing.assert_allclose(float(v_s), float(v_1), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ga_s), np.asarray(ga_1), atol=1e-5)
  np.testing.assert_allclose(np.asarray(gb_s), np.asarray(gb_1), atol=1e-5)
  assert len(ga_s.sharding.device_set) == 8
  # The gradient is not trivially zero.
  assert float(jnp.abs(ga_1).max()) > 1e-3

  _, m_s = jax.jit(sharded, static_argnums=2)(za_s, zb_s, 0.1)
  _, m_1 = losses_lib.nt_xent_with_metrics(za, zb, 0.1)
  assert float(m_s["contrastive_top1"]) == pytest.approx(
    float(m_1["contrastive_top1"])
  )


def test_sharded_form_uses_every_shard_as_negatives():
  """A per-device loss (no all-gather) would differ from the global one."""
  mesh = Mesh(np.array(jax.devices()), ("data",))
  rng = np.random.default_rng(4)
  za = jnp.array(rng.normal(size=(16, 8)), jnp.float32)
  zb = jnp.array(rng.normal(size=(16, 8)), jnp.float32)
  local_only = np.mean(
    [
      float(losses_lib.nt_xent(za[i : i + 2], zb[i : i + 2], 0.1))
      for i in range(0, 16, 2)
    ]
  )
  glob = float(losses_lib.make_sharded_nt_xent(mesh)(za, zb, 0.1)[0])
  np.testing.assert_allclose(
    glob, float(losses_lib.nt_xent(za, zb, 0.1)), rtol=1e-5
  )
  assert abs(glob - local_only) > 0.1
