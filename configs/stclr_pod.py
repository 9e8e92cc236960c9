"""ST-CLR at pod scale: large global batch with LARS, warmup + cosine decay,
bf16 compute (float32 parameters and BatchNorm statistics) and global
(synchronised) BatchNorm. LARS and its learning rate follow SimCLR
(0.3 x batch / 256, no decay or trust ratio for BatchNorm and biases).

Variants as configs/stclr_oulu.py, plus ``batch=<global batch>``.

  python -m stclr_jax.main --config=configs/stclr_pod.py:batch=1024 ...
"""

from stclr_jax import configlib


def get_config(arg=None):
  args = configlib.parse_arg(arg, **configlib.PRETRAIN_ARGS, batch=1024)
  c = configlib.base_config()
  c.batch_size = args.batch
  c.data.name = "oulu_casia/vis_strong"
  c.data.cache_frame_size = 256
  c.model.dtype = "bfloat16"
  c.model.bn_per_device = False
  c.optim.name = "lars"
  c.optim.learning_rate = 0.3 * c.batch_size / 256
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-6
  c.optim.schedule = "cosine"
  c.optim.warmup_epochs = 10
  c.log_every_steps = 10
  return configlib.apply_variants(c, args)
