"""Heads on top of the encoder's pooled feature h: the ST-CLR projection head
g(h) (Sec. III-A.3) and the linear classifier used for fine-tuning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stclr_jax.models import initializers


class ProjectionHead(nnx.Module):
  """Dense -> ReLU -> Dense, mapping h (in_features) to z (out_features).

  The paper gives two dense layers with a ReLU between them and a 128-d
  output; the hidden width is not stated, so it defaults to ``in_features``
  (as SimCLR's head for ResNets) and is configurable.
  """

  def __init__(
    self,
    in_features: int,
    *,
    hidden_features: int | None = None,
    out_features: int = 128,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    hidden = hidden_features or in_features
    dense = dict(
      dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=initializers.lecun_normal,
      rngs=rngs,
    )
    self.dense1 = nnx.Linear(in_features, hidden, **dense)
    self.dense2 = nnx.Linear(hidden, out_features, **dense)

  def __call__(self, h_BxD: jax.Array) -> jax.Array:
    return self.dense2(jax.nn.relu(self.dense1(h_BxD)))


class LinearClassifier(nnx.Module):
  """The single linear layer added for fine-tuning (Sec. III-B).

  Initialised as torchvision's video ResNet ``fc``: weights N(0, 0.01), zero
  bias. Logits are returned in float32 (float64 for float64 features).
  """

  def __init__(
    self,
    in_features: int,
    num_classes: int,
    *,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.fc = nnx.Linear(
      in_features,
      num_classes,
      param_dtype=param_dtype,
      kernel_init=initializers.normal(0.01),
      bias_init=nnx.initializers.zeros,
      rngs=rngs,
    )

  def __call__(self, h_BxD: jax.Array) -> jax.Array:
    return self.fc(h_BxD.astype(jnp.promote_types(h_BxD.dtype, jnp.float32)))
