"""Converters of pretrained weights from other frameworks.

* :mod:`stclr_jax.convert.torchvision`: torchvision's Kinetics-400 video
  ResNets (``r2plus1d_18``, ``r3d_18``, ``mc3_18``) to this package's encoders,
  as an Orbax checkpoint directory::

    python -m stclr_jax.convert.torchvision --arch=r2plus1d_18 \\
        --src=r2plus1d_18-91a641e6.pth --out=/tmp/r2plus1d_18 \\
        [--with_classifier]

The names below are re-exported lazily, so that running the submodule with
``python -m`` does not import it twice.
"""

from __future__ import annotations

import importlib

_EXPORTS = (
  "ConversionError",
  "Converted",
  "build_modules",
  "KINETICS_MEAN",
  "KINETICS_STD",
  "load_converted",
  "load_state_dict",
  "save_converted",
  "torchvision_to_nnx",
)


def __getattr__(name: str):
  if name in _EXPORTS:
    module = importlib.import_module("stclr_jax.convert.torchvision")
    return getattr(module, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
