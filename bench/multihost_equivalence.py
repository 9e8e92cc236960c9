"""Benchmark (a numerical proof, not a speed figure): 2 processes x 4 devices
against 1 process x 8 devices (and 1 process x 1 device), in float32 and in
float64, on the same tiny pretraining run.

Each layout runs the library's pretraining pieces (``train.create_state``,
``train.make_train_step``, ``input.pretrain_input`` with 2 data shards) for
``--steps`` steps, as local processes through ``jax.distributed`` on CPU
(gloo collectives). Every process saves its host batches; process 0 saves
the loss, the gradient of every parameter at every step (from
``train_step.gradients``, on the state the step starts from) and the step's
metrics. Then it prints, for each layout against 1 x 8:

* whether the global batches are identical (the concatenation of the
  processes' host batches; sha256 of the first step's);
* the largest relative difference of a parameter's gradient,
  ``max over parameters of |g - g_ref| / |g_ref|`` (L2 norms), per step;
* the relative difference of the loss and of the gradient norm, per step.

In float64 the model, the BatchNorm statistics, the loss and the optimiser
run in float64 (``config.model.dtype='float64'`` under jax_enable_x64), so
what remains of a difference is the order of the reductions; a bug (a
missing half of the batch, a shard's statistics) would stay O(1).

  python bench/multihost_equivalence.py [--steps 3 --out /tmp/mhe]
"""

import argparse
import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = {"1x8": (1, 8), "2x4": (2, 4), "1x1": (1, 1)}


def worker(pid, nproc, port, out, dtype, data_dir, steps):
  # The package is imported after the JAX options and jax.distributed are
  # set up (64-bit mode, gloo, the process group), as in a real launch.
  import jax

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  if nproc > 1:
    jax.distributed.initialize(
      coordinator_address=f"127.0.0.1:{port}",
      num_processes=nproc,
      process_id=pid,
    )
  sys.path.insert(0, ROOT)
  from configs import stclr_synthetic
  from stclr_jax import mesh as mesh_lib
  from stclr_jax import optim, train
  from stclr_jax import train_step as ts
  from stclr_jax.data import input as input_lib
  from stclr_jax.pretext import objectives

  c = stclr_synthetic.get_config("tiny=1")
  c.data.data_dir = data_dir
  c.data.num_shards = 2
  c.batch_size = 8
  c.model.dtype = dtype
  c.optim.name, c.optim.learning_rate, c.optim.momentum = "sgd", 1e-3, 0.9
  mesh = mesh_lib.make_mesh()
  lr_fn = optim.schedule(c.optim, 10, 100)
  tx = optim.make_optimizer(c.optim, lr_fn)
  graphdef, state, _ = train.create_state(c, mesh, tx)
  step_fn = train.make_train_step(c, mesh, graphdef, tx, lr_fn, state)
  rep = mesh_lib.replicated(mesh)
  grad_fn = jax.jit(
    functools.partial(
      ts.gradients,
      graphdef=graphdef,
      objective=objectives.NTXent(c.loss.temperature),
      mesh=mesh,
      mean=np.zeros(3, np.float32),
      std=np.ones(3, np.float32),
    ),
    out_shardings=rep,
  )
  batches, _ = input_lib.pretrain_input(c, num_shards=2)
  it = batches.as_numpy_iterator()
  records = []
  for s in range(steps):
    host = next(it)
    local = {k: host[k] for k in ("view_a", "view_b")}
    np.savez(os.path.join(out, f"batch_p{pid}_s{s}.npz"), **local)
    batch = mesh_lib.to_global_arrays(local, mesh)
    (loss, _), grads = grad_fn(state.params, state.batch_stats, batch)
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(grads))[0]
    if pid == 0:
      np.savez(
        os.path.join(out, f"grads_s{s}.npz"),
        **{jax.tree_util.keystr(p): np.asarray(g) for p, g in flat},
      )
    state, m = step_fn(state, batch)
    records.append({k: float(v) for k, v in jax.device_get(m).items()})
  if pid == 0:
    with open(os.path.join(out, "metrics.json"), "w") as f:
      json.dump(records, f)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_layout(name, dtype, data_dir, out, steps):
  nproc, devices = LAYOUTS[name]
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  port = str(_free_port())
  os.makedirs(out, exist_ok=True)
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        __file__,
        "--worker",
        str(i),
        str(nproc),
        port,
        out,
        dtype,
        data_dir,
        str(steps),
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(nproc)
  ]
  for p in procs:
    log = p.communicate()[0]
    if p.returncode:
      raise RuntimeError(f"{name} {dtype} failed:\n{log[-3000:]}")


