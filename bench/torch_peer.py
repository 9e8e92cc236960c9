"""A PyTorch R(2+1)D-18 at any width: the PyTorch peer of the library's
``make_encoder("r2plus1d_18", width=w)`` (torchvision has no width
multiplier).

Built from torchvision's own blocks (``BasicBlock``, ``Conv2Plus1D``, which
computes the (2+1)D mid width from the block's widths) and laid out as
torchvision's ``VideoResNet``, with the library's widths (stclr_jax/models/
video_resnet.py): every channel count ``max(1, round(c * width))`` of
torchvision's (45 and 64 in the stem; 64, 128, 256, 512 in the stages),
strides (1,2,2) in the stem and 2 at the first block of stages 2-4,
BatchNorm after every convolution (and inside each (2+1)D pair), a
strided 1x1x1 convolution + BatchNorm shortcut where a block strides or
changes width, global average pool, no ``fc``; torchvision's initialisation.
Its state_dict keys are torchvision's, so at width 1.0 it is
``r2plus1d_18`` without ``fc``, key for key and shape for shape
(tests/bench_torch_peer_test.py).

:func:`check_against_jax` asserts that a PyTorch model has the parameter
count and the parameter shapes of the JAX one; bench/train_step.py calls it
before timing anything.
"""

from __future__ import annotations

import sys
import types

STAGE_WIDTHS = (64, 128, 256, 512)
STEM_MID = 45  # torchvision's (1,7,7) half of the R(2+1)D stem
BLOCKS_PER_STAGE = 2
ENCODER_PARAMS_WIDTH_1 = 31_300_125  # torchvision r2plus1d_18 without fc


def import_torchvision_video():
  """torch and torchvision.models.video. A torchvision wheel installed
  without its CUDA-matched torch fails in ``torchvision._meta_registrations``
  (its compiled ops); the video models need none of them, so that module is
  stubbed only when the plain import fails."""
  import torch

  try:
    from torchvision.models import video
  except (ImportError, RuntimeError):
    for name in [m for m in sys.modules if m.startswith("torchvision")]:
      del sys.modules[name]
    name = "torchvision._meta_registrations"
    sys.modules[name] = types.ModuleType(name)
    from torchvision.models import video
  return torch, video


def scaled(channels: int, width: float) -> int:
  """A channel count at ``width``, rounded as the library's VideoResNet."""
  return max(1, int(round(channels * width)))


def r2plus1d_18(width: float = 1.0):
  """The width-``width`` R(2+1)D-18 encoder (no ``fc``), an ``nn.Module``
  mapping ``(batch, 3, time, height, width)`` to ``(batch, features)``; its
  ``features`` attribute is the feature width."""
  torch, video = import_torchvision_video()
  nn = torch.nn
  resnet = video.resnet
  if width <= 0:
    raise ValueError(f"width must be positive, got {width}")
  mid, widths = (
    scaled(STEM_MID, width),
    [scaled(c, width) for c in STAGE_WIDTHS],
  )

  class WidthR2Plus1D(nn.Module):
    def __init__(self):
      super().__init__()
      self.features = widths[-1]
      # torchvision's R2Plus1dStem at these widths.
      self.stem = nn.Sequential(
        nn.Conv3d(3, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, widths[0], (3, 1, 1), 1, (1, 0, 0), bias=False),
        nn.BatchNorm3d(widths[0]),
        nn.ReLU(inplace=True),
      )
      cin = widths[0]
      for i, cout in enumerate(widths):
        blocks = []
        for j in range(BLOCKS_PER_STAGE):
          stride = 2 if (i > 0 and j == 0) else 1
          downsample = None
          if stride != 1 or cin != cout:  # as VideoResNet._make_layer
            downsample = nn.Sequential(
              nn.Conv3d(
                cin,
                cout,
                kernel_size=1,
                stride=resnet.Conv2Plus1D.get_downsample_stride(stride),
                bias=False,
              ),
              nn.BatchNorm3d(cout),
            )
          blocks.append(
            resnet.BasicBlock(cin, cout, resnet.Conv2Plus1D, stride, downsample)
          )
          cin = cout
        setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
      self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
      # torchvision's VideoResNet initialisation.
      for m in self.modules():
        if isinstance(m, nn.Conv3d):
          nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm3d):
          nn.init.constant_(m.weight, 1)
          nn.init.constant_(m.bias, 0)

    def forward(self, x):
      x = self.stem(x)
      for i in range(len(widths)):
        x = getattr(self, f"layer{i + 1}")(x)
      return self.avgpool(x).flatten(1)

  return WidthR2Plus1D()


