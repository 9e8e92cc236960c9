"""The held-out population of ``eval.heldout_data``: its videos, labels and
subjects, and its scores under a run's model (:class:`Heldout`)."""

from __future__ import annotations

import numpy as np

from stclr_jax.data import input as input_lib
from stclr_jax.evaluation import input as eval_input


class Heldout:
  """``eval.heldout_data``: a labelled population of other subjects, in
  neither the pool nor the folds, scored by every run's final model (its
  per-video log-probabilities are stored; BENCHMARKS.md, "The calibrated
  benchmark", ranks by it)."""

  def __init__(self, config, name, builder, class_names):
    split = config.data.split
    self.name = name
    self.n = builder.info.splits[split].num_examples
    self.meta = eval_input.split_metadata(builder, split)
    self.config = config
    self.videos = eval_input.cached_videos(
      builder.as_dataset(split=split, shuffle_files=False),
      config.data.cache_frame_size or None,
    )

  @classmethod
  def load(cls, config, class_names):
    name = config.eval.get("heldout_data", "")
    if not name:
      return None
    data = config.data.copy_and_resolve_references()
    data.name = name
    builder = input_lib.prepared_builder(data)
    if "label" not in builder.info.features:
      raise ValueError(f"eval.heldout_data={name}: has no labels")
    names = list(builder.info.features["label"].names)
    if names != list(class_names):
      raise ValueError(
        f"eval.heldout_data={name}: classes {names}, the folds' data "
        f"{config.data.name} has {list(class_names)}"
      )
    return cls(config, name, builder, class_names)

  def _batches(self, batch):
    return eval_input.eval_batches(
      self.videos, self.n, np.arange(self.n), self.config, batch
    )

  def features(self, runner, variables, batch):
    feats, labels = runner.features(variables, self._batches(batch))
    self._check(labels)
    return feats

  def log_probs(self, runner, variables, batch):
    logp, labels = runner.log_probs(variables, self._batches(batch))
    self._check(labels)
    return logp

  def _check(self, labels):
    if not np.array_equal(labels, self.meta["label"]):
      raise RuntimeError("internal: held-out videos out of order")

  def accuracy(self, logits) -> float:
    return float(np.mean(np.argmax(logits, -1) == self.meta["label"]))

  def describe(self) -> dict:
    return {
      "data": self.name,
      "videos": int(self.n),
      "subjects": int(len(np.unique(self.meta["subject_id"]))),
    }

  def arrays(self) -> dict:
    return {
      "heldout_labels": self.meta["label"],
      "heldout_subjects": self.meta["subject_id"],
    }
