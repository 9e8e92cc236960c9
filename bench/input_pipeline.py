"""Benchmark: two-view ST-CLR input pipeline throughput on synthetic data.

Builds the pretraining pipeline of configs/stclr_synthetic.py (all temporal
samplers, crop, flip, colour in tf.data) at 16x112x112 and 16x224x224, runs
one warm-up epoch (fills the in-memory cache), then times ``--batches``
batches. Prints two-view clips/s and clips/s per CPU core.

  python bench/input_pipeline.py [--batches 30 --batch_size 16]
"""
import argparse
import importlib.util
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  spec = importlib.util.spec_from_file_location(
      "cfg", os.path.join(ROOT, "configs", "stclr_synthetic.py"))
  m = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(m)
  return m.get_config()


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--batches", type=int, default=30)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--data_dir", default="")
  a = p.parse_args()
  from stclr_jax.data import input as input_lib
  cores = len(os.sched_getaffinity(0))
  print(f"{cores} CPU cores; synthetic_expressions (80 subjects x 6, "
        f"112x112 frames); batch {a.batch_size} videos = 2 views each")
  for size in (112, 224):
    c = _config()
    c.data.clip_len, c.data.size, c.batch_size = 16, size, a.batch_size
    c.data.data_dir = a.data_dir
    ds, n = input_lib.pretrain_input(c, process_index=0, process_count=1)
    it = ds.as_numpy_iterator()
    for _ in range(-(-n // a.batch_size)):   # one epoch: fills the cache
      next(it)
    t0 = time.perf_counter()
    for _ in range(a.batches):
      b = next(it)
    dt = time.perf_counter() - t0
    clips = a.batches * a.batch_size
    print(f"16x{size}x{size}: {clips / dt:7.1f} two-view clips/s, "
          f"{clips / dt / cores:6.1f} per core "
          f"({b['view_a'].shape} x2 per batch)")


if __name__ == "__main__":
  main()
