"""Encoder f plus projection head g: the ST-CLR pretraining model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stclr_jax.models.heads import ProjectionHead
from stclr_jax.models.video_resnet import VideoResNet


class ContrastiveModel(nnx.Module):
  """``z = g(f(x))``; the head is dropped for fine-tuning (``.encoder``)."""

  def __init__(
    self,
    encoder: VideoResNet,
    *,
    proj_hidden: int | None = None,
    proj_dim: int = 128,
    rngs: nnx.Rngs,
  ):
    self.encoder = encoder
    self.head = ProjectionHead(
      encoder.features,
      hidden_features=proj_hidden or None,
      out_features=proj_dim,
      dtype=encoder.dtype,
      param_dtype=encoder.param_dtype,
      rngs=rngs,
    )

  def __call__(self, video_BxTxHxWxC: jax.Array):
    h = self.encoder(video_BxTxHxWxC)
    return h, self.head(h)

  def embed_views(self, view_a: jax.Array, view_b: jax.Array):
    """Both views in one encoder pass, interleaved ``[a0, b0, a1, b1, ...]``
    so that a batch sharded over devices stays where it is (each device
    holds the two views of its own videos) and BatchNorm sees both views.
    Returns ``(z_a, z_b)``, each (B, proj_dim), in float32 (float64 for a
    float64 model)."""
    b = view_a.shape[0]
    x = jnp.stack([view_a, view_b], axis=1)
    x = x.reshape(2 * b, *view_a.shape[1:])
    _, z = self(x)
    z = z.astype(jnp.promote_types(z.dtype, jnp.float32)).reshape(b, 2, -1)
    return z[:, 0], z[:, 1]
