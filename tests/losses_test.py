"""NT-Xent: exact values, properties, stability and the all-gather form."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stclr_jax import losses as losses_lib


def _nt_xent_sharded(mesh, temperature):
  return losses_lib.sharded(
    functools.partial(losses_lib.nt_xent_sharded, temperature=temperature),
    mesh,
  )


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

  sharded = losses_lib.sharded(
    functools.partial(losses_lib.nt_xent_sharded, temperature=0.1), mesh
  )
  f_sharded = jax.jit(
    jax.value_and_grad(lambda a, b: sharded(a, b)[0], argnums=(0, 1))
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

  _, m_s = jax.jit(sharded)(za_s, zb_s)
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
  glob = float(_nt_xent_sharded(mesh, 0.1)(za, zb)[0])
  np.testing.assert_allclose(
    glob, float(losses_lib.nt_xent(za, zb, 0.1)), rtol=1e-5
  )
  assert abs(glob - local_only) > 0.1


def numpy_maskfn(za, zb, da, db, tau, lam):
  """Independent reference of SSL-FER's MaskFN: loops over anchors."""
  z = np.concatenate([za, zb]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  d = np.concatenate([da, db]).astype(np.float64)
  d /= np.linalg.norm(d, axis=1, keepdims=True)
  n2 = len(z)
  l1s, l2s, kstars = [], [], []
  for i in range(n2):
    p = (i + n2 // 2) % n2
    neg = [j for j in range(n2) if j not in (i, p)]
    k = max(neg, key=lambda j: (float(d[i] @ d[j]), -j))
    rest = [j for j in neg if j != k]
    s = lambda j, i=i: float(z[i] @ z[j]) / tau
    denom_rest = sum(math.exp(s(j)) for j in rest)
    l1s.append(-math.log(math.exp(s(p)) / (math.exp(s(p)) + denom_rest)))
    l2s.append(-math.log(math.exp(s(k)) / (math.exp(s(k)) + denom_rest)))
    kstars.append(k)
  return np.mean(l1s) + lam * np.mean(l2s), kstars


@pytest.mark.parametrize(
  "n,tau,lam", [(2, 0.5, 0.8), (5, 0.07, 0.8), (6, 0.2, 0.3)]
)
def test_maskfn_matches_numpy_reference(n, tau, lam):
  rng = np.random.default_rng(n)
  za, zb = rng.normal(size=(2, n, 7))
  da, db = rng.normal(size=(2, n, 5))
  loss, m = losses_lib.maskfn(za, zb, da, db, tau, lam)
  ref, kstars = numpy_maskfn(za, zb, da, db, tau, lam)
  np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
  np.testing.assert_array_equal(
    np.asarray(losses_lib.maskfn_false_negatives(da, db)), kstars
  )


def test_maskfn_by_hand_picks_the_descriptor_twin_and_drops_it():
  """Rows 0..3 = [a0, a1, b0, b1], positives 0-2 and 1-3. Descriptors
  make rows 0 and 3 twins, so k*(0) = 3 and k*(3) = 0; k* is worked out
  by hand for every row below, then the loss from its formula."""
  da = np.array([[1.0, 0.0], [0.0, 1.0]])
  db = np.array([[0.6, 0.8], [1.0, 0.01]])
  k = np.asarray(losses_lib.maskfn_false_negatives(da, db)).tolist()
  # row 0: negatives 1 (cos 0), 3 (cos 1.0) -> 3; row 1: negatives 0
  # (cos 0), 2 (cos .8) -> 2; row 2: negatives 1 (.8), 3 (.6) -> 1;
  # row 3: negatives 0 (1.0), 2 (.6) -> 0.
  assert k == [3, 2, 1, 0]
  # With 2 pairs Neg' is one row: l1 is a 2-way softmax, by hand.
  z = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, -0.8]])
  tau, lam = 0.5, 0.8
  loss, m = losses_lib.maskfn(z[:2], z[2:], da, db, tau, lam)
  s = (
    lambda i, j: float(z[i] @ z[j])
    / np.linalg.norm(z[i])
    / np.linalg.norm(z[j])
    / tau
  )
  pos = {0: 2, 1: 3, 2: 0, 3: 1}
  l1 = l2 = 0.0
  for i in range(4):
    rest = [j for j in range(4) if j not in (i, pos[i], k[i])]
    assert len(rest) == 1
    r = rest[0]
    l1 += np.log1p(np.exp(s(i, r) - s(i, pos[i]))) / 4
    l2 += np.log1p(np.exp(s(i, r) - s(i, k[i]))) / 4
  np.testing.assert_allclose(float(m["maskfn_l1"]), l1, rtol=1e-5)
  np.testing.assert_allclose(float(m["maskfn_l2"]), l2, rtol=1e-5)
  np.testing.assert_allclose(float(loss), l1 + lam * l2, rtol=1e-5)


def test_maskfn_sends_no_gradient_to_the_descriptors_and_needs_two_pairs():
  rng = np.random.default_rng(0)
  za, zb, da, db = (jnp.asarray(rng.normal(size=(4, 3))) for _ in range(4))
  g = jax.grad(lambda d: losses_lib.maskfn(za, zb, d, db, 0.1)[0])(da)
  assert float(jnp.abs(g).max()) == 0.0
  gz = jax.grad(lambda z: losses_lib.maskfn(z, zb, da, db, 0.1)[0])(za)
  assert float(jnp.abs(gz).max()) > 1e-3
  with pytest.raises(ValueError, match="at least 2 pairs"):
    losses_lib.maskfn(za[:1], zb[:1], da[:1], db[:1], 0.1)
  with pytest.raises(ValueError, match="4 embeddings but 3 descriptors"):
    losses_lib.maskfn(za, zb, da[:3], db[:3], 0.1)


