"""Test set-up: 8 fake CPU devices, so sharded code is tested on a real mesh.

The flag must be set before jax initialises its backends, hence here. Also
the fixtures that test modules share.
"""

import os

import pytest

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, worker_id):
  """``python -m stclr_jax.prepare`` run once on a raw folder, shared by the
  prepare tests: see ``_helpers_prepare.prepared_once``."""
  import _helpers_prepare  # imports the library: only when a test needs it

  return _helpers_prepare.prepared_once(tmp_path_factory, worker_id)
