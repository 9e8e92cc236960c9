"""The torchvision converter: forward parity with torchvision, CLI, errors.

Needs torch and torchvision (they are test requirements: a missing one fails
the tests that need it, it does not skip them). Parity is measured as
``max|ours - torch| / max|torch|`` over the whole output, in eval mode
(BatchNorm running statistics), and must be at most 1e-4.
"""

import functools
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from flax import nnx

from configs import stclr_oulu as cfg_mod
from stclr_jax import mesh as mesh_lib
from stclr_jax import optim as optim_lib
from stclr_jax import train
from stclr_jax.convert import converted as converted_lib
from stclr_jax.convert import torchvision as tvconvert

ARCHS = ("r2plus1d_18", "r3d_18", "mc3_18")
# (batch, time, height, width): the paper's clip size, and a small one.
SHAPES = ((1, 16, 112, 112), (2, 8, 64, 64))
TOLERANCE = 1e-4
INSTALL = (
  "pip install torch==2.13.0 safetensors && "
  "pip install --no-deps 'torchvision==0.28.*'"
)


def import_torch_video():
  """Returns ``(torch, torchvision.models.video)``; fails the test if absent.

  PyPI's torchvision wheel is built for CUDA torch: its compiled ops
  (``torchvision/_C.so``) need ``libc10_cuda.so`` and do not load beside the
  CPU torch wheel, and ``import torchvision`` then dies in
  ``torchvision._meta_registrations`` ("operator torchvision::nms does not
  exist"), which registers fake kernels for those ops. The video ResNets use
  none of them, so an empty module in its place is all that is needed.
  """
  try:
    import torch

    if "torchvision" not in sys.modules:
      name = "torchvision._meta_registrations"
      sys.modules.setdefault(name, types.ModuleType(name))
    from torchvision.models import video
  except ImportError as e:
    pytest.fail(
      f"torch and torchvision are required by these tests ({e}); "
      f"install them with: {INSTALL}"
    )
  return torch, video


def relative_error(ours, theirs) -> float:
  """max |ours - theirs| / max |theirs|."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape
  return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


@functools.cache
def torch_model(arch: str):
  """torchvision's model with random weights, BN statistics and affine
  parameters and fc bias, in eval mode; and its numpy state_dict."""
  torch, video = import_torch_video()
  torch.manual_seed(ARCHS.index(arch))
  model = getattr(video, arch)()
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm3d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.2)
        m.running_mean.normal_(0.0, 0.2)
        m.running_var.uniform_(0.5, 2.0)
    model.fc.bias.normal_(0.0, 0.1)
  model.eval()
  state_dict = {k: v.numpy().copy() for k, v in model.state_dict().items()}
  return model, state_dict


def torch_forward(model, clips_BxTxHxWxC):
  """(512-d features, logits) of torchvision's model; features are fc's
  input, i.e. the output of avgpool + flatten."""
  torch, _ = import_torch_video()
  features = []
  hook = model.fc.register_forward_hook(
    lambda module, inputs, output: features.append(inputs[0])
  )
  try:
    with torch.no_grad():
      x = torch.from_numpy(clips_BxTxHxWxC).permute(0, 4, 1, 2, 3)  # NCTHW
      logits = model(x.contiguous())
  finally:
    hook.remove()
  return features[0].numpy(), logits.numpy()


@nnx.jit
def our_forward(encoder, classifier, clips):
  h = encoder(clips)
  return h, classifier(h)


def build(arch: str, converted: converted_lib.Converted):
  """Our encoder and classifier holding the converted states, in eval mode."""
  encoder, classifier = converted_lib.build_modules(converted, arch)
  encoder.eval()
  classifier.eval()
  return encoder, classifier


def random_clips(shape, seed=0):
  """Normalised RGB clips (batch, time, height, width, 3), float32."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.0, 1.0, (*shape, 3)).astype(np.float32)
  return (
    (x - np.float32(converted_lib.KINETICS_MEAN))
    / np.float32(converted_lib.KINETICS_STD)
  ).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_matches_torchvision(arch, shape):
  model, state_dict = torch_model(arch)
  converted = tvconvert.torchvision_to_nnx(
    state_dict, arch, with_classifier=True
  )
  assert all(k.endswith("num_batches_tracked") for k in converted.ignored)
  encoder, classifier = build(arch, converted)
  clips = random_clips(shape)
  want_h, want_logits = torch_forward(model, clips)
  h, logits = jax.device_get(our_forward(encoder, classifier, clips))
  err_h, err_logits = (
    relative_error(h, want_h),
    relative_error(logits, want_logits),
  )
  print(
    f"\nparity {arch} {shape}: features {err_h:.2e} (max|torch| "
    f"{np.max(np.abs(want_h)):.3g}), logits {err_logits:.2e}"
  )
  assert h.shape == (shape[0], 512) and logits.shape == (shape[0], 400)
  assert np.std(want_h) > 0 and np.std(want_logits) > 0
  assert err_h <= TOLERANCE
  assert err_logits <= TOLERANCE


