"""The encoder an evaluation starts from: an ST-CLR pretraining checkpoint
(projection head dropped), a converted Kinetics-400 checkpoint, or random
weights (the from-scratch baseline, on the same code path)."""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
from flax import nnx

from stclr_jax import models
from stclr_jax import train


def _pure(tree):
  """A checkpointed NNX state as ``nnx.to_pure_dict`` gives it: variables
  saved as ``{"value": x}`` unwrapped, list indices as ints."""
  if isinstance(tree, dict):
    if set(tree) == {"value"}:
      return tree["value"]
    return {(int(k) if isinstance(k, str) and k.isdigit() else k): _pure(v)
            for k, v in tree.items()}
  return tree


def _paths(tree) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in flat}


def _check_pretraining_config(config, workdir: pathlib.Path):
  """The pretraining run's model section must match the evaluation's."""
  path = workdir / "config.json"
  if not path.is_file():
    return
  model = json.loads(path.read_text()).get("model", {})
  for key in ("encoder", "width"):
    if key in model and model[key] != config.model[key]:
      raise ValueError(
          f"config.init_from={workdir} was pretrained with model.{key}="
          f"{model[key]!r} (see {path}); this evaluation config builds "
          f"model.{key}={config.model[key]!r}. Set --config.model.{key}="
          f"{model[key]!r} (or point init_from at a matching run)")


def _pretraining_checkpoints(path: pathlib.Path):
  """``(workdir, checkpoint dir)`` of a pretraining workdir or of its
  ``checkpoints/`` folder."""
  if (path / "checkpoints").is_dir():
    return path, path / "checkpoints"
  return path.parent, path


def restore_pretrained(config, model: models.ContrastiveModel) -> dict:
  """Loads ``config.init_from``'s encoder (and BatchNorm statistics) into
  ``model.encoder``; returns a description of what was loaded."""
  import orbax.checkpoint as ocp
  from stclr_jax.convert import torchvision as tv

  path = pathlib.Path(config.init_from).absolute()
  if not path.is_dir():
    raise FileNotFoundError(f"config.init_from={path}: no such directory")
  if (path / tv.METADATA_FILE).is_file():
    train.load_init(config, model)
    return {"init": "converted", "path": str(path)}
  workdir, ckpt_dir = _pretraining_checkpoints(path)
  _check_pretraining_config(config, workdir)
  mngr = ocp.CheckpointManager(ckpt_dir,
                               item_handlers=ocp.StandardCheckpointHandler())
  steps = mngr.all_steps()
  if not steps:
    raise FileNotFoundError(
        f"config.init_from={path}: no Orbax checkpoint in {ckpt_dir} (empty, "
        "or not a pretraining workdir or a converted checkpoint)")
  step = mngr.latest_step() if config.init_step < 0 else config.init_step
  if step not in steps:
    raise ValueError(f"config.init_step={step}: {ckpt_dir} has steps "
                     f"{sorted(steps)}")
  meta = mngr.item_metadata(step)
  meta = getattr(meta, "tree", meta)
  if not isinstance(meta, dict) or "params" not in meta or (
      "encoder" not in meta["params"]):
    raise ValueError(f"{ckpt_dir}/{step}: not an ST-CLR pretraining "
                     "checkpoint (no params/encoder)")
  params, batch_stats = nnx.state(model.encoder, nnx.Param), nnx.state(
      model.encoder, nnx.BatchStat)
  want = {"params": nnx.to_pure_dict(params),
          "batch_stats": nnx.to_pure_dict(batch_stats)}
  have = {k: _pure(meta[k]["encoder"]) for k in want}
  want_shapes, have_shapes = _paths(want), _paths(have)
  if want_shapes != have_shapes:
    diff = sorted(set(want_shapes.items()) ^ set(have_shapes.items()))[:3]
    raise ValueError(
        f"{ckpt_dir}/{step} holds an encoder of another architecture or "
        f"width than config.model ({config.model.encoder}, width "
        f"{config.model.width}); first differences (path, shape): {diff}")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      meta)
  restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  mngr.close()
  nnx.replace_by_pure_dict(params, _pure(restored["params"]["encoder"]))
  nnx.replace_by_pure_dict(batch_stats,
                           _pure(restored["batch_stats"]["encoder"]))
  nnx.update(model.encoder, params, batch_stats)
  return {"init": "st-clr", "path": str(ckpt_dir), "step": int(step)}


def initial_encoder(config, mesh) -> tuple[models.VideoResNet, dict]:
  """The encoder of ``config.model``, initialised from ``config.init_from``
  (or randomly, with ``config.seed``, when it is empty)."""
  model = train.create_model(config, mesh)
  if not config.init_from:
    return model.encoder, {"init": "random", "seed": config.seed}
  return model.encoder, restore_pretrained(config, model)
