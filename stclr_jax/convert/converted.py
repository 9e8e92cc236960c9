"""Converted checkpoints: their in-memory form and their directory on disk.

A conversion (:func:`stclr_jax.convert.torchvision.torchvision_to_nnx`)
gives a :class:`Converted` of pure-dict states. :func:`save_converted` writes
it as a directory holding an Orbax checkpoint (``state/``) of the pure-dict
states ``{"encoder": ..., "classifier": ...}`` and ``metadata.json`` (arch,
width, number of classes, source, the input normalisation the weights
expect); :func:`load_converted` rebuilds the modules from it, and
:func:`build_modules` from a :class:`Converted` in memory.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from stclr_jax import models
from stclr_jax.convert.kinetics import KINETICS_MEAN, KINETICS_STD

# Written into and checked in metadata.json; conversions on disk carry
# this exact string, so it stays as it is to keep them loading.
FORMAT = "stclr_jax.convert.torchvision/1"
SVFAP_FORMAT = "stclr_jax.convert.svfap/1"
FORMATS = (FORMAT, SVFAP_FORMAT)
KINETICS_INPUT = dict(
  layout="(batch, time, height, width, 3), RGB in [0, 1]",
  mean=list(KINETICS_MEAN),
  std=list(KINETICS_STD),
  resize=[128, 171],
  crop=[112, 112],
)
METADATA_FILE = "metadata.json"
STATE_DIR = "state"
NUM_FEATURES = 512  # the encoders' pooled feature at width 1.0
_MAX_LISTED = 30


class Converted(NamedTuple):
  """Result of :func:`stclr_jax.convert.torchvision.torchvision_to_nnx`.

  Attributes:
    encoder: nested dict of float32 numpy arrays shaped as
      ``nnx.to_pure_dict(nnx.state(encoder))``.
    classifier: the same for a ``LinearClassifier(512, num_classes)``, or
      None when not asked for.
    ignored: the state_dict keys deliberately not converted (sorted).
    decoder: for a masked-autoencoding (pretraining) checkpoint, the
      autoencoder's state outside its encoder (``encoder_to_decoder``,
      ``mask_token``, ``decoder_blocks``, ``decoder_norm``, ``head`` of
      :class:`stclr_jax.models.masked_autoencoder.MaskedVideoAutoencoder`);
      None otherwise.
  """

  encoder: dict
  classifier: dict | None
  ignored: tuple[str, ...]
  decoder: dict | None = None


def abstract_autoencoder(arch: str, decoder: str, **options):
  """``make_autoencoder(arch, decoder, **options)`` built abstractly."""
  from stclr_jax.models import masked_autoencoder

  return nnx.eval_shape(
    lambda: masked_autoencoder.make_autoencoder(
      arch, decoder, rngs=nnx.Rngs(0), **options
    )
  )


def decoder_state(autoencoder) -> dict:
  """An autoencoder's pure state without its encoder."""
  state = pure_state(autoencoder)
  state.pop("encoder")
  return state


def abstract_encoder(arch: str, **options):
  """``make_encoder(arch, **options)`` built abstractly (shapes only)."""
  if arch not in models.ENCODER_NAMES:
    raise ValueError(
      f"unknown arch {arch!r}; choose one of {', '.join(models.ENCODER_NAMES)}"
    )
  return nnx.eval_shape(
    lambda: models.make_encoder(arch, rngs=nnx.Rngs(0), **options)
  )


def abstract_classifier(
  num_classes: int, features: int = NUM_FEATURES
) -> models.LinearClassifier:
  """A ``LinearClassifier(features, num_classes)`` built abstractly."""
  return nnx.eval_shape(
    lambda: models.LinearClassifier(features, num_classes, rngs=nnx.Rngs(0))
  )


def listed(keys, sep: str = ", ") -> str:
  """The sorted keys joined for an error message, at most 30 of them."""
  keys = sorted(keys)
  more = len(keys) - _MAX_LISTED
  return sep.join(keys[:_MAX_LISTED]) + (
    f"{sep}... ({more} more)" if more > 0 else ""
  )


def pure_state(module: nnx.Module) -> dict:
  """``module``'s state as a nested dict of arrays."""
  return nnx.to_pure_dict(nnx.state(module))


_flat = nnx.traversals.flatten_mapping  # nested dict -> {path tuple: leaf}


