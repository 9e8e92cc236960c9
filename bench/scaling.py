"""Benchmark: scaling of the ST-CLR step on 8 fake CPU devices.

Run as a script: it sets ``--xla_force_host_platform_device_count=8``
before JAX is imported. Two parts, on a ``Mesh(('data',))`` of 8 devices:

* ``loss``: the NT-Xent of ``stclr_jax.losses.nt_xent_sharded``
  (all-gather of both views' 128-d embeddings in shard_map, local anchors x
  global candidates, value and gradient) at global batch 256, 1024, 4096,
  and the all-gather alone. Its share of a step is reported against the
  model part of the step (encoder + head + update), measured at a small
  global batch with the library's step and scaled linearly in the batch
  (stated as such: a 4096-video encoder step does not fit this CPU).
* ``step``: the library's full step (``stclr_jax.train_step.make_train_step``)
  on the 8-device mesh, against global batch and against clip length.

All 8 "devices" share the host's cores, so absolute times are the host's;
shares and growth factors are what to read.

  python bench/scaling.py [--part loss,step --width 0.25 --size 64]
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import argparse  # noqa: E402
import functools  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import timing  # noqa: E402  (bench/timing.py)
import train_step as step_bench  # noqa: E402  (bench/train_step.py)

from stclr_jax import losses as losses_lib  # noqa: E402


def loss_times(mesh, global_batch, repeats, dim=128):
  shard = NamedSharding(mesh, P("data"))
  ka, kb = jax.random.split(jax.random.key(global_batch))
  z_a = jax.device_put(jax.random.normal(ka, (global_batch, dim)), shard)
  z_b = jax.device_put(jax.random.normal(kb, (global_batch, dim)), shard)
  loss_fn = losses_lib.sharded(
    functools.partial(losses_lib.nt_xent_sharded, temperature=0.1), mesh
  )
  grad = jax.jit(
    jax.value_and_grad(lambda a, b: loss_fn(a, b)[0], argnums=(0, 1))
  )

  def gather(a, b):
    return (
      jax.lax.all_gather(a, "data", tiled=True),
      jax.lax.all_gather(b, "data", tiled=True),
    )

  gathered = jax.jit(
    jax.shard_map(
      gather,
      mesh=mesh,
      in_specs=(P("data"),) * 2,
      out_specs=(P(),) * 2,
      check_vma=False,
    )
  )
  t_loss = timing.median_seconds(lambda: grad(z_a, z_b), repeats)
  t_gather = timing.median_seconds(lambda: gathered(z_a, z_b), repeats)
  return t_loss, t_gather


def model_step_time(mesh, batch, frames, size, width, repeats):
  """Seconds per full library step on ``mesh`` (global ``batch`` videos)."""
  step, state, data, info = step_bench.build_jax(
    batch, frames, size, "fp32", width=width, devices=mesh.devices.ravel()
  )
  holder = {"state": state}

  def once():
    holder["state"], metrics = step(holder["state"], data)
    return holder["state"], metrics

  return timing.median_seconds(once, repeats), info["compile_s"]


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--part", default="loss,step")
  p.add_argument("--width", type=float, default=0.25)
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--frames", type=int, default=8)
  p.add_argument(
    "--batches",
    default="8,16,32",
    help="global batches of the full-step growth table",
  )
  p.add_argument("--clip_lens", default="4,8,16")
  p.add_argument("--repeats", type=int, default=3)
  a = p.parse_args()
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  print(
    f"jax {jax.__version__}, {mesh.size} {jax.devices()[0].platform} "
    f"devices on {len(os.sched_getaffinity(0))} cores; model: "
    f"R(2+1)D-18 width {a.width}, fp32; median of {a.repeats}"
  )
  parts = a.part.split(",")
  if "loss" in parts:
    ref_b = 8
    t_ref, _ = model_step_time(
      mesh, ref_b, a.frames, a.size, a.width, a.repeats
    )
    per_video = t_ref / ref_b
    print(
      f"\nfull step at global batch {ref_b}, {a.frames}x{a.size}^2: "
      f"{t_ref:.2f} s ({per_video:.3f} s per video, used to scale)"
    )
    print(
      "global batch | NT-Xent fwd+bwd | all-gather | model (scaled) |"
      " loss share"
    )
    for gb in (256, 1024, 4096):
      t_loss, t_gather = loss_times(mesh, gb, a.repeats)
      t_model = per_video * gb
      print(
        f"{gb:12d} | {1000 * t_loss:12.1f} ms | {1000 * t_gather:7.2f} ms"
        f" | {t_model:11.1f} s | "
        f"{100 * t_loss / (t_loss + t_model):8.3f}%",
        flush=True,
      )
  if "step" in parts:
    print(f"\nstep time against global batch ({a.frames}x{a.size}^2):")
    base = None
    for gb in [int(b) for b in a.batches.split(",")]:
      t, c = model_step_time(mesh, gb, a.frames, a.size, a.width, a.repeats)
      base = base or t / gb
      print(
        f"  batch {gb:4d}: {t:7.2f} s/step  x{t / gb / base:.2f} per "
        f"video vs the first  (compile {c:.0f} s)",
        flush=True,
      )
    print(f"step time against clip length (global batch 8, {a.size}^2):")
    base = None
    for t_len in [int(t) for t in a.clip_lens.split(",")]:
      t, c = model_step_time(mesh, 8, t_len, a.size, a.width, a.repeats)
      base = base or t / t_len
      print(
        f"  {t_len:3d} frames: {t:7.2f} s/step  x{t / t_len / base:.2f} "
        f"per frame vs the first  (compile {c:.0f} s)",
        flush=True,
      )


if __name__ == "__main__":
  main()
