"""Benchmark: two-view ST-CLR input pipeline throughput, for both
placements of the spatial augmentation, and what the device side costs.

Builds the pretraining pipeline of configs/stclr_synthetic.py (all temporal
samplers; crop, flip, colour) at each ``--sizes`` (clip length
``--clip_len``) for each ``--placements``:

* ``host``: tf.data crops, resizes, flips and colours, and ships float32
  clips at the output size;
* ``device``: tf.data decodes (here: reads the cache), samples the frames
  and draws the same parameters, and ships uint8 frames at the cached size
  with the parameters; the step applies them (data/device_augment.py).

It runs one warm-up epoch (fills the in-memory cache), then times
``--batches`` batches and prints videos/s, encoder clips/s (two per
video, four with hard negatives) per CPU core, and the bytes a batch
carries to the device.

With ``--pretext`` it repeats each placement under each pretext
variant (``none`` or methods joined with ``+``, as the configs'
``pretext=`` variant), e.g. ``none,faceswap`` for what SSL-FER's FaceSwap
costs the host (pretext/face_swap.py runs in tf.data).

With ``--device_cost`` it then measures, at each size, the device side's
share of the paper's train step (R(2+1)D-18 at width ``--cost_width``,
fp32, SGD, batch ``--cost_batch`` videos): FLOPs and bytes accessed from
XLA's cost analysis of the jitted augmentation and of the whole step, the
CPU time of each, and the share on an H100 estimated from those counts
(the augmentation is memory-bound there: its bytes at 3.35 TB/s, against
the step's FLOPs at 40% of 989 TFLOP/s bf16).

With ``--with_model`` it runs, at the same configuration, (a) the
library's jitted train step alone on a fixed device batch and (b) the
training loop as ``train.pretrain`` runs it (next host batch ->
global arrays -> step), reporting the time the loop waited for input.

  python bench/input_pipeline.py [--batches 30 --batch_size 16]
  # both placements at the paper's clip sizes, and the device side's cost:
  python bench/input_pipeline.py --placements host,device --device_cost
  # FaceSwap's cost on the host, at the paper's size:
  python bench/input_pipeline.py --sizes 112 --cache_frame_sizes 128 \
      --placements host --pretext none,faceswap,hardneg,hardneg+faceswap
  # the demo's size (configs/stclr_synthetic.py: 8x48x48, width 0.25):
  python bench/input_pipeline.py --clip_len 8 --sizes 48 --with_model

The run ends with the machine's load (bench/timing.py); figures taken
while other jobs shared the cores are flagged UNRELIABLE.
"""

