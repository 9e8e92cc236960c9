"""ST-CLR pretraining on Oulu-CASIA as in the paper (Sec. IV-A).

16-frame clips at 224x224, R(2+1)D-18, 128-d projection, SGD (momentum 0.9,
lr 1e-3, weight decay 1e-4), 1000 epochs. Not stated in the paper, our
choices: global batch 32 (the paper trained on 4 V100s) and temperature 0.1.

Variants: ``:encoder=r3d_18|mc3_18``, ``:aug=no_temporal|no_crop|no_color|
no_flip``, ``:epochs=100|500`` (comma-separated to combine).

  python -m stclr_jax.main --config=configs/stclr_oulu.py:aug=no_temporal \
      --config.data.manual_dir=/data/Oulu-CASIA --workdir=/ckpt/run1
"""

from stclr_jax import configlib


def get_config(arg=None):
  args = configlib.parse_arg(arg, **configlib.PRETRAIN_ARGS)
  c = configlib.base_config()
  c.data.name = "oulu_casia/vis_strong"
  c.data.cache_frame_size = 256  # Oulu-CASIA fits in memory at this size
  return configlib.apply_variants(c, args)