def test_cli_end_to_end(tmp_path):
  """`python -m stclr_jax.convert.torchvision` on a .pth, then
  load_converted: same weights, same features and logits as torchvision."""
  torch, _ = import_torch_video()
  arch = "r2plus1d_18"
  model, state_dict = torch_model(arch)
  src, out = tmp_path / f"{arch}.pth", tmp_path / "converted"
  torch.save(model.state_dict(), src)
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "stclr_jax.convert.torchvision",
      f"--arch={arch}",
      f"--src={src}",
      f"--out={out}",
      "--with_classifier",
    ],
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  print("\n" + proc.stdout)
  assert "tensors mapped: 187" in proc.stdout
  assert "parameters: 31,505,325" in proc.stdout

  encoder, classifier, metadata = converted_lib.load_converted(out)
  assert metadata["arch"] == arch and metadata["num_classes"] == 400
  assert metadata["width"] == 1.0 and metadata["source"] == str(src)
  assert metadata["input"]["mean"] == list(converted_lib.KINETICS_MEAN)
  assert metadata["input"]["std"] == list(converted_lib.KINETICS_STD)
  # Bit-identical to the in-memory conversion.
  direct = tvconvert.torchvision_to_nnx(state_dict, arch, True)
  for ours, restored in (
    (direct.encoder, nnx.state(encoder)),
    (direct.classifier, nnx.state(classifier)),
  ):
    restored = nnx.to_pure_dict(restored)
    assert jax.tree.structure(ours) == jax.tree.structure(restored)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(restored)):
      assert isinstance(b, jax.Array) and np.array_equal(a, np.asarray(b))
  encoder.eval()
  clips = random_clips(SHAPES[1], seed=1)
  h, logits = jax.device_get(our_forward(encoder, classifier, clips))
  want_h, want_logits = torch_forward(model, clips)
  assert relative_error(h, want_h) <= TOLERANCE
  assert relative_error(logits, want_logits) <= TOLERANCE


def test_safetensors_gives_the_same_state(tmp_path):
  try:
    from safetensors.numpy import save_file
  except ImportError as e:
    pytest.fail(
      f"safetensors is required by this test ({e}): pip install safetensors"
    )
  _, state_dict = torch_model("mc3_18")
  path = tmp_path / "mc3_18.safetensors"
  save_file(state_dict, str(path))
  loaded = tvconvert.load_state_dict(path)
  assert sorted(loaded) == sorted(state_dict)
  a = tvconvert.torchvision_to_nnx(loaded, "mc3_18")
  b = tvconvert.torchvision_to_nnx(state_dict, "mc3_18")
  assert a.classifier is None and "fc.weight" in a.ignored
  for x, y in zip(jax.tree.leaves(a.encoder), jax.tree.leaves(b.encoder)):
    np.testing.assert_array_equal(x, y)


