"""Cross-validation summaries (stclr_jax/evaluation/report.py)."""

import numpy as np

from stclr_jax.evaluation import report as report_lib


def test_report_summaries():
  cms = [np.array([[2, 0], [1, 1]]), np.array([[1, 1], [0, 2]])]
  rep = report_lib.summarize(
    [{"fold": 0, "confusion": cms[0]}, {"fold": 3, "confusion": cms[1]}],
    ["a", "b"],
  )
  assert rep["fold_accuracy"] == {"0": 0.75, "3": 0.75}
  assert rep["mean"] == 0.75 and rep["std"] == 0.0
  assert rep["confusion"] == [[3, 1], [1, 3]]
  assert rep["per_class_accuracy"] == {"a": 0.75, "b": 0.75}
  cm = report_lib.confusion([0, 1, 1, 2], [0, 2, 1, 2], 3)
  assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
