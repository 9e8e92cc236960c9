"""The package installs as a wheel: every folder of ``stclr_jax/`` that holds
Python files is in it, with all its modules, and every entry point imports
from the installed wheel. (A folder without ``__init__.py`` is silently left
out by ``find_packages``; ``pip install -e .`` hides that.)"""

import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The modules users run or import first; each must import from the wheel.
ENTRY_POINTS = (
  "stclr_jax.main",
  "stclr_jax.demo",
  "stclr_jax.train",
  "stclr_jax.train_step",
  "stclr_jax.evaluation.protocol",
  "stclr_jax.prepare",
  "stclr_jax.prepare.cli",
  "stclr_jax.data.preview",
  "stclr_jax.convert.torchvision",
)


def _source_modules() -> set[str]:
  found = set()
  for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, "stclr_jax")):
    dirnames[:] = [d for d in dirnames if d != "__pycache__"]
    rel = os.path.relpath(dirpath, ROOT)
    found |= {
      os.path.join(rel, f).replace(os.sep, "/")
      for f in filenames
      if f.endswith(".py")
    }
  return found


def _wheel(tmp_path) -> str:
  """Builds the wheel from a copy of the sources (setup.py's own package
  list; no build isolation, so no download)."""
  src = tmp_path / "src"
  src.mkdir()
  for name in ("setup.py", "pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), src / name)
  shutil.copytree(
    os.path.join(ROOT, "stclr_jax"),
    src / "stclr_jax",
    ignore=shutil.ignore_patterns("__pycache__"),
  )
  out = tmp_path / "dist"
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "pip",
      "wheel",
      "--no-deps",
      "--no-build-isolation",
      "-q",
      "-w",
      str(out),
      str(src),
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  (wheel,) = out.glob("stclr_jax-*.whl")
  return str(wheel)


def test_every_module_is_in_the_wheel_and_entry_points_import(tmp_path):
  wheel = _wheel(tmp_path)
  in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
  missing = sorted(_source_modules() - in_wheel)
  assert not missing, (
    f"left out of the wheel (a folder without __init__.py?): {missing}"
  )
  # Import from the unpacked wheel, outside the source tree.
  site = tmp_path / "site"
  zipfile.ZipFile(wheel).extractall(site)
  code = (
    "import importlib, sys\n"
    f"for m in {ENTRY_POINTS!r}:\n"
    "  mod = importlib.import_module(m)\n"
    f"  assert mod.__file__.startswith({str(site)!r}), mod.__file__\n"
    "print('ok')\n"
  )
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["PYTHONPATH"] = str(site)
  proc = subprocess.run(
    [sys.executable, "-c", code],
    cwd=str(tmp_path),
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[
    -3000:
  ]
