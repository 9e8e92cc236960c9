"""The pretraining loop (stclr_jax/train.py): a run killed with SIGKILL while
an asynchronous checkpoint save is in flight resumes from the last complete
checkpoint and ends equal to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import _helpers_runs as runs
import jax
import numpy as np
import pytest

from stclr_jax import train
from stclr_jax.pretext import batch as batch_lib

# The main command, with Orbax's commit of step 6 (the rename of its
# temporary folder to "6") held back, so that a kill lands while that save
# is in flight. (Orbax's private hook: if it moves, this fails loudly.)
_SLOW_SAVE = r"""
import asyncio, sys
from orbax.checkpoint._src.path import atomicity
commit = atomicity.on_commit_callback
async def held_back(tmp_dir, **kw):
  if tmp_dir.get_final().name == "6":
    await asyncio.sleep(600)
  return await commit(tmp_dir, **kw)
atomicity.on_commit_callback = held_back
from absl import app
from stclr_jax import main
app.run(main.main)
"""


# Every pretext option on at once (stclr_jax/pretext/): the temporal shift,
# hard negatives (4 clips per video) and same-subject batches (2 subjects
# x 2 videos). At 25 frames/s the gap of 0.12 s is 3 frames: the 5-frame
# videos take the halves policy and the 6-8 frame ones the gap policy;
# shifts of 1-2 frames do not always fit.
_ALL_PRETEXT = {
  "pretext.timeaug.enabled": True,
  "pretext.timeaug.offsets": "(0.04,0.08)",
  "pretext.timeaug.weights": "(2.0,1.0)",
  "pretext.hardneg.enabled": True,
  "pretext.hardneg.gap": 0.12,
  "pretext.samesubject.enabled": True,
}
# SSL-FER's four strategies: TimeAug + HardNeg + MaskFN (the crops of all
# four clips, their HOG descriptors in the step, k* over the batch) +
# FaceSwap (both positives put on another subject's head).
_SSLFER = {
  **{k: v for k, v in _ALL_PRETEXT.items() if "samesubject" not in k},
  "pretext.maskfn.enabled": True,
  "pretext.maskfn.crop_size": 24,
  "pretext.faceswap.enabled": True,
}


# The spatial augmentation on the device (data/device_augment.py): the
# host ships the 24x24 frames padded to 24x28 with the draws.
_ON_DEVICE = {"aug.placement": "device", "aug.ship_size": "(24,28)"}


# Masked video autoencoding (configs/svfap_synthetic.py:tiny=1): TPSBT
# with the tiny decoder, AdamW; a quarter of each clip's tubes visible,
# masks drawn in the step from each clip's key.
_MAE = {"model.encoder": "tpsbt_tiny"}


@pytest.mark.parametrize("pretext", ["off", "all", "sslfer", "mae"])
def test_kill_during_a_checkpoint_save_resumes_equal_to_uninterrupted(
  tmp_path, pretext
):
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
    **{
      "off": {},
      "all": {**_ALL_PRETEXT, **_ON_DEVICE},
      "sslfer": _SSLFER,
      "mae": _MAE,
    }[pretext],
  }
  if pretext == "mae":  # a transformer: its size is its name
    del common["model.width"]
  config = {"mae": "svfap_synthetic.py:tiny=1"}.get(
    pretext, "stclr_synthetic.py:tiny=1"
  )
  env = runs.env(2)
  a = subprocess.run(
    runs.main_cmd(tmp_path / "a", common, config),
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert a.returncode == 0, a.stderr[-3000:]
  if pretext == "all":  # the options were on, and counted
    for what in ("same-subject negatives", "pretext/gap_policy_halves"):
      assert what in a.stderr, a.stderr[-3000:]
  if pretext == "sslfer":  # MaskFN's loss was the one trained, on swaps
    for what in ("maskfn_l2", "pretext/face_swap_swapped"):
      assert what in a.stderr, a.stderr[-3000:]
  if pretext == "mae":  # the reconstruction loss was the one trained
    assert "reconstruction_mse" in a.stderr, a.stderr[-3000:]

  cmd = runs.main_cmd(tmp_path / "b", common, config)
  ckpts = tmp_path / "b" / "checkpoints"
  with runs.Child(
    [sys.executable, "-c", _SLOW_SAVE, *cmd[3:]], env, tmp_path / "b.log"
  ) as child:
    in_flight, deadline = [], time.time() + 600
    while (
      not in_flight and time.time() < deadline and child.proc.poll() is None
    ):
      time.sleep(0.02)
      if ckpts.is_dir():
        in_flight = [d for d in os.listdir(ckpts) if d.startswith("6.")]
    child.proc.send_signal(signal.SIGKILL)
  assert in_flight, f"step 6's save was never in flight: {child.log()[-2000:]}"
  left = sorted(os.listdir(ckpts))
  assert "3" in left and "6" not in left, left  # 6 half-written, not final
  b = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
  assert b.returncode == 0, b.stderr[-3000:]
  assert "Resumed from checkpoint step 3" in b.stderr, b.stderr[-3000:]
  pa = runs.checkpoint(tmp_path / "a", 10)
  pb = runs.checkpoint(tmp_path / "b", 10)
  assert int(pa["step"]) == int(pb["step"]) == 10
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
  if pretext == "mae":  # the pictures at the last checkpoint: the same
    pictures = [
      (tmp_path / run / "reconstructions" / "step_10.png").read_bytes()
      for run in ("a", "b")
    ]
    assert pictures[0] == pictures[1]


def test_sigterm_is_caught_once_then_the_previous_handler_is_back():
  """A single process catches the first SIGTERM (save and stop at the next
  step); a second one gets the previous handler, so a stuck run can still
  be stopped; leaving the loop restores it too."""
  before = signal.getsignal(signal.SIGTERM)
  calls = []
  signal.signal(signal.SIGTERM, lambda *a: calls.append(a[0]))
  try:
    previous = signal.getsignal(signal.SIGTERM)
    with train.Preemption(mngr=None) as preemption:
      assert not preemption.reached(1)
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(0.1)  # the handler runs between bytecodes
      assert preemption.reached(2)
      assert signal.getsignal(signal.SIGTERM) is previous
      os.kill(os.getpid(), signal.SIGTERM)  # the second: the old handler
      time.sleep(0.1)
      assert calls == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is previous
  finally:
    signal.signal(signal.SIGTERM, before)


def test_pretext_counts_are_shares_of_the_window_then_reset():
  counts = batch_lib.Counts()
  assert counts.read() == {}  # options off: nothing logged
  # Hard negatives on: 2 pairs per video, shift_clamped counts both.
  counts.add(
    {
      "hard_a": np.zeros(4),
      "shift_clamped": np.array([0, 1, 2, 1]),
      "gap_policy": np.array([0, 1, 1, 2]),
    }
  )
  counts.add(
    {
      "hard_a": np.zeros(2),
      "shift_clamped": np.array([2, 2]),
      "gap_policy": np.array([1, 1]),
    }
  )
  assert counts.read() == {
    "pretext/shift_clamped": 8 / 12,
    "pretext/gap_policy_gap": 1 / 6,
    "pretext/gap_policy_halves": 4 / 6,
    "pretext/gap_policy_none": 1 / 6,
  }
  assert counts.read() == {}  # the next window starts empty
  counts.add({"shift_clamped": np.array([1, 0, 0, 0])})  # one pair each
  assert counts.read() == {"pretext/shift_clamped": 0.25}
