"""SVFAP's checkpoints (sunlicai/SVFAP, ``TPSBT``; VideoMAE's ViT has the
same names) into the library's video transformers: fine-tuning ones
(encoder and head) and pretraining ones (``PretrainVisionTransformer``:
encoder and decoder, into :class:`stclr_jax.models.masked_autoencoder.
MaskedVideoAutoencoder`).

  python -m stclr_jax.convert.svfap --src=CKPT.pth --out=DIR [--num_classes=N]

A pretraining checkpoint (keys ``encoder.*``, ``decoder.*``,
``encoder_to_decoder.weight``, ``mask_token``) is recognised by its keys
and converted by :mod:`stclr_jax.convert.svfap_pretrain`.

The checkpoint is a bare state_dict or one under ``model`` (or
``module``). Its size is read from its tensors and matched to a named size
of :data:`stclr_jax.models.TRANSFORMER_SIZES` (heads are not in the
weights, so only named sizes convert). Every key must map and every
parameter must be filled: a missing, unexpected or mis-shaped key is an
error naming it. A 768-wide TPSBT is refused with the reason: SVFAP's
pretraining script builds its encoder 768 wide with 12 heads while its
fine-tuning model is 512 wide with 8, and SVFAP's own loader only prints
the mismatch, so such a checkpoint fine-tuned there starts from random
weights.

:func:`load_converted` returns ``(encoder, classifier, metadata)``, with
``classifier(encoder(x))`` the logits of a channels-last clip normalised
by ``metadata["input"]``'s ImageNet mean and std.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time
from collections.abc import Mapping

import jax
import numpy as np

from stclr_jax import models
from stclr_jax.convert import converted as conv
from stclr_jax.convert.converted import Converted, listed
from stclr_jax.convert.torchvision import ConversionError

INPUT = dict(
  layout="(batch, time, height, width, 3), RGB in [0, 1]",
  mean=[0.485, 0.456, 0.406],  # ImageNet's, as SVFAP's loaders
  std=[0.229, 0.224, 0.225],
  frames=16,
  sampling_rate=4,
  crop=[160, 160],
)
PRETRAIN_WIDTH = 768  # SVFAP's run_mae_pretraining encoder


def _torch_key(path: tuple) -> str:
  """A library parameter path -> SVFAP's state_dict key."""
  parts = [str(p) for p in path]
  if parts[0] == "patch_embed":
    parts = ["patch_embed", "proj", parts[1]]
  if parts[-1] in ("kernel", "scale"):
    parts[-1] = "weight"
  return ".".join(parts)


def _to_library(value: np.ndarray) -> np.ndarray:
  """A PyTorch weight in the library's layout: Linear (out, in) -> (in,
  out); Conv1d (out, in, k) -> (k, in, out); Conv3d (out, in, t, h, w) ->
  (t, h, w, in, out); vectors as they are."""
  order = {2: (1, 0), 3: (2, 1, 0), 5: (2, 3, 4, 1, 0)}.get(value.ndim)
  return value if order is None else np.transpose(value, order)


