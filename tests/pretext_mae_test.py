"""Masked autoencoding as a pretext of the one path: its options, the
batch it makes (one clip and a mask seed per video), a real pretraining run
through ``train.pretrain``, and the encoder it leaves restored by the same
``init_encoder`` as every other pretraining."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from PIL import Image

from configs import finetune_synthetic, svfap_synthetic
from stclr_jax import init_from, train
from stclr_jax.data import preview
from stclr_jax.models import factory
from stclr_jax.models.masked_autoencoder import MaskedVideoAutoencoder
from stclr_jax.pretext import batch as batch_lib
from stclr_jax.pretext import objectives
from stclr_jax.pretext import options as options_lib


def test_options_schema_and_objective():
  c = svfap_synthetic.get_config("tiny=1")
  p = options_lib.Pretext.from_config(c)
  assert p.mae == options_lib.MaskedAutoencoding(0.75, "tiny")
  schema = p.schema()
  assert schema.views == (batch_lib.VIEW_A,)
  assert schema.model_keys == (batch_lib.VIEW_A, batch_lib.MASK_SEED)
  assert objectives.from_options(p, 0.1) == objectives.MaskedAutoencoding(0.75)
  assert isinstance(factory.create_model(c), MaskedVideoAutoencoder)
  # Masked autoencoding has no pairs: the contrastive options are errors.
  for name in ("timeaug", "hardneg", "maskfn", "clmex", "faceswap"):
    bad = svfap_synthetic.get_config("tiny=1")
    bad.pretext[name].enabled = True
    with pytest.raises(ValueError, match=f"{name} and mae"):
      options_lib.Pretext.from_config(bad)
  bad = svfap_synthetic.get_config("tiny=1")
  bad.pretext.mae.decoder = "huge"
  with pytest.raises(ValueError, match=r"pretext.mae: decoder 'huge'"):
    options_lib.Pretext.from_config(bad)
  contrastive = svfap_synthetic.get_config("tiny=1")
  contrastive.pretext.mae.enabled = False
  with pytest.raises(ValueError, match="needs config.pretext.mae.enabled"):
    preview.write_reconstruction(contrastive, "unused", "unused.png")
  bad = svfap_synthetic.get_config("tiny=1")
  bad.model.encoder = "r2plus1d_18"
  with pytest.raises(ValueError, match="needs a video transformer encoder"):
    factory.create_model(bad)


def test_pretrains_through_the_one_path_resumes_and_initialises_fine_tuning(
  tmp_path,
):
  """Three steps of ``train.pretrain`` on the tiny pool with
  ``configs/svfap_synthetic.py:tiny=1`` (the host's stream, the sharded
  step on 2 devices, Orbax): the logged loss is the reconstruction error,
  a quarter of the tubes are visible; a run stopped after step 2 and
  resumed ends equal to it (masks and clips are functions of the seed and
  the step); an evaluation of the same encoder restores the checkpoint's
  encoder exactly."""
  config = svfap_synthetic.get_config("tiny=1")
  config.num_steps = 3
  config.data.data_dir = str(tmp_path / "tfds")
  workdir = tmp_path / "mae"
  out = train.pretrain(config, str(workdir), devices=jax.devices()[:2])
  hist = out["history"]
  assert [h["step"] for h in hist] == [1, 2, 3]
  for h in hist:
    assert h["loss"] == h["reconstruction_mse"]
    assert h["visible_fraction"] == 0.25
    # Standardised targets against a fresh decoder: about their variance.
    assert 0.5 < h["loss"] < 2.0
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["pretext"]["mae"]["enabled"]

  config.checkpoint_every_steps = 2
  config.num_steps = 2
  train.pretrain(config, str(tmp_path / "b"), devices=jax.devices()[:2])
  config.num_steps = 3
  resumed = train.pretrain(
    config, str(tmp_path / "b"), devices=jax.devices()[:2]
  )
  assert [h["step"] for h in resumed["history"]] == [3]
  assert resumed["history"][0]["loss"] == pytest.approx(
    hist[2]["loss"], rel=1e-6
  )
  ckpt = ocp.StandardCheckpointer()
  a = ckpt.restore(workdir / "checkpoints/3/default")["params"]
  b = ckpt.restore(tmp_path / "b/checkpoints/3/default")["params"]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

  # The reconstruction preview of the last checkpoint: masked input |
  # reconstruction | clip, 4 rows of 4 frames of 32 px; the run wrote the
  # same picture at that checkpoint from its live model (so the preview
  # restores the checkpoint's weights), and the resumed run the same
  # pictures as the uninterrupted one.
  # (a relative workdir, as on a command line)
  png = preview.write_reconstruction(
    config, os.path.relpath(workdir), str(tmp_path / "r.png")
  )
  image = np.asarray(Image.open(png))
  assert image.shape == (4 * 32 + 3 * 4, 3 * 4 * 32 + 2 * 12, 3)
  written = workdir / preview.RECONSTRUCTIONS_DIR
  assert sorted(os.listdir(written)) == ["step_3.png"]
  np.testing.assert_array_equal(
    image, np.asarray(Image.open(written / "step_3.png"))
  )
  resumed_dir = tmp_path / "b" / preview.RECONSTRUCTIONS_DIR
  assert sorted(os.listdir(resumed_dir)) == ["step_2.png", "step_3.png"]
  np.testing.assert_array_equal(
    image, np.asarray(Image.open(resumed_dir / "step_3.png"))
  )
  step_2 = preview.write_reconstruction(
    config, str(tmp_path / "b"), str(tmp_path / "r2.png"), step=2
  )
  np.testing.assert_array_equal(
    np.asarray(Image.open(step_2)),
    np.asarray(Image.open(resumed_dir / "step_2.png")),
  )
  assert not np.array_equal(np.asarray(Image.open(step_2)), image)
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    preview.write_reconstruction(config, str(tmp_path / "none"), png)
  with pytest.raises(ValueError, match=r"step 7: .* has steps \[3\]"):
    preview.write_reconstruction(config, str(workdir), png, step=7)

  evaluation = finetune_synthetic.get_config("tiny=1,encoder=tpsbt_tiny")
  evaluation.init_from = str(workdir)
  model = factory.create_model(evaluation)
  info = init_from.init_encoder(evaluation, model)
  assert info["step"] == 3
  got = nnx.to_pure_dict(nnx.state(model.encoder, nnx.Param))
  raw = ocp.StandardCheckpointer().restore(workdir / "checkpoints/3/default")
  assert set(raw["params"]) == {
    "encoder",
    "encoder_to_decoder",
    "mask_token",
    "decoder_blocks",
    "decoder_norm",
    "head",
  }
  want = init_from.pure(raw["params"]["encoder"])
  fresh = nnx.to_pure_dict(
    nnx.state(factory.create_model(config).encoder, nnx.Param)
  )
  leaves = jax.tree_util.tree_flatten_with_path(got)[0]
  assert len(leaves) == len(jax.tree.leaves(want)) > 20
  for (path, a), b in zip(leaves, jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), str(path))
  assert any(  # it trained: not the initial values
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(fresh))
  )
