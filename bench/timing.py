"""Timing for the benchmarks: :func:`median_seconds` times a call side by
side with others in one run, and :class:`MachineLoad` says whether the
machine was quiet meanwhile (Linux ``/proc``).

A speed figure measured while other jobs share the cores measures the
contention, not the code. :class:`MachineLoad` records, around a run:

* the 1-minute load average before and after;
* the machine's idle share during the run (idle + iowait time over all CPU
  time, from ``/proc/stat``);
* the share of all CPU time used by *other* processes: the machine's busy
  time minus this process's own (all its threads, from ``/proc/self/stat``),
  over all CPU time. A benchmark that saturates the cores leaves little
  idle time by itself, so this, not the idle share, tells contention.

The result is flagged unreliable when the other processes' share exceeds
``max_others`` (default 10% of the CPU time): something else ran during it.
The load averages are printed beside it but do not decide: the 1-minute
average decays over minutes, so right after a previous benchmark it is
high with the machine already quiet (seen: 1.0 before a run whose other
processes took 1.7% of the CPU time).
"""

from __future__ import annotations

import os
import time

import numpy as np


def _wait(out):
  """Blocks until ``out``'s JAX arrays are computed (JAX dispatches
  asynchronously); other values pass through. JAX is imported only when
  the process already has it, so TensorFlow- or torch-only scripts can use
  this module."""
  import sys

  jax = sys.modules.get("jax")
  if jax is not None:
    jax.block_until_ready(out)
  return out


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
  """The median wall time of ``fn()`` over ``repeats`` calls, after
  ``warmup`` untimed calls (compilation, caches). JAX results are waited
  for inside the timed span."""
  if repeats < 1:
    raise ValueError(f"repeats must be at least 1, got {repeats}")
  for _ in range(warmup):
    _wait(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    _wait(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _cpu_times() -> tuple[float, float]:
  """(all CPU time, idle + iowait time) of the machine, in clock ticks."""
  with open("/proc/stat") as f:
    fields = [float(v) for v in f.readline().split()[1:]]
  # user nice system idle iowait irq softirq steal [guest guest_nice]; the
  # guest times are already counted in user and nice.
  total = sum(fields[:8])
  return total, fields[3] + fields[4]


def _own_time() -> float:
  """This process's CPU time (user + system, all threads), in clock ticks."""
  with open("/proc/self/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  return float(fields[11]) + float(fields[12])  # utime, stime


def _load() -> float:
  return os.getloadavg()[0]


class MachineLoad:
  """``with MachineLoad() as load: ...``; then ``load.summary()`` and
  ``load.reliable``."""

  def __init__(self, max_others: float = 0.10):
    self.max_others = max_others
    self.load_before = self.load_after = float("nan")
    self.idle_share = self.others_share = float("nan")
    self.seconds = 0.0

  def __enter__(self):
    self.load_before = _load()
    self._t0 = time.time()
    self._cpu0, self._own0 = _cpu_times(), _own_time()
    return self

  def __exit__(self, *exc):
    (total1, idle1), own1 = _cpu_times(), _own_time()
    total = max(total1 - self._cpu0[0], 1e-9)
    idle = idle1 - self._cpu0[1]
    self.idle_share = idle / total
    self.others_share = max(0.0, (total - idle - (own1 - self._own0)) / total)
    self.load_after = _load()
    self.seconds = time.time() - self._t0

  @property
  def reliable(self) -> bool:
    return self.others_share <= self.max_others

  def summary(self) -> str:
    flag = (
      "quiet"
      if self.reliable
      else f"UNRELIABLE (other processes above {100 * self.max_others:.0f}%)"
    )
    return (
      f"machine: load average {self.load_before:.2f} before, "
      f"{self.load_after:.2f} after; idle {100 * self.idle_share:.0f}%"
      f", other processes {100 * self.others_share:.1f}% of CPU time "
      f"over {self.seconds:.0f} s: {flag}"
    )
