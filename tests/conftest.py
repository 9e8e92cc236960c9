"""Test set-up: 8 fake CPU devices, so sharded code is tested on a real mesh.

The flag must be set before jax initialises its backends, hence here. Also
the fixtures that test modules share, and one persistent XLA compilation
cache for the whole session: many tests compile the same tiny models'
steps, in-process and in the runs they launch (which inherit the
environment, as pytest-xdist's workers do), and a compile served from the
cache is the same executable. Only compiles of at least a second are
written. The cache is a fresh folder per session, removed at its end; set
``JAX_COMPILATION_CACHE_DIR`` to keep one instead.
"""

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# pytest's own process runs this first and the workers inherit the folder.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
    prefix="stclr_jax_tests_xla_"
  )
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")


def pytest_unconfigure(config):
  """The session's compilation cache goes with the process that made it."""
  del config
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, worker_id):
  """``python -m stclr_jax.prepare`` run once on a raw folder, shared by the
  prepare tests: see ``_helpers_prepare.prepared_once``."""
  import _helpers_prepare  # imports the library: only when a test needs it

  return _helpers_prepare.prepared_once(tmp_path_factory, worker_id)
