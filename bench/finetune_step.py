"""Where a fine-tuning step's time goes, at the synthetic benchmark's size
(``configs/finetune_synthetic.py``: width-0.25 R(2+1)D-18, 8x48x48 clips
from 64 px videos, batch 16), side by side in one run:

* ``step``: the jitted fine-tuning step alone, on one batch already on the
  device;
* ``input``: the host's labelled stream alone (``labelled_stream``: clip
  sampling, crop, flip, batching), with nothing else running;
* ``loop``: the two together as ``evaluation/finetune.py`` runs them (the
  stream prefetched, batches sent to the mesh, the mean loss read back
  every ``--per_epoch`` steps: 2 at 10% labels, 27 at 100%).

Each figure is the median over ``--repeats`` blocks of ``--steps`` steps,
in seconds per step. The videos are random uint8 frames of the synthetic
data's sizes (no data set to build). Check the machine is quiet first
(``uptime``); the figures print the load measured during the run.

  python bench/finetune_step.py [--steps=20 --repeats=5 --per_epoch=2,27]
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _videos(n, size, seed=0):
  import numpy as np
  import tensorflow as tf

  rng = np.random.default_rng(seed)
  lengths = rng.integers(12, 25, n)

  def gen():
    for i, t in enumerate(lengths):
      yield {
        "video": rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8),
        "num_frames": np.int32(t),
        "label": np.int64(i % 6),
      }

  sig = {
    "video": tf.TensorSpec([None, size, size, 3], tf.uint8),
    "num_frames": tf.TensorSpec([], tf.int32),
    "label": tf.TensorSpec([], tf.int64),
  }
  return tf.data.Dataset.from_generator(gen, output_signature=sig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--videos", type=int, default=42)
  p.add_argument("--per_epoch", default="2,27")
  a = p.parse_args(argv)
  sys.path.insert(0, os.path.join(ROOT, "bench"))
  sys.path.insert(0, ROOT)
  import jax
  import numpy as np
  import timing
  from flax import nnx

  from configs import finetune_synthetic
  from stclr_jax import mesh as mesh_lib
  from stclr_jax.evaluation import finetune
  from stclr_jax.evaluation import input as eval_input
  from stclr_jax.evaluation import runner as runner_lib
  from stclr_jax.models import factory

  c = finetune_synthetic.get_config()
  ev = c.eval
  mesh = mesh_lib.make_mesh()
  pretrained = factory.create_model(c, mesh.size)
  model = runner_lib.Classifier(pretrained.encoder, 6, rngs=nnx.Rngs(1))
  runner = runner_lib.runner_for(model, mesh, c.data.mean, c.data.std)
  params = jax.device_get(nnx.state(model, nnx.Param))
  stats = jax.device_get(nnx.state(model, nnx.BatchStat))
  tx, step_fn = runner.make_train_step(1e-4)
  store = eval_input.video_store(_videos(a.videos, 64), a.videos, "bench")
  idx = np.arange(a.videos)
  total = a.steps * (a.repeats + 1)

  def stream(seed):
    return runner_lib.started(
      eval_input.labelled_stream(
        store,
        idx,
        num_steps=total,
        batch_size=c.batch_size,
        clip_len=c.data.clip_len,
        size=c.data.size,
        temporal_modes=("uniform",),
        spatial=finetune.train_augment(ev),
        seed=seed,
      ).as_numpy_iterator()
    )

  state = runner.initial_state(tx, params, stats)
  scale = np.float32(1.0)
  fixed = mesh_lib.to_global_arrays(next(stream(0)), mesh)

  def steps_only():
    nonlocal state
    for _ in range(a.steps):
      state, m = step_fn(state, fixed, scale)
    return m

  it = stream(1)

  def input_only():
    for _ in range(a.steps):
      b = next(it)
    return b

  loops = {}
  for per in (int(v) for v in a.per_epoch.split(",")):
    batches = stream(2 + per)

    def loop(per=per, batches=batches):
      nonlocal state
      losses = []
      for s in range(1, a.steps + 1):
        b = mesh_lib.to_global_arrays(next(batches), mesh)
        state, m = step_fn(state, b, scale)
        losses.append(m["loss"])
        if s % per == 0:
          float(np.mean(jax.device_get(losses)))
          losses = []
      return m

    loops[f"loop (loss read every {per} steps)"] = loop

  load = timing.MachineLoad()
  with load:
    results = {"step": timing.median_seconds(steps_only, a.repeats)}
    results["input"] = timing.median_seconds(input_only, a.repeats)
    for name, fn in loops.items():
      results[name] = timing.median_seconds(fn, a.repeats)
  print(
    f"{len(os.sched_getaffinity(0))} CPU cores, batch {c.batch_size} clips "
    f"{c.data.clip_len}x{c.data.size}x{c.data.size}, width {c.model.width}; "
    f"median of {a.repeats} blocks of {a.steps} steps; {load.summary()}"
  )
  for name, sec in results.items():
    print(
      f"  {name:34s} {sec / a.steps:.3f} s/step "
      f"({sec / results['step']:.2f}x the step)"
    )


if __name__ == "__main__":
  main()
