"""Projection head and linear classifier: sizes, shapes, dtypes."""

import jax.numpy as jnp
from flax import nnx

from stclr_jax import models


def test_projection_head_and_classifier():
  head = models.ProjectionHead(512, rngs=nnx.Rngs(0))
  assert models.count_params(head) == 512 * 512 + 512 + 512 * 128 + 128
  z = head(jnp.ones((3, 512)))
  assert z.shape == (3, 128)
  head = models.ProjectionHead(
    64, hidden_features=32, out_features=16, rngs=nnx.Rngs(0)
  )
  assert head(jnp.ones((2, 64))).shape == (2, 16)
  clf = models.LinearClassifier(512, 6, rngs=nnx.Rngs(0))
  assert models.count_params(clf) == 512 * 6 + 6
  logits = clf(jnp.ones((2, 512), jnp.bfloat16))
  assert logits.shape == (2, 6) and logits.dtype == jnp.float32
  assert float(jnp.abs(clf.fc.bias[...]).max()) == 0.0
