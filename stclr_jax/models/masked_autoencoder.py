"""Masked video autoencoding (VideoMAE; SVFAP's pretraining): the encoder
sees only a clip's visible tubes, a light decoder reconstructs the masked
ones' normalised pixels.

Forward (:meth:`MaskedVideoAutoencoder.__call__`), for a clip and its tube
mask (:mod:`stclr_jax.pretext.masking`):

1. the encoder's tube tokens with the position table added
   (:meth:`VideoTransformer.tokens`), then only the visible positions of
   every temporal slot kept: ``(B, T, S_vis, C)``;
2. the encoder's stages on them (:meth:`VideoTransformer.stages`); for a
   TPSBT, **multi-scale fusion**: stages 2 and 3 repeated in time back to T
   (each token to the slots it was pooled from) and added to stage 1
   (:func:`fuse`); then the encoder's LayerNorm (``fc_norm``, so the whole
   encoder, and only it, carries into fine-tuning);
3. ``encoder_to_decoder`` (no bias) to the decoder's width, the decoder's
   own sinusoid table added at each token's position, a learned
   ``mask_token`` (plus its position) for each masked token, the decoder's
   blocks, LayerNorm, and ``head`` to ``tubelet * patch^2 * 3`` values per
   masked token only.

The reconstruction target (:func:`pixel_targets`) is the clip in [0, 1]
cut into the same tubes, standardised per tube and channel with the
unbiased variance, ``(x - mean) / (std + 1e-6)``, flattened channels-last
``(t, y, x, c)`` (VideoMAE's ``normlize_target``); the loss is the mean
squared error over the masked tokens (:func:`stclr_jax.losses.
reconstruction_mse`).

SVFAP's pretraining code has three defects that are not reproduced here:

* it builds a 768-wide, 12-head encoder while its fine-tuning model is 512
  wide with 8 heads; here the encoder is the fine-tuning encoder itself
  (one :class:`VideoTransformer`), so a width cannot differ;
* the last ("reverse") block of stages 2 and 3 attends to the whole
  embedded clip, masked tubes included (``context=x``); here to the
  bottleneck tokens, as its fine-tuning model does, so the encoder's
  output does not depend on masked pixels;
* its fusion reshapes stages 2 and 3 with the temporal length before
  their downsampling, then repeats, which adds many tokens at the wrong
  ``(t, s)``; :func:`fuse` adds each at its own.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stclr_jax.models import initializers
from stclr_jax.models import transformer_blocks as tb
from stclr_jax.models.video_transformer import SIZES, VideoTransformer
from stclr_jax.pretext import masking


@dataclasses.dataclass(frozen=True)
class DecoderSize:
  width: int
  heads: int
  depth: int
  mlp_ratio: float = 4.0


DECODERS = {
  # VideoMAE's and SVFAP's: 4 blocks, 384 wide, 6 heads.
  "base": DecoderSize(384, 6, 4),
  # The CPU size (tpsbt_cpu, vit_cpu: width 192): three quarters of the
  # encoder's width as at base size (384 / 512), 48-wide heads, 4 blocks.
  "cpu": DecoderSize(144, 3, 4),
  "tiny": DecoderSize(32, 2, 1),
}

TARGET_EPS = 1e-6  # VideoMAE's: (x - mean) / (std + 1e-6)


def fuse(stage_outputs: list) -> jax.Array:
  """Multi-scale fusion: ``[(B, T, S, C), (B, T/2, S, C), (B, T/4, S, C),
  ...]`` -> ``(B, T, S, C)``, each later stage's token ``(t', s)`` added at
  ``(t, s)`` for every ``t`` with ``t // (T / T') == t'`` (the slots its
  temporal convolution pooled), summed with stage 1's."""
  first = stage_outputs[0]
  t = first.shape[1]
  out = first
  for x in stage_outputs[1:]:
    if t % x.shape[1]:
      raise ValueError(f"{x.shape[1]} token frames do not divide {t}")
    out = out + jnp.repeat(x, t // x.shape[1], axis=1)
  return out


def pixel_targets(video: jax.Array, tubelet: int, patch: int) -> jax.Array:
  """``(B, T, H, W, 3)`` in [0, 1] -> ``(B, N, tubelet * patch^2 * 3)``,
  tokens in the encoder's ``(t, h, w)`` order, each standardised per tube
  and channel (mean over its ``tubelet * patch^2`` pixels, unbiased
  variance), in float32 at least."""
  x = _tubes(
    video.astype(jnp.promote_types(video.dtype, jnp.float32)), tubelet, patch
  )
  mean = x.mean(axis=2, keepdims=True)
  std = jnp.sqrt(x.var(axis=2, ddof=1, keepdims=True))
  return ((x - mean) / (std + TARGET_EPS)).reshape(x.shape[0], x.shape[1], -1)


class MaskedVideoAutoencoder(nnx.Module):
  """A :class:`VideoTransformer` encoder (``self.encoder``, the module
  fine-tuning initialises from) and a decoder of :data:`DECODERS`."""

  def __init__(
    self,
    encoder: VideoTransformer,
    decoder: DecoderSize,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.encoder = encoder
    self.dtype = dtype
    size = encoder.size
    d = decoder.width
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.out_dim = size.tubelet * size.patch * size.patch * 3
    self.encoder_to_decoder = tb.dense(size.width, d, use_bias=False, **kw)
    self.mask_token = nnx.Param(
      initializers.normal(tb.INIT_STD)(rngs.params(), (d,), param_dtype)
    )
    self.decoder_blocks = nnx.List(
      [
        tb.Block(
          d, decoder.heads, mlp_ratio=decoder.mlp_ratio, drop_path=0.0, **kw
        )
        for _ in range(decoder.depth)
      ]
    )
    self.decoder_norm = tb.layer_norm(d, **kw)
    self.head = tb.dense(d, self.out_dim, **kw)

  def encode(self, video, visible, rng=None):
    """The encoder on the visible tubes: ``(B, T', S_vis, C)`` after fusion
    and LayerNorm. ``video``: normalised ``(B, T, H, W, 3)``; ``visible``:
    ``(B, S_vis)`` positions of each frame."""
    enc = self.encoder
    x = masking.gather_positions(enc.tokens(video), visible)
    return enc.fc_norm(fuse(enc.stages(x, rng)))

  def __call__(self, video, visible, masked, rng=None):
    """Predictions ``(B, T' * S_mask, out_dim)`` for the masked tokens, in
    ``masking.flat_positions(masked, ...)`` order. ``rng``: the encoder's
    stochastic depth (none in SVFAP's pretraining)."""
    enc = self.encode(video, visible, rng)
    b, t, s_vis, _ = enc.shape
    s = s_vis + masked.shape[1]
    d = self.mask_token.shape[-1]
    x = self.encoder_to_decoder(enc).reshape(b, t * s_vis, d)
    table = jnp.asarray(tb.sinusoid_table(t * s, d), self.dtype)
    pos_vis = table[masking.flat_positions(visible, t, s)]
    pos_mask = table[masking.flat_positions(masked, t, s)]
    tokens = self.mask_token[...].astype(self.dtype) + pos_mask
    x = jnp.concatenate([x + pos_vis, tokens], axis=1)
    for block in self.decoder_blocks:
      x = block(x)
    n_mask = pos_mask.shape[1]
    return self.head(self.decoder_norm(x[:, -n_mask:]))


def make_autoencoder(
  encoder: str,
  decoder: str,
  *,
  rngs: nnx.Rngs,
  dtype=jnp.float32,
  param_dtype=jnp.float32,
) -> MaskedVideoAutoencoder:
  """``encoder``: a name of :data:`~stclr_jax.models.video_transformer.
  SIZES`; ``decoder``: of :data:`DECODERS`."""
  if encoder not in SIZES:
    raise ValueError(
      f"masked autoencoding needs a video transformer encoder, got "
      f"{encoder!r}; choose one of {sorted(SIZES)}"
    )
  if decoder not in DECODERS:
    raise ValueError(
      f"unknown decoder {decoder!r}; choose one of {sorted(DECODERS)}"
    )
  kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
  return MaskedVideoAutoencoder(
    VideoTransformer(SIZES[encoder], **kw), DECODERS[decoder], **kw
  )


def _tubes(video, k: int, p: int):
  """``(B, T, H, W, C)`` -> ``(B, N, k * p * p, C)``: tubes of ``k x p x
  p`` pixels, tokens in the encoder's (t, h, w) order (NumPy or JAX)."""
  b, t, h, w, c = video.shape
  x = video.reshape(b, t // k, k, h // p, p, w // p, p, c)
  return x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, k * p * p, c)


def _untubes(x, shape, k: int, p: int):
  b, t, h, w, c = shape
  x = x.reshape(b, t // k, h // p, w // p, k, p, p, c)
  return x.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(shape)


def reconstruction_views(video, predictions, masked_tokens, tubelet, patch):
  """What a reconstruction looks like, for previews: ``(masked input,
  reconstruction, target)``, each ``(B, T, H, W, 3)`` in [0, 1]. ``video``:
  the clips in [0, 1]; ``predictions (B, M, D)`` for the tokens
  ``masked_tokens (B, M)``. The masked tubes are grey in the input; in the
  reconstruction each is the prediction un-standardised with its own
  tube's mean and standard deviation (VideoMAE's visualisation), the
  visible tubes the clip's own."""
  video = np.asarray(video, np.float64)
  k, p = tubelet, patch
  tubes = _tubes(video, k, p)  # (B, N, P, C)
  mean = tubes.mean(axis=2, keepdims=True)
  std = tubes.std(axis=2, ddof=1, keepdims=True)
  b, m = masked_tokens.shape
  pred = np.asarray(predictions, np.float64).reshape(b, m, k * p * p, -1)
  rows = np.arange(b)[:, None]
  idx = np.asarray(masked_tokens)
  recon = tubes.copy()
  recon[rows, idx] = pred * (std[rows, idx] + TARGET_EPS) + mean[rows, idx]
  grey = tubes.copy()
  grey[rows, idx] = 0.5
  shape = video.shape
  return (
    _untubes(grey, shape, k, p),
    np.clip(_untubes(recon, shape, k, p), 0.0, 1.0),
    video,
  )