def save_converted(
  converted: Converted,
  arch: str,
  out: str | os.PathLike,
  source: str = "",
  overwrite: bool = False,
  *,
  fmt: str = FORMAT,
  input_spec: dict | None = None,
  decoder: str | None = None,
) -> dict:
  """Writes ``out/state`` (Orbax) and ``out/metadata.json``; returns the
  metadata. ``fmt``: :data:`FORMAT` (torchvision's ResNets) or
  :data:`SVFAP_FORMAT`; ``input_spec``: the input the weights expect
  (default: torchvision's Kinetics-400 clips); ``decoder``: the name in
  :data:`stclr_jax.models.masked_autoencoder.DECODERS` of
  ``converted.decoder`` (required with it)."""
  if (decoder is None) != (converted.decoder is None):
    raise ValueError(
      "save_converted: converted.decoder and decoder= go together (a "
      "decoder's state needs its name in DECODERS, a name needs the state); "
      f"got decoder={decoder!r} with "
      + ("no" if converted.decoder is None else "a")
      + " decoder state"
    )
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
  if converted.decoder is not None:
    state["decoder"] = converted.decoder
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(state_dir, state, force=overwrite)
    checkpointer.wait_until_finished()
  num_classes = (
    None
    if converted.classifier is None
    else int(converted.classifier["fc"]["bias"].shape[0])
  )
  metadata = dict(
    format=fmt,
    arch=arch,
    width=1.0,
    num_classes=num_classes,
    source=str(source),
    ignored_keys=list(converted.ignored),
    input=dict(input_spec or KINETICS_INPUT),
  )
  if decoder is not None:
    metadata["decoder"] = decoder
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

  abstract = abstract_encoder(arch, **options)
  encoder = fill(abstract, converted.encoder)
  classifier = None
  if converted.classifier is not None:
    num_classes = int(np.shape(converted.classifier["fc"]["bias"])[0])
    classifier = fill(
      abstract_classifier(num_classes, abstract.features),
      converted.classifier,
    )
  return encoder, classifier


def restore_converted(path: str | os.PathLike, **options):
  """``(converted, metadata)`` of the directory written by
  :func:`save_converted`, after checking every stored shape against the
  architecture it names; ``options`` as :func:`load_converted`'s.

  Raises:
    FileNotFoundError: ``path`` has no converted checkpoint.
    ValueError: the checkpoint's arch or shapes do not match.
  """
  out = pathlib.Path(path).absolute()
  meta_file, state_dir = out / METADATA_FILE, out / STATE_DIR
  if not meta_file.is_file() or not state_dir.is_dir():
    raise FileNotFoundError(
      f"{out} holds no converted checkpoint (expected {METADATA_FILE} and "
      f"{STATE_DIR}/ written by python -m stclr_jax.convert.torchvision or "
      "stclr_jax.convert.svfap)"
    )
  metadata = json.loads(meta_file.read_text())
  arch = metadata.get("arch")
  if metadata.get("format") not in FORMATS or arch not in models.ENCODER_NAMES:
    raise ValueError(
      f"{meta_file}: unknown format {metadata.get('format')!r} or arch {arch!r}"
    )
  if metadata.get("width", 1.0) != 1.0 or "width" in options:
    raise ValueError(f"{out}: converted checkpoints have width 1.0")
  num_classes = metadata.get("num_classes")
  abstract = abstract_encoder(arch, **options)
  target = {"encoder": pure_state(abstract)}
  if num_classes:  # Orbax restores into these shapes, after the check below.
    target["classifier"] = pure_state(
      abstract_classifier(int(num_classes), abstract.features)
    )
  if metadata.get("decoder"):
    target["decoder"] = decoder_state(
      abstract_autoencoder(arch, metadata["decoder"])
    )
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
        f"expected shapes): {listed(diff)}"
      )
    restored = checkpointer.restore(state_dir, target)
  converted = Converted(
    restored["encoder"],
    restored.get("classifier"),
    tuple(metadata.get("ignored_keys", ())),
    restored.get("decoder"),
  )
  return converted, metadata


def load_converted(path: str | os.PathLike, **options):
  """Rebuilds the modules written by :func:`save_converted` / the CLI.

  Args:
    path: the ``--out`` directory.
    **options: encoder options of :func:`stclr_jax.models.make_encoder`
      (``dtype``, ``bn_groups``, ...; not ``width``, fixed at 1.0).

  Returns:
    ``(encoder, classifier or None, metadata)``; the modules are in training
    mode as built, call ``.eval()`` for BatchNorm's running statistics.
    A pretraining conversion's decoder is not built: see
    :func:`load_autoencoder`.

  Raises:
    FileNotFoundError: ``path`` has no converted checkpoint.
    ValueError: the checkpoint's arch or shapes do not match.
  """
  converted, metadata = restore_converted(path, **options)
  encoder, classifier = build_modules(converted, metadata["arch"], **options)
  return encoder, classifier, metadata


def build_autoencoder(converted: Converted, arch: str, decoder: str, **options):
  """The masked autoencoder holding a pretraining conversion's encoder and
  decoder (built abstractly, then filled). ``options``: ``dtype``,
  ``param_dtype``."""
  if converted.decoder is None:
    raise ValueError(
      "this conversion holds an encoder without a decoder (a fine-tuning "
      "checkpoint's); a masked autoencoder needs a pretraining checkpoint's"
    )
  graphdef, state = nnx.split(abstract_autoencoder(arch, decoder, **options))
  values = dict(converted.decoder, encoder=converted.encoder)
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, values))
  return nnx.merge(graphdef, state)


def load_autoencoder(path: str | os.PathLike, **options):
  """``(autoencoder, metadata)``: the masked autoencoder (encoder and
  decoder) of a converted pretraining checkpoint (``python -m
  stclr_jax.convert.svfap`` of a SVFAP/VideoMAE pretraining state_dict).
  ``options``: ``dtype``, ``param_dtype``."""
  converted, metadata = restore_converted(path, **options)
  if converted.decoder is None:
    raise ValueError(
      f"{path} holds an encoder without a decoder (a fine-tuning "
      "conversion); a masked autoencoder needs a pretraining checkpoint's"
    )
  model = build_autoencoder(
    converted, metadata["arch"], metadata["decoder"], **options
  )
  return model, metadata
