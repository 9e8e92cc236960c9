"""Benchmark: the library's training steps, JAX against PyTorch.

``--step pretrain`` (default): the full ST-CLR pretraining step. Two views
of ``--batch`` videos through R(2+1)D-18 (one encoder pass over the
``2 * batch`` interleaved clips, global BatchNorm), the projection head
(F -> F -> 128, F = 512 x width), NT-Xent (temperature 0.1) and the
optimiser (``--optimizer``): SGD as the paper (momentum 0.9, weight decay
1e-4 added to the gradient, as PyTorch), or Adam at 1e-3 without weight
decay (configs/stclr_synthetic.py, the CPU config).

``--step mae``: the masked-autoencoding step (``pretext.mae``: a video
transformer encoder on the visible tenth of each clip's tubes, the decoder,
the reconstruction loss, AdamW (0.9, 0.95), weight decay 0.05), timed
interleaved with the contrastive step of the same encoder at the same
batch of videos (two clips per video there, one here); both through
``stclr_jax.train_step.make_train_step``. Reported per step and per
encoder clip, with the ratio of XLA's FLOPs and of the times.

``--step finetune``: the evaluation protocol's fine-tuning step. One clip
per video through the encoder and a linear classifier (6 classes),
cross-entropy, Adam at 1e-4.

* JAX: the library's own steps: ``stclr_jax.train_step.make_train_step``
  (a ``jax.jit`` over split NNX state, donated, NT-Xent in ``shard_map`` on
  a one-device mesh) with the optimiser of ``stclr_jax.optim``, and
  ``stclr_jax.evaluation.runner.Runner.make_train_step``. The pretraining
  path is TensorFlow- and ml-collections-free, so it runs on the GPU image;
  the fine-tuning step's module imports the input pipeline (TensorFlow).
* PyTorch (bench/torch_reference.py): torchvision's ``r2plus1d_18``
  (``fc`` removed; its parameter count is checked: 31,300,125) at width
  1.0; at another ``--width``, bench/torch_peer.py's R(2+1)D-18 built from
  torchvision's blocks at the library's widths (torchvision has no width
  multiplier). Before timing, the PyTorch models' parameter counts and
  shapes are checked against the JAX models'. Same head, loss and
  optimiser. On GPU: AMP bf16 autocast (for ``bf16``), channels_last_3d,
  cudnn.benchmark and, with ``--torch_compile``, torch.compile.

Both run in one process, on synthetic clips already on the device,
interleaved repeat by repeat after warm-up; medians are reported, with the
clips/s ratio JAX / PyTorch. "clips" are encoder clips (two per video in
pretraining, one in fine-tuning).

Reported: clips/s, compile time (JAX: lower + compile; PyTorch: first step,
or torch.compile's first step), peak device memory (JAX: XLA's buffer
assignment of the compiled step, and the allocator's peak where the device
reports one; PyTorch: ``torch.cuda.max_memory_allocated``), and MFU with the
FLOPs of XLA's cost analysis of the compiled JAX step (for PyTorch: the
same FLOPs, the same maths, over its time) against a stated peak
(``--peak_tflops``; defaults: H100/H200 989 TFLOP/s bf16 and 67 fp32; on CPU,
cores x clock x 32 fp32 FLOP/cycle for AVX2+FMA, 64 with AVX-512, an
assumption printed with the result). At width 1.0 the analytic count from
torchvision's model card (40.5 G multiply-adds per 16x112x112 clip forward,
x3 for a training step) is printed beside it.

  # CPU, the paper's model (feasible on 2 cores):
  python bench/train_step.py --batch 2 --sizes 112 --dtypes fp32 --repeats 5
  # CPU, the CPU configs' model and steps (configs/stclr_synthetic.py,
  # configs/finetune_synthetic.py):
  python bench/train_step.py --width 0.25 --frames 8 --sizes 48 --batch 16 \
      --optimizer adam --step pretrain,finetune
  # GPU, one command (defaults: 16x112 and 16x224, bf16 and fp32):
  python bench/train_step.py --torch_compile
  # The video transformers against R(2+1)D at CPU size (JAX; FLOPs, time):
  python bench/train_step.py --encoder r2plus1d_18,tpsbt_cpu,vit_cpu \
      --width 0.25 --frames 8 --sizes 48 --batch 16 --optimizer adam \
      --step pretrain,finetune --framework jax
  # GPU, SVFAP's size: 16x160^2 clips in bf16 (TPSBT-B, ViT-B):
  python bench/train_step.py --encoder tpsbt_base,vit_base --frames 16 \
      --sizes 160 --batch 32 --dtypes bf16 --step pretrain --framework jax
  # Masked autoencoding against the contrastive step, CPU size (the
  # benchmark's configs/svfap_synthetic.py: 90% masking, the cpu decoder):
  python bench/train_step.py --encoder tpsbt_cpu,vit_cpu --frames 8 \
      --sizes 48 --batch 16 --step mae --framework jax
  # ... and at SVFAP's size on a GPU (the base decoder, 384 wide, 4 blocks):
  python bench/train_step.py --encoder tpsbt_base,vit_base --frames 16 \
      --sizes 160 --batch 32 --dtypes bf16,fp32 --step mae --framework jax

It ends with the machine's load during the run (``bench/timing.py``) and
flags the figures UNRELIABLE when other jobs shared the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import timing  # noqa: E402  (bench/timing.py: was the machine quiet?)

# bench/torch_reference.py: the PyTorch step, and the settings both share.
from torch_reference import (  # noqa: E402
  ADAM_LR,
  FINETUNE_LR,
  LR,
  MOMENTUM,
  NUM_CLASSES,
  PROJ_DIM,
  TEMPERATURE,
  WEIGHT_DECAY,
  build_torch,
)

from stclr_jax import (
  compiler,  # noqa: E402
  models,  # noqa: E402
)
from stclr_jax import mesh as mesh_lib  # noqa: E402
from stclr_jax import optim as optim_lib  # noqa: E402
from stclr_jax import train_step as train_step_lib  # noqa: E402
from stclr_jax.pretext import objectives  # noqa: E402

TV_GMAC_PER_CLIP = 40.5  # torchvision r2plus1d_18, 16x112x112


# ----------------------------------------------------------------- JAX side
def jax_optimizer(name: str):
  """``(tx, lr)``: the library's optimiser (``stclr_jax.optim``) for the
  paper's SGD or the CPU config's Adam."""
  if name == "sgd":
    optim, lr = dict(weight_decay=WEIGHT_DECAY, momentum=MOMENTUM), LR
  elif name == "adam":
    optim, lr = dict(weight_decay=0.0, momentum=0.0), ADAM_LR
  else:
    raise ValueError(f"optimizer must be sgd or adam, got {name!r}")
  optim = types.SimpleNamespace(
    name=name, learning_rate=lr, grad_clip_norm=0.0, **optim
  )
  return optim_lib.make_optimizer(optim, optax.constant_schedule(lr)), lr


def _encoder(width, dtype, lowering, rngs, name="r2plus1d_18"):
  compute = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[dtype]
  if models.family(name) != "resnet":  # no width, no convolution lowering
    return models.make_encoder(name, dtype=compute, rngs=rngs)
  return models.make_encoder(
    name, width=width, dtype=compute, conv_lowering=lowering, rngs=rngs
  )


def _compiled_info(step, *args):
  """``(compiled, info)``: ``step`` lowered and compiled for ``args``, with
  the compile time, XLA's FLOPs and buffer bytes."""
  t0 = time.perf_counter()
  compiled = step.lower(*args).compile()
  info = {"compile_s": time.perf_counter() - t0}
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  info["flops"] = float((cost or {}).get("flops", float("nan")))
  mem = compiled.memory_analysis()
  if mem is not None:
    info["xla_bytes"] = (
      mem.argument_size_in_bytes
      + mem.output_size_in_bytes
      + mem.temp_size_in_bytes
      - mem.alias_size_in_bytes
    )
  return compiled, info


