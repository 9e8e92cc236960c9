"""Benchmark: the full ST-CLR pretraining step, JAX against PyTorch.

One step = two views of ``--batch`` videos through R(2+1)D-18 (one encoder
pass over the ``2 * batch`` interleaved clips, global BatchNorm), the
projection head (512 -> 512 -> 128), NT-Xent (temperature 0.1) and an SGD
update (momentum 0.9, weight decay 1e-4 added to the gradient, as PyTorch).

* JAX: the library's own step, ``stclr_jax.train_step.make_train_step`` (a
  ``jax.jit`` over split NNX state, donated, NT-Xent in ``shard_map`` on a
  one-device mesh). The module is TensorFlow- and ml-collections-free, so
  the same step runs on the GPU image.
* PyTorch: torchvision's ``r2plus1d_18`` (``fc`` removed; its parameter
  count is checked: 31,300,125) + the same head, loss and SGD step. On GPU:
  AMP bf16 autocast (for ``bf16``), channels_last_3d, cudnn.benchmark and,
  with ``--torch_compile``, torch.compile.

Both run in one process, on synthetic clips already on the device,
interleaved repeat by repeat after warm-up; medians are reported, with the
clips/s ratio JAX / PyTorch. "clips" are encoder clips (two per video).

Reported: clips/s, compile time (JAX: lower + compile; PyTorch: first step,
or torch.compile's first step), peak device memory (JAX: XLA's buffer
assignment of the compiled step, and the allocator's peak where the device
reports one; PyTorch: ``torch.cuda.max_memory_allocated``), and MFU with the
FLOPs of XLA's cost analysis of the compiled step against a stated peak
(``--peak_tflops``; defaults: H100/H200 989 TFLOP/s bf16 and 67 fp32; on CPU,
cores x clock x 32 fp32 FLOP/cycle for AVX2+FMA, 64 with AVX-512, an
assumption printed with the result). The analytic count from torchvision's
model card (40.5 G multiply-adds per 16x112x112 clip forward, x3 for a
training step) is printed beside it.

  # CPU (feasible on 2 cores):
  python bench/train_step.py --batch 2 --sizes 112 --dtypes fp32 --repeats 5
  # GPU, one command (defaults: 16x112 and 16x224, bf16 and fp32):
  python bench/train_step.py --torch_compile

It ends with the machine's load during the run (``bench/quiet.py``) and
flags the figures UNRELIABLE when other jobs shared the cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import quiet  # noqa: E402  (bench/quiet.py: was the machine quiet?)

# bench/torch_reference.py: the PyTorch step, and the settings both share.
from torch_reference import (  # noqa: E402
  LR,
  MOMENTUM,
  TEMPERATURE,
  WEIGHT_DECAY,
  build_torch,
)

from stclr_jax import mesh as mesh_lib  # noqa: E402
from stclr_jax import models  # noqa: E402
from stclr_jax import train_step as train_step_lib  # noqa: E402

TV_GMAC_PER_CLIP = 40.5  # torchvision r2plus1d_18, 16x112x112


# ----------------------------------------------------------------- JAX side
def build_jax(
  batch, frames, size, dtype, width=1.0, devices=None, lowering="auto"
):
  """Returns (compiled step, state, batch, info dict); the batch is sharded
  over ``devices`` (default: the first device)."""
  compute = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[dtype]
  rngs = nnx.Rngs(0)
  encoder = models.make_encoder(
    "r2plus1d_18", width=width, dtype=compute, conv_lowering=lowering, rngs=rngs
  )
  model = models.ContrastiveModel(encoder, proj_dim=128, rngs=rngs)
  tx = optax.chain(
    optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(LR, momentum=MOMENTUM)
  )
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
    optax.constant_schedule(LR),
    state,
    temperature=TEMPERATURE,
  )
  which = "stclr_jax.train_step.make_train_step"
  t0 = time.perf_counter()
  compiled = step.lower(state, data).compile()
  compile_s = time.perf_counter() - t0
  info = {"which": which, "compile_s": compile_s}
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
  return compiled, state, data, info


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


class _JaxRunner:
  """One compiled JAX step and its (donated) state."""

  def __init__(self, a, batch, frames, size, dtype, lowering):
    self.step, self.state, self.data, self.info = build_jax(
      batch, frames, size, dtype, width=a.width, lowering=lowering
    )
    print(
      f"jax {jax.__version__} {jax.devices()[0].device_kind}: "
      f"{self.info['which']}, lowering {lowering!r}; compile "
      f"{self.info['compile_s']:.1f} s",
      flush=True,
    )

  def __call__(self):
    self.state, metrics = self.step(self.state, self.data)
    jax.block_until_ready((self.state, metrics))


def run_config(a, batch, frames, size, dtype):
  """Builds every runner, warms up, times them interleaved; prints."""
  print(
    f"\n== batch {batch} videos ({2 * batch} clips), {frames}x{size}x"
    f"{size}, {dtype}",
    flush=True,
  )
  runners = {}
  if a.framework in ("both", "jax"):
    for low in a.lowering.split(","):
      runners[f"jax:{low}"] = _JaxRunner(a, batch, frames, size, dtype, low)
  if a.framework in ("both", "torch"):
    tstep, tsync, tinfo, _ = build_torch(
      batch, frames, size, dtype, a.torch_compile
    )
    print(
      f"torch {tinfo['version']} on {tinfo['device']} "
      f"({tinfo['threads']} threads): first step {tinfo['compile_s']:.1f}"
      f" s{' (torch.compile)' if a.torch_compile else ''}",
      flush=True,
    )

    def torch_once():
      tstep()
      tsync()

    runners["torch"] = torch_once
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
  clips = 2 * batch
  res = {}
  for k, ts in times.items():
    med = float(np.median(ts))
    res[k] = clips / med
    line = (
      f"  {k:14s} median {med:7.3f} s/step {clips / med:8.2f} clips/s"
      f"  (steps: {', '.join(f'{t:.2f}' for t in ts)})"
    )
    if k.startswith("jax"):
      info = runners[k].info
      peak, how = device_peak_flops(dtype, a.peak_tflops)
      flops = info["flops"]
      analytic = (
        3
        * 2
        * TV_GMAC_PER_CLIP
        * 1e9
        * clips
        * (frames / 16)
        * (size / 112) ** 2
      )
      line += (
        f"\n        XLA cost analysis {flops / 1e9:.0f} GFLOP/step "
        f"(analytic {analytic / 1e9:.0f}); MFU "
        f"{100 * flops / med / peak:.2f}% of {how}"
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
    elif _torch_cuda():
      import torch

      line += (
        f"\n        memory: peak allocated "
        f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
      )
    print(line, flush=True)
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
    "--width",
    type=float,
    default=1.0,
    help="channel multiplier (JAX only unless 1.0)",
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
    help="VideoConv lowering: auto | matmul | spatial2d | conv3d",
  )
  p.add_argument("--torch_compile", action="store_true")
  p.add_argument("--peak_tflops", type=float, default=0.0)
  a = p.parse_args()
  if a.width != 1.0 and a.framework != "jax":
    print(f"--width {a.width}: torchvision has no width multiplier; JAX only")
    a.framework = "jax"
  sizes = [int(s) for s in a.sizes.split(",")]
  batches = [int(b) for b in a.batch.split(",")]
  if len(batches) == 1:
    batches *= len(sizes)
  print(
    f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
    f"{len(os.sched_getaffinity(0))} CPU cores; median of {a.repeats}"
  )
  with quiet.MachineLoad() as load:
    for size, batch in zip(sizes, batches):
      for dtype in a.dtypes.split(","):
        try:
          run_config(a, batch, a.frames, size, dtype)
        except Exception as e:  # noqa: BLE001 (e.g. out of memory: go on)
          print(f"  failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
  print(load.summary())


if __name__ == "__main__":
  main()
