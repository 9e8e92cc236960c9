"""Converters of pretrained weights from other frameworks.

* :mod:`stclr_jax.convert.torchvision`: torchvision's Kinetics-400 video
  ResNets (``r2plus1d_18``, ``r3d_18``, ``mc3_18``) to this package's encoders,
  as an Orbax checkpoint directory::

    python -m stclr_jax.convert.torchvision --arch=r2plus1d_18 \\
        --src=r2plus1d_18-91a641e6.pth --out=/tmp/r2plus1d_18 \\
        [--with_classifier]

* :mod:`stclr_jax.convert.converted`: such a directory on disk
  (:func:`save_converted`, :func:`load_converted`) and in memory
  (:class:`Converted`, :func:`build_modules`).

The names below are re-exported lazily, so that running the submodule with
``python -m`` does not import it twice.
"""

from __future__ import annotations

import importlib

# Name -> the submodule that defines it.
_EXPORTS = {
  "ConversionError": "torchvision",
  "Converted": "converted",
  "build_modules": "converted",
  "KINETICS_MEAN": "converted",
  "KINETICS_STD": "converted",
  "load_converted": "converted",
  "load_state_dict": "torchvision",
  "save_converted": "converted",
  "torchvision_to_nnx": "torchvision",
}


def __getattr__(name: str):
  if name in _EXPORTS:
    module = importlib.import_module(f"stclr_jax.convert.{_EXPORTS[name]}")
    return getattr(module, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