def _sharded_equals_single(fn_sharded, fn_single, args, argnums):
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  placed = [jax.device_put(a, sharding) for a in args]
  vs, gs = jax.jit(
    jax.value_and_grad(lambda *a: fn_sharded(mesh)(*a)[0], argnums)
  )(*placed)
  v1, g1 = jax.value_and_grad(lambda *a: fn_single(*a)[0], argnums)(*args)
  np.testing.assert_allclose(float(vs), float(v1), rtol=1e-5)
  for a, b in zip(gs, g1):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert float(jnp.abs(b).max()) > 1e-3  # not trivially zero
  ms = jax.jit(lambda *a: fn_sharded(mesh)(*a)[1])(*placed)
  m1 = fn_single(*args)[1]
  for k in m1:
    np.testing.assert_allclose(float(ms[k]), float(m1[k]), rtol=1e-5)


def test_maskfn_sharded_equals_single_device_value_and_gradient():
  """k* is chosen over the global batch: descriptors are all-gathered."""
  rng = np.random.default_rng(5)
  za, zb = (jnp.asarray(rng.normal(size=(16, 12)), jnp.float32) for _ in "ab")
  da, db = (jnp.asarray(rng.normal(size=(16, 6)), jnp.float32) for _ in "ab")
  _sharded_equals_single(
    lambda mesh: losses_lib.sharded(
      functools.partial(losses_lib.maskfn_sharded, temperature=0.1), mesh
    ),
    lambda a, b, c, d: losses_lib.maskfn(a, b, c, d, 0.1),
    (za, zb, da, db),
    (0, 1),
  )


def numpy_multi_positive(z, groups, tau):
  z = np.asarray(z, np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  total, count = 0.0, 0
  for i in range(len(z)):
    pos = [p for p in range(len(z)) if p != i and groups[p] == groups[i]]
    if not pos:
      continue
    denom = sum(math.exp(z[i] @ z[a] / tau) for a in range(len(z)) if a != i)
    total += -np.mean(
      [math.log(math.exp(z[i] @ z[p] / tau) / denom) for p in pos]
    )
    count += 1
  return total / count


def test_multi_positive_matches_numpy_and_skips_anchors_without_positive():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(9, 5))
  groups = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])  # row 8 is alone
  loss, m = losses_lib.multi_positive_nt_xent(z, groups, 0.3)
  np.testing.assert_allclose(
    float(loss), numpy_multi_positive(z, groups, 0.3), rtol=1e-5
  )
  assert float(m["anchors_with_positive"]) == pytest.approx(8 / 9)


def test_multi_positive_with_pairs_is_nt_xent_exactly():
  rng = np.random.default_rng(2)
  za, zb = rng.normal(size=(2, 6, 4))
  groups = np.concatenate([np.arange(6), np.arange(6)])
  loss, m = losses_lib.multi_positive_nt_xent(
    np.concatenate([za, zb]), groups, 0.1
  )
  ref, m_ref = losses_lib.nt_xent_with_metrics(za, zb, 0.1)
  np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
  assert float(m["contrastive_top1"]) == float(m_ref["contrastive_top1"])


def test_multi_positive_sharded_equals_single_device_value_and_gradient():
  rng = np.random.default_rng(6)
  z = jnp.asarray(rng.normal(size=(32, 10)), jnp.float32)
  groups = jnp.asarray(rng.integers(0, 9, 32), jnp.int32)
  _sharded_equals_single(
    lambda mesh: losses_lib.sharded(
      functools.partial(losses_lib.multi_positive_sharded, temperature=0.2),
      mesh,
    ),
    lambda a, g: losses_lib.multi_positive_nt_xent(a, g, 0.2),
    (z, groups),
    (0,),
  )


def test_multi_positive_pairs_stack_the_views_and_reduce_to_nt_xent():
  """The step's form: rows [z_a; z_b], a group id per row of a stack. With
  distinct ids it is NT-Xent; with shared ids it is the NumPy reference of
  the stacked rows."""
  rng = np.random.default_rng(3)
  za, zb = rng.normal(size=(2, 8, 5))
  loss, _ = losses_lib.multi_positive_pairs(za, zb, np.arange(8), 0.2)
  np.testing.assert_allclose(
    float(loss), float(losses_lib.nt_xent(za, zb, 0.2)), rtol=1e-6
  )
  groups = np.array([4, 4, 4, 9, 9, 1, 2, 2])
  loss, _ = losses_lib.multi_positive_pairs(za, zb, groups, 0.2)
  want = numpy_multi_positive(
    np.concatenate([za, zb]), np.concatenate([groups, groups]), 0.2
  )
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_multi_positive_pairs_sharded_equals_single_device():
  """Each device stacks its own rows, so the gathered rows are in another
  order than [z_a; z_b]: the loss does not depend on it (value, gradient
  and metrics equal the single-device form)."""
  rng = np.random.default_rng(7)
  za, zb = (jnp.asarray(rng.normal(size=(16, 6)), jnp.float32) for _ in "ab")
  groups = jnp.asarray(rng.integers(0, 6, 16), jnp.int32)
  _sharded_equals_single(
    lambda mesh: losses_lib.sharded(
      functools.partial(
        losses_lib.multi_positive_pairs_sharded, temperature=0.2
      ),
      mesh,
    ),
    lambda a, b, g: losses_lib.multi_positive_pairs(a, b, g, 0.2),
    (za, zb, groups),
    (0, 1),
  )
