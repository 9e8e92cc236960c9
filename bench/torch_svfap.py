"""A PyTorch TPSBT and ViT, written here as the peer of the library's video
transformers (stclr_jax/models/video_transformer.py) for the converter's
parity test and the benchmarks, and the masked autoencoder around them
(stclr_jax/models/masked_autoencoder.py) for the pretraining converter's.

Written from SVFAP's description and its models' structure
(sunlicai/SVFAP at 8e386b9: ``modeling_finetune.py``'s ``TPSBT`` and
``svfap_base_patch16_160``, ``modeling_pretrain.py``'s
``PretrainVisionTransformer``), not from its code: the modules carry its
state_dict names (``patch_embed.proj``, ``blocks.i.attn.qkv``,
``q_bias``/``v_bias``, ``cross_attn.q``/``kv``, ``cross_norm1``/``2``,
``temporal_downsamples.i``, ``spatial_downsamples.i.norm``/``mlp``,
``fc_norm``, ``head``; for pretraining ``encoder.*`` with ``encoder.norm``,
``encoder_to_decoder``, ``mask_token``, ``decoder.blocks.i``,
``decoder.norm``, ``decoder.head``), so a SVFAP checkpoint loads into it and
its state_dict is a SVFAP checkpoint. :data:`SVFAP_BASE_PARAMS` holds the
released model's counted sizes; tests/convert_svfap_test.py checks this
model against them.

The pretraining model is SVFAP's with its two forward defects fixed, as the
library's: the last block of stages 2 and 3 attends to the bottleneck
tokens (SVFAP: to the whole embedded clip, masked tubes included), and the
multi-scale fusion repeats each later stage's token over the temporal slots
it was pooled from (SVFAP reshapes with the length before downsampling).

Input ``(batch, 3, time, height, width)``; output the logits, or for the
pretraining model the masked tokens' predictions.
"""

from __future__ import annotations

import functools

# svfap_base_patch16_160 with a 7-class head (DFEW) and a 6-class one.
SVFAP_BASE_PARAMS = {7: 77_635_351, 6: 77_634_838}


