"""Multi-host pretraining with local processes through jax.distributed (CPU,
gloo collectives): 2 processes x 4 devices equal 1 process x 8, and two
processes share a fresh data_dir without racing to build the data set.

The comparison runs in float64 (the model, BatchNorm statistics, loss and
optimiser; jax_enable_x64), where it can be tight. bench/
multihost_equivalence.py measured 2x4 against 1x8 in float64 at 9e-14
(worst parameter gradient, step 1) to 1e-11 (step 3), the same as 1 device
against 8; so rtol 1e-9 here. In float32 the same layouts differ by what
float32 rounding does to this tiny, sharp model: each layout is itself
13-23% away from the float64 gradient norm by step 2 (BENCHMARKS.md,
multi-host), so a float32 comparison could only be loose.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import _helpers_runs as runs
import jax
import numpy as np

_MULTI = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_enable_x64", True)
from absl import logging
logging.set_verbosity("info")
pid, nproc = int(sys.argv[1]), int(sys.argv[2])
port, out = sys.argv[3], sys.argv[4]
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
c.model.dtype = "float64"
c.optim.name, c.optim.learning_rate, c.optim.momentum = "sgd", 1e-3, 0.9
res = train.pretrain(c, out)
if pid == 0:
  json.dump(res["history"], open(out + "/history.json", "w"))
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process_in_float64(tmp_path):
  csv = runs.frames_dataset(str(tmp_path / "data"), n=16)
  tfds_dir = str(tmp_path / "tfds")  # empty: the two processes build it
  script = tmp_path / "run.py"
  script.write_text(_MULTI)
  port = str(_free_port())
  procs = [
    runs.Child(
      [sys.executable, script, i, 2, port, tmp_path / "two", csv, tfds_dir],
      runs.env(4),
      tmp_path / f"two_{i}.log",
    )
    for i in range(2)
  ]
  with procs[0], procs[1]:
    codes = [p.wait() for p in procs]
  logs = [p.log() for p in procs]
  assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  # Process 0 built the data set; process 1 waited for it and read it.
  assert "waiting for process 0" not in logs[0]
  assert "waiting for process 0 to prepare video_folder" in logs[1]
  assert "video_folder was prepared by process 0" in logs[1]
  single = subprocess.run(
    [
      sys.executable,
      str(script),
      "0",
      "1",
      "0",
      str(tmp_path / "one"),
      csv,
      tfds_dir,
    ],
    env=runs.env(8),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert single.returncode == 0, single.stderr[-3000:]

  one = json.load(open(tmp_path / "one" / "history.json"))
  two = json.load(open(tmp_path / "two" / "history.json"))
  assert [h["step"] for h in one] == [h["step"] for h in two] == [1, 2, 3]
  for key in ("loss", "grad_norm", "update_norm", "param_norm"):
    np.testing.assert_allclose(
      [h[key] for h in two], [h[key] for h in one], rtol=1e-9, err_msg=key
    )
  assert one[-1]["loss"] != one[0]["loss"]
  # Every parameter, BatchNorm statistic and optimiser slot after 3 steps.
  a, b = (runs.checkpoint(tmp_path / d, 3) for d in ("one", "two"))
  leaves = jax.tree.leaves(a)
  assert len(leaves) > 100 and leaves[0].dtype == np.float64
  # Two processes reduce across gloo in another order than one process's
  # psum, so float64 round-off differs; Adam's m / sqrt(v) divides it by a
  # small sqrt(v) in elements whose gradient is near zero. So each leaf is
  # compared at 1e-10 of its own scale (its largest magnitude), not element
  # by element: jax 0.12 (Python 3.12) gave one element of 432 in a
  # conv kernel of scale 1.6 at -1.87547286e-4 against -1.87547288e-4
  # (1.6e-12 apart, 1e-12 of the leaf's scale, 8.5e-9 of the element).
  for x, y in zip(leaves, jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    scale = max(float(np.abs(x).max()), 1e-300)
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-10 * scale)


_PREEMPT = r"""
import sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from absl import logging
logging.set_verbosity("info")
pid = int(sys.argv[1])
port, out, data_dir = sys.argv[2], sys.argv[3], sys.argv[4]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                           num_processes=2, process_id=pid)
from configs import stclr_synthetic
from stclr_jax import train
c = stclr_synthetic.get_config("tiny=1")
c.data.data_dir = data_dir
c.num_steps = 1000
c.checkpoint_every_steps = 1000
c.batch_size = 8
print("last step", train.pretrain(c, out)["last"]["step"], flush=True)
"""


def test_sigterm_to_every_process_saves_one_agreed_step(tmp_path):
  """What SLURM's --signal=TERM@300 does to a multi-task job: every task
  gets SIGTERM, at slightly different steps; JAX's preemption sync makes
  them save the same step and stop."""
  script = tmp_path / "run.py"
  script.write_text(_PREEMPT)
  port = str(_free_port())
  procs = [
    runs.Child(
      [sys.executable, script, i, port, tmp_path / "w", tmp_path / "tfds"],
      runs.env(2),
      tmp_path / f"p{i}.log",
    )
    for i in range(2)
  ]
  with procs[0], procs[1]:
    # Step 3's metrics: both are training.
    assert procs[0].wait_for(r"\[3\] .*loss"), procs[0].log()[-3000:]
    for p in procs:
      p.proc.send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=300) for p in procs]
  logs = [p.log() for p in procs]
  assert codes == [0, 0], logs[0][-2000:] + logs[1][-2000:]
  steps = [re.findall(r"Preempted at step (\d+)", log) for log in logs]
  assert steps[0] == steps[1] and len(steps[0]) == 1, steps
  stopped = int(steps[0][0])
  assert 3 <= stopped < 1000
  assert f"last step {stopped}" in logs[0]
  assert os.listdir(tmp_path / "w" / "checkpoints") == [str(stopped)]