def projection_head(torch, features: int, hidden: int = 0, out: int = 128):
  """The library's ProjectionHead: Linear(features, hidden or features),
  ReLU, Linear(., out), both with bias."""
  hidden = hidden or features
  nn = torch.nn
  return nn.Sequential(
    nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, out)
  )


def linear_classifier(torch, features: int, num_classes: int):
  """The library's LinearClassifier: one Linear, weights N(0, 0.01), zero
  bias (torchvision's ``fc`` initialisation)."""
  fc = torch.nn.Linear(features, num_classes)
  torch.nn.init.normal_(fc.weight, 0, 0.01)
  torch.nn.init.zeros_(fc.bias)
  return fc


def _torch_shapes(module) -> list[tuple[int, ...]]:
  """Parameter shapes in the library's layout: convolutions (O, I, D, H, W)
  -> (D, H, W, I, O), linear weights (out, in) -> (in, out)."""
  shapes = []
  for p in module.parameters():
    s = tuple(p.shape)
    if len(s) == 5:
      s = (*s[2:], s[1], s[0])
    elif len(s) == 2:
      s = (s[1], s[0])
    shapes.append(s)
  return sorted(shapes)


def _jax_shapes(module) -> list[tuple[int, ...]]:
  import jax
  from flax import nnx

  state = nnx.state(module, nnx.Param)
  return sorted(tuple(x.shape) for x in jax.tree.leaves(state))


def jax_models(width: float, num_classes: int = 6, proj_dim: int = 128):
  """Abstract (shapes only) JAX models at ``width``: the encoder, encoder +
  projection head (pretraining), encoder + linear classifier (fine-tuning).
  """
  from flax import nnx

  from stclr_jax import models

  def build():
    rngs = nnx.Rngs(0)
    enc = models.make_encoder("r2plus1d_18", width=width, rngs=rngs)
    return (
      enc,
      models.ContrastiveModel(enc, proj_dim=proj_dim, rngs=rngs),
      models.LinearClassifier(enc.features, num_classes, rngs=rngs),
    )

  return nnx.eval_shape(build)


def check_against_jax(torch_models: dict, width: float, num_classes: int = 6):
  """Asserts that the PyTorch ``torch_models`` (any of ``"encoder"``,
  ``"pretrain"``: encoder + head, ``"finetune"``: encoder + classifier)
  have the parameter count and the multiset of parameter shapes of the
  library's models at ``width`` (and, at width 1.0, the encoder
  torchvision's 31,300,125 parameters). Returns ``{name: count}``."""
  from stclr_jax import models

  enc, contrastive, classifier = jax_models(width, num_classes)
  jax_ref = {
    "encoder": (models.count_params(enc), _jax_shapes(enc)),
    "pretrain": (models.count_params(contrastive), _jax_shapes(contrastive)),
    "finetune": (
      models.count_params(enc) + models.count_params(classifier),
      sorted(_jax_shapes(enc) + _jax_shapes(classifier)),
    ),
  }
  counts = {}
  for name, module in torch_models.items():
    n = sum(p.numel() for p in module.parameters())
    want_n, want_shapes = jax_ref[name]
    if n != want_n:
      raise AssertionError(
        f"width {width} {name}: PyTorch {n:,} parameters, JAX {want_n:,}"
      )
    if _torch_shapes(module) != want_shapes:
      raise AssertionError(
        f"width {width} {name}: same count ({n:,}) but other parameter "
        "shapes than the JAX model's"
      )
    counts[name] = n
  if width == 1.0 and jax_ref["encoder"][0] != ENCODER_PARAMS_WIDTH_1:
    raise AssertionError(
      f"width 1.0 encoder: {jax_ref['encoder'][0]:,} parameters, "
      f"torchvision's r2plus1d_18 has {ENCODER_PARAMS_WIDTH_1:,}"
    )
  return counts