@functools.cache
def _parts():
  """The building blocks (imported lazily: torch is a test requirement)."""
  import torch
  from torch import nn
  from torch.nn import functional as F

  def table(n, d):
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(d)
    angle = pos / torch.pow(10000.0, (2 * (j // 2)).double() / d)
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).float()

  class Mlp(nn.Module):
    def __init__(self, dim, hidden, out=None):
      super().__init__()
      self.fc1 = nn.Linear(dim, hidden)
      self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x):
      return self.fc2(F.gelu(self.fc1(x)))

  class Attn(nn.Module):
    def __init__(self, dim, heads, cross=False):
      super().__init__()
      self.cross, self.heads = cross, heads
      if cross:
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
      else:
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
      self.q_bias = nn.Parameter(torch.zeros(dim))
      self.v_bias = nn.Parameter(torch.zeros(dim))
      self.proj = nn.Linear(dim, dim)

    def forward(self, x, context=None):
      b, n, dim = x.shape
      heads = self.heads
      zeros = torch.zeros_like(self.v_bias)
      if self.cross:
        q = F.linear(x, self.q.weight, self.q_bias)
        kv = F.linear(context, self.kv.weight, torch.cat([zeros, self.v_bias]))
        k, v = kv.chunk(2, -1)
      else:
        bias = torch.cat([self.q_bias, zeros, self.v_bias])
        q, k, v = F.linear(x, self.qkv.weight, bias).chunk(3, -1)

      def split(y):
        return y.reshape(b, y.shape[1], heads, -1).transpose(1, 2)

      q, k, v = split(q), split(k), split(v)
      w = (q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)
      out = (w.softmax(-1) @ v).transpose(1, 2).reshape(b, n, dim)
      return self.proj(out)

  def norm(dim):
    return nn.LayerNorm(dim, eps=1e-6)

  class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
      super().__init__()
      self.norm1, self.attn = norm(dim), Attn(dim, heads)
      self.norm2, self.mlp = norm(dim), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
      x = x + self.attn(self.norm1(x))
      return x + self.mlp(self.norm2(x))

  class CSBlock(Block):
    def __init__(self, dim, heads, mlp_ratio):
      super().__init__(dim, heads, mlp_ratio)
      self.cross_attn = Attn(dim, heads, cross=True)
      self.cross_norm1, self.cross_norm2 = norm(dim), norm(dim)

    def forward(self, x, context):
      x = x + self.cross_attn(self.cross_norm1(x), self.cross_norm2(context))
      return super().forward(x)

  class Bottleneck(nn.Module):
    def __init__(self, dim, tokens, hidden):
      super().__init__()
      self.tokens = tokens
      self.norm = norm(dim)
      self.mlp = Mlp(dim, hidden, tokens)

    def forward(self, x, t):  # x: (b, t * s, c)
      b, n, c = x.shape
      g = self.tokens
      w = self.mlp(self.norm(x)).reshape(b, t, n // t, g)
      w = w.transpose(2, 3).softmax(-1)  # (b, t, g, s)
      return (w @ x.reshape(b, t, n // t, c)).reshape(b, t * g, c)

  class Encoder(nn.Module):
    """Patch embedding and stages; ``stages`` returns every stage's
    output ``(b, t_k * s, c)`` and each one's ``t_k``."""

    def __init__(
      self, width, heads, depths, patch, tubelet, tokens, hidden, mlp
    ):
      super().__init__()
      self.depths = depths
      self.patch_embed = nn.Module()
      self.patch_embed.proj = nn.Conv3d(
        3, width, (tubelet, patch, patch), (tubelet, patch, patch)
      )
      self.blocks = nn.ModuleList(
        [Block(width, heads, mlp) for _ in range(depths[0])]
        + [CSBlock(width, heads, mlp) for d in depths[1:] for _ in range(d)]
      )
      self.temporal_downsamples = nn.ModuleList(
        [nn.Conv1d(width, width, 2, 2) for _ in depths[1:]]
      )
      self.spatial_downsamples = nn.ModuleList(
        [Bottleneck(width, tokens, hidden) for _ in depths[1:]]
      )

    def embed(self, x):
      """``(b, t * s, c)`` tokens with the position table, and ``t``."""
      x = self.patch_embed.proj(x)  # (b, c, t, h, w)
      b, c, t, h, w = x.shape
      return x.flatten(2).transpose(1, 2) + table(t * h * w, c), t

    def stages(self, x, t):
      b, n, c = x.shape
      s = n // t
      i, outs = 0, []
      for _ in range(self.depths[0]):
        x, i = self.blocks[i](x), i + 1
      outs.append((x, t))
      for stage, d in enumerate(self.depths[1:]):
        y = x.reshape(b, t, s, c).permute(0, 2, 3, 1).reshape(b * s, c, t)
        y = self.temporal_downsamples[stage](y)
        t = y.shape[-1]
        full = y.reshape(b, s, c, t).permute(0, 3, 1, 2).reshape(b, t * s, c)
        neck = self.spatial_downsamples[stage](full, t)
        for _ in range(d - 1):
          neck, i = self.blocks[i](neck, full), i + 1
        x, i = self.blocks[i](full, neck), i + 1
        outs.append((x, t))
      return outs

  def init(module):
    for m in module.modules():
      if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
          nn.init.zeros_(m.bias)

  return dict(
    torch=torch, nn=nn, table=table, norm=norm, Block=Block,
    Encoder=Encoder, init=init,
  )  # fmt: skip


def build(
  family: str,
  width: int,
  heads: int,
  depths: tuple[int, ...],
  num_classes: int,
  *,
  patch: int = 16,
  tubelet: int = 2,
  tokens: int = 8,
  bottleneck_hidden: int = 128,
  mlp_ratio: float = 4.0,
):
  """The fine-tuning model (``family`` "tpsbt" or "vit"), in evaluation
  mode."""
  P = _parts()
  torch, nn = P["torch"], P["nn"]
  _check(family, depths)

  class Model(P["Encoder"]):
    def __init__(self):
      super().__init__(
        width, heads, depths, patch, tubelet, tokens, bottleneck_hidden,
        mlp_ratio,
      )  # fmt: skip
      self.fc_norm = P["norm"](width)
      self.head = nn.Linear(width, num_classes)
      P["init"](self)
      with torch.no_grad():
        self.head.weight.mul_(1e-3)

    def forward(self, x):
      x, t = self.embed(x)
      x, _ = self.stages(x, t)[-1]
      return self.head(self.fc_norm(x.mean(1)))

  model = Model()
  model.eval()
  return model


def build_pretrain(
  family: str,
  width: int,
  heads: int,
  depths: tuple[int, ...],
  decoder: tuple[int, int, int],
  *,
  patch: int = 16,
  tubelet: int = 2,
  tokens: int = 8,
  bottleneck_hidden: int = 128,
  mlp_ratio: float = 4.0,
):
  """The masked autoencoder (SVFAP's ``PretrainVisionTransformer`` names;
  ``decoder`` is ``(width, heads, depth)``), in evaluation mode. Its
  forward takes the clip and a boolean ``mask (b, t' * h' * w')`` (True:
  masked; tube masks, the same count per clip) and returns the masked
  tokens' predictions in their flat (t, h, w) order."""
  P = _parts()
  torch, nn = P["torch"], P["nn"]
  _check(family, depths)
  d_width, d_heads, d_depth = decoder

  class Encoder(P["Encoder"]):
    def __init__(self):
      super().__init__(
        width, heads, depths, patch, tubelet, tokens, bottleneck_hidden,
        mlp_ratio,
      )  # fmt: skip
      self.norm = P["norm"](width)

  class Decoder(nn.Module):
    def __init__(self):
      super().__init__()
      self.blocks = nn.ModuleList(
        [P["Block"](d_width, d_heads, mlp_ratio) for _ in range(d_depth)]
      )
      self.norm = P["norm"](d_width)
      self.head = nn.Linear(d_width, 3 * tubelet * patch * patch)

  class Model(nn.Module):
    def __init__(self):
      super().__init__()
      self.encoder, self.decoder = Encoder(), Decoder()
      self.encoder_to_decoder = nn.Linear(width, d_width, bias=False)
      self.mask_token = nn.Parameter(torch.zeros(1, 1, d_width))
      P["init"](self)
      nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, x, mask):
      tok, t = self.encoder.embed(x)
      b, n, c = tok.shape
      vis = tok[~mask].reshape(b, -1, c)
      s_vis = vis.shape[1] // t
      outs = self.encoder.stages(vis, t)
      fused = outs[0][0].reshape(b, t, s_vis, c)
      for y, t_k in outs[1:]:
        y = y.reshape(b, t_k, s_vis, c).repeat_interleave(t // t_k, dim=1)
        fused = fused + y
      y = self.encoder_to_decoder(self.encoder.norm(fused.reshape(b, -1, c)))
      pos = P["table"](n, d_width).expand(b, -1, -1)
      pos_vis = pos[~mask].reshape(b, -1, d_width)
      pos_mask = pos[mask].reshape(b, -1, d_width)
      y = torch.cat([y + pos_vis, self.mask_token + pos_mask], dim=1)
      for block in self.decoder.blocks:
        y = block(y)
      return self.decoder.head(self.decoder.norm(y[:, -pos_mask.shape[1] :]))

  model = Model()
  model.eval()
  return model


def _check(family, depths):
  if family not in ("tpsbt", "vit"):
    raise ValueError(f"unknown family {family!r}")
  if family == "vit":
    assert len(depths) == 1, depths


def _size_kwargs(size) -> dict:
  return dict(
    patch=size.patch,
    tubelet=size.tubelet,
    tokens=size.tokens,
    bottleneck_hidden=size.bottleneck_hidden,
    mlp_ratio=size.mlp_ratio,
  )


def from_size(size, num_classes: int):
  """:func:`build` for a ``stclr_jax.models.video_transformer.
  TransformerSize``."""
  return build(
    size.family,
    size.width,
    size.heads,
    size.depths,
    num_classes,
    **_size_kwargs(size),
  )


def pretrain_from_size(size, decoder):
  """:func:`build_pretrain` for a ``TransformerSize`` and a
  ``stclr_jax.models.masked_autoencoder.DecoderSize``."""
  return build_pretrain(
    size.family,
    size.width,
    size.heads,
    size.depths,
    (decoder.width, decoder.heads, decoder.depth),
    **_size_kwargs(size),
  )


def perturbed(model, scale: float = 0.05):
  """``model`` with every parameter (biases, norms and the mask token
  included) moved off its initial value by Gaussian noise (in place)."""
  torch = _parts()["torch"]
  with torch.no_grad():
    for p in model.parameters():
      p.add_(scale * torch.randn_like(p))
  return model


def numpy_state_dict(model) -> dict:
  """The state_dict as NumPy arrays."""
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def count(model) -> int:
  return sum(p.numel() for p in model.parameters())
