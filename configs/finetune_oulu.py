"""Fine-tuning and subject-independent 10-fold evaluation on Oulu-CASIA, as
in the paper (Sec. III-B, IV-A): drop the projection head, train a new
linear layer for 30 epochs with the encoder frozen, then the whole model for
70 epochs; Adam, lr 1e-4, reduced on plateau (patience 3).

  python -m stclr_jax.main --mode=evaluate --config=configs/finetune_oulu.py \
      --config.init_from=/ckpt/run1 --config.data.manual_dir=/data/Oulu-CASIA \
      --workdir=/ckpt/run1_eval

``init_from``: the pretraining workdir (its latest checkpoint; pick one with
``--config.init_step``), a converted Kinetics-400 checkpoint (with
``:init=kinetics400``), or "" for the from-scratch baseline. The model and
data sections must match the pretraining run's.

Variants: ``:labels=75|50|25|10`` (Table VI), ``:encoder=r3d_18|mc3_18``,
``:linear_only=1``, ``:init=kinetics400`` (comma-separated to combine).
"""

from stclr_jax import configlib


def get_config(arg=None):
  args = configlib.parse_arg(arg, **configlib.FINETUNE_ARGS)
  c = configlib.finetune_config()
  c.data.name = "oulu_casia/vis_strong"
  c.data.cache_frame_size = 256
  return configlib.apply_finetune_variants(c, args)
