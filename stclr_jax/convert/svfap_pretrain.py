"""SVFAP's (and VideoMAE's) pretraining checkpoints
(``PretrainVisionTransformer``: encoder and decoder) into
:class:`stclr_jax.models.masked_autoencoder.MaskedVideoAutoencoder`. The
command line is :mod:`stclr_jax.convert.svfap`'s, which recognises such a
state_dict by its keys: ``encoder.*``, ``decoder.*``,
``encoder_to_decoder.weight`` and ``mask_token``.

The encoder's final LayerNorm (``encoder.norm``) becomes the encoder's
``fc_norm``, the one LayerNorm the library's encoder has, which its masked
autoencoder applies to every visible token before ``encoder_to_decoder``.
(SVFAP's and VideoMAE's fine-tuning loaders strip ``encoder.`` and find no
``norm`` in the fine-tuning model, so there ``fc_norm`` starts from ones and
zeros; fine-tune from such a conversion with that in mind.) The decoder's
size is matched to a named one of :data:`stclr_jax.models.
masked_autoencoder.DECODERS` (``base``: 384 wide, 4 blocks, 6 heads).
Converted, the model computes the library's forward, which differs from
SVFAP's pretraining forward by its two fixed defects (the reverse blocks'
context, the fusion's alignment; see :mod:`stclr_jax.models.
masked_autoencoder`): the encoder's weights are exact, a continued
pretraining is the library's.

What converts: a pretraining checkpoint whose encoder is a named size
(a TPSBT pretrained at 512 wide, VideoMAE's ViT-B) and whose decoder is a
named one (``base``: 384 wide, 4 blocks: SVFAP's and VideoMAE-B's). SVFAP's
own script pretrains 768 wide and is refused with the reason; VideoMAE's
ViT-S decoder (192 wide) has no named size. ``metadata["input"]`` records
SVFAP's clips (160^2, 16 frames at stride 4, ImageNet's mean and std);
VideoMAE's checkpoints were trained on 224^2.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stclr_jax import models
from stclr_jax.convert import converted as conv
from stclr_jax.convert.converted import Converted, listed
from stclr_jax.convert.svfap import (
  PRETRAIN_ENCODER,
  _to_library,
  _torch_key,
  guess_arch,
)
from stclr_jax.convert.torchvision import ConversionError
from stclr_jax.models import masked_autoencoder as mae


def _encoder_part(state_dict: Mapping) -> dict:
  """A pretraining state_dict's encoder under fine-tuning names:
  ``encoder.`` stripped, ``norm`` -> ``fc_norm``."""
  n = len(PRETRAIN_ENCODER)
  out = {}
  for key, value in state_dict.items():
    if key.startswith(PRETRAIN_ENCODER):
      key = key[n:]
      if key.startswith("norm."):
        key = "fc_" + key
      out[key] = value
  return out


def _pretrain_key(path: tuple) -> str:
  """A library autoencoder parameter path -> SVFAP's pretraining key."""
  head, rest = str(path[0]), path[1:]
  if head == "encoder":
    key = _torch_key(rest)
    if key.startswith("fc_norm."):
      key = key[len("fc_") :]
    return PRETRAIN_ENCODER + key
  if head == "mask_token":
    return "mask_token"
  prefix = {
    "encoder_to_decoder": "encoder_to_decoder",
    "decoder_blocks": "decoder.blocks",
    "decoder_norm": "decoder.norm",
    "head": "decoder.head",
  }.get(head)
  if prefix is None:
    raise ConversionError(f"no SVFAP name for the autoencoder's {path}")
  return prefix + "." + _torch_key(rest)


def guess_decoder(state_dict: Mapping) -> str:
  """The named decoder (:data:`stclr_jax.models.masked_autoencoder.
  DECODERS`) with a pretraining state_dict's width and depth (heads are
  not in the weights)."""
  if "mask_token" not in state_dict:
    raise ConversionError("a pretraining checkpoint without mask_token")
  width = int(np.shape(state_dict["mask_token"])[-1])
  depth = len(
    {
      int(k.split(".")[2])
      for k in state_dict
      if k.startswith("decoder.blocks.")
    }
  )
  names = [
    name
    for name, d in mae.DECODERS.items()
    if d.width == width and d.depth == depth
  ]
  if len(names) != 1:
    raise ConversionError(
      f"the decoder is {width} wide with {depth} blocks: "
      + ("no" if not names else "more than one")
      + " named decoder has that size; decoders: "
      + ", ".join(
        f"{n} ({d.width} wide, {d.depth} blocks)"
        for n, d in sorted(mae.DECODERS.items())
      )
    )
  return names[0]


def svfap_pretrain_to_nnx(
  state_dict: Mapping[str, np.ndarray],
  arch: str | None = None,
  decoder: str | None = None,
) -> tuple[Converted, str, str]:
  """Maps a pretraining state_dict onto :func:`stclr_jax.models.
  masked_autoencoder.make_autoencoder` ``(arch, decoder)``, both guessed
  from the weights when None. Every key must map and every parameter be
  filled. Returns ``(converted, arch, decoder)``, ``converted.decoder`` the
  state outside the encoder."""
  arch = arch or guess_arch(_encoder_part(state_dict))
  decoder = decoder or guess_decoder(state_dict)
  if arch not in models.TRANSFORMER_SIZES or decoder not in mae.DECODERS:
    raise ConversionError(
      f"arch={arch!r}, decoder={decoder!r}: choose a video transformer of "
      f"{', '.join(sorted(models.TRANSFORMER_SIZES))} and a decoder of "
      f"{', '.join(sorted(mae.DECODERS))}"
    )
  plan = {
    _pretrain_key(p): (p, x.shape)
    for p, x in conv._flat(
      conv.pure_state(conv.abstract_autoencoder(arch, decoder))
    ).items()
  }
  missing = sorted(set(plan) - set(state_dict))
  unexpected = sorted(set(state_dict) - set(plan))
  if missing or unexpected:
    raise ConversionError(
      f"the pretraining checkpoint does not match {arch} with the "
      f"{decoder} decoder: "
      + (f"missing keys: {listed(missing)}" if missing else "")
      + ("; " if missing and unexpected else "")
      + (f"unexpected keys: {listed(unexpected)}" if unexpected else "")
    )
  tree, wrong = {}, []
  for key, (path, shape) in plan.items():
    value = np.asarray(state_dict[key], np.float32)
    if key == "mask_token":  # (1, 1, d) -> (d,)
      value = value[0, 0] if value.shape[:2] == (1, 1) else value
    else:
      value = _to_library(value)
    if value.shape != tuple(shape):
      wrong.append(
        f"{key} {tuple(np.shape(state_dict[key]))} (as {value.shape}) "
        f"vs {tuple(shape)}"
      )
      continue
    node = tree
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  if wrong:
    raise ConversionError(
      f"wrong shapes for {arch} with the {decoder} decoder: "
      f"{listed(wrong, '; ')}"
    )
  encoder = tree.pop("encoder")
  return Converted(encoder, None, (), tree), arch, decoder
