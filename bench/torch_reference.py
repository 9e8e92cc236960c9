"""The PyTorch side of ``bench/train_step.py``: the library's two training
steps in PyTorch, on synthetic clips already on the device.

* ``pretrain``: two views of ``batch`` videos interleaved into one encoder
  pass, the projection head, NT-Xent (temperature 0.1) and the optimiser:
  SGD as the paper (momentum 0.9, weight decay 1e-4 added to the gradient)
  or Adam (lr 1e-3, no weight decay: configs/stclr_synthetic.py).
* ``finetune``: one clip per video through the encoder and a linear
  classifier (6 classes), cross-entropy, Adam at 1e-4 (the fine-tuning step
  of stclr_jax/evaluation/runner.py).

The encoder is torchvision's ``r2plus1d_18`` (``fc`` removed; its
parameter count is checked) at width 1.0, else the width-``w`` peer of
bench/torch_peer.py. Inputs are normalised with a mean and std (0 and 1),
as the library's steps do. On GPU: AMP bf16 autocast (for ``bf16``),
channels_last_3d, cudnn.benchmark and, optionally, torch.compile.

torch and torchvision are imported inside
``torch_peer.import_torchvision_video``:
they are optional (the benchmark's JAX side runs without them).
"""

from __future__ import annotations

import time

import torch_peer
from torch_peer import import_torchvision_video

TEMPERATURE = 0.1
LR, MOMENTUM, WEIGHT_DECAY = 1e-3, 0.9, 1e-4  # the paper's SGD
ADAM_LR = 1e-3  # configs/stclr_synthetic.py: Adam, no weight decay
FINETUNE_LR = 1e-4  # the fine-tuning step's Adam (paper)
NUM_CLASSES = 6
PROJ_DIM = 128
ENCODER_PARAMS = 31_300_125  # torchvision r2plus1d_18 without its fc


def torch_nt_xent(torch, z_a, z_b):
  z = torch.nn.functional.normalize(torch.cat([z_a, z_b]).float(), dim=1)
  n = z_a.shape[0]
  logits = z @ z.t() / TEMPERATURE
  logits = logits.masked_fill(
    torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf")
  )
  target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
  return torch.nn.functional.cross_entropy(logits, target)


def torch_encoder(width: float = 1.0):
  """torchvision's ``r2plus1d_18`` without ``fc`` at width 1.0 (its
  parameter count checked), else bench/torch_peer.py's at ``width``; its
  ``features`` attribute is the feature width."""
  torch, video = import_torchvision_video()
  if width != 1.0:
    return torch_peer.r2plus1d_18(width)
  enc = video.r2plus1d_18(weights=None)
  enc.fc = torch.nn.Identity()
  n_params = sum(p.numel() for p in enc.parameters())
  if n_params != ENCODER_PARAMS:
    raise AssertionError(f"r2plus1d_18 without fc has {n_params} parameters")
  enc.features = 512
  return enc


def _optimizer(torch, params, name: str):
  if name == "sgd":
    return torch.optim.SGD(
      params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
  if name == "adam":
    return torch.optim.Adam(params, lr=ADAM_LR)
  raise ValueError(f"optimizer must be sgd or adam, got {name!r}")


def build_torch(
  batch,
  frames,
  size,
  dtype,
  compile_model,
  *,
  width=1.0,
  optimizer="sgd",
  step="pretrain",
):
  """``(step, sync, info, torch)``: ``step()`` runs one training step of
  kind ``step`` (``"pretrain"`` with ``optimizer``, or ``"finetune"``),
  ``sync()`` waits for the device; ``info["modules"]`` holds the encoder
  and the whole model (for bench/torch_peer.py's checks)."""
  if step not in ("pretrain", "finetune"):
    raise ValueError(f"step must be pretrain or finetune, got {step!r}")
  torch, _ = import_torchvision_video()

  dev = "cuda" if torch.cuda.is_available() else "cpu"
  gpu = dev == "cuda"
  if gpu:
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
  torch.manual_seed(0)
  enc = torch_encoder(width)
  if step == "pretrain":
    head = torch_peer.projection_head(torch, enc.features, out=PROJ_DIM)
  else:
    head = torch_peer.linear_classifier(torch, enc.features, NUM_CLASSES)
  model = torch.nn.Sequential(enc, head).to(dev)
  mem_fmt = torch.channels_last_3d if gpu else torch.contiguous_format
  model = model.to(memory_format=mem_fmt)
  if step == "pretrain":
    opt = _optimizer(torch, model.parameters(), optimizer)
  else:
    opt = torch.optim.Adam(model.parameters(), lr=FINETUNE_LR)
  g = torch.Generator(device=dev).manual_seed(1)
  shape = (batch, 3, frames, size, size)
  mean = torch.zeros((1, 3, 1, 1, 1), device=dev)
  std = torch.ones((1, 3, 1, 1, 1), device=dev)
  fwd = torch.compile(model) if compile_model else model
  amp = dtype == "bf16"

  if step == "pretrain":
    va = torch.rand(shape, generator=g, device=dev)
    vb = torch.rand(shape, generator=g, device=dev)

    def one_step():
      opt.zero_grad(set_to_none=True)
      # The views interleaved, [a0, b0, a1, ...], as the library's step.
      x = torch.stack([va, vb], 1).reshape(2 * batch, *shape[1:])
      x = ((x - mean) / std).contiguous(memory_format=mem_fmt)
      with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
        z = fwd(x).reshape(batch, 2, -1)
      loss = torch_nt_xent(torch, z[:, 0], z[:, 1])
      loss.backward()
      opt.step()
      return loss

  else:
    clips = torch.rand(shape, generator=g, device=dev)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g, device=dev)

    def one_step():
      opt.zero_grad(set_to_none=True)
      x = ((clips - mean) / std).contiguous(memory_format=mem_fmt)
      with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
        logits = fwd(x)
      loss = torch.nn.functional.cross_entropy(logits.float(), labels)
      loss.backward()
      opt.step()
      return loss

  def sync():
    if gpu:
      torch.cuda.synchronize()

  if gpu:
    torch.cuda.reset_peak_memory_stats()
  t0 = time.perf_counter()
  one_step()
  sync()
  info = {
    "compile_s": time.perf_counter() - t0,
    "device": dev,
    "threads": torch.get_num_threads(),
    "version": torch.__version__,
    "modules": {"encoder": enc, step: model},
  }
  return one_step, sync, info, torch