import argparse
import importlib.util
import os
import sys
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
  from stclr_jax.pretext import batch as batch_lib

  mesh = mesh_lib.make_mesh()
  lr_fn = optim_lib.schedule(c.optim, 100, 1000)
  tx = optim_lib.make_optimizer(c.optim, lr_fn)
  graphdef, state, _ = train_lib.create_state(c, mesh, tx)
  step = train_lib.make_train_step(c, mesh, graphdef, tx, lr_fn, state)

  def device_batch():
    b = next(it)
    return mesh_lib.to_global_arrays(
      batch_lib.BatchSchema.of(b).model_inputs(b), mesh
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


def _cost(compiled):
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


H100_BYTES_PER_S = 3.35e12  # HBM3, SXM
H100_BF16_FLOPS = 989e12  # dense bf16, SXM


def _device_cost(c, it, a):
  """The device augmentation's share of the paper's train step."""
  import jax
  import optax
  import timing
  from flax import nnx

  from stclr_jax import mesh as mesh_lib
  from stclr_jax import models
  from stclr_jax import train_step as train_step_lib
  from stclr_jax.data import device_augment
  from stclr_jax.pretext import objectives

  b = next(it)
  n = a.cost_batch
  shipped = {k: b[k][:n] for k in b if k.split("_")[0] in ("view",) and k in b}
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  shipped = mesh_lib.to_global_arrays(shipped, mesh)
  aug = jax.jit(device_augment.augment_views).lower(shipped).compile()
  views = aug(shipped)
  aug_flops, aug_bytes = _cost(aug)
  rngs = nnx.Rngs(0)
  enc = models.make_encoder("r2plus1d_18", width=a.cost_width, rngs=rngs)
  model = models.ContrastiveModel(enc, proj_dim=128, rngs=rngs)
  tx = optax.sgd(1e-3, momentum=0.9)
  graphdef, state = train_step_lib.init_state(model, tx, mesh)
  step = train_step_lib.make_train_step(
    mesh,
    graphdef,
    tx,
    optax.constant_schedule(1e-3),
    state,
    objectives.NTXent(0.1),
  )
  host_step = step.lower(state, views).compile()
  dev_step = step.lower(state, shipped).compile()
  step_flops, _ = _cost(host_step)
  dev_flops, _ = _cost(dev_step)
  t_aug = timing.median_seconds(lambda: aug(shipped), a.repeats)
  holder = {"state": state}

  def run(compiled, batch):
    holder["state"], m = compiled(holder["state"], batch)
    return m

  t_step = timing.median_seconds(
    lambda: run(host_step, views), max(2, a.repeats // 3)
  )
  t_dev = timing.median_seconds(
    lambda: run(dev_step, shipped), max(2, a.repeats // 3)
  )
  on_h100 = aug_bytes / H100_BYTES_PER_S
  step_h100 = step_flops / (0.4 * H100_BF16_FLOPS)
  print(
    f"  device side, {n} videos ({2 * n} clips) -> "
    f"{views['view_a'].shape[1:]} per clip, R(2+1)D-18 width "
    f"{a.cost_width} fp32 step:\n"
    f"    augmentation: {aug_flops / 1e9:.3f} GFLOP, {aug_bytes / 1e6:.1f} MB "
    f"accessed, {1e3 * t_aug:.1f} ms on this CPU\n"
    f"    train step (views given): {step_flops / 1e9:.0f} GFLOP, "
    f"{t_step:.2f} s; with the augmentation inside: "
    f"{dev_flops / 1e9:.0f} GFLOP, {t_dev:.2f} s\n"
    f"    share: {100 * aug_flops / step_flops:.3f}% of the FLOPs, "
    f"{100 * t_aug / t_step:.2f}% of the CPU time; H100 estimate "
    f"{1e6 * on_h100:.0f} us (bytes at 3.35 TB/s) against "
    f"{1e3 * step_h100:.1f} ms (step FLOPs at 40% of 989 TFLOP/s): "
    f"{100 * on_h100 / step_h100:.2f}%",
    flush=True,
  )


def _bytes(batch, keys):
  return sum(batch[k].nbytes for k in keys if k in batch)


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--batches", type=int, default=30)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--clip_len", type=int, default=16)
  p.add_argument("--sizes", default="112,224")
  p.add_argument(
    "--cache_frame_sizes",
    default="128,256",
    help="frames cached at this shorter side, one per size (0: stored)",
  )
  p.add_argument("--placements", default="host,device")
  p.add_argument("--data", default="synthetic_expressions/expressive")
  p.add_argument("--data_dir", default="")
  p.add_argument("--with_model", action="store_true")
  p.add_argument("--device_cost", action="store_true")
  p.add_argument("--cost_batch", type=int, default=2)
  p.add_argument("--cost_width", type=float, default=1.0)
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument(
    "--pretext",
    default="none",
    help="pretext variants to compare, comma-separated (none: ST-CLR)",
  )
  a = p.parse_args()
  sys.path.insert(0, os.path.join(ROOT, "bench"))
  import timing

  from stclr_jax.data import input as input_lib
  from stclr_jax.pretext import batch as batch_lib

  cores = len(os.sched_getaffinity(0))
  print(
    f"{cores} CPU cores; {a.data}; batch {a.batch_size} videos = 2 views "
    "each, all temporal samplers, crop, flip, colour"
  )
  sizes = [int(v) for v in a.sizes.split(",")]
  caches = [int(v) for v in a.cache_frame_sizes.split(",")]
  caches = caches * len(sizes) if len(caches) == 1 else caches
  with timing.MachineLoad() as load:
    for size, cache in zip(sizes, caches):
      for placement, pretext in (
        (pl, pt)
        for pl in a.placements.split(",")
        for pt in a.pretext.split(",")
      ):
        c = _config()
        if pretext != "none":
          for name in pretext.split("+"):
            c.pretext[name].enabled = True
        c.data.name = a.data
        c.data.clip_len, c.data.size = a.clip_len, size
        c.batch_size = a.batch_size
        c.data.data_dir = a.data_dir
        c.data.cache_frame_size = cache
        c.aug.placement = placement
        it = _iterator(c, input_lib, a.batch_size)
        counts = batch_lib.Counts()
        t0 = time.perf_counter()
        for _ in range(a.batches):
          b = next(it)
          counts.add(b)
        dt = time.perf_counter() - t0
        videos = a.batches * a.batch_size
        schema = batch_lib.BatchSchema.of(b)
        sent = _bytes(b, schema.model_keys)
        views = len(schema.views)  # clips per video the encoder sees
        print(
          f"{a.clip_len}x{size}x{size} {placement:6s} {pretext:16s} (cache "
          f"{cache or 'as'} stored): {videos / dt:7.1f} videos/s = "
          f"{views * videos / dt / cores:7.1f} encoder clips/s per core; "
          f"{sent / 2**20:.1f} MiB per batch to the device "
          f"({b['view_a'].dtype}, view {b['view_a'].shape[1:]})",
          flush=True,
        )
        shares = {
          k.split("/")[-1]: v for k, v in counts.read().items() if "swap" in k
        }
        if shares:
          print(
            "  positives: "
            + ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
          )
        if a.with_model:
          print(
            f"  model: {c.model.encoder} width {c.model.width}, "
            f"{c.model.dtype}, {c.optim.name}"
          )
          _model_vs_input(c, it, a.batches)
        if a.device_cost and placement == "device":
          _device_cost(c, it, a)
  print(load.summary())


if __name__ == "__main__":
  main()
