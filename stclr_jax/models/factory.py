"""The one place that builds a model from a config (``config.model``).

Pretraining, evaluation and the configs' tests build their model here, so
an architecture option means the same everywhere. (Benchmarks that sweep
encoder options directly call :func:`stclr_jax.models.make_encoder`.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stclr_jax.models import make_encoder
from stclr_jax.models.contrastive import ContrastiveModel
from stclr_jax.models.masked_autoencoder import DECODERS, MaskedVideoAutoencoder
from stclr_jax.models.video_resnet import BasicBlock, VideoResNet
from stclr_jax.models.video_transformer import VideoTransformer, family
from stclr_jax.pretext import options as pretext_options

# float64 is for numerical checks (bench/multihost_equivalence.py): it needs
# jax_enable_x64, and makes the parameters float64 too.
DTYPES = {
  "float32": jnp.float32,
  "bfloat16": jnp.bfloat16,
  "float64": jnp.float64,
}


def compute_dtype(name: str):
  """``config.model.dtype`` -> a jnp dtype, with an error naming the field."""
  if name not in DTYPES:
    raise ValueError(
      f"config.model.dtype={name!r}: must be one of {sorted(DTYPES)}"
    )
  if name == "float64" and not jax.config.jax_enable_x64:
    raise ValueError(
      "config.model.dtype='float64' needs 64-bit JAX: set JAX_ENABLE_X64=1 "
      "or jax.config.update('jax_enable_x64', True) before building"
    )
  return DTYPES[name]


def bn_groups_for(model_config, num_devices: int) -> int:
  """BatchNorm statistics groups: one per device under
  ``model.bn_per_device``, else one (global BatchNorm)."""
  return num_devices if model_config.bn_per_device else 1


def create_encoder(
  model_config, *, rngs: nnx.Rngs, bn_groups: int = 1, drop_path: float = 0.0
) -> VideoResNet | VideoTransformer:
  """The encoder f of ``config.model`` (randomly initialised).
  ``drop_path``: a video transformer's stochastic depth (the fine-tuning
  recipe's ``eval.transformer.drop_path``); a ResNet has none."""
  dtype = compute_dtype(model_config.dtype)
  if family(model_config.encoder) != "resnet":
    return make_encoder(
      model_config.encoder,
      drop_path=drop_path,
      dtype=dtype,
      param_dtype=jnp.float64 if dtype == jnp.float64 else jnp.float32,
      rngs=rngs,
    )
  encoder = make_encoder(
    model_config.encoder,
    width=model_config.width,
    dtype=dtype,
    param_dtype=jnp.float64 if dtype == jnp.float64 else jnp.float32,
    bn_groups=bn_groups,
    rngs=rngs,
  )
  if model_config.get("zero_init_residual", False):
    zero_init_residual(encoder)
  return encoder


def zero_init_residual(encoder: VideoResNet) -> int:
  """Sets the scale of the last BatchNorm of every residual block to zero
  (``model.zero_init_residual``; torchvision's option of that name, Goyal
  et al. 2017): each block starts as its shortcut, so a random network
  starts near a shallow one. Returns the number of blocks changed."""
  count = 0
  for _, m in nnx.iter_modules(encoder):
    if isinstance(m, BasicBlock):
      m.bn2.scale.value = jnp.zeros_like(m.bn2.scale.value)
      count += 1
  return count


def finetune_drop_path(config) -> float:
  """The encoder's stochastic depth when fine-tuning: a video
  transformer's ``eval.transformer.drop_path``; 0 for a ResNet."""
  if family(config.model.encoder) == "resnet":
    return 0.0
  return float(config.eval.transformer.drop_path)


def create_model(
  config,
  num_devices: int = 1,
  bn_groups: int | None = None,
  drop_path: float = 0.0,
) -> ContrastiveModel | MaskedVideoAutoencoder:
  """The pretraining model of ``config``, seeded by ``config.seed``: the
  encoder of ``config.model`` with a projection head (contrastive
  pretexts), or with the decoder of ``config.pretext.mae`` (masked
  autoencoding; a video transformer encoder). BatchNorm groups default to
  :func:`bn_groups_for` with ``num_devices`` (the mesh size);
  ``drop_path``: a video transformer's stochastic depth."""
  m = config.model
  rngs = nnx.Rngs(config.seed)
  mae = pretext_options.Pretext.from_config(config).mae
  if mae is not None and family(m.encoder) == "resnet":
    raise ValueError(
      f"config.pretext.mae needs a video transformer encoder, and "
      f"config.model.encoder is {m.encoder!r}"
    )
  encoder = create_encoder(
    m,
    rngs=rngs,
    bn_groups=bn_groups or bn_groups_for(m, num_devices),
    drop_path=drop_path,
  )
  if mae is not None:
    return MaskedVideoAutoencoder(
      encoder,
      DECODERS[mae.decoder],
      dtype=encoder.dtype,
      param_dtype=encoder.param_dtype,
      rngs=rngs,
    )
  return ContrastiveModel(
    encoder,
    proj_hidden=m.proj_hidden or None,
    proj_dim=m.proj_dim,
    rngs=rngs,
  )