def describe(state_dict: Mapping[str, np.ndarray]) -> dict:
  """The size a state_dict holds: family, width, patch, tubelet, depths
  (from its stage structure), bottleneck tokens, classes."""
  if "patch_embed.proj.weight" not in state_dict:
    raise ConversionError(
      "no patch_embed.proj.weight (nor encoder.patch_embed.proj.weight): "
      "not a SVFAP/VideoMAE fine-tuning or pretraining state_dict"
    )
  w = np.shape(state_dict["patch_embed.proj.weight"])
  blocks = sorted(
    {int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")}
  )
  cross = [b for b in blocks if f"blocks.{b}.cross_attn.q.weight" in state_dict]
  stages = len(
    {
      k.split(".")[1]
      for k in state_dict
      if k.startswith("temporal_downsamples.")
    }
  )
  head = state_dict.get("head.weight")
  tokens = state_dict.get("spatial_downsamples.0.mlp.fc2.weight")
  return dict(
    family="tpsbt" if stages else "vit",
    width=int(w[0]),
    tubelet=int(w[2]),
    patch=int(w[3]),
    blocks=len(blocks),
    cross_blocks=len(cross),
    pyramid_stages=stages,
    tokens=None if tokens is None else int(np.shape(tokens)[0]),
    num_classes=None if head is None else int(np.shape(head)[0]),
  )


def guess_arch(state_dict: Mapping[str, np.ndarray]) -> str:
  """The named size whose structure the state_dict has."""
  d = describe(state_dict)
  if d["family"] == "tpsbt" and d["width"] == PRETRAIN_WIDTH:
    raise ConversionError(
      f"patch_embed.proj.weight is {PRETRAIN_WIDTH} wide: SVFAP's "
      "pretraining script builds a 768-wide, 12-head TPSBT, while its "
      "fine-tuning model (svfap_base_patch16_160) is 512 wide with 8 heads "
      "and its loader only prints the mismatch, so this checkpoint would be "
      "fine-tuned there from random weights. Pretrain at width 512 (the "
      "library's tpsbt_base) to convert it"
    )
  for name, s in models.TRANSFORMER_SIZES.items():
    if (
      s.family == d["family"]
      and s.width == d["width"]
      and s.patch == d["patch"]
      and s.tubelet == d["tubelet"]
      and sum(s.depths) == d["blocks"]
      and sum(s.depths[1:]) == d["cross_blocks"]
      and len(s.depths) - 1 == d["pyramid_stages"]
      and (d["tokens"] is None or d["tokens"] == s.tokens)
    ):
      return name
  raise ConversionError(
    f"no named video transformer has this checkpoint's structure {d}; "
    f"sizes: {', '.join(sorted(models.TRANSFORMER_SIZES))}"
  )


def svfap_to_nnx(
  state_dict: Mapping[str, np.ndarray],
  arch: str | None = None,
  num_classes: int | None = None,
) -> tuple[Converted, str]:
  """Maps ``state_dict`` onto the encoder of ``arch`` (guessed when None)
  and, where it has ``head.*``, a classifier. ``num_classes``: checked
  against the head; 0 drops the head. Returns ``(converted, arch)``. A
  pretraining state_dict is :func:`stclr_jax.convert.svfap_pretrain.
  svfap_pretrain_to_nnx`'s."""
  if is_pretraining(state_dict):
    raise ConversionError(
      "a pretraining checkpoint (encoder./decoder. keys): convert it with "
      "svfap_pretrain.svfap_pretrain_to_nnx (the command line does so by "
      "itself)"
    )
  arch = arch or guess_arch(state_dict)
  if arch not in models.TRANSFORMER_SIZES:
    raise ConversionError(
      f"--arch={arch!r} is not a video transformer; choose one of "
      f"{', '.join(sorted(models.TRANSFORMER_SIZES))}"
    )
  abstract = conv.abstract_encoder(arch)
  has_head = "head.weight" in state_dict or "head.bias" in state_dict
  if num_classes and not has_head:
    raise ConversionError(
      f"--num_classes={num_classes} but the checkpoint has no head.weight"
    )
  head = has_head and num_classes != 0
  plan = {
    _torch_key(p): ("encoder", p, x.shape)
    for p, x in conv._flat(conv.pure_state(abstract)).items()
  }
  if head:
    n = int(
      np.shape(state_dict.get("head.bias", state_dict.get("head.weight")))[0]
    )
    if num_classes and num_classes != n:
      raise ConversionError(
        f"head.weight has {n} classes, --num_classes={num_classes}"
      )
    clf = conv.abstract_classifier(n, abstract.features)
    for p, x in conv._flat(conv.pure_state(clf)).items():
      plan["head." + _torch_key(p[1:])] = ("classifier", p, x.shape)
  ignored = (
    {"head.weight", "head.bias"} & set(state_dict) if not head else set()
  )
  missing = sorted(set(plan) - set(state_dict))
  unexpected = sorted(set(state_dict) - set(plan) - ignored)
  if missing or unexpected:
    raise ConversionError(
      f"the checkpoint does not match {arch}: "
      + (f"missing keys: {listed(missing)}" if missing else "")
      + ("; " if missing and unexpected else "")
      + (f"unexpected keys: {listed(unexpected)}" if unexpected else "")
    )
  trees = {"encoder": {}, "classifier": {}}
  wrong = []
  for key, (part, path, shape) in plan.items():
    value = _to_library(np.asarray(state_dict[key], np.float32))
    if value.shape != tuple(shape):
      wrong.append(
        f"{key} {tuple(np.shape(state_dict[key]))} (as {value.shape}) "
        f"vs {tuple(shape)}"
      )
      continue
    node = trees[part]
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  if wrong:
    raise ConversionError(f"wrong shapes for {arch}: {listed(wrong, '; ')}")
  return (
    Converted(
      trees["encoder"],
      trees["classifier"] if head else None,
      tuple(sorted(ignored)),
    ),
    arch,
  )


PRETRAIN_ENCODER = "encoder."


def is_pretraining(state_dict: Mapping) -> bool:
  """Whether ``state_dict`` is a ``PretrainVisionTransformer``'s."""
  return PRETRAIN_ENCODER + "patch_embed.proj.weight" in state_dict


def load_state_dict(path, unsafe_pickle: bool = False) -> dict:
  """A state_dict from a ``.pth`` (needs torch): bare, or under ``model``
  or ``module`` (SVFAP's training checkpoints also hold the optimiser and
  the arguments, an ``argparse.Namespace`` that only a full unpickling
  reads: ``unsafe_pickle``, for files you trust)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no such checkpoint file: {path}")
  try:
    import torch
  except ImportError:
    raise ImportError(
      f"reading {path} needs torch: pip install -e '.[torch]'"
    ) from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
  except Exception as e:
    if unsafe_pickle:
      raise
    raise ConversionError(
      f"{path}: torch.load(weights_only=True) failed ({type(e).__name__}: "
      f"{str(e).splitlines()[0] if str(e) else ''}); if it is a full "
      "training checkpoint you trust, pass --unsafe_pickle"
    ) from None
  for key in ("model", "module"):
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
      obj = obj[key]
      break
  if not isinstance(obj, Mapping) or not all(
    isinstance(v, torch.Tensor) for v in obj.values()
  ):
    raise ConversionError(
      f"{path} holds no state_dict (a mapping of names to tensors), bare "
      "or under 'model'"
    )
  return {k: v.detach().float().numpy() for k, v in obj.items()}


def load_converted(path: str | os.PathLike, **options):
  """``(encoder, classifier or None, metadata)`` of a conversion; as
  :func:`stclr_jax.convert.converted.load_converted`."""
  return conv.load_converted(path, **options)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
    prog="python -m stclr_jax.convert.svfap",
    description="Convert a SVFAP (TPSBT) or VideoMAE (ViT) checkpoint to an "
    "Orbax checkpoint of stclr_jax's encoder and classifier (fine-tuning "
    "checkpoints) or encoder and decoder (pretraining checkpoints).",
  )
  parser.add_argument("--src", required=True, help=".pth checkpoint")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--arch", default=None, help="default: from the weights")
  parser.add_argument(
    "--num_classes",
    type=int,
    default=None,
    help="the head's classes (checked); 0: encoder only",
  )
  parser.add_argument("--unsafe_pickle", action="store_true")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    state_dict = load_state_dict(args.src, args.unsafe_pickle)
    decoder = None
    if is_pretraining(state_dict):
      if args.num_classes:
        raise ConversionError(
          f"--num_classes={args.num_classes}: {args.src} is a pretraining "
          "checkpoint (no classifier head)"
        )
      from stclr_jax.convert import svfap_pretrain

      converted, arch, decoder = svfap_pretrain.svfap_pretrain_to_nnx(
        state_dict, args.arch
      )
    else:
      converted, arch = svfap_to_nnx(state_dict, args.arch, args.num_classes)
    metadata = conv.save_converted(
      converted,
      arch,
      args.out,
      source=os.path.abspath(args.src),
      overwrite=args.overwrite,
      fmt=conv.SVFAP_FORMAT,
      input_spec=INPUT,
      decoder=decoder,
    )
  except (ImportError, OSError, ValueError) as e:
    parser.exit(1, f"{parser.prog}: error: {e}\n")
  params = sum(
    int(x.size)
    for x in jax.tree.leaves(
      [converted.encoder, converted.classifier, converted.decoder]
    )
  )
  wall_s = time.perf_counter() - start
  print(
    f"converted {arch} from {args.src}: {params:,} parameters"
    + (
      f", {metadata['num_classes']}-way head" if metadata["num_classes"] else ""
    )
    + (f", the {decoder} decoder" if decoder else "")
    + f"; {wall_s:.2f} s; checkpoint: {args.out}"
  )
  return {
    "arch": arch,
    "params": params,
    "wall_s": wall_s,
    "metadata": metadata,
  }


if __name__ == "__main__":
  main()
