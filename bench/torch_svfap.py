"""A PyTorch TPSBT and ViT, written here as the peer of the library's video
transformers (stclr_jax/models/video_transformer.py) for the converter's
parity test and the benchmarks.

Written from SVFAP's description and its fine-tuning model's structure
(sunlicai/SVFAP, ``modeling_finetune.py`` at 8e386b9: ``TPSBT`` and
``svfap_base_patch16_160``), not from its code: the modules carry its
state_dict names (``patch_embed.proj``, ``blocks.i.attn.qkv``,
``q_bias``/``v_bias``, ``cross_attn.q``/``kv``, ``cross_norm1``/``2``,
``temporal_downsamples.i``, ``spatial_downsamples.i.norm``/``mlp``,
``fc_norm``, ``head``), so a SVFAP checkpoint loads into it and its
state_dict is a SVFAP checkpoint. :data:`SVFAP_BASE_PARAMS` holds the
released model's counted sizes; tests/convert_svfap_test.py checks this
model against them.

Input ``(batch, 3, time, height, width)``; output the logits.
"""

from __future__ import annotations

# svfap_base_patch16_160 with a 7-class head (DFEW) and a 6-class one.
SVFAP_BASE_PARAMS = {7: 77_635_351, 6: 77_634_838}


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
  """The model (``family`` "tpsbt" or "vit"), in evaluation mode."""
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
    def __init__(self, dim, cross=False):
      super().__init__()
      self.cross = cross
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
    def __init__(self, dim):
      super().__init__()
      self.norm1, self.attn = norm(dim), Attn(dim)
      self.norm2, self.mlp = norm(dim), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
      x = x + self.attn(self.norm1(x))
      return x + self.mlp(self.norm2(x))

  class CSBlock(Block):
    def __init__(self, dim):
      super().__init__(dim)
      self.cross_attn = Attn(dim, cross=True)
      self.cross_norm1, self.cross_norm2 = norm(dim), norm(dim)

    def forward(self, x, context):
      x = x + self.cross_attn(self.cross_norm1(x), self.cross_norm2(context))
      return super().forward(x)

  class Bottleneck(nn.Module):
    def __init__(self, dim):
      super().__init__()
      self.norm = norm(dim)
      self.mlp = Mlp(dim, bottleneck_hidden, tokens)

    def forward(self, x, t):  # x: (b, t * s, c)
      b, n, c = x.shape
      w = self.mlp(self.norm(x)).reshape(b, t, n // t, tokens)
      w = w.transpose(2, 3).softmax(-1)  # (b, t, g, s)
      return (w @ x.reshape(b, t, n // t, c)).reshape(b, t * tokens, c)

  class Model(nn.Module):
    def __init__(self):
      super().__init__()
      self.patch_embed = nn.Module()
      self.patch_embed.proj = nn.Conv3d(
        3, width, (tubelet, patch, patch), (tubelet, patch, patch)
      )
      self.blocks = nn.ModuleList(
        [Block(width) for _ in range(depths[0])]
        + [CSBlock(width) for d in depths[1:] for _ in range(d)]
      )
      self.temporal_downsamples = nn.ModuleList(
        [nn.Conv1d(width, width, 2, 2) for _ in depths[1:]]
      )
      self.spatial_downsamples = nn.ModuleList(
        [Bottleneck(width) for _ in depths[1:]]
      )
      self.fc_norm = norm(width)
      self.head = nn.Linear(width, num_classes)
      for m in self.modules():
        if isinstance(m, nn.Linear):
          nn.init.trunc_normal_(m.weight, std=0.02)
          if m.bias is not None:
            nn.init.zeros_(m.bias)
      with torch.no_grad():
        self.head.weight.mul_(1e-3)

    def forward(self, x):
      x = self.patch_embed.proj(x)  # (b, c, t, h, w)
      b, c, t, h, w = x.shape
      s = h * w
      x = x.flatten(2).transpose(1, 2) + table(t * s, c)
      i = 0
      for _ in range(depths[0]):
        x, i = self.blocks[i](x), i + 1
      for stage, d in enumerate(depths[1:]):
        y = x.reshape(b, t, s, c).permute(0, 2, 3, 1).reshape(b * s, c, t)
        y = self.temporal_downsamples[stage](y)
        t = y.shape[-1]
        full = y.reshape(b, s, c, t).permute(0, 3, 1, 2).reshape(b, t * s, c)
        neck = self.spatial_downsamples[stage](full, t)
        for _ in range(d - 1):
          neck, i = self.blocks[i](neck, full), i + 1
        x, i = self.blocks[i](full, neck), i + 1
      return self.head(self.fc_norm(x.mean(1)))

  if family not in ("tpsbt", "vit"):
    raise ValueError(f"unknown family {family!r}")
  if family == "vit":
    assert len(depths) == 1, depths
  model = Model()
  model.eval()
  return model


def from_size(size, num_classes: int):
  """:func:`build` for a ``stclr_jax.models.video_transformer.
  TransformerSize``."""
  return build(
    size.family,
    size.width,
    size.heads,
    size.depths,
    num_classes,
    patch=size.patch,
    tubelet=size.tubelet,
    tokens=size.tokens,
    bottleneck_hidden=size.bottleneck_hidden,
    mlp_ratio=size.mlp_ratio,
  )


def count(model) -> int:
  return sum(p.numel() for p in model.parameters())