def jax_pretrain_step(
  batch,
  frames,
  size,
  dtype,
  width=1.0,
  devices=None,
  lowering="auto",
  optimizer="sgd",
  encoder="r2plus1d_18",
):
  """The pretraining step before compilation: returns (jitted step, state,
  batch, model); the batch is sharded over ``devices`` (default: the first
  device)."""
  rngs = nnx.Rngs(0)
  encoder = _encoder(width, dtype, lowering, rngs, encoder)
  model = models.ContrastiveModel(encoder, proj_dim=PROJ_DIM, rngs=rngs)
  tx, lr = jax_optimizer(optimizer)
  mesh = mesh_lib.make_mesh(
    devices if devices is not None else jax.devices()[:1]
  )
  graphdef, state = train_step_lib.init_state(model, tx, mesh)
  key_a, key_b = jax.random.split(jax.random.key(1))
  shape = (batch, frames, size, size, 3)
  data = {
    "view_a": jax.random.uniform(key_a, shape),
    "view_b": jax.random.uniform(key_b, shape),
  }
  data = jax.device_put(data, mesh_lib.batch_sharded(mesh))
  step = train_step_lib.make_train_step(
    mesh,
    graphdef,
    tx,
    optax.constant_schedule(lr),
    state,
    objectives.NTXent(TEMPERATURE),
  )
  return step, state, data, model


