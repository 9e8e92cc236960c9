"""bench/torch_peer.py: the PyTorch R(2+1)D-18 at any width that
bench/train_step.py times against the library's encoder. It must be the
same model: parameter counts, every tensor's shape (through the torchvision
converter's key map) and the forward pass in training mode."""

import os
import sys

import jax
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))

import torch_peer  # noqa: E402

from stclr_jax import models  # noqa: E402
from stclr_jax.convert import torchvision as tvconvert  # noqa: E402

torch, video = torch_peer.import_torchvision_video()


def _count(module) -> int:
  return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
  "width, encoder_params", [(0.25, 1_961_263), (1.0, 31_300_125)]
)
def test_parameter_counts_equal_the_jax_models(width, encoder_params):
  peer = torch_peer.r2plus1d_18(width)
  rngs = nnx.Rngs(0)
  enc = models.make_encoder("r2plus1d_18", width=width, rngs=rngs)
  contrastive = models.ContrastiveModel(enc, proj_dim=128, rngs=rngs)
  classifier = models.LinearClassifier(enc.features, 6, rngs=rngs)
  assert peer.features == enc.features == int(512 * width)
  assert _count(peer) == models.count_params(enc) == encoder_params
  head = torch_peer.projection_head(torch, peer.features)
  assert _count(peer) + _count(head) == models.count_params(contrastive)
  fc = torch_peer.linear_classifier(torch, peer.features, 6)
  assert _count(fc) == models.count_params(classifier)
  counts = torch_peer.check_against_jax(
    {
      "encoder": peer,
      "pretrain": torch.nn.Sequential(peer, head),
      "finetune": torch.nn.Sequential(peer, fc),
    },
    width,
  )
  assert counts["encoder"] == encoder_params


def test_width_one_is_torchvisions_r2plus1d_18():
  peer = torch_peer.r2plus1d_18(1.0)
  tv = video.r2plus1d_18(weights=None)
  want = {k: v.shape for k, v in tv.state_dict().items() if k[:3] != "fc."}
  assert {k: v.shape for k, v in peer.state_dict().items()} == want


def test_check_against_jax_fails_on_another_width():
  peer = torch_peer.r2plus1d_18(0.25)
  with pytest.raises(AssertionError, match="parameters"):
    torch_peer.check_against_jax({"encoder": peer}, 0.5)


def test_forward_in_training_mode_matches_the_jax_encoder():
  """Every tensor of the peer maps onto the width-0.25 JAX encoder with its
  shape (the converter's key map); with the same weights, both give the
  same features in training mode (batch statistics): same strides,
  paddings, BatchNorm placement and shortcuts."""
  width = 0.25
  torch.manual_seed(0)
  peer = torch_peer.r2plus1d_18(width)
  with torch.no_grad():  # non-trivial BatchNorm affine parameters
    for m in peer.modules():
      if isinstance(m, torch.nn.BatchNorm3d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.2)
  enc = models.make_encoder("r2plus1d_18", width=width, rngs=nnx.Rngs(0))
  plan, counters = tvconvert._key_plan(enc)
  state_dict = peer.state_dict()
  assert set(state_dict) == set(plan) | counters
  state = nnx.state(enc)
  flat = nnx.traversals.flatten_mapping(nnx.to_pure_dict(state))
  assert set(flat) == {path for path, _ in plan.values()}
  for key, (path, is_conv) in plan.items():
    value = state_dict[key].numpy()
    if is_conv:  # (O, I, D, H, W) -> (D, H, W, I, O)
      value = np.transpose(value, (2, 3, 4, 1, 0))
    assert value.shape == flat[path].shape, key
    flat[path] = value
  nnx.replace_by_pure_dict(state, nnx.traversals.unflatten_mapping(flat))
  nnx.update(enc, state)

  clips = np.random.default_rng(0).uniform(0, 1, (4, 8, 48, 48, 3))
  clips = clips.astype(np.float32)
  peer.train()
  with torch.no_grad():
    want = peer(torch.from_numpy(clips).permute(0, 4, 1, 2, 3).contiguous())
  got = jax.device_get(nnx.jit(lambda m, x: m(x))(enc, clips))
  want = want.numpy()
  assert got.shape == want.shape == (4, 128) and np.std(want) > 0
  err = np.max(np.abs(got - want)) / np.max(np.abs(want))
  assert err <= 1e-4, err