def global_batch(out, nproc, s):
  parts = [
    np.load(os.path.join(out, f"batch_p{i}_s{s}.npz")) for i in range(nproc)
  ]
  return {
    k: np.concatenate([p[k] for p in parts]) for k in ("view_a", "view_b")
  }


def rel(a, b):
  return float(
    np.linalg.norm(np.asarray(a, np.float64) - b)
    / max(np.linalg.norm(np.asarray(b, np.float64)), 1e-300)
  )


def compare(root, dtype, name, steps):
  ref, out = (os.path.join(root, dtype, n) for n in ("1x8", name))
  same = all(
    np.array_equal(
      global_batch(out, LAYOUTS[name][0], s)[k], global_batch(ref, 1, s)[k]
    )
    for s in range(steps)
    for k in ("view_a", "view_b")
  )
  digest = hashlib.sha256(
    global_batch(out, LAYOUTS[name][0], 0)["view_a"].tobytes()
  ).hexdigest()[:12]
  grad_rel = []
  for s in range(steps):
    g, g_ref = (np.load(os.path.join(d, f"grads_s{s}.npz")) for d in (out, ref))
    worst = max((rel(g[k], g_ref[k]), k) for k in g_ref.files)
    grad_rel.append(worst)
  m, m_ref = (
    json.load(open(os.path.join(d, "metrics.json"))) for d in (out, ref)
  )
  return {
    "batches_identical": same,
    "batch0_sha256": digest,
    "grad_rel": grad_rel,
    "loss_rel": [
      abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(m, m_ref)
    ],
    "grad_norm_rel": [
      abs(a["grad_norm"] - b["grad_norm"]) / b["grad_norm"]
      for a, b in zip(m, m_ref)
    ],
  }


def main():
  if len(sys.argv) > 1 and sys.argv[1] == "--worker":
    a = sys.argv[2:]
    worker(int(a[0]), int(a[1]), a[2], a[3], a[4], a[5], int(a[6]))
    return
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--out", default="")
  args = p.parse_args()
  root = args.out or tempfile.mkdtemp(prefix="mhe_")
  data_dir = os.path.join(root, "tfds")
  t0 = time.time()
  for dtype in ("float32", "float64"):
    for name in LAYOUTS:
      run_layout(
        name, dtype, data_dir, os.path.join(root, dtype, name), args.steps
      )
  print(
    f"{args.steps} steps, tiny synthetic config, batch 8, 2 data "
    f"shards; {time.time() - t0:.0f} s; files in {root}"
  )
  for dtype in ("float32", "float64"):
    for name in ("2x4", "1x1"):
      r = compare(root, dtype, name, args.steps)
      print(
        f"\n{dtype}, {name} vs 1x8: batches identical "
        f"{r['batches_identical']} (step 0 view_a sha256 "
        f"{r['batch0_sha256']})"
      )
      for s in range(args.steps):
        g, k = r["grad_rel"][s]
        print(
          f"  step {s + 1}: worst parameter gradient {g:.1e} ({k}); "
          f"loss {r['loss_rel'][s]:.1e}; grad norm "
          f"{r['grad_norm_rel'][s]:.1e}"
        )


if __name__ == "__main__":
  main()
