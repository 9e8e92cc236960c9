"""bench/train_step.py's masked-autoencoding step is the library's: the
autoencoder of the encoder's size, the step of ``train_step.
make_train_step`` with ``objectives.MaskedAutoencoding`` at the asked
ratio (its metrics say how many tubes stayed visible), AdamW moving every
parameter."""

import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))

import train_step as step_bench  # noqa: E402

from stclr_jax import models  # noqa: E402
from stclr_jax.convert import converted as conv  # noqa: E402


def test_decoder_of_each_size():
  assert [
    step_bench.mae_decoder(e) for e in ("tpsbt_base", "vit_cpu", "tpsbt_tiny")
  ] == ["base", "cpu", "tiny"]


@pytest.mark.parametrize("ratio", [0.9, 0.75])
def test_the_mae_step_is_the_librarys(ratio):
  step, state, data, info = step_bench.build_jax_mae(
    2, 4, 32, "fp32", "tpsbt_tiny", ratio
  )
  assert info["params"] == models.count_params(
    conv.abstract_autoencoder("tpsbt_tiny", "tiny")
  )
  assert info["flops"] > 0
  before = jax.tree.map(np.array, state.params)  # copies: the step donates
  state, metrics = step(state, data)
  visible = 16 - int(ratio * 16)  # 4 x 4 positions per frame
  assert float(metrics["visible_fraction"]) == visible / 16
  # Standardised targets against a fresh decoder: about their variance.
  assert 0.5 < float(metrics["reconstruction_mse"]) < 2.0
  # Every parameter got a gradient: AdamW's first moments are all nonzero.
  # (Not every value moves visibly: at initialisation some LayerNorm
  # scales in the cross attention get gradients of 1e-13 to 1e-18, and
  # Adam's step of about 1e-9 does not change a float32 1.0.)
  mu = [
    x
    for path, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
    if "mu" in jax.tree_util.keystr(path)
  ]
  assert len(mu) == len(jax.tree.leaves(before))
  assert all(np.any(np.asarray(m) != 0) for m in mu)
  moved = jax.tree.map(
    lambda a, b: bool(np.any(a != np.asarray(b))), before, state.params
  )
  assert sum(jax.tree.leaves(moved)) >= len(mu) - 3
