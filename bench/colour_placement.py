"""Benchmark: where should the colour distortion run, in tf.data on the host
or on the device with dm-pix inside the jitted step?

Measures, side by side in one run on the same batches of two-view clips:

* ``tf.data``: the library's ``augment.color_distort`` (one draw per clip)
  mapped over a batch in a tf.function, on the host's CPU threads;
* ``dm-pix``: the same kind of jitter (brightness, contrast, saturation,
  hue in a fixed order, applied with p=0.8, then grayscale with p=0.2; dm-pix's
  brightness is additive where ours is multiplicative: the cost is what is
  compared) with dm-pix, vmapped over clips with one key per clip, jitted on
  the default JAX device;
* for scale, the model's forward+backward on the same batch
  (``--with_model``: the demo's width-0.25 R(2+1)D-18).

On a CPU-only host both run on the same cores, so the question is only
which is cheaper; on an accelerator the device path costs device time and
frees host time.

  python bench/colour_placement.py [--batch 16 --clip_len 8 --size 64]
"""

import argparse
import time

import numpy as np


def _median_time(fn, repeats):
  fn()  # warm-up / compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--clip_len", type=int, default=8)
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--with_model", action="store_true")
  args = p.parse_args()

  import dm_pix as pix
  import jax
  import jax.numpy as jnp
  import tensorflow as tf

  from stclr_jax.data import augment

  shape = (2 * args.batch, args.clip_len, args.size, args.size, 3)
  clips = np.random.default_rng(0).uniform(size=shape).astype(np.float32)

  @tf.function
  def tf_colour(x, seed):
    seeds = tf.random.experimental.stateless_split(seed, shape[0])
    return tf.map_fn(
      lambda a: augment.color_distort(a[0], a[1]),
      (x, seeds),
      fn_output_signature=tf.float32,
      parallel_iterations=8,
    )

  x_tf = tf.constant(clips)
  seed = tf.constant([0, 1], tf.int64)
  t_tf = _median_time(lambda: tf_colour(x_tf, seed).numpy(), args.repeats)

  def jitter(key, clip, s=1.0):
    k = jax.random.split(key, 6)
    out = pix.random_brightness(k[0], clip, 0.8 * s)
    out = pix.random_contrast(k[1], out, 1 - 0.8 * s, 1 + 0.8 * s)
    out = pix.random_saturation(k[2], out, 1 - 0.8 * s, 1 + 0.8 * s)
    out = pix.random_hue(k[3], out, 0.2 * s)
    apply = jax.random.uniform(k[4]) < 0.8
    out = jnp.where(apply, jnp.clip(out, 0, 1), clip)
    gray = jnp.broadcast_to(
      pix.rgb_to_grayscale(out, keep_dims=True), out.shape
    )
    return jnp.where(jax.random.uniform(k[5]) < 0.2, gray, out)

  @jax.jit
  def pix_colour(x, key):
    return jax.vmap(jitter)(jax.random.split(key, x.shape[0]), x)

  x_dev = jax.device_put(clips)
  key = jax.random.key(0)
  t_pix = _median_time(
    lambda: pix_colour(x_dev, key).block_until_ready(), args.repeats
  )
  print(
    f"device: {jax.devices()[0].device_kind}; batch {args.batch} videos "
    f"x 2 views x {args.clip_len}x{args.size}^2, median of "
    f"{args.repeats}"
  )
  print(
    f"colour in tf.data (host):   {1e3 * t_tf:8.1f} ms/batch  "
    f"({shape[0] / t_tf:8.1f} clips/s)"
  )
  print(
    f"colour with dm-pix (device): {1e3 * t_pix:8.1f} ms/batch  "
    f"({shape[0] / t_pix:8.1f} clips/s)"
  )
  print(f"ratio tf.data / dm-pix time: {t_tf / t_pix:.2f}")
  if args.with_model:
    from flax import nnx

    from stclr_jax import models

    enc = models.make_encoder("r2plus1d_18", width=0.25, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(enc)

    @jax.jit
    def fwd_bwd(state, x):
      return jax.grad(lambda s: jnp.sum(nnx.merge(graphdef, s)(x) ** 2))(state)

    t_model = _median_time(
      lambda: jax.block_until_ready(fwd_bwd(state, x_dev)),
      max(3, args.repeats // 3),
    )
    print(
      f"model forward+backward:     {1e3 * t_model:8.1f} ms/batch; "
      f"colour is {100 * t_tf / t_model:.1f}% (tf.data) or "
      f"{100 * t_pix / t_model:.1f}% (dm-pix) of it"
    )


if __name__ == "__main__":
  main()