def test_extra_and_missing_keys_are_named():
  _, state_dict = torch_model("mc3_18")
  extra = {
    **state_dict,
    "layer1.0.conv3.weight": np.zeros((64, 64, 1, 1, 1), np.float32),
  }
  with pytest.raises(
    tvconvert.ConversionError,
    match=r"unused state_dict keys: layer1\.0\.conv3\.weight",
  ):
    tvconvert.torchvision_to_nnx(extra, "mc3_18")
  missing = dict(state_dict)
  del missing["layer2.0.downsample.1.running_var"]
  with pytest.raises(
    tvconvert.ConversionError,
    match=r"missing state_dict keys: "
    r"layer2\.0\.downsample\.1\.running_var",
  ):
    tvconvert.torchvision_to_nnx(missing, "mc3_18")
  # A stray counter (not of one of our BatchNorms) is not silently dropped.
  stray = {**state_dict, "fc.num_batches_tracked": np.zeros((), np.int64)}
  with pytest.raises(tvconvert.ConversionError, match="fc.num_batches_track"):
    tvconvert.torchvision_to_nnx(stray, "mc3_18")
  del missing["fc.bias"]
  with pytest.raises(tvconvert.ConversionError, match=r"fc\.bias"):
    tvconvert.torchvision_to_nnx(missing, "mc3_18", with_classifier=True)


def test_wrong_arch_is_an_error():
  _, r3d = torch_model("r3d_18")
  # mc3_18 has r3d_18's key names, but (1,3,3) kernels after stage 1.
  with pytest.raises(
    tvconvert.ConversionError,
    match=r"shape mismatches .*layer2\.0\.conv1\.0\.weight "
    r"\(128, 64, 3, 3, 3\)",
  ):
    tvconvert.torchvision_to_nnx(r3d, "mc3_18")
  _, r2plus1d = torch_model("r2plus1d_18")
  with pytest.raises(
    tvconvert.ConversionError,
    match=r"(?s)unused state_dict keys: layer1\.0\.conv1\.0\.0"
    r".*try --arch=r2plus1d_18",
  ):
    tvconvert.torchvision_to_nnx(r2plus1d, "r3d_18")


def test_missing_torch_is_a_clear_error(tmp_path, monkeypatch):
  path = tmp_path / "weights.pth"
  path.write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> error
  with pytest.raises(ImportError, match="pip install torch"):
    tvconvert.load_state_dict(path)


def test_pretraining_initialises_from_a_converted_checkpoint(tmp_path):
  """configs/...:init=kinetics400 + init_from: the encoder starts from the
  converted weights, and a mismatched normalisation is an error."""
  torch, tv_models = import_torch_video()
  net = tv_models.mc3_18()
  src = tmp_path / "mc3.pth"
  torch.save(net.state_dict(), src)
  out = tmp_path / "converted"
  tvconvert.main(["--arch=mc3_18", f"--src={src}", f"--out={out}"])
  config = cfg_mod.get_config("encoder=mc3_18,init=kinetics400")
  config.init_from = str(out)
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  tx = optim_lib.make_optimizer(
    config.optim, optim_lib.schedule(config.optim, 1, 1)
  )
  _, state, info = train.create_state(config, mesh, tx)
  assert info == {"init": "converted", "path": str(out)}
  want = net.state_dict()["layer2.0.conv1.0.weight"].numpy()
  got = np.asarray(
    state.params["encoder"]["blocks"][2]["conv1"]["conv"]["kernel"][...]
  )
  np.testing.assert_array_equal(got, want.transpose(2, 3, 4, 1, 0))
  config = cfg_mod.get_config("encoder=mc3_18")  # default [0,1] input
  config.init_from = str(out)
  with pytest.raises(ValueError, match="init=kinetics400"):
    train.create_state(config, mesh, tx)
