"""XLA compiler options for the library's jits.

On XLA:CPU the library's steps (pretraining, fine-tuning, feature
extraction) compile with :func:`mesh_compiler_options`: XLA's Eigen
convolutions instead of YNNPACK's. Elsewhere the options are ``None``.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

# XLA:CPU (jaxlib 0.10) hands every convolution to YNNPACK by default; its
# default YNNPACK fusions are reductions, single dots and convolutions. On
# R(2+1)D's shapes YNNPACK's convolutions are up to 3.5x slower than XLA's
# Eigen ones, the kernel gradients 2.6-3.5x (bench/cpu_convolutions.py,
# BENCHMARKS.md "Convolutions on XLA:CPU"). The library's jits keep the
# other two.
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_YNN_WITHOUT_CONVOLUTIONS = (
  "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
)


@functools.cache
def _ynn_option_supported() -> bool:
  """Whether this jaxlib's XLA:CPU takes the YNNPACK option (one tiny
  compilation, once per process)."""
  try:
    cpu = jax.devices("cpu")[0]
    jax.jit(
      lambda v: v + 1,
      compiler_options={_YNN_OPTION: _YNN_WITHOUT_CONVOLUTIONS},
    ).lower(jax.device_put(jnp.zeros((), jnp.float32), cpu)).compile()
  except Exception:  # an older XLA without the option: its defaults stand
    return False
  return True


def xla_compiler_options(platform: str | None = None) -> dict | None:
  """Compiler options for a ``jax.jit`` that runs the encoder on
  ``platform`` (default: JAX's default backend): on the CPU, XLA's Eigen
  convolutions instead of YNNPACK's, the rest of XLA's defaults unchanged;
  elsewhere ``None``. Also ``None`` when ``XLA_FLAGS`` already sets
  ``--xla_cpu_experimental_ynn_fusion_type`` (the user's choice stands; set
  it to ``reduce,individual_dot,individual_convolution`` to run XLA's own
  default) or when this jaxlib has no such option.

  The library's steps (pretraining, fine-tuning, feature extraction) pass
  it to their ``jax.jit``; pass it to your own:
  ``jax.jit(f, compiler_options=xla_compiler_options())``."""
  platform = platform or jax.default_backend()
  if platform != "cpu":
    return None
  if _YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
    return None
  if not _ynn_option_supported():
    return None
  return {_YNN_OPTION: _YNN_WITHOUT_CONVOLUTIONS}


def mesh_compiler_options(mesh) -> dict | None:
  """:func:`xla_compiler_options` for the platform of ``mesh``'s devices."""
  return xla_compiler_options(mesh.devices.flat[0].platform)
