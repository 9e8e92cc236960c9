"""The models package: building encoders by name, and its errors."""

import jax.numpy as jnp
import pytest
from flax import nnx

from stclr_jax import models


def test_unknown_encoder_and_bad_input_raise():
  with pytest.raises(ValueError, match="unknown encoder 'r50'"):
    models.make_encoder("r50", rngs=nnx.Rngs(0))
  enc = models.make_encoder("mc3_18", width=0.125, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="expected a clip batch"):
    enc(jnp.zeros((2, 8, 8, 3)))
