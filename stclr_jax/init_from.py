"""An encoder's initial values: ``config.init_from``, loaded by
:func:`init_encoder`; pretraining and evaluation both start from here.

``config.init_from`` names a converted Kinetics-400 checkpoint (``python -m
stclr_jax.convert.torchvision``; :func:`load_converted`), a pretraining
workdir or its ``checkpoints/`` folder (:func:`restore_pretrained`: the
encoder of step ``config.init_step``, by default the latest; the
projection head is dropped), or nothing (random weights, the from-scratch
baseline). A directory that holds neither, or a checkpoint of another
architecture or width, is an error that says so.

TensorFlow-free.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from stclr_jax import models
from stclr_jax.convert import converted
from stclr_jax.models import masked_autoencoder
from stclr_jax.workdir import CONFIG_FILE, read_record


def init_encoder(config, model: models.ContrastiveModel) -> dict:
  """Loads ``config.init_from`` into ``model.encoder`` (nothing when it is
  empty); returns a description of the initial values for reports."""
  if not config.get("init_from"):
    return {"init": "random", "seed": config.seed}
  path = pathlib.Path(config.init_from).absolute()
  if not path.is_dir():
    raise FileNotFoundError(f"config.init_from={path}: no such directory")
  if (path / converted.METADATA_FILE).is_file():
    return load_converted(config, model)
  return restore_pretrained(config, model)


def load_converted(config, model: models.ContrastiveModel) -> dict:
  """Copies a converted encoder into ``model.encoder``, after checking the
  architecture and the input normalisation it expects. For a masked
  autoencoder (``pretext.mae``) and a converted pretraining checkpoint, the
  decoder too (its size must be ``pretext.mae.decoder``). Returns what was
  loaded, for the report."""
  conv, meta = converted.restore_converted(config.init_from)
  # model.width scales the ResNets only; a transformer's size is its name.
  resnet = models.family(config.model.encoder) == "resnet"
  if meta["arch"] != config.model.encoder or (
    resnet and config.model.width != 1.0
  ):
    raise ValueError(
      f"config.init_from={config.init_from} holds a {meta['arch']} (width "
      f"1.0); the config builds {config.model.encoder} with width "
      f"{config.model.width}"
    )
  norm = meta.get("input", {})
  want = (tuple(norm.get("mean", ())), tuple(norm.get("std", ())))
  have = (tuple(config.data.mean), tuple(config.data.std))
  if want != ((), ()) and not np.allclose(
    np.ravel(want[0] + want[1]), np.ravel(have[0] + have[1])
  ):
    raise ValueError(
      f"config.init_from={config.init_from} expects input mean {want[0]} "
      f"and std {want[1]}, the config has {have[0]} and {have[1]}: set "
      "data.mean / data.std (for torchvision's Kinetics-400 weights the "
      "config variant ':init=kinetics400' does)"
    )
  encoder, _ = converted.build_modules(conv, meta["arch"])
  nnx.update(model.encoder, nnx.state(encoder))
  info = {
    "init": "converted",
    "path": str(pathlib.Path(config.init_from).absolute()),
  }
  if isinstance(model, masked_autoencoder.MaskedVideoAutoencoder):
    info["decoder"] = "random"
    if conv.decoder is not None:
      want_decoder = config.pretext.mae.decoder
      if meta["decoder"] != want_decoder:
        raise ValueError(
          f"config.init_from={config.init_from} holds the {meta['decoder']} "
          f"decoder; the config builds pretext.mae.decoder={want_decoder!r}"
        )
      state = nnx.state(model)  # the encoder is in already: the rest
      nnx.replace_by_pure_dict(state, conv.decoder)
      nnx.update(model, state)
      info["decoder"] = "converted"
  return info


def pure(tree):
  """A checkpointed NNX state as ``nnx.to_pure_dict`` gives it: variables
  saved as ``{"value": x}`` unwrapped, list indices as ints."""
  if isinstance(tree, dict):
    if set(tree) == {"value"}:
      return tree["value"]
    return {
      (int(k) if isinstance(k, str) and k.isdigit() else k): pure(v)
      for k, v in tree.items()
    }
  return tree


def _paths(tree) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in flat}


def _check_pretraining_config(config, workdir: pathlib.Path) -> None:
  """The pretraining run's model section must match the evaluation's."""
  path = workdir / CONFIG_FILE
  if not path.is_file():
    return
  model = read_record(str(workdir), CONFIG_FILE).get("model", {})
  for key in ("encoder", "width"):
    if key in model and model[key] != config.model[key]:
      raise ValueError(
        f"config.init_from={workdir} was pretrained with model.{key}="
        f"{model[key]!r} (see {path}); this config builds "
        f"model.{key}={config.model[key]!r}. Set --config.model.{key}="
        f"{model[key]!r} (or point init_from at a matching run)"
      )


def _pretraining_checkpoints(path: pathlib.Path):
  """``(workdir, checkpoint dir)`` of a pretraining workdir or of its
  ``checkpoints/`` folder."""
  if (path / "checkpoints").is_dir():
    return path, path / "checkpoints"
  return path.parent, path


def restore_pretrained(config, model: models.ContrastiveModel) -> dict:
  """Loads a pretraining checkpoint's encoder (and BatchNorm statistics)
  into ``model.encoder``: step ``config.init_step`` (< 0: the latest)."""
  path = pathlib.Path(config.init_from).absolute()
  workdir, ckpt_dir = _pretraining_checkpoints(path)
  _check_pretraining_config(config, workdir)
  mngr = ocp.CheckpointManager(
    ckpt_dir, item_handlers=ocp.StandardCheckpointHandler()
  )
  steps = mngr.all_steps()
  if not steps:
    raise FileNotFoundError(
      f"config.init_from={path}: no Orbax checkpoint in {ckpt_dir} (empty, "
      "or not a pretraining workdir or a converted checkpoint)"
    )
  init_step = config.get("init_step", -1)
  step = mngr.latest_step() if init_step < 0 else init_step
  if step not in steps:
    raise ValueError(
      f"config.init_step={step}: {ckpt_dir} has steps {sorted(steps)}"
    )
  meta = mngr.item_metadata(step)
  meta = getattr(meta, "tree", meta)
  if (
    not isinstance(meta, dict)
    or "params" not in meta
    or "encoder" not in meta["params"]
  ):
    raise ValueError(
      f"{ckpt_dir}/{step}: not an ST-CLR pretraining checkpoint (no "
      "params/encoder)"
    )
  params = nnx.state(model.encoder, nnx.Param)
  batch_stats = nnx.state(model.encoder, nnx.BatchStat)
  want = {
    "params": nnx.to_pure_dict(params),
    "batch_stats": nnx.to_pure_dict(batch_stats),
  }
  # A checkpoint keeps no empty trees: an encoder without BatchNorm (a
  # video transformer) has no batch_stats/encoder entry.
  have = {k: pure((meta.get(k) or {}).get("encoder", {})) for k in want}
  want_shapes, have_shapes = _paths(want), _paths(have)
  if want_shapes != have_shapes:
    diff = sorted(set(want_shapes.items()) ^ set(have_shapes.items()))[:3]
    raise ValueError(
      f"{ckpt_dir}/{step} holds an encoder of another architecture or "
      f"width than config.model ({config.model.encoder}, width "
      f"{config.model.width}); first differences (path, shape): {diff}"
    )
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta
  )
  restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  mngr.close()
  nnx.replace_by_pure_dict(params, pure(restored["params"]["encoder"]))
  nnx.replace_by_pure_dict(
    batch_stats,
    pure((restored.get("batch_stats") or {}).get("encoder", {})),
  )
  nnx.update(model.encoder, params, batch_stats)
  return {"init": "st-clr", "path": str(ckpt_dir), "step": int(step)}
