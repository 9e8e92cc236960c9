"""Every config file loads, its variants apply, and it builds an optimiser
and a model (abstractly: no full-size weights are drawn)."""

import glob
import importlib.util
import os

import jax
import pytest
from flax import nnx

from stclr_jax import configlib, losses, models
from stclr_jax import optim as optim_lib
from stclr_jax.data import input as input_lib
from stclr_jax.evaluation import runner as runner_lib
from stclr_jax.models import factory
from stclr_jax.pretext import objectives, options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "stclr_*.py")))
EVAL_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "finetune_*.py")))
MAE_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "svfap_*.py")))


def _load(path):
  spec = importlib.util.spec_from_file_location("cfg", path)
  m = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(m)
  return m


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
@pytest.mark.parametrize("arg", [None, "encoder=mc3_18,aug=no_color"])
def test_config_loads_and_builds(path, arg):
  c = _load(path).get_config(arg)
  assert c.batch_size > 0 and c.data.clip_len > 0
  lr = optim_lib.schedule(c.optim, 100, 1000)
  tx = optim_lib.make_optimizer(c.optim, lr)
  model = nnx.eval_shape(lambda: factory.create_model(c))
  params = nnx.state(model, nnx.Param)
  jax.eval_shape(tx.init, params)
  assert models.count_params(model.encoder) > 0
  if arg:
    assert c.model.encoder == "mc3_18" and c.aug.color is False


def test_paper_config_values():
  c = _load(os.path.join(ROOT, "configs", "stclr_oulu.py")).get_config()
  assert (c.data.clip_len, c.data.size, c.model.encoder) == (
    16,
    224,
    "r2plus1d_18",
  )
  assert (
    c.optim.name,
    c.optim.learning_rate,
    c.optim.momentum,
    c.optim.weight_decay,
    c.num_epochs,
  ) == ("sgd", 1e-3, 0.9, 1e-4, 1000)
  assert c.model.proj_dim == 128
  c = _load(os.path.join(ROOT, "configs", "stclr_oulu.py")).get_config(
    "aug=no_temporal,epochs=100"
  )
  assert c.aug.temporal_modes == "" and c.num_epochs == 100


def test_bad_variants_are_errors():
  m = _load(os.path.join(ROOT, "configs", "stclr_oulu.py"))
  with pytest.raises(ValueError, match="unknown config variant 'encodr'"):
    m.get_config("encodr=r3d_18")
  with pytest.raises(ValueError, match="aug must be one of"):
    m.get_config("aug=no_blur")


def test_pretext_variants_turn_options_on_and_default_off():
  m = _load(os.path.join(ROOT, "configs", "stclr_oulu.py"))
  c = m.get_config()
  assert not any(c.pretext[name].enabled for name in options.METHODS)
  assert options.Pretext.from_config(c) == options.Pretext()
  assert objectives.from_config(c) == objectives.NTXent(c.loss.temperature)
  # SSL-FER's values (stclr_jax/pretext/options.py's constants).
  assert tuple(c.pretext.timeaug.offsets) == options.SSLFER_OFFSETS
  assert tuple(c.pretext.timeaug.weights) == options.SSLFER_WEIGHTS
  assert c.pretext.hardneg.gap == options.SSLFER_GAP
  assert c.pretext.default_fps == options.DEFAULT_FPS
  c = m.get_config("pretext=timeaug+samesubject")
  assert options.Pretext.from_config(c).enabled == ("timeaug", "samesubject")
  assert c.pretext.maskfn.weight == losses.MASKFN_WEIGHT == 0.8
  assert c.pretext.maskfn.descriptor == "hog"
  with pytest.raises(ValueError, match="pretext must be none or options"):
    m.get_config("pretext=svfap")
  c = m.get_config("pretext=timeaug+hardneg+maskfn+faceswap")
  assert options.Pretext.from_config(c).faceswap == options.FaceSwap()
  assert c.pretext.faceswap.probability == options.SSLFER_SWAP_PROBABILITY
  c = m.get_config("pretext=timeaug+hardneg+maskfn")
  assert objectives.from_config(c) == objectives.MaskFN(
    c.loss.temperature, 0.8, "hog"
  )
  assert input_lib.view_spec(c).pretext.crop_size == 64
  c = m.get_config("pretext=clmex")
  assert isinstance(objectives.from_config(c), objectives.MultiPositive)
  assert input_lib.view_spec(c).pretext.whole_groups
  c.pretext.maskfn.enabled = True
  with pytest.raises(ValueError, match="maskfn and clmex are two losses"):
    objectives.from_config(c)


