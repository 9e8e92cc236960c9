"""Evaluation twin of configs/stclr_synthetic.py, at CPU size: the same
protocol as configs/finetune_oulu.py on the built-in
synthetic_expressions/faces data (width-0.25 R(2+1)D-18, 8x64x64 clips).

Departures from the paper's epochs, for CPU time: 5 folds run of the 10
(``eval.run_folds``), 30 linear-probe epochs (cheap: the frozen encoder's
features are computed once) and 10 fine-tuning epochs, and a linear-probe
learning rate of 1e-3.

  python -m stclr_jax.main --mode=evaluate \
      --config=configs/finetune_synthetic.py \
      --config.init_from=workdirs/demo --workdir=workdirs/demo_eval

Variants as configs/finetune_oulu.py, plus ``:tiny=1`` (tiny data, 2 folds,
a few epochs: for tests).
"""

from stclr_jax import configlib


def get_config(arg=None):
  c = configlib.synthetic_sizes(configlib.finetune_config())
  c.eval.run_folds = "0,1,2,3,4"
  c.eval.finetune_epochs = 10
  c.eval.linear_learning_rate = 1e-3
  variants = configlib.parse_arg(arg)
  if variants.pop("tiny", "0") == "1":
    configlib.synthetic_sizes(c, tiny=True)
    c.eval.num_folds = 3
    c.eval.run_folds = ""
    c.eval.linear_epochs = 3
    c.eval.finetune_epochs = 2
  return configlib.apply_finetune_variants(
    c, ",".join(f"{k}={v}" for k, v in variants.items())
  )