def build_jax(
  batch,
  frames,
  size,
  dtype,
  width=1.0,
  devices=None,
  lowering="auto",
  optimizer="sgd",
  encoder="r2plus1d_18",
):
  """The pretraining step: returns (compiled step, state, batch, info
  dict); the batch is sharded over ``devices`` (default: the first
  device)."""
  step, state, data, model = jax_pretrain_step(
    batch, frames, size, dtype, width, devices, lowering, optimizer, encoder
  )
  compiled, info = _compiled_info(step, state, data)
  info["which"] = f"stclr_jax.train_step.make_train_step, {optimizer}"
  info["params"] = models.count_params(model)
  return compiled, state, data, info


class _Settings(dict):
  """A config section for ``stclr_jax.optim`` without ml-collections."""

  __getattr__ = dict.__getitem__


# SVFAP's AdamW (3e-4 x batch / 256 at a batch of 128); a constant rate:
# the values do not change the step's time.
MAE_LR, MAE_B2, MAE_WEIGHT_DECAY = 1.5e-4, 0.95, 0.05


def mae_decoder(encoder: str) -> str:
  """The decoder of an encoder's size: ``base``, ``cpu`` or ``tiny``."""
  return (
    encoder.rsplit("_", 1)[-1]
    if encoder.endswith(("_cpu", "_tiny"))
    else "base"
  )


def build_jax_mae(batch, frames, size, dtype, encoder, ratio=0.9):
  """The masked-autoencoding step (``objectives.MaskedAutoencoding`` through
  ``train_step.make_train_step``, the library's AdamW): returns (compiled
  step, state, batch, info)."""
  from stclr_jax.models import masked_autoencoder

  compute = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[dtype]
  model = masked_autoencoder.make_autoencoder(
    encoder, mae_decoder(encoder), dtype=compute, rngs=nnx.Rngs(0)
  )
  optim = _Settings(
    name="adamw",
    learning_rate=MAE_LR,
    grad_clip_norm=0.0,
    weight_decay=MAE_WEIGHT_DECAY,
    momentum=0.0,
    b2=MAE_B2,
  )
  schedule = optax.constant_schedule(MAE_LR)
  tx = optim_lib.make_optimizer(optim, schedule)
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  graphdef, state = train_step_lib.init_state(model, tx, mesh)
  keys = jax.random.split(jax.random.key(2), batch)
  data = {
    "view_a": jax.random.uniform(
      jax.random.key(1), (batch, frames, size, size, 3)
    ),
    "mask_seed": jax.random.key_data(keys).astype(jnp.uint32),
  }
  data = jax.device_put(data, mesh_lib.batch_sharded(mesh))
  step = train_step_lib.make_train_step(
    mesh,
    graphdef,
    tx,
    schedule,
    state,
    objectives.MaskedAutoencoding(ratio),
  )
  compiled, info = _compiled_info(step, state, data)
  info["which"] = (
    f"masked autoencoding ({mae_decoder(encoder)} decoder, {ratio:.0%} "
    "masked), stclr_jax.train_step.make_train_step, adamw"
  )
  info["params"] = models.count_params(model)
  return compiled, state, data, info