@pytest.mark.parametrize("path", MAE_FILES, ids=os.path.basename)
@pytest.mark.parametrize("arg", [None, "encoder=vit_cpu", "tiny=1"])
def test_masked_autoencoding_configs_build(path, arg):
  """SVFAP's configs: a video transformer with its decoder, AdamW (0.9,
  0.95) with decay on kernels only, SVFAP's learning-rate rule, no flip
  or colour, 90% tubes masked (75% on the tiny clips' 16 positions)."""
  c = _load(path).get_config(arg)
  lr = optim_lib.schedule(c.optim, 100, 1000)
  tx = optim_lib.make_optimizer(c.optim, lr)
  model = nnx.eval_shape(lambda: factory.create_model(c))
  params = nnx.state(model, nnx.Param)
  jax.eval_shape(tx.init, params)
  assert "mask_token" in params and "decoder_blocks" in params
  assert c.optim.name == "adamw" and c.optim.b2 == 0.95
  assert c.optim.learning_rate == pytest.approx(3e-4 * c.batch_size / 256)
  assert not c.aug.flip and not c.aug.color
  ratio = c.pretext.mae.ratio
  assert ratio == (0.75 if arg == "tiny=1" else 0.9)
  if arg == "encoder=vit_cpu":
    assert c.model.encoder == "vit_cpu"


def test_every_config_file_is_tested():
  assert sorted(FILES + EVAL_FILES + MAE_FILES) == sorted(
    glob.glob(os.path.join(ROOT, "configs", "*.py"))
  )


@pytest.mark.parametrize("path", EVAL_FILES, ids=os.path.basename)
@pytest.mark.parametrize(
  "arg", [None, "encoder=mc3_18,labels=25,linear_only=1"]
)
def test_eval_config_loads_and_builds(path, arg):
  c = _load(path).get_config(arg)
  assert c.batch_size > 0 and c.data.clip_len > 0 and not c.init_from
  model = nnx.eval_shape(
    lambda: runner_lib.Classifier(
      factory.create_model(c).encoder, 6, rngs=nnx.Rngs(0)
    )
  )
  assert models.count_params(model.head) == 6 * (model.encoder.features + 1)
  if arg:
    assert c.model.encoder == "mc3_18" and c.eval.label_fraction == 0.25
    assert c.eval.linear_only and c.eval.linear_standardize
  else:
    assert c.eval.label_fraction == 1.0 and not c.eval.linear_only
    assert not c.eval.linear_standardize  # the layer is handed to fine-tuning


def test_paper_finetune_values():
  c = _load(os.path.join(ROOT, "configs", "finetune_oulu.py")).get_config()
  ev = c.eval
  assert (
    ev.linear_epochs,
    ev.finetune_epochs,
    ev.learning_rate,
    ev.linear_learning_rate,
    ev.plateau_patience,
    ev.num_folds,
    ev.fold_by,
  ) == (30, 70, 1e-4, 1e-4, 3, 10, "subject")
  assert (c.data.clip_len, c.data.size, c.model.encoder) == (
    16,
    224,
    "r2plus1d_18",
  )
  with pytest.raises(ValueError, match="labels must be a percentage"):
    _load(os.path.join(ROOT, "configs", "finetune_oulu.py")).get_config(
      "labels=0"
    )


def test_parse_arg_is_typed_by_its_defaults():
  args = configlib.parse_arg(
    "labels=10,linear_only=1,encoder=r3d_18", **configlib.FINETUNE_ARGS
  )
  assert args.labels == 10.0 and isinstance(args.labels, float)
  assert args.linear_only is True
  assert args.encoder == "r3d_18" and args.init == "random"
  assert configlib.parse_arg("tiny=false", tiny=True).tiny is False
  assert configlib.parse_arg(None, batch=1024).batch == 1024
  with pytest.raises(ValueError, match="'batch'.*known: \\('epochs',\\)"):
    configlib.parse_arg("batch=3", epochs=0)
  with pytest.raises(ValueError, match="epochs='ten'.*not a int value"):
    configlib.parse_arg("epochs=ten", epochs=0)
  with pytest.raises(ValueError, match="tiny='yes'.*must be 0 or 1"):
    configlib.parse_arg("tiny=yes", tiny=False)
  with pytest.raises(ValueError, match="'tiny' is not key=value"):
    configlib.parse_arg("tiny", tiny=False)


def test_configs_are_composed_from_sections():
  """The evaluation config is built from the model and data sections, not
  by deleting a pretraining config's: the two share those sections field
  for field, and the pretraining-only sections are absent."""
  pre, ev = configlib.base_config(), configlib.finetune_config()
  assert pre.model.to_dict() == ev.model.to_dict()
  assert pre.data.to_dict() == ev.data.to_dict()
  for section in ("aug", "loss", "pretext", "optim", "num_steps"):
    assert section in pre and section not in ev
  assert "eval" in ev and "eval" not in pre
