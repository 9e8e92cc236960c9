"""Video transformers: SVFAP's TPSBT (temporal pyramid + spatial
bottleneck transformer; Sun et al., IEEE TAFFC 2024) and VideoMAE's ViT
(Tong et al., NeurIPS 2022), as encoders of the one path.

Both cut a channels-last clip ``(B, T, H, W, 3)`` into tubes
(:class:`~stclr_jax.models.transformer_blocks.TubeEmbed`), add the fixed
sinusoid table over the flattened ``(t, h, w)`` token index once (no class
token), and end with the mean of the last tokens and a LayerNorm
(``fc_norm``): the feature ``(B, width)``. The classifier's Linear is not
part of the encoder (:class:`~stclr_jax.models.heads.LinearClassifier`).

TPSBT, stage by stage (``depths = (d1, d2, d3)``):

1. ``d1`` ordinary blocks over all ``T x S`` tokens;
2. and 3. a temporal convolution (kernel = stride = 2) at each spatial
   position halves T; a spatial bottleneck pools each frame's S tokens into
   G; ``d - 1`` cross-then-self blocks update the ``T x G`` bottleneck
   tokens against the stage's ``T x S`` tokens; a last "reverse" block
   updates the stage's tokens against the bottleneck tokens.

All blocks sit in one list ``blocks`` in that order (SVFAP's numbering,
which the layer-wise learning-rate decay and the converter use).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from stclr_jax.models import transformer_blocks as tb


@dataclasses.dataclass(frozen=True)
class TransformerSize:
  """One named size. ``depths``: TPSBT's stage depths, or ``(depth,)`` for
  a ViT; ``tokens``: TPSBT's bottleneck tokens G per frame."""

  family: str  # "tpsbt" or "vit"
  width: int
  heads: int
  depths: tuple[int, ...]
  patch: int = 16
  tubelet: int = 2
  tokens: int = 8
  bottleneck_hidden: int = 128  # SVFAP hard-codes 128
  mlp_ratio: float = 4.0


SIZES = {
  # SVFAP's svfap_base_patch16_160 (the released fine-tuning model).
  "tpsbt_base": TransformerSize("tpsbt", 512, 8, (12, 6, 3)),
  # VideoMAE's ViT-S/16 and ViT-B/16.
  "vit_small": TransformerSize("vit", 384, 6, (12,)),
  "vit_base": TransformerSize("vit", 768, 12, (12,)),
  # CPU sizes for the built-in benchmark's 8x48^2 clips (README, "Video
  # transformers"): 2x8x8 tubes give 4x6x6 = 144 tokens; G = 4 bottleneck
  # tokens, as many as stay visible of a frame's 36 under 90% tube masking.
  "tpsbt_cpu": TransformerSize("tpsbt", 192, 3, (4, 2, 2), patch=8, tokens=4),
  "vit_cpu": TransformerSize("vit", 192, 3, (8,), patch=8),
  # For tests, on the tiny data set's 4x32^2 clips (2x4x4 tokens): one
  # pyramid stage.
  "tpsbt_tiny": TransformerSize(
    "tpsbt", 32, 2, (1, 2), patch=8, tokens=2, bottleneck_hidden=16
  ),
  "vit_tiny": TransformerSize("vit", 32, 2, (2,), patch=8),
}


def family(name: str) -> str:
  """``"tpsbt"``, ``"vit"`` or ``"resnet"`` for an encoder name."""
  return SIZES[name].family if name in SIZES else "resnet"


