"""The README's first command, `make demo`, on the tiny synthetic config:
pretraining, preview, then the linear-probe evaluation of the pretrained and
the random encoder, with their reports."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_runs_end_to_end_on_tiny(tmp_path):
  workdir = tmp_path / "demo"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "stclr_jax.demo",
      f"--workdir={workdir}",
      "--config_arg=tiny=1",
      f"--data_dir={tmp_path / 'tfds'}",
      "--eval_folds=0,1",
      "--control_steps=4",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert "NT-Xent" in out and "linear probe" in out, out
  assert os.path.getsize(workdir / "preview.png") > 1000
  assert "supervised control on synthetic_expressions/tiny_pool_labelled" in out
  scratch = None
  for arm, init in (
    ("scratch", "random"),
    ("stclr", "st-clr"),
    ("supervised", "st-clr"),
  ):
    rep = json.load(open(workdir / f"eval_{arm}" / "report.json"))
    assert rep["init"]["init"] == init
    assert rep["folds_run"] == [0, 1] and rep["final"] == "linear"
    # Every run scored on the held-out population, its mean printed.
    held = rep["heldout"]["linear"]
    assert len(held["run_accuracy"]) == 2
    assert rep["heldout"]["population"]["subjects"] == 4
    assert f"held-out {100 * held['mean']:.1f}%" in out
    if arm == "scratch":
      scratch = held["run_accuracy"]
    else:
      diff = np.mean([held["run_accuracy"][k] - scratch[k] for k in scratch])
      assert f"minus scratch {100 * diff:+.1f} points" in out
    ident = rep["identity_probe"]
    assert ident["subjects"] == 6
    assert f"identity probe {100 * ident['accuracy']:.1f}%" in out
    assert rep["init"].get("bn_reestimated") == (arm == "scratch")
    assert (workdir / f"eval_{arm}" / "confusion.png").exists()
    assert len(os.listdir(workdir / f"eval_{arm}" / "logits")) == 2
  assert "chance: expression 16.7%, identity 16.7%" in out
  assert "What it means:" in out
  # Pretraining read the unlabelled pool, evaluation the labelled set.
  assert "on synthetic_expressions/tiny_pool:" in out
  assert rep["data"] == "synthetic_expressions/tiny"
