"""The command line (stclr_jax/main.py): pretraining on the tiny synthetic
config, end to end, in a child process: the signal the SLURM script asks
for saves a checkpoint and stops the run, and the rerun resumes."""

import json
import os
import re
import signal
import subprocess

import _helpers_runs as runs


def _slurm_warning_signal() -> signal.Signals:
  """The signal ``launch/slurm_gpu.sbatch`` has SLURM send before the time
  limit, which must go to the tasks (no ``B:``, the batch shell only)."""
  path = os.path.join(runs.ROOT, "launch", "slurm_gpu.sbatch")
  with open(path) as f:
    (spec,) = re.findall(r"^#SBATCH --signal=(\S+)@\d+$", f.read(), re.M)
  assert not spec.startswith("B:"), f"{path}: {spec} reaches the shell only"
  return signal.Signals["SIG" + spec.removeprefix("R:")]


def test_main_stops_on_the_slurm_signal_with_a_checkpoint_and_resumes(
  tmp_path,
):
  sig = _slurm_warning_signal()
  work = tmp_path / "w"
  common = {"data.data_dir": tmp_path / "tfds", "checkpoint_every_steps": 1000}
  with runs.Child(
    runs.main_cmd(work, {**common, "num_steps": 1000}),
    runs.env(2),
    tmp_path / "first.log",
  ) as child:
    # Step 3's metrics: the loop is running.
    assert child.wait_for(r"\[3\] .*loss"), child.log()[-3000:]
    child.proc.send_signal(sig)
    assert child.wait(timeout=300) == 0, child.log()[-3000:]
  log = child.log()
  (stopped,) = [int(m) for m in re.findall(r"Preempted at step (\d+)", log)]
  assert 3 <= stopped < 1000
  assert sorted(os.listdir(work / "checkpoints")) == [str(stopped)]
  assert json.load(open(work / "config.json"))["model"]["width"] == 0.125
  assert json.load(open(work / "data_stream.json")) == {
    "num_shards": 1,
    "seed": 0,
  }
  assert [f for f in os.listdir(work) if "tfevents" in f]

  r = subprocess.run(
    runs.main_cmd(work, {**common, "num_steps": stopped + 2}),
    env=runs.env(2),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert f"Resumed from checkpoint step {stopped}" in r.stderr
  assert f"final step {stopped + 2}" in r.stdout
  assert os.path.isdir(work / "checkpoints" / str(stopped + 2))