class VideoTransformer(nnx.Module):
  """A TPSBT or a ViT of :data:`SIZES` (see the module docstring).
  ``drop_path``: the last block's stochastic-depth rate, rising linearly
  from 0 at the first (timm's rule), active only when a call is given
  ``rng``."""

  def __init__(
    self,
    size: TransformerSize,
    *,
    drop_path: float = 0.0,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if size.family not in ("tpsbt", "vit"):
      raise ValueError(f"unknown transformer family {size.family!r}")
    if size.family == "vit" and len(size.depths) != 1:
      raise ValueError(f"a ViT has one depth, got {size.depths}")
    self.size = size
    self.dtype, self.param_dtype = dtype, param_dtype
    self.features = size.width
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    c = size.width
    self.patch_embed = tb.TubeEmbed(size.tubelet, size.patch, 3, c, **kw)
    depth = sum(size.depths)
    rates = np.linspace(0.0, drop_path, depth) if depth > 1 else [drop_path]
    block = dict(mlp_ratio=size.mlp_ratio, **kw)
    blocks, i = [], 0
    temporal, spatial = [], []
    for stage, d in enumerate(size.depths):
      for _ in range(d):
        kind = tb.Block if stage == 0 else tb.CrossSelfBlock
        blocks.append(kind(c, size.heads, drop_path=float(rates[i]), **block))
        i += 1
      if stage > 0:
        temporal.append(tb.TemporalDownsample(c, 2, **kw))
        spatial.append(
          tb.SpatialBottleneck(c, size.tokens, size.bottleneck_hidden, **kw)
        )
    self.blocks = nnx.List(blocks)
    self.temporal_downsamples = nnx.List(temporal)
    self.spatial_downsamples = nnx.List(spatial)
    self.fc_norm = tb.layer_norm(c, **kw)

  def tokens(self, x):
    """Tube tokens plus the position table: ``(B, T', S, C)``."""
    x = self.patch_embed(x.astype(self.dtype))
    b, t, h, w, c = x.shape
    table = tb.sinusoid_table(t * h * w, c).reshape(t, h * w, c)
    return x.reshape(b, t, h * w, c) + jnp.asarray(table, self.dtype)

  def stages(self, x, rng=None) -> list:
    """Tokens ``(B, T', S, C)`` (:meth:`tokens`, or any subset of each
    frame's S positions, the same for every frame: masked autoencoding's
    visible tubes) -> each stage's output tokens: ``[(B, T', S, C)]`` for a
    ViT; TPSBT's three ``(B, T', S, C)``, ``(B, T'/2, S, C)``, ``(B, T'/4,
    S, C)``. ``rng``: the key of stochastic depth (training only)."""
    keys = tb.split_keys(rng, len(self.blocks))
    b, t, s, c = x.shape
    d1 = self.size.depths[0]
    flat = x.reshape(b, t * s, c)
    for i in range(d1):
      flat = self.blocks[i](flat, keys[i])
    x = flat.reshape(b, t, s, c)
    outputs = [x]
    i = d1
    for stage, d in enumerate(self.size.depths[1:]):
      x = self.temporal_downsamples[stage](x)
      t = x.shape[1]
      full = x.reshape(b, t * s, c)
      neck = self.spatial_downsamples[stage](x)
      neck = neck.reshape(b, -1, c)
      for _ in range(d - 1):
        neck = self.blocks[i](neck, full, keys[i])
        i += 1
      # The reverse block: the stage's tokens attend to the bottleneck
      # tokens (SVFAP's fine-tuning model; its pretraining model passes the
      # whole clip, masked tubes included, here: a leak, not kept).
      full = self.blocks[i](full, neck, keys[i])
      i += 1
      x = full.reshape(b, t, s, c)
      outputs.append(x)
    return outputs

  def pool(self, x):
    """The feature: the mean of tokens ``(B, ..., C)``, then ``fc_norm``."""
    b, c = x.shape[0], x.shape[-1]
    # The mean in float32 at least (bf16 sums drift over 100s of tokens).
    pooled = x.reshape(b, -1, c)
    pooled = pooled.astype(jnp.promote_types(x.dtype, jnp.float32)).mean(1)
    return self.fc_norm(pooled.astype(self.dtype))

  def __call__(self, x, rng=None):
    """``(B, T, H, W, 3)`` -> the feature ``(B, width)``. ``rng``: the key
    of stochastic depth (training only)."""
    return self.pool(self.stages(self.tokens(x), rng)[-1])


def make_transformer(name: str, *, rngs: nnx.Rngs, **options):
  """A :class:`VideoTransformer` of size ``name`` (:data:`SIZES`);
  ``options``: ``drop_path``, ``dtype``, ``param_dtype``."""
  if name not in SIZES:
    raise ValueError(
      f"unknown video transformer {name!r}; choose one of {sorted(SIZES)}"
    )
  return VideoTransformer(SIZES[name], rngs=rngs, **options)
