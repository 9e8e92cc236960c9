"""Encoder initialisation (stclr_jax/init_from.py): an evaluation's encoder
equals the pretraining checkpoint's; bad ``init_from`` values are clear
errors."""

import os
import shutil

import _helpers_step
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import finetune_synthetic
from stclr_jax import checkpoints, init_from
from stclr_jax import mesh as mesh_lib
from stclr_jax.models import factory

_global = mesh_lib.to_global_arrays


def _initial_encoder(config):
  model = factory.create_model(config)
  return model.encoder, init_from.init_encoder(config, model)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A pretraining workdir as ``train.pretrain`` leaves it: config.json and
  an Orbax checkpoint of step 2 (one SGD step away from the initial
  values, so that a restore cannot pass by re-initialising)."""
  config = _helpers_step.config(name="sgd", learning_rate=0.1, momentum=0.9)
  workdir = tmp_path_factory.mktemp("pretrain")
  (workdir / "config.json").write_text(config.to_json_best_effort())
  mesh, state, step = _helpers_step.setup_step(config, jax.devices()[:1])
  state, _ = step(state, _global(_helpers_step.batch(), mesh))
  mngr = checkpoints.manager(str(workdir), 3)
  checkpoints.save(mngr, 2, state)
  mngr.wait_until_finished()
  mngr.close()
  return str(workdir)


def test_restored_encoder_equals_the_checkpoint(pretrained):
  config = finetune_synthetic.get_config("tiny=1")
  config.init_from = pretrained
  encoder, info = _initial_encoder(config)
  assert info["step"] == 2
  mngr = ocp.CheckpointManager(os.path.join(pretrained, "checkpoints"))
  saved = mngr.restore(2, args=ocp.args.StandardRestore())
  got = nnx.to_pure_dict(nnx.state(encoder, nnx.Param))
  flat_got = jax.tree_util.tree_flatten_with_path(got)[0]
  flat_saved = dict(
    jax.tree_util.tree_flatten_with_path(
      init_from.pure(saved["params"]["encoder"])
    )[0]
  )
  assert len(flat_got) == len(flat_saved) > 50
  for path, value in flat_got:
    np.testing.assert_array_equal(value, flat_saved[path])
  stats = nnx.to_pure_dict(nnx.state(encoder, nnx.BatchStat))
  for path, value in jax.tree_util.tree_flatten_with_path(stats)[0]:
    np.testing.assert_array_equal(
      value,
      dict(
        jax.tree_util.tree_flatten_with_path(
          init_from.pure(saved["batch_stats"]["encoder"])
        )[0]
      )[path],
    )
  # The random encoder differs from the pretrained one.
  config.init_from = ""
  scratch, info = _initial_encoder(config)
  assert info["init"] == "random"
  first = jax.tree.leaves(nnx.state(scratch, nnx.Param))[0]
  assert not np.array_equal(first, jax.tree.leaves(got)[0])


def test_bad_init_from_gets_a_clear_error(pretrained, tmp_path):
  config = finetune_synthetic.get_config("tiny=1")
  config.init_from = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="nope: no such directory"):
    _initial_encoder(config)
  (tmp_path / "empty").mkdir()
  config.init_from = str(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="no Orbax checkpoint"):
    _initial_encoder(config)
  config.init_from = pretrained
  config.model.width = 0.25
  with pytest.raises(ValueError, match=r"model.width=0.125"):
    _initial_encoder(config)
  # Without the run's config.json, the shapes tell.
  copy = tmp_path / "copy"
  shutil.copytree(pretrained, copy)
  os.remove(copy / "config.json")
  config.init_from = str(copy)
  with pytest.raises(ValueError, match="another architecture or width"):
    _initial_encoder(config)
  config.model.width = 0.125
  config.model.encoder = "mc3_18"
  with pytest.raises(ValueError, match="another architecture or width"):
    _initial_encoder(config)
  config.model.encoder = "r2plus1d_18"
  config.init_step = 7
  with pytest.raises(ValueError, match=r"init_step=7: .* has steps \[2\]"):
    _initial_encoder(config)


def test_a_video_transformer_pretrains_and_initialises_the_same_way(
  tmp_path,
):
  """ST-CLR's step trains a TPSBT as it trains R(2+1)D (no BatchNorm:
  empty statistics), and an evaluation built with the same encoder restores
  it through the same ``init_encoder`` path, drop path and all."""
  config = _helpers_step.config(name="sgd", learning_rate=0.1, momentum=0.9)
  config.model.encoder = "tpsbt_tiny"
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  mesh, state, step = _helpers_step.setup_step(config, jax.devices()[:2])
  start = jax.device_get(state.params)
  state, metrics = step(state, _global(_helpers_step.batch(), mesh))
  assert np.isfinite(float(metrics["loss"]))
  mngr = checkpoints.manager(str(tmp_path), 3)
  checkpoints.save(mngr, 1, state)
  mngr.wait_until_finished()
  mngr.close()
  evaluation = finetune_synthetic.get_config("tiny=1")
  evaluation.model.encoder = "tpsbt_tiny"
  evaluation.init_from = str(tmp_path)
  model = factory.create_model(
    evaluation, drop_path=factory.finetune_drop_path(evaluation)
  )
  info = init_from.init_encoder(evaluation, model)
  assert info["step"] == 1
  assert model.encoder.blocks[-1].drop_path == 0.1
  got = nnx.to_pure_dict(nnx.state(model.encoder, nnx.Param))
  saved = init_from.pure(jax.device_get(state.params)["encoder"])
  before = init_from.pure(start["encoder"])
  leaves = jax.tree_util.tree_flatten_with_path(got)[0]
  assert len(leaves) == len(jax.tree.leaves(saved)) > 40
  for (path, value), want, _ in zip(
    leaves, jax.tree.leaves(saved), jax.tree.leaves(before), strict=True
  ):
    np.testing.assert_array_equal(value, want, err_msg=str(path))
  assert any(
    not np.array_equal(w, o)
    for w, o in zip(jax.tree.leaves(saved), jax.tree.leaves(before))
  )
