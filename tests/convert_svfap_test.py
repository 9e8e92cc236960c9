"""The SVFAP converter (stclr_jax/convert/svfap.py) against the PyTorch
reference written for it (bench/torch_svfap.py): sizes, logit parity on
random weights, the CLI round trip and every refusal.

Needs torch (a test requirement: missing, these tests fail). Parity is
``max|ours - torch| / max|torch|`` over the logits, at most 1e-5 (float32
through 5-9 blocks; measured 4e-7, BENCHMARKS has none: it is a test)."""

import os
import sys

import jax
import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))

import torch_svfap  # noqa: E402

from stclr_jax import models  # noqa: E402
from stclr_jax.convert import converted as conv  # noqa: E402
from stclr_jax.convert import svfap  # noqa: E402

TOLERANCE = 1e-5


def _reference(arch, num_classes=6, seed=0):
  """The PyTorch model of ``arch`` with every parameter (biases and
  LayerNorms included) moved off its initial value."""
  torch.manual_seed(seed)
  return torch_svfap.perturbed(
    torch_svfap.from_size(models.TRANSFORMER_SIZES[arch], num_classes)
  )


_state_dict = torch_svfap.numpy_state_dict


def _clip(arch, batch=2, seed=0):
  frames, size = {"tiny": (4, 32), "cpu": (8, 48)}[arch.split("_")[1]]
  rng = np.random.RandomState(seed)
  return rng.randn(batch, frames, size, size, 3).astype(np.float32)


def _torch_logits(model, clip):
  with torch.no_grad():
    return model(torch.from_numpy(clip).permute(0, 4, 1, 2, 3)).numpy()


def _parity(encoder, classifier, model, clip):
  ours = np.asarray(jax.jit(lambda x: classifier(encoder(x)))(clip))
  ref = _torch_logits(model, clip)
  return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _shapes_only(arch, num_classes=6):
  """The reference built on PyTorch's meta device: shapes, no values."""
  with torch.device("meta"):
    return torch_svfap.from_size(models.TRANSFORMER_SIZES[arch], num_classes)


@pytest.mark.parametrize("num_classes", [7, 6])
def test_reference_has_svfaps_released_size(num_classes):
  model = _shapes_only("tpsbt_base", num_classes)
  assert torch_svfap.count(model) == torch_svfap.SVFAP_BASE_PARAMS[num_classes]


@pytest.mark.parametrize("arch", sorted(models.TRANSFORMER_SIZES))
def test_reference_and_library_have_the_same_tensors(arch):
  model = _shapes_only(arch)
  shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  abstract = conv.abstract_encoder(arch)
  ours = {
    key: svfap._to_library(np.zeros(shapes[key])).shape
    for key in map(svfap._torch_key, conv._flat(conv.pure_state(abstract)))
  }
  wanted = {
    svfap._torch_key(p): tuple(x.shape)
    for p, x in conv._flat(conv.pure_state(abstract)).items()
  }
  assert ours == wanted
  assert set(shapes) - set(wanted) == {"head.weight", "head.bias"}
  assert models.count_params(abstract) + 6 * abstract.features + 6 == (
    torch_svfap.count(model)
  )


@pytest.mark.parametrize("arch", ["tpsbt_tiny", "vit_tiny"])
def test_logits_equal_pytorchs(arch):
  model = _reference(arch)
  converted, guessed = svfap.svfap_to_nnx(_state_dict(model))
  assert guessed == arch
  encoder, classifier = conv.build_modules(converted, arch)
  assert _parity(encoder, classifier, model, _clip(arch)) <= TOLERANCE


@pytest.mark.parametrize("wrapped", [False, True])
def test_cli_round_trip(tmp_path, wrapped):
  model = _reference("tpsbt_tiny", num_classes=7, seed=1)
  sd = model.state_dict()
  torch.save({"model": sd} if wrapped else sd, tmp_path / "ckpt.pth")
  out = svfap.main(
    [f"--src={tmp_path / 'ckpt.pth'}", f"--out={tmp_path / 'conv'}"]
  )
  assert out["arch"] == "tpsbt_tiny"
  encoder, classifier, meta = svfap.load_converted(tmp_path / "conv")
  assert meta["num_classes"] == 7 and meta["format"] == conv.SVFAP_FORMAT
  assert meta["input"]["mean"] == [0.485, 0.456, 0.406]
  assert _parity(encoder, classifier, model, _clip("tpsbt_tiny")) <= TOLERANCE


def test_encoder_only(tmp_path):
  sd = _state_dict(_reference("vit_tiny"))
  converted, _ = svfap.svfap_to_nnx(sd, num_classes=0)
  assert converted.classifier is None
  assert converted.ignored == ("head.bias", "head.weight")


def _fails(sd, match, **kw):
  with pytest.raises(ValueError, match=match):
    svfap.svfap_to_nnx(sd, **kw)


def test_refusals_name_the_key():
  sd = _state_dict(_reference("tpsbt_tiny"))
  _fails(
    {k: v for k, v in sd.items() if k != "blocks.1.cross_attn.kv.weight"},
    "missing keys: blocks.1.cross_attn.kv.weight",
    arch="tpsbt_tiny",
  )
  _fails(
    {**sd, "blocks.0.attn.k_bias": np.zeros(32, np.float32)},
    "unexpected keys: blocks.0.attn.k_bias",
  )
  bad = dict(sd)
  bad["blocks.0.mlp.fc1.weight"] = sd["blocks.0.mlp.fc1.weight"].T
  _fails(bad, r"wrong shapes for tpsbt_tiny: blocks.0.mlp.fc1.weight")
  _fails(sd, "head.weight has 6 classes, --num_classes=7", num_classes=7)
  _fails(
    {"encoder." + k: v for k, v in sd.items()},
    "a pretraining checkpoint .* svfap_pretrain.svfap_pretrain_to_nnx",
  )
  _fails(sd, "not a video transformer", arch="r2plus1d_18")
  odd = {**sd, "patch_embed.proj.weight": np.zeros((32, 3, 2, 4, 4))}
  _fails(odd, "no named video transformer")


def test_a_768_wide_tpsbt_is_refused_with_the_reason():
  sd = {
    "patch_embed.proj.weight": np.zeros((768, 3, 2, 16, 16), np.float32),
    "temporal_downsamples.0.weight": np.zeros((768, 768, 2), np.float32),
  }
  _fails(sd, "768-wide, 12-head TPSBT.*512 wide with 8 heads")


def test_cli_errors_exit_with_the_message(tmp_path, capsys):
  torch.save({"a": 1, "args": object}, tmp_path / "bad.pth")
  with pytest.raises(SystemExit):
    svfap.main([f"--src={tmp_path / 'bad.pth'}", f"--out={tmp_path / 'o'}"])
  assert "unsafe_pickle" in capsys.readouterr().err
