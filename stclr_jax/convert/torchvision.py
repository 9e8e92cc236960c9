"""Converts torchvision's video ResNets to this package's NNX encoders.

torchvision's ``r2plus1d_18``, ``r3d_18`` and ``mc3_18`` (Kinetics-400
weights) map weight-for-weight onto :func:`stclr_jax.models.make_encoder`'s
models, and their 400-way ``fc`` onto a :class:`~stclr_jax.models.
LinearClassifier`::

  python -m stclr_jax.convert.torchvision --arch=r2plus1d_18 \\
      --src=r2plus1d_18-91a641e6.pth --out=/tmp/r2plus1d_18 [--with_classifier]

The output directory holds an Orbax checkpoint (``state/``) of the pure-dict
states ``{"encoder": ..., "classifier": ...}`` and ``metadata.json`` (arch,
width, number of classes, source, the input normalisation the weights expect).
:func:`load_converted` rebuilds the modules from it.

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
import json
import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stclr_jax import models
from stclr_jax.models.video_resnet import BLOCKS_PER_STAGE

# Normalisation of torchvision's Kinetics-400 video weights: RGB frames scaled
# to [0, 1], then (x - mean) / std per channel; clips resized to 128x171 and
# centre-cropped to 112x112 (torchvision's VideoClassification transform).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
FORMAT = "stclr_jax.convert.torchvision/1"
METADATA_FILE = "metadata.json"
STATE_DIR = "state"
NUM_FEATURES = 512  # the encoders' pooled feature at width 1.0
_BN_KEYS = (
  ("weight", "scale"),
  ("bias", "bias"),
  ("running_mean", "mean"),
  ("running_var", "var"),
)
_MAX_LISTED = 30
Path = tuple[Any, ...]


class ConversionError(ValueError):
  """A state_dict that does not map one-to-one onto the requested model."""


class Converted(NamedTuple):
  """Result of :func:`torchvision_to_nnx`.

  Attributes:
    encoder: nested dict of float32 numpy arrays shaped as
      ``nnx.to_pure_dict(nnx.state(encoder))``.
    classifier: the same for a ``LinearClassifier(512, num_classes)``, or
      None when not asked for.
    ignored: the state_dict keys deliberately not converted (sorted).
  """

  encoder: dict
  classifier: dict | None
  ignored: tuple[str, ...]


def _abstract_encoder(arch: str, **options) -> models.VideoResNet:
  if arch not in models.ENCODER_NAMES:
    raise ValueError(
      f"unknown arch {arch!r}; choose one of {', '.join(models.ENCODER_NAMES)}"
    )
  return nnx.eval_shape(
    lambda: models.make_encoder(arch, rngs=nnx.Rngs(0), **options)
  )


def _abstract_classifier(num_classes: int) -> models.LinearClassifier:
  return nnx.eval_shape(
    lambda: models.LinearClassifier(NUM_FEATURES, num_classes, rngs=nnx.Rngs(0))
  )


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


def _listed(keys, sep: str = ", ") -> str:
  keys = sorted(keys)
  more = len(keys) - _MAX_LISTED
  return sep.join(keys[:_MAX_LISTED]) + (
    f"{sep}... ({more} more)" if more > 0 else ""
  )


def _pure(module: nnx.Module) -> dict:
  return nnx.to_pure_dict(nnx.state(module))


_flat = nnx.traversals.flatten_mapping  # nested dict -> {path tuple: leaf}


def _guess_arch(keys) -> str | None:
  """The arch whose key set the state_dict has, if any."""
  keys = {k for k in keys if not k.startswith("fc.")}
  for arch in models.ENCODER_NAMES:
    plan, counters = _key_plan(_abstract_encoder(arch))
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
  encoder = _abstract_encoder(arch)
  plan, ignorable = _key_plan(encoder)
  plan = {
    k: (("encoder", *path), is_conv) for k, (path, is_conv) in plan.items()
  }
  targets = _flat({"encoder": _pure(encoder)})
  if with_classifier:
    fc = state_dict.get("fc.weight")
    if fc is not None and np.ndim(fc) == 2:
      targets.update(
        _flat({"classifier": _pure(_abstract_classifier(int(np.shape(fc)[0])))})
      )
    plan["fc.weight"] = (("classifier", "fc", "kernel"), True)
    plan["fc.bias"] = (("classifier", "fc", "bias"), False)
  else:
    ignorable |= {"fc.weight", "fc.bias"}

  problems = []
  unused = set(state_dict) - set(plan) - ignorable
  if unused:
    problems.append(f"unused state_dict keys: {_listed(unused)}")
  missing = set(plan) - set(state_dict)
  if missing:
    problems.append(f"missing state_dict keys: {_listed(missing)}")
  unassigned = set(targets) - {path for path, _ in plan.values()}
  if unassigned:
    problems.append(
      "variables of ours that no key maps to: "
      + _listed("/".join(map(str, p)) for p in unassigned)
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
      + _listed(bad_shapes, sep="; ")
    )
  if bad_dtypes:
    problems.append(f"non-floating tensors: {_listed(bad_dtypes)}")
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


def save_converted(
  converted: Converted,
  arch: str,
  out: str | os.PathLike,
  source: str = "",
  overwrite: bool = False,
) -> dict:
  """Writes ``out/state`` (Orbax) and ``out/metadata.json``; returns the
  metadata."""
  import orbax.checkpoint as ocp

  out = pathlib.Path(out).absolute()
  state_dir = out / STATE_DIR
  if (state_dir.exists() or (out / METADATA_FILE).exists()) and not overwrite:
    raise FileExistsError(
      f"{out} already holds a converted checkpoint; "
      "pass overwrite=True (--overwrite) to replace it"
    )
  out.mkdir(parents=True, exist_ok=True)
  (out / METADATA_FILE).unlink(missing_ok=True)  # written last: a marker.
  state = {"encoder": converted.encoder}
  if converted.classifier is not None:
    state["classifier"] = converted.classifier
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(state_dir, state, force=overwrite)
    checkpointer.wait_until_finished()
  num_classes = (
    None
    if converted.classifier is None
    else int(converted.classifier["fc"]["bias"].shape[0])
  )
  metadata = dict(
    format=FORMAT,
    arch=arch,
    width=1.0,
    num_classes=num_classes,
    source=str(source),
    ignored_keys=list(converted.ignored),
    input=dict(
      layout="(batch, time, height, width, 3), RGB in [0, 1]",
      mean=list(KINETICS_MEAN),
      std=list(KINETICS_STD),
      resize=[128, 171],
      crop=[112, 112],
    ),
  )
  (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
  return metadata


def build_modules(converted: Converted, arch: str, **options):
  """``(encoder, classifier or None)`` holding ``converted``'s values.

  The modules are built abstractly (no random initialisation) and filled
  with the values put on the default device; they are in training mode as
  built: call ``.eval()`` for BatchNorm's running statistics. ``options``
  are :func:`stclr_jax.models.make_encoder`'s.
  """

  def fill(abstract, values):
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, values))
    return nnx.merge(graphdef, state)

  encoder = fill(_abstract_encoder(arch, **options), converted.encoder)
  classifier = None
  if converted.classifier is not None:
    num_classes = int(np.shape(converted.classifier["fc"]["bias"])[0])
    classifier = fill(_abstract_classifier(num_classes), converted.classifier)
  return encoder, classifier


def load_converted(path: str | os.PathLike, **options):
  """Rebuilds the modules written by :func:`save_converted` / the CLI.

  Args:
    path: the ``--out`` directory.
    **options: encoder options of :func:`stclr_jax.models.make_encoder`
      (``dtype``, ``bn_groups``, ...; not ``width``, fixed at 1.0).

  Returns:
    ``(encoder, classifier or None, metadata)``; the modules are in training
    mode as built, call ``.eval()`` for BatchNorm's running statistics.

  Raises:
    FileNotFoundError: ``path`` has no converted checkpoint.
    ValueError: the checkpoint's arch or shapes do not match.
  """
  import orbax.checkpoint as ocp

  out = pathlib.Path(path).absolute()
  meta_file, state_dir = out / METADATA_FILE, out / STATE_DIR
  if not meta_file.is_file() or not state_dir.is_dir():
    raise FileNotFoundError(
      f"{out} holds no converted checkpoint (expected {METADATA_FILE} and "
      f"{STATE_DIR}/ written by python -m stclr_jax.convert.torchvision)"
    )
  metadata = json.loads(meta_file.read_text())
  arch = metadata.get("arch")
  if metadata.get("format") != FORMAT or arch not in models.ENCODER_NAMES:
    raise ValueError(
      f"{meta_file}: unknown format {metadata.get('format')!r} or arch {arch!r}"
    )
  if metadata.get("width", 1.0) != 1.0 or "width" in options:
    raise ValueError(f"{out}: converted checkpoints have width 1.0")
  num_classes = metadata.get("num_classes")
  target = {"encoder": _pure(_abstract_encoder(arch, **options))}
  if num_classes:  # Orbax restores into these shapes, after the check below.
    target["classifier"] = _pure(_abstract_classifier(int(num_classes)))
  with ocp.StandardCheckpointer() as checkpointer:
    stored = {
      p: tuple(x.shape)
      for p, x in _flat(
        checkpointer.metadata(state_dir).item_metadata.tree
      ).items()
    }
    wanted = {
      tuple(map(str, p)): tuple(x.shape) for p, x in _flat(target).items()
    }
    if stored != wanted:
      diff = sorted(
        "/".join(p) + f" {stored.get(p)} vs {wanted.get(p)}"
        for p in set(stored) | set(wanted)
        if stored.get(p) != wanted.get(p)
      )
      raise ValueError(
        f"{state_dir} does not match {arch} (stored vs "
        f"expected shapes): {_listed(diff)}"
      )
    restored = checkpointer.restore(state_dir, target)
  converted = Converted(
    restored["encoder"],
    restored.get("classifier"),
    tuple(metadata.get("ignored_keys", ())),
  )
  encoder, classifier = build_modules(converted, arch, **options)
  return encoder, classifier, metadata


def _disk_size(path: pathlib.Path) -> int:
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
    prog="python -m stclr_jax.convert.torchvision",
    description="Convert a torchvision video ResNet state_dict to an Orbax "
    "checkpoint of stclr_jax's encoder (and classifier).",
  )
  parser.add_argument("--arch", required=True, choices=models.ENCODER_NAMES)
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
  params = models.count_params(_abstract_encoder(args.arch)) + sum(
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