def build_jax_finetune(
  batch,
  frames,
  size,
  dtype,
  width=1.0,
  lowering="auto",
  encoder="r2plus1d_18",
):
  """The fine-tuning step (``runner.Runner.make_train_step``, Adam at
  ``FINETUNE_LR``; a video transformer's: ``make_transformer_step`` with
  the default ``eval.transformer`` recipe, drop path 0.1): returns (step
  taking the state, state, batch, info)."""
  # Imported here: the evaluation modules import the input pipeline
  # (TensorFlow), which the pretraining benchmark does without.
  from stclr_jax import configlib
  from stclr_jax.evaluation import runner as runner_lib

  rngs = nnx.Rngs(0)
  transformer = models.family(encoder) != "resnet"
  recipe = configlib.transformer_recipe()
  if transformer:
    compute = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[dtype]
    enc = models.make_encoder(
      encoder, dtype=compute, drop_path=recipe.drop_path, rngs=rngs
    )
  else:
    enc = _encoder(width, dtype, lowering, rngs, encoder)
  model = runner_lib.Classifier(enc, NUM_CLASSES, rngs=rngs)
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  runner = runner_lib.Runner(model, mesh, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
  if transformer:
    tx, step, _ = runner.make_transformer_step(recipe, 1000, batch)
  else:
    tx, step = runner.make_train_step(FINETUNE_LR)
  state = runner.initial_state(
    tx,
    nnx.state(model, nnx.Param),
    nnx.state(model, nnx.BatchStat),
    seed=0 if transformer else None,
  )
  key_v, key_l = jax.random.split(jax.random.key(1))
  data = {
    "video": jax.random.uniform(key_v, (batch, frames, size, size, 3)),
    "label": jax.random.randint(key_l, (batch,), 0, NUM_CLASSES),
  }
  data = jax.device_put(data, mesh_lib.batch_sharded(mesh))
  scale = np.float32(1.0)
  compiled, info = _compiled_info(step, state, data, scale)
  info["which"] = "stclr_jax.evaluation.runner.Runner." + (
    "make_transformer_step (eval.transformer's recipe)"
    if transformer
    else "make_train_step"
  )
  info["params"] = models.count_params(model)
  return (lambda st, d: compiled(st, d, scale)), state, data, info


def build_jax_forward(
  batch, frames, size, dtype, width=1.0, encoder="r2plus1d_18"
):
  """The encoder's forward pass alone (evaluation mode): returns (step
  taking the state, state, clips, info); XLA's FLOPs / 2 per clip are the
  multiply-adds that papers quote."""
  rngs = nnx.Rngs(0)
  enc = _encoder(width, dtype, "auto", rngs, encoder)
  enc.eval()
  graphdef, state = nnx.split(enc)
  x = jax.random.uniform(jax.random.key(1), (batch, frames, size, size, 3))

  def forward(state, x):
    return state, nnx.merge(graphdef, state)(x)

  compiled, info = _compiled_info(jax.jit(forward), state, x)
  info["which"] = f"{encoder} forward"
  info["params"] = models.count_params(enc)
  return compiled, state, x, info


def jax_device_peak_bytes():
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


# ------------------------------------------------------------------ driver
def cpu_peak_flops():
  """cores x clock x FLOP/cycle (2 FMA units x 8 or 16 fp32 lanes x 2)."""
  cores = len(os.sched_getaffinity(0))
  mhz, flags = [], ""
  with open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("cpu MHz"):
        mhz.append(float(line.split(":")[1]))
      elif line.startswith("flags") and not flags:
        flags = line
  per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 16
  ghz = (max(mhz) if mhz else 2000.0) / 1000
  return (
    cores * ghz * per_cycle * 1e9,
    f"{cores} cores x {ghz:.2f} GHz x {per_cycle} fp32 FLOP/cycle",
  )


def device_peak_flops(dtype, override):
  if override:
    return override * 1e12, f"--peak_tflops {override}"
  d = jax.devices()[0]
  if d.platform == "cpu":
    return cpu_peak_flops()
  kind = d.device_kind
  if "H100" in kind or "H200" in kind:
    tf = 989.0 if dtype == "bf16" else 67.0
    return tf * 1e12, f"{kind}: {tf:g} TFLOP/s dense {dtype} (SXM spec)"
  return float("nan"), f"{kind}: unknown peak (pass --peak_tflops)"


@contextlib.contextmanager
def _cpu_convolutions(lowering):
  """``LOWERING+ynnpack``: the library's step built without its XLA:CPU
  compiler options (compiler.xla_compiler_options), so XLA:CPU runs the
  convolutions in YNNPACK, its own default; plain ``LOWERING``: the
  library's choice (Eigen's convolutions on the CPU)."""
  _, plus, library = lowering.partition("+")
  if not plus:
    yield
    return
  if library != "ynnpack":
    raise ValueError(
      f"--lowering: LOWERING or LOWERING+ynnpack, got {lowering!r}"
    )
  saved = compiler.mesh_compiler_options
  compiler.mesh_compiler_options = lambda mesh: None
  try:
    yield
  finally:
    compiler.mesh_compiler_options = saved


class _JaxRunner:
  """One compiled JAX step and its (donated) state."""

  def __init__(self, a, step, batch, frames, size, dtype, lowering):
    with _cpu_convolutions(lowering):
      self._build(a, step, batch, frames, size, dtype, lowering)

  def _build(self, a, step, batch, frames, size, dtype, label):
    lowering, _, _ = label.partition("+")
    if step == "pretrain":
      built = build_jax(
        batch,
        frames,
        size,
        dtype,
        width=a.width,
        lowering=lowering,
        optimizer=a.optimizer,
        encoder=a.encoder,
      )
    elif step == "mae":
      built = build_jax_mae(batch, frames, size, dtype, a.encoder, a.mask_ratio)
    elif step == "forward":
      built = build_jax_forward(
        batch, frames, size, dtype, width=a.width, encoder=a.encoder
      )
    else:
      built = build_jax_finetune(
        batch,
        frames,
        size,
        dtype,
        width=a.width,
        lowering=lowering,
        encoder=a.encoder,
      )
    self.step, self.state, self.data, self.info = built
    print(
      f"jax {jax.__version__} {jax.devices()[0].device_kind}: "
      f"{self.info['which']}, lowering {label!r}; "
      f"{self.info['params']:,} parameters; compile "
      f"{self.info['compile_s']:.1f} s",
      flush=True,
    )

  def __call__(self):
    self.state, metrics = self.step(self.state, self.data)
    jax.block_until_ready((self.state, metrics))


def _torch_runner(a, step, batch, frames, size, dtype):
  """The PyTorch step, after checking its models against the JAX ones
  (bench/torch_peer.py: parameter counts and shapes)."""
  import torch_peer

  tstep, tsync, tinfo, _ = build_torch(
    batch,
    frames,
    size,
    dtype,
    a.torch_compile,
    width=a.width,
    optimizer=a.optimizer,
    step=step,
  )
  counts = torch_peer.check_against_jax(tinfo["modules"], a.width, NUM_CLASSES)
  what = "torchvision r2plus1d_18" if a.width == 1.0 else "bench/torch_peer.py"
  print(
    f"torch {tinfo['version']} on {tinfo['device']} "
    f"({tinfo['threads']} threads): {what} at width {a.width:g}, "
    f"{step}{f', {a.optimizer}' if step == 'pretrain' else ', adam'}; "
    f"parameters equal to JAX's: encoder {counts['encoder']:,}, "
    f"with the head {counts[step]:,}; first step {tinfo['compile_s']:.1f}"
    f" s{' (torch.compile)' if a.torch_compile else ''}",
    flush=True,
  )

  def torch_once():
    tstep()
    tsync()

  return torch_once


def run_config(a, step, batch, frames, size, dtype):
  """Builds every runner of ``step`` (``"pretrain"`` or ``"finetune"``),
  warms up, times them interleaved; prints."""
  transformer = models.family(a.encoder) != "resnet"
  if step == "mae" and not transformer:
    raise ValueError(f"--step mae needs a video transformer, not {a.encoder}")
  clips = 2 * batch if step == "pretrain" else batch
  print(
    f"\n== {step}: {a.encoder}, batch {batch} videos ({clips} clips), "
    f"{frames}x{size}x{size}, {dtype}"
    + ("" if transformer else f", width {a.width:g}"),
    flush=True,
  )
  runners = {}
  clips_of = {}  # encoder clips per step of each runner
  if step == "mae":  # beside the contrastive step of the same encoder
    runners["jax:mae"] = _JaxRunner(
      a, "mae", batch, frames, size, dtype, "auto"
    )
    runners["jax:contrastive"] = _JaxRunner(
      a, "pretrain", batch, frames, size, dtype, "auto"
    )
    clips_of["jax:contrastive"] = 2 * batch
  elif a.framework in ("both", "jax"):
    for low in a.lowering.split(",") if not transformer else ["-"]:
      runners[f"jax:{low}"] = _JaxRunner(
        a, step, batch, frames, size, dtype, "auto" if low == "-" else low
      )
  if (
    a.framework in ("both", "torch") and not transformer and step == "pretrain"
  ):
    runners["torch"] = _torch_runner(a, step, batch, frames, size, dtype)
  for _ in range(a.warmup):
    for fn in runners.values():
      fn()
  times = {k: [] for k in runners}
  for r in range(a.repeats):
    order = list(runners.items())
    if r % 2:
      order.reverse()  # alternate who goes first
    for k, fn in order:
      t0 = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t0)
  peak, how = device_peak_flops(dtype, a.peak_tflops)
  # XLA's FLOPs of the step (the first JAX runner's): the same maths as
  # PyTorch's step, so its MFU is counted with them too.
  jax_keys = [k for k in runners if k.startswith("jax")]
  flops = runners[jax_keys[0]].info["flops"] if jax_keys else float("nan")
  res, meds = {}, {}
  for k, ts in times.items():
    med = float(np.median(ts))
    n = clips_of.get(k, clips)
    res[k], meds[k] = n / med, med
    line = (
      f"  {k:14s} median {med:7.3f} s/step {n / med:8.2f} clips/s"
      f"  (steps: {', '.join(f'{t:.2f}' for t in ts)})"
    )
    if k.startswith("jax"):
      info = runners[k].info
      line += (
        f"\n        XLA cost analysis {info['flops'] / 1e9:.1f} GFLOP/step"
      )
      if a.width == 1.0 and a.encoder == "r2plus1d_18":
        forward = 2 * TV_GMAC_PER_CLIP * 1e9 * (frames / 16) * (size / 112) ** 2
        line += f" (analytic {3 * forward * clips / 1e9:.0f})"
      line += f", {info['flops'] / 1e9 / n:.2f} per clip"
      line += f"; MFU {100 * info['flops'] / med / peak:.2f}% of {how}"
      if step == "forward":
        line += (
          f"\n        {info['flops'] / 2e9 / clips:.2f} G multiply-adds "
          "per clip (XLA's FLOPs / 2)"
        )
      mem = info.get("xla_bytes")
      line += (
        f"\n        memory: XLA buffers {mem / 2**30:.2f} GiB"
        if mem is not None
        else "\n        memory: n/a"
      )
      dev_peak = jax_device_peak_bytes()
      if dev_peak:
        line += f", device peak (process) {dev_peak / 2**30:.2f} GiB"
    else:
      if jax_keys:
        line += (
          f"\n        MFU {100 * flops / med / peak:.2f}% (XLA's FLOPs of "
          "the JAX step)"
        )
      if _torch_cuda():
        import torch

        line += (
          f"\n        memory: peak allocated "
          f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
        )
    print(line, flush=True)
  if step == "mae":
    fl = {k: runners[k].info["flops"] for k in runners}
    per_clip = {k: fl[k] / clips_of.get(k, clips) for k in fl}
    clip_ratio = per_clip["jax:mae"] / per_clip["jax:contrastive"]
    print(
      "  masked autoencoding / contrastive: step time "
      f"{meds['jax:mae'] / meds['jax:contrastive']:.2f}x, "
      f"XLA FLOPs per step {fl['jax:mae'] / fl['jax:contrastive']:.2f}x, "
      f"per encoder clip {clip_ratio:.2f}x"
      f"; clips/s {res['jax:mae'] / res['jax:contrastive']:.2f}x",
      flush=True,
    )
  if "torch" in res:
    for k in res:
      if k != "torch":
        print(
          f"  ratio {k} / torch (clips/s): {res[k] / res['torch']:.2f}",
          flush=True,
        )
  return res


