"""The command line (stclr_jax/main.py): pretraining on the tiny synthetic
config, end to end, in a child process."""

import json
import os
import subprocess

import _helpers_runs as runs


def test_main_runs_end_to_end_on_tiny_synthetic(tmp_path):
  r = subprocess.run(
    runs.main_cmd(tmp_path / "w", {"data.data_dir": tmp_path / "tfds"}),
    env=runs.env(2),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert "final step 2" in r.stdout
  assert os.path.isdir(tmp_path / "w" / "checkpoints" / "2")
  assert (
    json.load(open(tmp_path / "w" / "config.json"))["model"]["width"] == 0.125
  )
  events = [f for f in os.listdir(tmp_path / "w") if "tfevents" in f]
  assert events
