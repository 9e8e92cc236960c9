"""CPU demo (`make demo`): the paper's encoder and loss on random clips.

Builds R(2+1)D-18 (Table I) with the 128-d projection head, runs two
augmented "views" of a random clip batch through it, and evaluates NT-Xent
(eq. 1) and its gradient. Prints shapes, parameter counts and timings.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from stclr_jax import losses as losses_lib
from stclr_jax import models


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--encoder", default="r2plus1d_18",
                      choices=models.ENCODER_NAMES)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--size", type=int, default=112)
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--temperature", type=float, default=0.1)
  args = parser.parse_args(argv)

  print(f"jax {jax.__version__} on {jax.devices()}")
  for name in models.ENCODER_NAMES:
    abstract = nnx.eval_shape(lambda n=name: models.make_encoder(
        n, rngs=nnx.Rngs(0)))
    print(f"  {name:12s} {models.count_params(abstract):>12,d} parameters "
          "(no classifier)")

  rngs = nnx.Rngs(0)
  encoder = models.make_encoder(args.encoder, width=args.width, rngs=rngs)
  head = models.ProjectionHead(encoder.features, rngs=rngs)
  print(f"{args.encoder} (width {args.width}): "
        f"{models.count_params(encoder):,d} + head "
        f"{models.count_params(head):,d} parameters")

  shape = (args.batch, args.frames, args.size, args.size, 3)
  k1, k2 = jax.random.split(jax.random.key(1))
  view_a = jax.random.uniform(k1, shape)
  view_b = jax.random.uniform(k2, shape)

  def loss_fn(encoder, head, a, b):
    h = encoder(jnp.concatenate([a, b]))
    z = head(h)
    z_a, z_b = jnp.split(z, 2)
    loss, metrics = losses_lib.nt_xent_with_metrics(z_a, z_b,
                                                    args.temperature)
    return loss, (h, z, metrics)

  step = nnx.jit(nnx.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
  t0 = time.perf_counter()
  (loss, (h, z, metrics)), grads = step(encoder, head, view_a, view_b)
  jax.block_until_ready(loss)
  t1 = time.perf_counter()
  (loss, (h, z, metrics)), grads = step(encoder, head, view_a, view_b)
  jax.block_until_ready(loss)
  t2 = time.perf_counter()
  gnorm = jnp.sqrt(sum(jnp.sum(jnp.square(g))
                       for g in jax.tree.leaves(grads)))
  print(f"two views of {shape} -> h {h.shape} -> z {z.shape}")
  print(f"NT-Xent {float(loss):.4f} (chance level log(2N-1) = "
        f"{float(jnp.log(2 * args.batch - 1)):.4f}), contrastive top-1 "
        f"{float(metrics['contrastive_top1']):.2f}, grad norm "
        f"{float(gnorm):.3f}")
  print(f"forward+backward: first call {t1 - t0:.1f}s (compile), "
        f"then {t2 - t1:.2f}s")


if __name__ == "__main__":
  main()
