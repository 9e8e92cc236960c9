"""The PyTorch side of ``bench/train_step.py``: torchvision's
``r2plus1d_18`` (``fc`` removed; its parameter count is checked) with the
same projection head, NT-Xent and SGD step as the library's, on synthetic
clips already on the device. On GPU: AMP bf16 autocast (for ``bf16``),
channels_last_3d, cudnn.benchmark and, optionally, torch.compile.

torch and torchvision are imported inside :func:`import_torchvision_video`:
they are optional (the benchmark's JAX side runs without them).
"""

from __future__ import annotations

import sys
import time
import types

TEMPERATURE = 0.1
LR, MOMENTUM, WEIGHT_DECAY = 1e-3, 0.9, 1e-4
ENCODER_PARAMS = 31_300_125  # torchvision r2plus1d_18 without its fc


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


def torch_nt_xent(torch, z_a, z_b):
  z = torch.nn.functional.normalize(torch.cat([z_a, z_b]).float(), dim=1)
  n = z_a.shape[0]
  logits = z @ z.t() / TEMPERATURE
  logits = logits.masked_fill(
    torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf")
  )
  target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
  return torch.nn.functional.cross_entropy(logits, target)


def build_torch(batch, frames, size, dtype, compile_model):
  torch, video = import_torchvision_video()
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  gpu = dev == "cuda"
  if gpu:
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
  torch.manual_seed(0)
  enc = video.r2plus1d_18(weights=None)
  enc.fc = torch.nn.Identity()
  n_params = sum(p.numel() for p in enc.parameters())
  if n_params != ENCODER_PARAMS:
    raise AssertionError(f"r2plus1d_18 without fc has {n_params} parameters")
  model = torch.nn.Sequential(
    enc, torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128)
  ).to(dev)
  mem_fmt = torch.channels_last_3d if gpu else torch.contiguous_format
  model = model.to(memory_format=mem_fmt)
  opt = torch.optim.SGD(
    model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
  )
  g = torch.Generator(device=dev).manual_seed(1)
  shape = (batch, 3, frames, size, size)
  va = torch.rand(shape, generator=g, device=dev)
  vb = torch.rand(shape, generator=g, device=dev)
  x = torch.stack([va, vb], 1).reshape(2 * batch, *shape[1:])
  x = x.contiguous(memory_format=mem_fmt)
  fwd = torch.compile(model) if compile_model else model
  amp = dtype == "bf16"

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
      z = fwd(x).reshape(batch, 2, -1)
    loss = torch_nt_xent(torch, z[:, 0], z[:, 1])
    loss.backward()
    opt.step()
    return loss

  def sync():
    if gpu:
      torch.cuda.synchronize()

  if gpu:
    torch.cuda.reset_peak_memory_stats()
  t0 = time.perf_counter()
  step()
  sync()
  info = {
    "compile_s": time.perf_counter() - t0,
    "device": dev,
    "threads": torch.get_num_threads(),
    "version": torch.__version__,
  }
  return step, sync, info, torch
