"""ST-CLR on the built-in synthetic_expressions/faces data (face crops, as
Oulu-CASIA's Cropped set): the CPU default
(``make demo``). Same code path as the paper's config, small sizes: width
0.25 R(2+1)D-18 (128-d feature), 8-frame 64x64 clips, Adam for a quick
start, colour distortion strength 0.5. Variants as configs/stclr_oulu.py,
plus ``:tiny=1`` (the tiny data set and 2 steps, for tests)."""

from stclr_jax import configlib


def get_config(arg=None):
  c = configlib.synthetic_sizes(configlib.base_config())
  c.batch_size = 16
  c.num_epochs = 3
  c.log_every_steps = 5
  c.checkpoint_every_steps = 30
  c.optim.name = "adam"
  c.optim.learning_rate = 1e-3
  c.optim.weight_decay = 0.0
  c.aug.crop_area = (0.3, 1.0)
  # SimCLR's strength for small images (CIFAR-10); at 1.0 the NT-Xent of
  # this config stayed at chance (3.43) for its 3 epochs, at 0.5 it falls.
  c.aug.color_strength = 0.5
  variants = configlib.parse_arg(arg)
  if variants.pop("tiny", "0") == "1":
    configlib.synthetic_sizes(c, tiny=True)
    c.num_steps = 2
    c.log_every_steps = 1
  return configlib.apply_variants(
    c, ",".join(f"{k}={v}" for k, v in variants.items())
  )
