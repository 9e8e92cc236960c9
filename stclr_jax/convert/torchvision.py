"""Converts torchvision's video ResNets to this package's NNX encoders.

torchvision's ``r2plus1d_18``, ``r3d_18`` and ``mc3_18`` (Kinetics-400
weights) map weight-for-weight onto :func:`stclr_jax.models.make_encoder`'s
models, and their 400-way ``fc`` onto a :class:`~stclr_jax.models.
LinearClassifier`::

  python -m stclr_jax.convert.torchvision --arch=r2plus1d_18 \\
      --src=r2plus1d_18-91a641e6.pth --out=/tmp/r2plus1d_18 [--with_classifier]

The output directory holds a converted checkpoint
(:mod:`stclr_jax.convert.converted`: an Orbax checkpoint and
``metadata.json``); :func:`~stclr_jax.convert.converted.load_converted`
rebuilds the modules from it.

Mapping (torchvision -> ours): convolution ``weight`` (O, I, D, H, W) ->
``kernel`` (D, H, W, I, O); BatchNorm ``weight``/``bias``/``running_mean``/
``running_var`` -> ``scale``/``bias``/``mean``/``var``; ``fc.weight`` (C, 512)
-> ``fc.kernel`` (512, C), ``fc.bias`` -> ``fc.bias``. Every key must be used
and every variable of ours assigned, with matching shapes, or
:class:`ConversionError` lists the offending keys. The only keys deliberately
left out are BatchNorm's ``num_batches_tracked`` counters (our BatchNorm has a
fixed momentum and no counter) and, without ``with_classifier``, ``fc.*``;
they are reported in :attr:`Converted.ignored`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from stclr_jax import models
from stclr_jax.convert.converted import (
  Converted,
  abstract_classifier,
  abstract_encoder,
  listed,
  pure_state,
  save_converted,
)
from stclr_jax.models.video_resnet import BLOCKS_PER_STAGE

_BN_KEYS = (
  ("weight", "scale"),
  ("bias", "bias"),
  ("running_mean", "mean"),
  ("running_var", "var"),
)
Path = tuple[Any, ...]


class ConversionError(ValueError):
  """A state_dict that does not map one-to-one onto the requested model."""


def _key_plan(encoder) -> tuple[dict[str, tuple[Path, bool]], set[str]]:
  """Maps each torchvision key of ``encoder`` to ``(our path, is_conv)``.

  Derived from the module's own structure, so the coverage checks of
  :func:`torchvision_to_nnx` test this table too. Also returns the keys of
  the BatchNorm counters (``num_batches_tracked``), which have no match.
  """
  plan, counters = {}, set()

  def conv(prefix, path):
    plan[f"{prefix}.weight"] = ((*path, "kernel"), True)

  def bn(prefix, path):
    for theirs, mine in _BN_KEYS:
      plan[f"{prefix}.{theirs}"] = ((*path, mine), False)
    counters.add(f"{prefix}.num_batches_tracked")

  if isinstance(encoder.stem, nnx.Sequential):
    # R2Plus1dStem: Conv, BN, ReLU, Conv, BN, ReLU.
    for i in range(len(encoder.stem.layers)):
      conv(f"stem.{3 * i}", ("stem", "layers", i, "conv"))
      bn(f"stem.{3 * i + 1}", ("stem", "layers", i, "bn"))
  else:  # BasicStem: Conv, BN, ReLU.
    conv("stem.0", ("stem", "conv"))
    bn("stem.1", ("stem", "bn"))
  for index, block in enumerate(encoder.blocks):
    stage, j = divmod(index, BLOCKS_PER_STAGE)
    tv, ours = f"layer{stage + 1}.{j}", ("blocks", index)
    for k in (1, 2):
      theirs, mine = f"{tv}.conv{k}", (*ours, f"conv{k}")
      if getattr(block, f"conv{k}").kind == "2plus1d":
        # Conv2Plus1D: Conv (1,3,3), BN, ReLU, Conv (3,1,1).
        conv(f"{theirs}.0.0", (*mine, "spatial", "conv"))
        bn(f"{theirs}.0.1", (*mine, "spatial", "bn"))
        conv(f"{theirs}.0.3", (*mine, "temporal"))
      else:
        conv(f"{theirs}.0", (*mine, "conv"))
      bn(f"{theirs}.1", (*ours, f"bn{k}"))
    if block.downsample is not None:
      conv(f"{tv}.downsample.0", (*ours, "downsample", "conv"))
      bn(f"{tv}.downsample.1", (*ours, "downsample", "bn"))
  return plan, counters


_flat = nnx.traversals.flatten_mapping  # nested dict -> {path tuple: leaf}


def _guess_arch(keys) -> str | None:
  """The arch whose key set the state_dict has, if any."""
  keys = {k for k in keys if not k.startswith("fc.")}
  for arch in models.RESNET_NAMES:
    plan, counters = _key_plan(abstract_encoder(arch))
    if set(plan) <= keys <= set(plan) | counters:
      return arch
  return None


def torchvision_to_nnx(
  state_dict: Mapping[str, np.ndarray], arch: str, with_classifier: bool = False
) -> Converted:
  """Maps a torchvision video ResNet state_dict onto our modules' states.

  Args:
    state_dict: torchvision key -> numpy array (see :func:`load_state_dict`).
    arch: ``"r2plus1d_18"``, ``"r3d_18"`` or ``"mc3_18"``.
    with_classifier: also convert ``fc`` into a ``LinearClassifier``; when
      False, ``fc.weight`` and ``fc.bias`` are ignored.

  Returns:
    A :class:`Converted` of pure-dict states (see :func:`build_modules`).

  Raises:
    ConversionError: a key of the state_dict is unused, a variable of ours is
      unassigned, a shape does not match, or a tensor is not floating point;
      the message lists such keys (up to 30 of each kind) and, when the keys
      are those of another arch, names it.
  """
  if arch not in models.RESNET_NAMES:
    raise ConversionError(
      f"{arch!r} is not a torchvision video ResNet (one of "
      f"{', '.join(models.RESNET_NAMES)}); video transformers convert "
      "with python -m stclr_jax.convert.svfap"
    )
  encoder = abstract_encoder(arch)
  plan, ignorable = _key_plan(encoder)
  plan = {
    k: (("encoder", *path), is_conv) for k, (path, is_conv) in plan.items()
  }
  targets = _flat({"encoder": pure_state(encoder)})
  if with_classifier:
    fc = state_dict.get("fc.weight")
    if fc is not None and np.ndim(fc) == 2:
      targets.update(
        _flat(
          {"classifier": pure_state(abstract_classifier(int(np.shape(fc)[0])))}
        )
      )
    plan["fc.weight"] = (("classifier", "fc", "kernel"), True)
    plan["fc.bias"] = (("classifier", "fc", "bias"), False)
  else:
    ignorable |= {"fc.weight", "fc.bias"}

  problems = []
  unused = set(state_dict) - set(plan) - ignorable
  if unused:
    problems.append(f"unused state_dict keys: {listed(unused)}")
  missing = set(plan) - set(state_dict)
  if missing:
    problems.append(f"missing state_dict keys: {listed(missing)}")
  unassigned = set(targets) - {path for path, _ in plan.values()}
  if unassigned:
    problems.append(
      "variables of ours that no key maps to: "
      + listed("/".join(map(str, p)) for p in unassigned)
    )
  flat, bad_shapes, bad_dtypes = {}, [], []
  for key in sorted(set(plan) & set(state_dict)):
    path, is_conv = plan[key]
    value = np.asarray(state_dict[key])
    if not np.issubdtype(value.dtype, np.floating):
      bad_dtypes.append(f"{key} ({value.dtype})")
      continue
    if is_conv and value.ndim >= 2:  # OIDHW -> DHWIO; fc (out, in) -> (in, out)
      value = np.transpose(value, (*range(2, value.ndim), 1, 0))
    target = targets.get(path)
    if target is None or value.shape != target.shape:
      want = "nothing" if target is None else tuple(target.shape)
      bad_shapes.append(
        f"{key} {tuple(state_dict[key].shape)} -> "
        f"{'/'.join(map(str, path))} needs {want}"
      )
      continue
    flat[path] = np.ascontiguousarray(value, dtype=target.dtype)
  if bad_shapes:
    problems.append(
      "shape mismatches (torchvision shape -> ours): "
      + listed(bad_shapes, sep="; ")
    )
  if bad_dtypes:
    problems.append(f"non-floating tensors: {listed(bad_dtypes)}")
  if problems:
    guess = _guess_arch(state_dict) if (unused or missing) else None
    hint = (
      f"\nThe keys are those of {guess!r}: try --arch={guess}."
      if guess and guess != arch
      else ""
    )
    raise ConversionError(
      f"the state_dict does not match {arch}"
      f"{' with classifier' if with_classifier else ''}:\n  "
      + "\n  ".join(problems)
      + hint
    )
  tree = nnx.traversals.unflatten_mapping(flat)
  return Converted(
    tree["encoder"],
    tree.get("classifier"),
    tuple(sorted(ignorable & set(state_dict))),
  )


def _needs(package: str, path) -> ImportError:
  return ImportError(
    f"reading {path} needs the {package!r} package, which is not installed:"
    f" pip install {package} (or the project's 'torch' extra: "
    "pip install -e '.[torch]')"
  )


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a state_dict from ``.pth``/``.pt`` (needs torch) or
  ``.safetensors`` (needs safetensors) as numpy arrays on the host."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no such state_dict file: {path}")
  if path.suffix == ".safetensors":
    try:
      from safetensors.numpy import load_file
    except ImportError:
      raise _needs("safetensors", path) from None
    return dict(load_file(str(path)))
  if path.suffix not in (".pth", ".pt"):
    raise ValueError(f"{path}: expected a .pth, .pt or .safetensors file")
  try:
    import torch
  except ImportError:
    raise _needs("torch", path) from None
  obj = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(obj, Mapping) or not all(
    isinstance(v, torch.Tensor) for v in obj.values()
  ):
    raise ConversionError(
      f"{path} does not hold a plain state_dict (a mapping of names to "
      f"tensors) but a {type(obj).__name__}: save model.state_dict()"
    )
  return {
    k: (v.detach().float() if v.is_floating_point() else v.detach()).numpy()
    for k, v in obj.items()
  }


def _disk_size(path: pathlib.Path) -> int:
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
    prog="python -m stclr_jax.convert.torchvision",
    description="Convert a torchvision video ResNet state_dict to an Orbax "
    "checkpoint of stclr_jax's encoder (and classifier).",
  )
  parser.add_argument("--arch", required=True, choices=models.RESNET_NAMES)
  parser.add_argument(
    "--src",
    required=True,
    help="state_dict file: .pth/.pt (torch) or .safetensors",
  )
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument(
    "--with_classifier",
    action="store_true",
    help="also convert fc into a LinearClassifier",
  )
  parser.add_argument(
    "--overwrite",
    action="store_true",
    help="replace an existing conversion in --out",
  )
  args = parser.parse_args(argv)

  start = time.perf_counter()
  try:
    state_dict = load_state_dict(args.src)
    read_s = time.perf_counter() - start
    converted = torchvision_to_nnx(state_dict, args.arch, args.with_classifier)
    convert_s = time.perf_counter() - start - read_s
    metadata = save_converted(
      converted,
      args.arch,
      args.out,
      source=os.path.abspath(args.src),
      overwrite=args.overwrite,
    )
  except (ImportError, OSError, ValueError) as e:  # ConversionError included.
    parser.exit(1, f"{parser.prog}: error: {e}\n")
  wall_s = time.perf_counter() - start
  arrays = jax.tree.leaves([converted.encoder, converted.classifier])
  params = models.count_params(abstract_encoder(args.arch)) + sum(
    int(x.size) for x in jax.tree.leaves(converted.classifier)
  )
  size = _disk_size(pathlib.Path(args.out))
  counters = [k for k in converted.ignored if k.endswith("num_batches_tracked")]
  ignored = [
    f"{len(counters)} num_batches_tracked",
    *sorted(set(converted.ignored) - set(counters)),
  ]
  print(
    f"converted {args.arch} from {args.src}"
    + (
      f" with its {metadata['num_classes']}-way classifier"
      if metadata["num_classes"]
      else ""
    )
    + "\n"
    f"  tensors mapped: {len(arrays)}; ignored: {', '.join(ignored)}\n"
    f"  parameters: {params:,} (BatchNorm running statistics: "
    f"{sum(x.size for x in arrays) - params:,} more values)\n"
    f"  wall time: {wall_s:.2f} s (read {read_s:.2f} s, map "
    f"{convert_s:.2f} s, write {wall_s - read_s - convert_s:.2f} s)\n"
    f"  checkpoint: {args.out} ({size / 2**20:.1f} MiB on disk)"
  )
  return {
    "tensors": len(arrays),
    "params": params,
    "wall_s": wall_s,
    "bytes": size,
    "metadata": metadata,
  }


if __name__ == "__main__":
  main()
