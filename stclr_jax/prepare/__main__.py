"""``python -m stclr_jax.prepare``: the command of ``cli.py``."""

from __future__ import annotations

import os

from absl import app, flags

from stclr_jax.prepare import cli

if __name__ == "__main__":
  __doc__ = cli.__doc__  # what absl's --help prints: the main module's doc
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before MTCNN loads TF
  cli.define_flags()
  flags.adopt_module_key_flags(cli)  # --help lists them, not --helpfull only
  app.run(cli.main)  # exits with main's return code
