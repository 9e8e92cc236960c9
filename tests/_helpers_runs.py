"""Shared by the end-to-end tests that run the library as a command or in
several processes: a small video_folder data set, the environment of a
child process with N fake devices, the main command, and a checkpoint's
contents."""

import os
import re
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frames_dataset(root, n=12, t=(5, 9), size=24):
  """A video_folder data set of random frame folders (fast to build), with
  face keypoints (``keypoints.npy``, jittered about a face's places)."""
  rng = np.random.default_rng(0)
  face = np.array([[8, 9], [16, 9], [12, 13], [9, 17], [15, 17]]) / 24
  lines = ["path,label,subject"]
  for i in range(n):
    folder = os.path.join(root, f"v{i:02d}")
    os.makedirs(folder)
    frames = int(rng.integers(*t))
    for j in range(frames):
      Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(
        os.path.join(folder, f"{j:03d}.png")
      )
    # Its own generator: the frames stay those of the data set before.
    jitter = np.random.default_rng([1, i]).normal(0, 0.5, (frames, 5, 2))
    kp = face * size + jitter
    np.save(os.path.join(folder, "keypoints.npy"), kp.astype(np.float32))
    lines.append(f"v{i:02d},{['a', 'b', 'c'][i % 3]},s{i // 3}")
  with open(os.path.join(root, "videos.csv"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return os.path.join(root, "videos.csv")


def env(devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def main_cmd(workdir, overrides, config="stclr_synthetic.py:tiny=1"):
  return [
    sys.executable,
    "-m",
    "stclr_jax.main",
    f"--config={ROOT}/configs/{config}",
    f"--workdir={workdir}",
  ] + [f"--config.{k}={v}" for k, v in overrides.items()]


def checkpoint(workdir, step):
  """A run's checkpoint as NumPy arrays in their saved dtypes (float64
  stays float64 here, where jax_enable_x64 is off), whatever the topology
  it was saved on."""
  path = os.path.join(workdir, "checkpoints", str(step), "default")
  with ocp.StandardCheckpointer() as ckpt:
    meta = ckpt.metadata(path).item_metadata.tree
    target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), meta)
    return ckpt.restore(path, target)


class Child:
  """A child process whose output (stdout and stderr) goes to a file, so
  that no pipe can fill up and block it while the test waits on another."""

  def __init__(self, args, env, log_path):
    self.log_path = str(log_path)
    self._log = open(self.log_path, "w")
    self.proc = subprocess.Popen(
      [str(a) for a in args],
      env=env,
      stdout=self._log,
      stderr=subprocess.STDOUT,
    )

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    """Never leaves the process running, whatever the test did."""
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()
    self._log.close()

  def log(self) -> str:
    with open(self.log_path) as f:
      return f.read()

  def wait(self, timeout=600) -> int:
    try:
      return self.proc.wait(timeout=timeout)
    finally:
      self._log.close()

  def wait_for(self, pattern, timeout=600) -> bool:
    """Polls the log until ``pattern`` (a regex) appears or the process
    ends; True if it appeared."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      if re.search(pattern, self.log()):
        return True
      if self.proc.poll() is not None:
        return bool(re.search(pattern, self.log()))
      time.sleep(0.05)
    return False
