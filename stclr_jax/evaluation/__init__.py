"""The evaluation protocol (Sec. III-B of the paper), whole.

* :mod:`~stclr_jax.evaluation.protocol`: the driver, ``evaluate(config,
  workdir)`` (``python -m stclr_jax.main --mode=evaluate``): folds, phases,
  resume, the report.
* :mod:`~stclr_jax.evaluation.runs`: which runs (folds x label subsets x
  training seeds) and their seeds.
* :mod:`~stclr_jax.evaluation.heldout`: the held-out population
  (``eval.heldout_data``).
* :mod:`~stclr_jax.evaluation.folds`: subject-independent k-fold and label
  fractions.
* :mod:`~stclr_jax.evaluation.input`: the input: a split's labels and
  subjects, evaluation clips, the split's cached videos, and fine-tuning's
  training streams.
* :mod:`~stclr_jax.evaluation.linear`: the linear phase on frozen features.
* :mod:`~stclr_jax.evaluation.runner`: the classifier model and its jitted
  forward passes and train step.
* :mod:`~stclr_jax.evaluation.finetune`: the fine-tuning phase of one fold.
* :mod:`~stclr_jax.evaluation.supervised`: cross-entropy and the
  reduce-on-plateau rule both phases share.
* :mod:`~stclr_jax.evaluation.report`: accuracies, confusion matrices, plots,
  ``report.json``.

The encoder an evaluation starts from comes from
:func:`stclr_jax.init_from.init_encoder`, as in pretraining.
"""
