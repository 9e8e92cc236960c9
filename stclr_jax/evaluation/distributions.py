"""The Student t and noncentral t distributions, without scipy.

* :func:`t_two_sided_p`: the two-sided p value of a t statistic, through
  the regularized incomplete beta function (by its continued fraction).
* :func:`t_critical`: the two-sided critical value at a confidence level
  (the t quantile, by bisection).
* :func:`t_test_power_nc`: the power of the two-sided t test at a
  noncentrality (the noncentral t, by quadrature over the chi distribution
  of the sample std), and its derivative.

Computed with numpy and the standard library, to about 1e-10 or better, so
that :mod:`stclr_jax.evaluation.stats` imports and runs without scipy. The
tests check each against ``scipy.stats``.
"""

from __future__ import annotations

import math

import numpy as np


def check_level(level: float) -> None:
  """A confidence level must be in (0, 1)."""
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level}")


def _betacf(a: float, b: float, x: float) -> float:
  """Continued fraction of the incomplete beta function (modified Lentz),
  converging fast for ``x < (a + 1) / (a + b + 2)``."""
  tiny = 1e-300
  qab, qap, qam = a + b, a + 1.0, a - 1.0
  c = 1.0
  d = 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 100_000):
    m2 = 2 * m
    for aa in (
      m * (b - m) * x / ((qam + m2) * (a + m2)),
      -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
    ):
      d = 1.0 + aa * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + aa / c
      c = c if abs(c) > tiny else tiny
      delta = d * c
      h *= delta
    if abs(delta - 1.0) < 1e-16:
      return h
  raise ArithmeticError(f"incomplete beta did not converge ({a}, {b}, {x})")


def _betainc(a: float, b: float, x: float, y: float) -> float:
  """Regularized incomplete beta I_x(a, b), with ``y = 1 - x`` passed in
  (computed without cancellation by the caller)."""
  if x <= 0.0:
    return 0.0
  if y <= 0.0:
    return 1.0
  log_front = (
    math.lgamma(a + b)
    - math.lgamma(a)
    - math.lgamma(b)
    + a * math.log(x)
    + b * math.log(y)
  )
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _betacf(a, b, x) / a
  return 1.0 - math.exp(log_front) * _betacf(b, a, y) / b


def t_two_sided_p(t: float, df: float) -> float:
  """P(|T| >= |t|) for T Student t with ``df`` degrees of freedom: the
  two-sided p value of a t statistic. nan for nan, 0 for +-inf."""
  t, df = float(t), float(df)
  if math.isnan(t) or not df > 0:
    return math.nan
  if math.isinf(t):
    return 0.0
  t2 = t * t
  # P(|T| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2).
  return _betainc(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))


def t_critical(level: float, df: float) -> float:
  """The two-sided critical value c with P(|T| <= c) = ``level`` for T
  Student t with ``df`` degrees of freedom (``scipy.stats.t.ppf((1 +
  level) / 2, df)``)."""
  check_level(level)
  if not df > 0:
    raise ValueError(f"df must be positive, got {df}")
  tail = 1.0 - level
  lo, hi = 0.0, 1.0
  while t_two_sided_p(hi, df) > tail:
    lo, hi = hi, 2.0 * hi
  for _ in range(200):  # bisection: t_two_sided_p decreases in t
    mid = 0.5 * (lo + hi)
    if t_two_sided_p(mid, df) > tail:
      lo = mid
    else:
      hi = mid
    if hi - lo <= 4e-16 * hi:
      break
  return 0.5 * (lo + hi)


_SQRT2 = math.sqrt(2.0)
_erfc = np.vectorize(math.erfc, otypes=[float])


def _norm_cdf(x: np.ndarray) -> np.ndarray:
  return 0.5 * _erfc(-np.asarray(x, float) / _SQRT2)


def t_test_power_nc(nc: float, c: float, df: float) -> tuple[float, float]:
  """Power P(|T'| > c) of a two-sided t test, T' noncentral t with ``df``
  degrees of freedom and noncentrality ``nc``, and its derivative in nc.

  T' = (Z + nc) / S with Z standard normal and S = sqrt(chi2_df / df)
  independent, so P(|T'| > c) = E_S[Phi(nc - c S) + Phi(-nc - c S)]: a
  one-dimensional integral over the density of S, done by Simpson's rule
  on a grid covering all but a negligible tail of S.
  """
  w = 1.0 / math.sqrt(2.0 * df)  # about the std of S
  lo = max(0.0, 1.0 - 14.0 * w)
  hi = 1.0 + 14.0 * w + (6.0 if df < 4 else 0.0)
  # Phi(nc - c s) turns over in s within about 1 / c: resolve that too.
  points = min(200_001, max(4001, int(60 * c * (hi - lo))) | 1)
  s = np.linspace(lo, hi, points)
  h = s[1] - s[0]
  log_density = (
    math.log(2.0)
    + (df / 2.0) * math.log(df / 2.0)
    - math.lgamma(df / 2.0)
    + (df - 1.0) * np.log(np.maximum(s, 1e-300))
    - df * s * s / 2.0
  )
  weights = np.full(s.size, 2.0)
  weights[1::2] = 4.0
  weights[0] = weights[-1] = 1.0
  weights *= np.exp(log_density) * h / 3.0
  upper, lower = nc - c * s, -nc - c * s
  power = weights @ (_norm_cdf(upper) + _norm_cdf(lower))
  phi = lambda z: np.exp(-z * z / 2.0) / math.sqrt(2.0 * math.pi)
  slope = weights @ (phi(upper) - phi(lower))
  return float(power), float(slope)
