"""Which runs an evaluation makes and their seeds: :func:`units` (folds x
label-subset draws x training seeds), their names (:func:`unit_name`), the
seeds of their label subsets (:func:`subset_seed`) and training
(:func:`train_seed`), and the length of their fine-tuning
(:func:`finetune_length`, :func:`finetune_epochs`)."""

from __future__ import annotations

from stclr_jax.evaluation import finetune


def units(ev, run: list[int]) -> list[tuple[int, int, int | None]]:
  """The runs of an evaluation, ``(fold, draw, train seed)``: every fold of
  ``run`` x ``eval.subset_draws`` label subsets (one at 100% labels, where
  every draw is the whole training part) x ``eval.train_seeds`` (``""``:
  one run, seeded by ``config.seed`` and the fold: ``None``)."""
  draws = int(ev.get("subset_draws", 1)) if ev.label_fraction < 1 else 1
  if draws < 1:
    raise ValueError(f"eval.subset_draws must be >= 1, got {draws}")
  spec = str(ev.get("train_seeds", "")).strip()
  try:
    seeds = [int(x) for x in spec.split(",") if x.strip()] or [None]
  except ValueError:
    raise ValueError(
      f"eval.train_seeds={spec!r}: expected comma-separated integers"
    ) from None
  if any(s is not None and s < 0 for s in seeds):
    raise ValueError(f"eval.train_seeds={spec!r}: seeds must be >= 0")
  return [(f, d, s) for f in run for d in range(draws) for s in seeds]


def unit_name(fold: int, draw: int, tseed: int | None) -> str:
  """``fold_KK`` (draw 0, the config's seed), else ``fold_KK_dD_sS``."""
  name = f"fold_{fold:02d}"
  if draw or tseed is not None:
    name += f"_d{draw}_s{tseed if tseed is not None else 'cfg'}"
  return name


def subset_seed(config, fold: int, draw: int):
  """The seed of a run's label subset: ``(eval.subset_seed, fold, draw)``;
  with ``eval.subset_seed < 0``, from ``config.seed`` and the fold (the
  same numbers as the training seed's default)."""
  base = int(config.eval.get("subset_seed", -1))
  if base < 0:
    legacy = config.seed * 1009 + fold
    return legacy if draw == 0 else [legacy, draw]
  return [base, fold, draw]


def train_seed(config, fold: int, tseed: int | None) -> int:
  """The seed of a run's training (head initialisation, minibatch order,
  clips and augmentation): one of ``eval.train_seeds`` and the fold, apart
  from the fold and subset seeds; ``None``: ``config.seed * 1009 + fold``."""
  if tseed is None:
    return config.seed * 1009 + fold
  return 1_000_003 * (tseed + 1) + fold


def finetune_length(ev) -> int:
  """The length of fine-tuning: steps or epochs, by ``eval.budget``."""
  if finetune.budget(ev) == "steps":
    return int(ev.get("finetune_steps", 0))
  return int(ev.finetune_epochs)


def finetune_steps(ev, num_train: int, batch: int) -> int:
  """The number of fine-tuning steps of a run on ``num_train`` videos."""
  if finetune.budget(ev) == "steps":
    return int(ev.finetune_steps)
  return int(ev.finetune_epochs) * max(1, num_train // batch)


def finetune_epochs(ev, num_train: int, batch: int) -> int:
  """The last "epoch" of fine-tuning's log (steps: an epoch's worth)."""
  if finetune.budget(ev) == "steps":
    per_epoch = max(1, num_train // batch)
    return -(-int(ev.finetune_steps) // per_epoch)
  return int(ev.finetune_epochs)
