"""Masked video autoencoding (SVFAP's pretext with its TPSBT encoder) on
the built-in synthetic data at CPU size: the pool that
configs/stclr_synthetic.py pretrains on, the same 8-frame 48x48 clips, the
TPSBT's CPU size (``tpsbt_cpu``: width 192, 3 heads, 2x8x8 tubes, G = 4,
docs/video_transformers.md) and the CPU decoder (144 wide, 3 heads, 4
blocks). 90% tube masking keeps 4 of a frame's 36 positions, as many as
the bottleneck's G.

Its budget is ST-CLR's in encoder clips (600 steps of one clip per video
against 300 of two). SVFAP's recipe otherwise: AdamW (0.9, 0.95), weight
decay 0.05 on kernels, learning rate 3e-4 x batch / 256, warm-up then
cosine; random resized
crops with no flip and no colour (SVFAP's multi-scale crop takes scales
1 to 0.66 of the shorter side; its area range here is (0.44, 1)),
consecutive frames. ``:encoder=vit_cpu`` gives VideoMAE's ViT instead.
Variants as configs/stclr_synthetic.py, plus ``:tiny=1`` (the tiny pool,
``tpsbt_tiny`` with the tiny decoder, 2 steps, for tests)."""

from stclr_jax import configlib


def get_config(arg=None):
  args = configlib.parse_arg(
    arg, **dict(configlib.PRETRAIN_ARGS, encoder="tpsbt_cpu"), tiny=False
  )
  c = configlib.synthetic_sizes(configlib.base_config(), pool=True)
  c.model.encoder = args.encoder
  c.batch_size = 16
  # 600 steps over the pool of 2,400 videos: 9,600 clips, as many as
  # ST-CLR's 300 steps of two views (and the supervised controls' 600).
  c.num_epochs = 4
  c.log_every_steps = 10
  c.checkpoint_every_steps = 100
  c.pretext.mae.enabled = True
  c.pretext.mae.decoder = "cpu"
  c.optim.name = "adamw"
  c.optim.b2 = 0.95
  c.optim.weight_decay = 0.05
  c.optim.schedule = "cosine"
  c.optim.warmup_epochs = 0.1  # 15 steps, 2.5% (SVFAP: 5 of 100 epochs)
  c.aug.temporal_modes = "sequential"
  c.aug.crop_area = (0.44, 1.0)
  c.aug.flip = False
  c.aug.color = False
  if args.tiny:
    configlib.synthetic_sizes(c, tiny=True, pool=True)
    if args.encoder in ("tpsbt_cpu", "vit_cpu"):
      args.encoder = args.encoder.replace("_cpu", "_tiny")
    c.pretext.mae.decoder = "tiny"
    c.pretext.mae.ratio = 0.75  # 4 of the tiny clips' 16 positions
    c.num_steps = 2
    c.log_every_steps = 1
  c.optim.learning_rate = 3e-4 * c.batch_size / 256  # SVFAP's rule
  return configlib.apply_variants(c, args)
