"""Benchmark: how much of the pretraining step is convolutions, JAX against
PyTorch, and the best JAX/PyTorch ratio XLA's convolution kernels allow.

Every convolution of the library's pretraining step (forward, input
gradient, kernel gradient) is read from the step's traced jaxpr, with its
operand shapes and dimension numbers, and re-run on random operands of
those shapes, grouped by kind, each group as one ``jax.jit`` compiled with
the library's compiler options (``compiler.xla_compiler_options``: on the CPU,
Eigen's convolutions) and, for comparison, with XLA's defaults (YNNPACK's).
Within a group the convolutions run one after the other, as in the step.
The whole step is timed beside them. PyTorch's step is the peer of
bench/train_step.py (same model, head, loss, optimiser), timed without and
then with ``torch.profiler``, whose self times of the convolution operators
give its convolution share.

The bound printed last: if everything in the JAX step but its convolutions
took no time, JAX/PyTorch in clips/s would be PyTorch's step time over the
JAX convolutions' time. A ratio goal above that bound cannot be met with
these convolution kernels, whatever else is done to the step.

  # the CPU size (configs/stclr_synthetic.py's model and step):
  python bench/step_convolutions.py
  # the paper's size:
  python bench/step_convolutions.py --width 1 --frames 16 --size 112 \\
      --batch 2 --optimizer sgd

Figures: BENCHMARKS.md, "What the convolutions cost".
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.dirname(os.path.abspath(__file__))
for path in (ROOT, BENCH):
  if path not in sys.path:
    sys.path.insert(0, path)

import timing  # noqa: E402
import train_step as step_bench  # noqa: E402

from stclr_jax import (
  compiler,  # noqa: E402
)

KINDS = ("forward", "input gradient", "kernel gradient")


def _sub_jaxprs(value):
  """The jaxprs held by an equation parameter (jit, shard_map, custom_vjp,
  remat, ...)."""
  for v in value if isinstance(value, (list, tuple)) else (value,):
    inner = getattr(v, "jaxpr", None)
    if inner is not None and hasattr(inner, "eqns"):  # ClosedJaxpr
      yield inner
    elif hasattr(v, "eqns"):  # Jaxpr
      yield v


def convolutions(jaxpr) -> list[tuple]:
  """``[(lhs aval, rhs aval, params), ...]``: every ``conv_general_dilated``
  of ``jaxpr``, nested jaxprs included, in program order."""
  found = []

  def walk(j):
    for eqn in j.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        found.append((eqn.invars[0].aval, eqn.invars[1].aval, eqn.params))
      for value in eqn.params.values():
        for sub in _sub_jaxprs(value):
          walk(sub)

  walk(jaxpr)
  return found


def classify(convs, forward_numbers) -> dict[str, list[tuple]]:
  """The convolutions by kind, from their dimension numbers against the
  forward convolutions' ``forward_numbers`` (a ConvDimensionNumbers):
  JAX's transpose of a convolution for the input keeps the input's layout
  and swaps the kernel's in/out dimensions; for the kernel it contracts
  over the batch (the lhs batch dimension is the layout's feature one)."""
  lhs, rhs, _ = forward_numbers
  swapped = (rhs[1], rhs[0], *rhs[2:])
  kinds = {k: [] for k in KINDS}
  for conv in convs:
    dn = conv[2]["dimension_numbers"]
    if tuple(dn.lhs_spec) == tuple(lhs) and tuple(dn.rhs_spec) == tuple(rhs):
      kinds["forward"].append(conv)
    elif tuple(dn.lhs_spec) == tuple(lhs) and tuple(dn.rhs_spec) == swapped:
      kinds["input gradient"].append(conv)
    elif dn.lhs_spec[0] == lhs[1]:
      kinds["kernel gradient"].append(conv)
    else:
      raise ValueError(f"a convolution of unknown kind: {dn}")
  return kinds


def forward_numbers(convs):
  """The dimension numbers of the step's forward convolutions: those of
  its first convolution (the stem's, which comes first in program
  order)."""
  return convs[0][2]["dimension_numbers"]


def runner(convs, compiler_options):
  """``(jitted fn, operands)``: ``fn(operands)`` runs every convolution of
  ``convs`` on random operands of their shapes, in one jit, one after the
  other."""
  keys = jax.random.split(jax.random.key(2), 2 * max(len(convs), 1))
  operands = [
    (
      jax.random.normal(keys[2 * i], lhs.shape, lhs.dtype),
      jax.random.normal(keys[2 * i + 1], rhs.shape, rhs.dtype),
    )
    for i, (lhs, rhs, _) in enumerate(convs)
  ]
  params = [p for _, _, p in convs]

  def run(ops):
    # One after the other, as in the step, where each convolution waits
    # for the last: the barrier makes each one's operands depend on the
    # previous output (XLA would otherwise run independent ones at once).
    out, prev = [], None
    for (x, w), p in zip(ops, params):
      if prev is not None:
        x, w, _ = jax.lax.optimization_barrier((x, w, prev))
      prev = jax.lax.conv_general_dilated_p.bind(x, w, **p)
      out.append(prev)
    return out

  return jax.jit(run, compiler_options=compiler_options), operands


def torch_times(a) -> dict[str, float]:
  """PyTorch's step: median seconds unprofiled, then per-step self CPU
  seconds of its convolution operators under ``torch.profiler``."""
  step, sync, info, torch = step_bench.build_torch(
    a.batch,
    a.frames,
    a.size,
    "fp32",
    False,
    width=a.width,
    optimizer=a.optimizer,
  )
  for _ in range(2):
    step()
  sync()
  times = []
  for _ in range(a.repeats):
    t0 = time.perf_counter()
    step()
    sync()
    times.append(time.perf_counter() - t0)
  from torch.profiler import ProfilerActivity, profile

  n = 3
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    t0 = time.perf_counter()
    for _ in range(n):
      step()
    sync()
    profiled = (time.perf_counter() - t0) / n
  self_s = collections.Counter()
  for ev in prof.key_averages():
    name = ev.key.lower()
    if "conv" not in name:
      continue
    kind = "backward" if "backward" in name else "forward"
    self_s[kind] += ev.self_cpu_time_total / 1e6 / n
  return {
    "step": float(np.median(times)),
    "profiled step": profiled,
    "forward": self_s["forward"],
    "backward": self_s["backward"],
    "threads": info["threads"],
    "version": info["version"],
  }


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--width", type=float, default=0.25)
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--size", type=int, default=48)
  p.add_argument("--batch", type=int, default=16, help="videos per step")
  p.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
  p.add_argument("--lowering", default="auto")
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--no_torch", action="store_true")
  a = p.parse_args()
  platform = jax.devices()[0].platform
  library = compiler.xla_compiler_options(platform)
  print(
    f"jax {jax.__version__} on {platform}; R(2+1)D-18 width {a.width}, "
    f"{a.batch} videos x 2 views of {a.frames}x{a.size}x{a.size}, "
    f"lowering {a.lowering}; XLA_FLAGS="
    f"{os.environ.get('XLA_FLAGS', '')!r}; median of {a.repeats}",
    flush=True,
  )
  with timing.MachineLoad() as load:
    step, state, data, _ = step_bench.jax_pretrain_step(
      a.batch,
      a.frames,
      a.size,
      "fp32",
      a.width,
      None,
      a.lowering,
      a.optimizer,
    )
    convs = convolutions(step.trace(state, data).jaxpr)
    kinds = classify(convs, forward_numbers(convs))
    compiled = step.lower(state, data).compile()
    holder = {"state": state}

    def one_step():
      holder["state"], metrics = compiled(holder["state"], data)
      return metrics

    jax_step = timing.median_seconds(one_step, a.repeats, warmup=2)
    rows = {}
    for label, options in (("library", library), ("XLA default", None)):
      if label == "XLA default" and library is None:
        continue  # the library's options are XLA's defaults here
      for kind in (*KINDS, "all"):
        group = convs if kind == "all" else kinds[kind]
        fn, ops = runner(group, options)
        seconds = timing.median_seconds(
          functools.partial(fn, ops), a.repeats, warmup=2
        )
        rows[(label, kind)] = (len(group), seconds)
    peer = None if a.no_torch else torch_times(a)
  print(f"\nJAX step (the library's, compiled): {jax_step:.3f} s")
  print(
    f"  {'convolutions, each group in one jit':38s} {'n':>4s} "
    f"{'library':>9s} {'XLA dflt':>9s}"
  )
  for kind in (*KINDS, "all"):
    n, lib_s = rows[("library", kind)]
    dflt = rows.get(("XLA default", kind))
    dflt_s = f"{dflt[1]:9.3f}" if dflt else f"{'-':>9s}"
    print(f"  {kind:38s} {n:4d} {lib_s:9.3f} {dflt_s}")
  conv_s = rows[("library", "all")][1]
  no_wgrad_s = (
    rows[("library", "forward")][1] + rows[("library", "input gradient")][1]
  )
  print(
    f"  everything else in the step: {jax_step - conv_s:.3f} s "
    f"({100 * (1 - conv_s / jax_step):.0f}%)"
  )
  if peer is not None:
    torch_conv = peer["forward"] + peer["backward"]
    share = torch_conv / peer["profiled step"]
    print(
      f"\nPyTorch {peer['version']} ({peer['threads']} threads) step: "
      f"{peer['step']:.3f} s; under its profiler "
      f"{peer['profiled step']:.3f} s, of which convolutions (operators' "
      f"self time) {torch_conv:.3f} s = {100 * share:.0f}% (forward "
      f"{peer['forward']:.3f}, backward {peer['backward']:.3f})"
    )
    print(
      f"\nratio now (JAX/PyTorch, clips/s): {peer['step'] / jax_step:.2f}\n"
      "bound if all but the JAX convolutions took no time: "
      f"{peer['step'] / conv_s:.2f}\n"
      "bound if the kernel gradients took no time as well: "
      f"{peer['step'] / no_wgrad_s:.2f}"
    )
  print(load.summary())


if __name__ == "__main__":
  main()
