"""ST-CLR on the built-in synthetic data at CPU size (``make demo``,
bench/synthetic_protocol.py): pretraining reads the unlabelled pool,
``synthetic_expressions/expressive_pool`` (400 subjects, 2,400 videos, no
labels), disjoint from the 80 labelled subjects that
configs/finetune_synthetic.py evaluates on, as one pretrains on unlabelled
footage and fine-tunes on a small labelled set. Same code path as the
paper's config, small sizes: width 0.25 R(2+1)D-18 (128-d feature),
8-frame 48x48 clips, Adam for a quick start, colour distortion strength
0.5. Variants as configs/stclr_oulu.py, plus ``:tiny=1`` (the tiny pool
and 2 steps, for tests)."""

from stclr_jax import configlib


def get_config(arg=None):
  args = configlib.parse_arg(arg, **configlib.PRETRAIN_ARGS, tiny=False)
  c = configlib.synthetic_sizes(configlib.base_config(), pool=True)
  c.batch_size = 16
  c.num_epochs = 2  # 300 steps over the pool of 2,400 videos
  c.log_every_steps = 10
  c.checkpoint_every_steps = 100
  c.optim.name = "adam"
  c.optim.learning_rate = 1e-3
  c.optim.weight_decay = 0.0
  c.aug.crop_area = (0.3, 1.0)
  # SimCLR's strength for small images (CIFAR-10). At 1.0 the NT-Xent of
  # this config at ef36a5e (3 epochs) stayed at chance (3.43); at 0.5 it
  # fell.
  c.aug.color_strength = 0.5
  if args.tiny:
    configlib.synthetic_sizes(c, tiny=True, pool=True)
    c.num_steps = 2
    c.log_every_steps = 1
  return configlib.apply_variants(c, args)
