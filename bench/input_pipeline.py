"""Benchmark: two-view ST-CLR input pipeline throughput, and whether it keeps
up with the model step on the same host.

Builds the pretraining pipeline of configs/stclr_synthetic.py (all temporal
samplers, crop, flip, colour in tf.data) at each ``--sizes`` (clip length
``--clip_len``), runs one warm-up epoch (fills the in-memory cache), then
times ``--batches`` batches. Prints two-view clips/s (videos/s) and per CPU
core.

With ``--with_model`` it then runs, at the same configuration, (a) the
library's jitted train step alone on a fixed device batch and (b) the
training loop as ``train.pretrain`` runs it (next host batch ->
global arrays -> step), reporting the time the loop waited for input. The
input keeps up when (b) runs at (a)'s rate and the wait is small.

  python bench/input_pipeline.py [--batches 30 --batch_size 16]
  # the demo's size (configs/stclr_synthetic.py: 8x64x64, width 0.25):
  python bench/input_pipeline.py --clip_len 8 --sizes 64 --with_model
"""

import argparse
import importlib.util
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  spec = importlib.util.spec_from_file_location(
    "cfg", os.path.join(ROOT, "configs", "stclr_synthetic.py")
  )
  m = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(m)
  return m.get_config()


def _iterator(c, input_lib, batch_size):
  ds, n = input_lib.pretrain_input(c, process_index=0, process_count=1)
  it = ds.as_numpy_iterator()
  for _ in range(-(-n // batch_size)):  # one epoch: fills the cache
    next(it)
  return it


def _model_vs_input(c, it, batches):
  import jax
  import numpy as np

  from stclr_jax import mesh as mesh_lib
  from stclr_jax import optim as optim_lib
  from stclr_jax import train as train_lib

  mesh = mesh_lib.make_mesh()
  lr_fn = optim_lib.schedule(c.optim, 100, 1000)
  tx = optim_lib.make_optimizer(c.optim, lr_fn)
  graphdef, state, _ = train_lib.create_state(c, mesh, tx)
  step = train_lib.make_train_step(c, mesh, graphdef, tx, lr_fn, state)

  def device_batch():
    b = next(it)
    return mesh_lib.to_global_arrays(
      {"view_a": b["view_a"], "view_b": b["view_b"]}, mesh
    )

  fixed = device_batch()
  t0 = time.perf_counter()
  state, m = step(state, fixed)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  ts = []
  for _ in range(max(3, batches // 3)):
    t0 = time.perf_counter()
    state, m = step(state, fixed)
    jax.block_until_ready(m)
    ts.append(time.perf_counter() - t0)
  alone = float(np.median(ts))
  # The loop of train.pretrain: dispatch step t, then read step t-1.
  waited, pending = 0.0, None
  t_start = time.perf_counter()
  for _ in range(batches):
    t0 = time.perf_counter()
    batch = device_batch()
    waited += time.perf_counter() - t0
    state, m = step(state, batch)
    if pending is not None:
      jax.device_get(pending)
    pending = m
  jax.block_until_ready(pending)
  loop = (time.perf_counter() - t_start) / batches
  bs = c.batch_size
  print(
    f"  model step alone: {alone:6.2f} s/step = {bs / alone:6.1f} "
    f"videos/s (compile {compile_s:.0f} s)"
  )
  print(
    f"  training loop:    {loop:6.2f} s/step = {bs / loop:6.1f} "
    f"videos/s; waited for input {waited / batches:.2f} s/step "
    f"({100 * waited / batches / loop:.0f}%)"
  )


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--batches", type=int, default=30)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--clip_len", type=int, default=16)
  p.add_argument("--sizes", default="112,224")
  p.add_argument("--data_dir", default="")
  p.add_argument("--with_model", action="store_true")
  a = p.parse_args()
  from stclr_jax.data import input as input_lib

  cores = len(os.sched_getaffinity(0))
  print(
    f"{cores} CPU cores; synthetic_expressions (80 subjects x 6, "
    f"112x112 frames); batch {a.batch_size} videos = 2 views each"
  )
  for size in [int(s) for s in a.sizes.split(",")]:
    c = _config()
    c.data.clip_len, c.data.size, c.batch_size = a.clip_len, size, a.batch_size
    c.data.data_dir = a.data_dir
    it = _iterator(c, input_lib, a.batch_size)
    t0 = time.perf_counter()
    for _ in range(a.batches):
      b = next(it)
    dt = time.perf_counter() - t0
    clips = a.batches * a.batch_size
    print(
      f"{a.clip_len}x{size}x{size}: input alone {clips / dt:7.1f} "
      f"two-view clips/s, {clips / dt / cores:6.1f} per core "
      f"({b['view_a'].shape} x2 per batch)",
      flush=True,
    )
    if a.with_model:
      print(
        f"  model: {c.model.encoder} width {c.model.width}, "
        f"{c.model.dtype}, {c.optim.name}"
      )
      _model_vs_input(c, it, a.batches)


if __name__ == "__main__":
  main()
