"""The t distribution without scipy (stclr_jax/evaluation/distributions.py),
checked against scipy.stats on fixed numbers."""

import math

import numpy as np
import pytest
from scipy import stats

from stclr_jax.evaluation import distributions


def test_t_distribution_matches_scipy():
  for df in (1, 2, 3, 7, 14, 29, 120, 1000):
    for t in (0.0, 0.3, 1.0, 2.2, 6.0, 50.0):
      np.testing.assert_allclose(
        distributions.t_two_sided_p(t, df), 2 * stats.t.sf(t, df), rtol=1e-9
      )
      assert distributions.t_two_sided_p(-t, df) == distributions.t_two_sided_p(
        t, df
      )
    for level in (0.5, 0.9, 0.95, 0.99, 0.999):
      np.testing.assert_allclose(
        distributions.t_critical(level, df),
        stats.t.ppf((1 + level) / 2, df),
        rtol=1e-10,
      )
  assert distributions.t_two_sided_p(math.inf, 4) == 0.0
  assert math.isnan(distributions.t_two_sided_p(math.nan, 4))
  with pytest.raises(ValueError, match="level"):
    distributions.t_critical(1.0, 4)
