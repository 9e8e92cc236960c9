"""Building a model from a config (stclr_jax/models/factory.py): dtypes, the
float64 mode used for numerical checks, and BatchNorm groups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import stclr_synthetic
from stclr_jax import losses
from stclr_jax.models import factory


def _config(**model):
  c = stclr_synthetic.get_config("tiny=1")
  for k, v in model.items():
    setattr(c.model, k, v)
  return c


def test_bad_dtype_and_float64_without_x64_are_clear_errors():
  with pytest.raises(ValueError, match=r"config.model.dtype='float16'"):
    factory.create_model(_config(dtype="float16"))
  with pytest.raises(ValueError, match="needs 64-bit JAX"):
    factory.create_model(_config(dtype="float64"))


def test_float64_model_keeps_float64_through_the_loss():
  """Under x64 a float64 model has float64 parameters and BatchNorm
  statistics, and its embeddings and loss stay float64 (nothing is cast to
  float32 on the way), as bench/multihost_equivalence.py needs."""
  with jax.enable_x64(True):
    model = factory.create_model(_config(dtype="float64"))
    for part in (nnx.Param, nnx.BatchStat):
      dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(model, part))}
      assert dtypes == {jnp.dtype("float64")}, (part, dtypes)
    x = np.random.default_rng(0).uniform(size=(2, 4, 32, 32, 3))
    z_a, z_b = model.embed_views(jnp.asarray(x), jnp.asarray(x[::-1]))
    assert z_a.dtype == z_b.dtype == jnp.float64
    loss, _ = losses.nt_xent_with_metrics(z_a, z_b, 0.1)
    assert loss.dtype == jnp.float64


def test_float32_and_bfloat16_keep_float32_parameters():
  for dtype in ("float32", "bfloat16"):
    model = nnx.eval_shape(
      lambda d=dtype: factory.create_model(_config(dtype=d))
    )
    dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))}
    assert dtypes == {jnp.dtype("float32")}, (dtype, dtypes)


def test_batchnorm_groups_follow_bn_per_device():
  m = _config(bn_per_device=True).model
  assert factory.bn_groups_for(m, 8) == 8
  assert factory.bn_groups_for(_config().model, 8) == 1
  model = nnx.eval_shape(
    lambda: factory.create_model(_config(bn_per_device=True), num_devices=4)
  )
  assert model.encoder.stem.layers[0].bn.num_groups == 4
