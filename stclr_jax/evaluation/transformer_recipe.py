"""Fine-tuning a video transformer (``eval.transformer``): SVFAP's recipe,
chosen by the encoder family; the R(2+1)D path (Adam, plateau, hard
labels) never comes here.

* AdamW (``betas``), weight decay on kernels only (1-D parameters, i.e.
  biases, LayerNorms and the attention's q/v biases, take none), the
  decoupled decay scaled by the learning rate as PyTorch's AdamW;
* layer-wise rate decay: :func:`layer_ids` (tube embedding 0, block i
  i + 1, the rest ``blocks + 1``), scale ``decay^(blocks + 1 - id)``;
* :func:`lr_table`: SVFAP's per-step schedule, linear warm-up (NumPy's
  ``linspace``, end point included) then cosine to ``min_lr``;
* :func:`mix`: timm's batch-mode Mixup/CutMix with label smoothing, one
  lambda and one CutMix box per batch, the box the same in every frame;
* the soft-target cross-entropy.

Every random draw comes from a key the step derives from the run's seed
and its step counter, so a run is a function of its seed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax


def learning_rate(recipe, batch_size: int) -> float:
  """``base_learning_rate x batch / 256`` (SVFAP's and VideoMAE's rule)."""
  return float(recipe.base_learning_rate) * batch_size / 256.0


def _name(p) -> str:
  return str(getattr(p, "key", getattr(p, "idx", p)))


def layer_ids(params, num_blocks: int):
  """A tree like ``params`` (the classifier's: ``encoder`` and ``head``)
  of layer ids: 0 for the tube embedding, ``i + 1`` for block ``i``,
  ``num_blocks + 1`` for everything else (temporal pyramid, bottleneck,
  ``fc_norm``, the head), as SVFAP's ``get_num_layer_for_vit``."""

  def of(path, _):
    names = [_name(p) for p in path]
    if names[0] == "encoder" and names[1] == "patch_embed":
      return 0
    if names[0] == "encoder" and names[1] == "blocks":
      return int(names[2]) + 1
    return num_blocks + 1

  return jax.tree_util.tree_map_with_path(of, params)


def lr_scales(params, num_blocks: int, decay: float):
  """Each parameter's rate scale, ``decay^(num_blocks + 1 - id)``."""
  return jax.tree.map(
    lambda i: float(decay) ** (num_blocks + 1 - i),
    layer_ids(params, num_blocks),
  )


def decay_mask(params):
  """True where weight decay applies: parameters of 2 or more dimensions
  (SVFAP skips ``len(shape) == 1`` and names ending in ``.bias``, which
  here are 1-D too)."""
  return jax.tree.map(lambda x: np.ndim(x) >= 2, params)


def optimizer(recipe, num_blocks: int) -> optax.GradientTransformation:
  """The update direction before the learning rate: Adam's, plus the
  masked weight decay, times the layer scale (both from the parameters'
  paths and shapes, so one optimiser serves any classifier of the
  family). ``update`` needs ``params``. The step multiplies by
  ``-lr_table[step]``."""
  b1, b2 = (float(b) for b in recipe.betas)
  decay = float(recipe.layer_decay)

  def layer_scale_init(params):
    del params
    return optax.EmptyState()

  def layer_scale(updates, state, params=None):
    del params
    scales = lr_scales(updates, num_blocks, decay)
    return jax.tree.map(lambda u, s: u * s, updates, scales), state

  return optax.chain(
    optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8),
    optax.add_decayed_weights(float(recipe.weight_decay), decay_mask),
    optax.GradientTransformation(layer_scale_init, layer_scale),
  )


def lr_table(recipe, base_lr: float, steps: int) -> np.ndarray:
  """The learning rate of every step (SVFAP's ``cosine_scheduler`` at one
  iteration per step): ``warmup = round(warmup_fraction x steps)`` steps
  from ``warmup_lr`` to ``base_lr`` (end point included), then
  ``min_lr + (base_lr - min_lr)(1 + cos(pi i / n)) / 2`` over the ``n``
  remaining steps."""
  warm = int(round(float(recipe.warmup_fraction) * steps))
  warm = min(warm, steps)
  up = np.linspace(float(recipe.warmup_lr), base_lr, warm)
  n = steps - warm
  i = np.arange(n)
  lo = float(recipe.min_lr)
  down = lo + 0.5 * (base_lr - lo) * (1 + np.cos(math.pi * i / max(n, 1)))
  return np.concatenate([up, down]).astype(np.float64)


