"""The reduce-on-plateau rule both supervised phases share
(stclr_jax/evaluation/supervised.py), against PyTorch's."""

import ml_collections
import numpy as np
import pytest
import torch  # a test requirement (Makefile)
from _helpers_jit import count_compiles

from stclr_jax.evaluation import supervised


def test_plateau_matches_pytorch_reduce_lr_on_plateau():
  ev = ml_collections.ConfigDict(
    {"plateau_factor": 0.1, "plateau_patience": 3, "plateau_rtol": 1e-4}
  )
  plateau = supervised.Plateau(ev)
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
  # eps=0: PyTorch's default eps (1e-8) stops reducing an lr below ~1e-8.
  ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
    opt, patience=3, factor=0.1, eps=0.0
  )
  losses = 2 + np.cumsum(np.random.default_rng(0).normal(0, 0.05, 60))
  losses[10:16] = losses[9]  # an exact plateau too
  ours, theirs = [], []
  for loss in losses:
    ours.append(plateau.end_epoch(float(loss)))
    ref.step(float(loss))
    theirs.append(opt.param_groups[0]["lr"])
  np.testing.assert_allclose(ours, theirs, rtol=1e-6)
  assert min(ours) < 1e-2  # it did reduce, more than once


def test_cosine_matches_pytorch_cosine_annealing():
  epochs = 17
  cosine = supervised.schedule(
    ml_collections.ConfigDict({"schedule": "cosine"}), epochs
  )
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
  ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
  ours, theirs = [], []
  for _ in range(epochs):
    ours.append(cosine.scale)
    theirs.append(opt.param_groups[0]["lr"])
    cosine.end_epoch(1.0)
    opt.step()
    ref.step()
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)
  assert ours[0] == 1.0 and 0 < ours[-1] < 0.01


def test_schedule_names():
  ev = ml_collections.ConfigDict(
    {"plateau_factor": 0.1, "plateau_patience": 3, "plateau_rtol": 1e-4}
  )
  assert isinstance(supervised.schedule(ev, 5), supervised.Plateau)  # paper
  ev.schedule = "constant"
  const = supervised.schedule(ev, 5)
  assert [const.end_epoch(9.0 - e) for e in range(5)] == [1.0] * 5
  ev.schedule = "step"
  with pytest.raises(ValueError, match="eval.schedule must be one of"):
    supervised.schedule(ev, 5)


def test_plateau_compiles_its_update_once_per_process():
  ev = ml_collections.ConfigDict(
    {"plateau_factor": 0.1, "plateau_patience": 3, "plateau_rtol": 1e-4}
  )
  supervised.Plateau(ev).end_epoch(1.0)  # compiled here, if not before
  with count_compiles() as compiled:
    for _ in range(2):  # two phases (or folds) of 6 epochs
      plateau = supervised.Plateau(ev)
      scales = [plateau.end_epoch(2.0) for _ in range(6)]
  assert len(compiled) == 0
  assert scales == pytest.approx([1.0] * 4 + [0.1] * 2)  # it still reduces


def _ev(name):
  return ml_collections.ConfigDict(
    {
      "schedule": name,
      "plateau_factor": 0.1,
      "plateau_patience": 1,
      "plateau_rtol": 1e-4,
    }
  )


def test_step_schedule_cosine_follows_the_steps():
  """A budget in steps: the cosine spans the steps, whatever the size of
  the labelled set (PyTorch's CosineAnnealingLR stepped per step)."""
  steps = 23
  sched = supervised.StepSchedule(_ev("cosine"), steps, steps_per_epoch=4)
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
  ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
  ours, theirs = [], []
  for _ in range(steps):
    ours.append(sched.scale)
    theirs.append(opt.param_groups[0]["lr"])
    sched.end_step(1.0)
    opt.step()
    ref.step()
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)
  const = supervised.StepSchedule(_ev("constant"), 5, 2)
  for _ in range(5):
    assert const.scale == 1.0
    const.end_step(3.0)


def test_step_schedule_plateau_reads_an_epochs_worth_of_steps():
  """The plateau rule sees the mean loss of every ``steps_per_epoch``
  steps, as :class:`Plateau` fed those means."""
  per_epoch, losses = 3, [2.0, 1.0, 1.5] + [1.4] * 3 + [1.6] * 9 + [1.0] * 3
  sched = supervised.StepSchedule(_ev("plateau"), len(losses), per_epoch)
  ref = supervised.Plateau(_ev("plateau"))
  scales, want = [], []
  for i, loss in enumerate(losses):
    scales.append(sched.scale)
    want.append(ref.scale)
    sched.end_step(np.float32(loss))
    if (i + 1) % per_epoch == 0:
      ref.end_epoch(float(np.mean(losses[i + 1 - per_epoch : i + 1])))
  assert scales == want
  assert min(scales) == pytest.approx(0.1)  # it reduced within the run
  with pytest.raises(ValueError, match="eval.schedule must be one of"):
    supervised.StepSchedule(_ev("step"), 5, 1)
