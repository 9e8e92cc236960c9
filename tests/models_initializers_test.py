"""Initialisers: Kaiming fan-out, identical eagerly and under jit."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stclr_jax import models


def test_init_is_kaiming_fan_out_and_identical_eager_or_jitted():
  enc = models.make_encoder("r3d_18", width=0.25, rngs=nnx.Rngs(3))
  jitted = nnx.jit(lambda r: models.make_encoder("r3d_18", width=0.25, rngs=r))(
    nnx.Rngs(3)
  )
  same = jax.tree.map(
    lambda a, b: bool(jnp.all(a == b)),
    nnx.state(enc, nnx.Param),
    nnx.state(jitted, nnx.Param),
  )
  assert jax.tree.all(same)
  k = np.asarray(enc.blocks[2].conv1.conv.kernel[...])  # (3,3,3,16,32)
  assert k.shape == (3, 3, 3, 16, 32)
  np.testing.assert_allclose(k.std(), np.sqrt(2.0 / (27 * 32)), rtol=0.05)
  assert abs(k.mean()) < 0.01
  other = models.make_encoder("r3d_18", width=0.25, rngs=nnx.Rngs(4))
  assert not np.allclose(k, np.asarray(other.blocks[2].conv1.conv.kernel[...]))
