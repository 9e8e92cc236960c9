"""Shared by the train-step and checkpoint tests: a tiny config, a batch
of two views and the jitted step on a set of devices."""

import numpy as np

from configs import stclr_synthetic
from stclr_jax import mesh as mesh_lib
from stclr_jax import optim as optim_lib
from stclr_jax import train
from stclr_jax.pretext import batch as batch_lib


def config(**optim):
  c = stclr_synthetic.get_config("tiny=1")
  c.batch_size = 8
  for k, v in optim.items():
    setattr(c.optim, k, v)
  return c


def batch(seed=0, b=8, hard=False, parts=False, groups=False):
  """Two noisy views of ``b`` random clips; ``hard``: and a second pair
  of each (``hard_a``, ``hard_b``: another clip, alike); ``parts``: each
  view's random 24 px eye and mouth crops (``parts_*``, uint8), those of
  the two views of a video alike; ``groups``: a ``group`` id per video
  (videos 0-2 one group, 3-4 another, the last video none)."""
  rng = np.random.default_rng(seed)
  schema = batch_lib.BatchSchema(hard=hard, parts=parts, group=groups)
  base = rng.uniform(size=(b, 4, 32, 32, 3)).astype(np.float32)
  noise = lambda: rng.normal(0, 0.05, base.shape).astype(np.float32)
  out = {k: np.clip(base + noise(), 0, 1) for k in batch_lib.PAIR}
  if hard:
    other = np.clip(base + rng.normal(0, 0.3, base.shape), 0, 1)
    for k in batch_lib.HARD_PAIR:
      out[k] = np.clip(other + noise(), 0, 1).astype(np.float32)
  if parts:
    # The two views of a pair share their crops, jittered apart.
    for pair in (batch_lib.PAIR, batch_lib.HARD_PAIR)[: 2 if hard else 1]:
      crops = rng.integers(0, 256, (b, 2, 24, 24, 3))
      for v in pair:
        jitter = rng.integers(-8, 9, crops.shape)
        out[batch_lib.PARTS[v]] = np.clip(crops + jitter, 0, 255).astype(
          np.uint8
        )
  if groups:
    ids = np.arange(b, dtype=np.int32) + 10
    ids[:3], ids[3:5], ids[-1] = 7, 3, -1
    out[batch_lib.GROUP] = ids
  assert set(out) == set(schema.model_keys), (sorted(out), schema)
  return out


def setup_step(config, devices, bn_groups=None):
  """(mesh, state, jitted step) of ``config`` on ``devices``."""
  mesh = mesh_lib.make_mesh(devices)
  lr_fn = optim_lib.schedule(config.optim, 10, 100)
  tx = optim_lib.make_optimizer(config.optim, lr_fn)
  graphdef, state, _ = train.create_state(config, mesh, tx, bn_groups)
  step = train.make_train_step(config, mesh, graphdef, tx, lr_fn, state)
  return mesh, state, step