def smoothed(labels, num_classes: int, smoothing: float):
  """One-hot targets with label smoothing: ``1 - s + s / n`` on the class,
  ``s / n`` elsewhere (timm's ``mixup_target``)."""
  off = smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def cutmix_box(key, lam, height: int, width: int):
  """timm's ``rand_bbox`` for one ``lam``: a box of side ``sqrt(1 - lam)``
  of the frame's, centred uniformly, clipped to the frame. Returns the
  boolean mask (height, width) and the corrected ``lam`` (1 - box area)."""
  ky, kx = jax.random.split(key)
  ratio = jnp.sqrt(1.0 - lam)
  ch = (height * ratio).astype(jnp.int32)
  cw = (width * ratio).astype(jnp.int32)
  cy = jax.random.randint(ky, (), 0, height)
  cx = jax.random.randint(kx, (), 0, width)
  y0, y1 = jnp.clip(cy - ch // 2, 0, height), jnp.clip(cy + ch // 2, 0, height)
  x0, x1 = jnp.clip(cx - cw // 2, 0, width), jnp.clip(cx + cw // 2, 0, width)
  rows = (jnp.arange(height) >= y0) & (jnp.arange(height) < y1)
  cols = (jnp.arange(width) >= x0) & (jnp.arange(width) < x1)
  box = rows[:, None] & cols[None, :]
  area = (y1 - y0) * (x1 - x0)
  return box, 1.0 - area / (height * width)


def mix(key, video, labels, num_classes: int, recipe):
  """timm's batch-mode Mixup/CutMix on ``video`` (B, T, H, W, C) and its
  labels: each clip mixed with the batch's reversed order by one lambda,
  ``lam x + (1 - lam) flip(x)`` (Mixup, lambda ~ Beta(mixup, mixup)) or
  the reversed clip pasted in one box for every frame (CutMix, with
  probability ``switch_prob``; lambda ~ Beta(cutmix, cutmix), corrected
  to the box's area); with probability ``1 - mix_prob`` nothing mixes.
  Returns ``(video, soft_targets, lam)``: targets ``lam y + (1 - lam)
  flip(y)`` of the smoothed one-hot ``y``, the pixels' own weights."""
  k_apply, k_switch, k_mix, k_cut, k_box = jax.random.split(key, 5)
  y = smoothed(labels, num_classes, float(recipe.label_smoothing))
  mixup_a, cutmix_a = float(recipe.mixup), float(recipe.cutmix)
  if mixup_a <= 0 and cutmix_a <= 0:
    return video, y, jnp.float32(1.0)
  if mixup_a > 0 and cutmix_a > 0:
    use_cut = jax.random.uniform(k_switch) < float(recipe.switch_prob)
  else:
    use_cut = jnp.asarray(cutmix_a > 0)
  lam_mix = (
    jax.random.beta(k_mix, mixup_a, mixup_a) if mixup_a > 0 else jnp.float32(1)
  )
  lam_cut = (
    jax.random.beta(k_cut, cutmix_a, cutmix_a)
    if cutmix_a > 0
    else jnp.float32(1)
  )
  h, w = video.shape[2], video.shape[3]
  box, lam_box = cutmix_box(k_box, lam_cut, h, w)
  applied = jax.random.uniform(k_apply) < float(recipe.mix_prob)
  lam = jnp.where(applied, jnp.where(use_cut, lam_box, lam_mix), 1.0)
  lam = lam.astype(jnp.float32)
  other = video[::-1]
  mixed = jnp.where(
    use_cut,
    jnp.where(box[None, None, :, :, None], other, video),
    lam.astype(video.dtype) * video + (1 - lam).astype(video.dtype) * other,
  )
  video = jnp.where(applied, mixed, video)
  return video, lam * y + (1.0 - lam) * y[::-1], lam


def soft_cross_entropy(logits, targets):
  """``mean_b sum_c -targets log_softmax(logits)``, in float32 at least."""
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), -1))
