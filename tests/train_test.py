"""The pretraining loop (stclr_jax/train.py): a run killed with SIGKILL
resumes from its last checkpoint and ends equal to an uninterrupted run."""

import os
import signal
import subprocess
import time

import _helpers_runs as runs
import jax
import numpy as np


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
  csv = runs.frames_dataset(str(tmp_path / "data"))
  common = {
    "data.name": "video_folder",
    "data.csv_path": csv,
    "data.data_dir": tmp_path / "tfds",
    "num_steps": 10,
    "checkpoint_every_steps": 3,
    "keep_checkpoints": 10,
    "batch_size": 4,
    "model.width": 0.25,
  }
  env = runs.env(2)
  a = subprocess.run(
    runs.main_cmd(tmp_path / "a", common),
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert a.returncode == 0, a.stderr[-3000:]

  proc = subprocess.Popen(
    runs.main_cmd(tmp_path / "b", common),
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  ckpts = tmp_path / "b" / "checkpoints"
  deadline = time.time() + 600
  while time.time() < deadline and not (ckpts / "3").is_dir():
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  log1 = proc.communicate()[0]
  done = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert done and max(done) < 10, f"run B was not interrupted: {done}"
  b = subprocess.run(
    runs.main_cmd(tmp_path / "b", common),
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert b.returncode == 0, b.stderr[-3000:]
  assert f"Resumed from checkpoint step {max(done)}" in b.stderr, log1[-2000:]
  pa, pb = (
    runs.checkpoint(tmp_path / "a", 10),
    runs.checkpoint(tmp_path / "b", 10),
  )
  assert int(pa["step"]) == int(pb["step"]) == 10
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