def _torch_cuda():
  try:
    import torch

    return torch.cuda.is_available()
  except ImportError:
    return False


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  gpu = jax.devices()[0].platform != "cpu"
  p.add_argument(
    "--batch",
    default="32,8" if gpu else "2",
    help="videos per step, one value or one per size",
  )
  p.add_argument("--frames", type=int, default=16)
  p.add_argument(
    "--encoder",
    default="r2plus1d_18",
    help="encoders, comma-separated, each run in turn: "
    + ", ".join(models.ENCODER_NAMES)
    + " (PyTorch peers: R(2+1)D only; transformers run JAX alone)",
  )
  p.add_argument(
    "--width",
    type=float,
    default=1.0,
    help="channel multiplier (PyTorch: torchvision's model at 1.0, else "
    "bench/torch_peer.py's)",
  )
  p.add_argument(
    "--step",
    default="pretrain",
    help="pretrain, finetune, forward (the encoder alone; JAX), mae "
    "(masked autoencoding beside the contrastive step; transformers, JAX "
    "only: --framework and --lowering do not apply), comma-separated",
  )
  p.add_argument(
    "--mask_ratio",
    type=float,
    default=0.9,
    help="--step mae: the share of tube positions masked (SVFAP: 0.9)",
  )
  p.add_argument(
    "--optimizer",
    choices=("sgd", "adam"),
    default="sgd",
    help="pretraining: the paper's SGD, or Adam 1e-3 (the CPU config)",
  )
  p.add_argument("--sizes", default="112,224" if gpu else "112")
  p.add_argument("--dtypes", default="bf16,fp32" if gpu else "fp32")
  p.add_argument("--repeats", type=int, default=10 if gpu else 5)
  p.add_argument("--warmup", type=int, default=3 if gpu else 1)
  p.add_argument(
    "--framework", choices=("both", "jax", "torch"), default="both"
  )
  p.add_argument(
    "--lowering",
    default="auto",
    help="VideoConv lowerings, comma-separated: auto | conv2d | matmul |"
    " spatial2d | conv3d, each optionally +ynnpack (XLA:CPU's own"
    " YNNPACK convolutions instead of the library's Eigen ones)",
  )
  p.add_argument("--torch_compile", action="store_true")
  p.add_argument("--peak_tflops", type=float, default=0.0)
  a = p.parse_args()
  steps = [st.strip() for st in a.step.split(",") if st.strip()]
  for st in steps:
    if st not in ("pretrain", "finetune", "forward", "mae"):
      p.error(f"--step: pretrain, finetune, forward or mae, got {st!r}")
  sizes = [int(s) for s in a.sizes.split(",")]
  batches = [int(b) for b in a.batch.split(",")]
  if len(batches) == 1:
    batches *= len(sizes)
  print(
    f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
    f"{len(os.sched_getaffinity(0))} CPU cores; median of {a.repeats}"
  )
  encoders = [e.strip() for e in a.encoder.split(",") if e.strip()]
  for e in encoders:
    if e not in models.ENCODER_NAMES:
      p.error(f"--encoder: one of {', '.join(models.ENCODER_NAMES)}, got {e!r}")
  with timing.MachineLoad() as load:
    for step, encoder in itertools.product(steps, encoders):
      a.encoder = encoder
      for size, batch in zip(sizes, batches):
        for dtype in a.dtypes.split(","):
          try:
            run_config(a, step, batch, a.frames, size, dtype)
          except AssertionError:  # PyTorch and JAX models differ: stop
            raise
          except Exception as e:  # noqa: BLE001 (e.g. out of memory: go on)
            print(f"  failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
  print(load.summary())


if __name__ == "__main__":
  main()
