"""Statistics of the pretraining benchmark: intervals, paired tests, power.

The benchmark compares self-supervised pretraining methods ("arms") with a
from-scratch baseline on subject-independent folds, several seeds per fold,
and scores every fold's final model on a held-out population of new
subjects. This module turns those numbers into the figures a report prints:

* :func:`mean_ci`: mean and t-interval of independent units.
* :func:`paired_diff_ci`: paired t-interval and two-sided paired t test of
  ``a - b`` over matched units (the same folds and seeds in both arms).
* :func:`accuracy_ci_by_subject`: accuracy on held-out videos with a
  subject-level (cluster) bootstrap interval.
* :func:`paired_bootstrap_diff`: the difference in held-out accuracy between
  two arms, same resampled subjects for both.
* :func:`minimum_detectable_difference` (and :func:`paired_t_power`): the
  smallest true mean paired difference the paired t test detects.
* :func:`gate` (and :func:`gate_line`): the benchmark's validity gate,
  ``supervised - identity >= 3 x MDE``.
* :func:`format_pm` and :func:`format_std`: text in which every interval or
  ``±`` says what it is (a 95% CI, or a std with ddof=1).

Every interval here is a confidence interval at ``level`` (0.95 by default);
every ``std`` is the sample standard deviation (ddof=1). Accuracies are
fractions in [0, 1]; the format helpers print them as percentages.

No scipy: the t and noncentral t distributions come from
:mod:`stclr_jax.evaluation.distributions` (numpy and the standard library).
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from stclr_jax.evaluation import distributions

# --------------------------------------------------------------------------
# Intervals and tests.


def _finite_1d(values, what: str) -> np.ndarray:
  x = np.asarray(values, dtype=float).ravel()
  if x.size == 0:
    raise ValueError(f"{what}: no values")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{what}: non-finite values {x[~np.isfinite(x)]}")
  return x


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
  """Mean of independent units and its t confidence interval.

  Returns ``(mean, low, high)``: ``mean +- t_{(1 + level) / 2, n - 1} *
  std / sqrt(n)``, std with ddof=1 (the interval is a ``level`` CI, not a
  std). With one value ``low`` and ``high`` are nan; with equal values they
  equal the mean. ``values`` of any shape are flattened; nan or inf raise.
  """
  distributions.check_level(level)
  x = _finite_1d(values, "mean_ci")
  mean = float(x.mean())
  if x.size < 2:
    return mean, math.nan, math.nan
  half = (
    distributions.t_critical(level, x.size - 1)
    * float(x.std(ddof=1))
    / x.size**0.5
  )
  return mean, mean - half, mean + half


def paired_diff_ci(a, b, level: float = 0.95) -> dict:
  """Paired t-interval and two-sided paired t test of ``a - b``.

  ``a`` and ``b`` hold the same units in the same order (e.g. folds x
  seeds, accuracy of two arms on each), any matching shape, flattened.
  Returns a dict:

  * ``mean``: mean of the differences ``a - b``;
  * ``low``, ``high``: its ``level`` t confidence interval (a CI);
  * ``std``: std of the differences, ddof=1;
  * ``n``: number of pairs; ``df``: n - 1; ``level``;
  * ``t``, ``p``: the paired t statistic and its two-sided p value, as
    ``scipy.stats.ttest_rel(a, b)`` (t nan and p nan for all-zero
    differences, t +-inf and p 0 for equal nonzero ones).

  With one pair, ``std``, ``low``, ``high``, ``t`` and ``p`` are nan.

  The units are taken as independent. Seeds of one fold share its split,
  and folds share training subjects, so folds x seeds as units makes the
  interval somewhat narrow; averaging the seeds of each fold first (units =
  folds) is the conservative choice. Use the same n in
  :func:`minimum_detectable_difference`.
  """
  distributions.check_level(level)
  a = np.asarray(a, dtype=float)
  b = np.asarray(b, dtype=float)
  if a.shape != b.shape:
    raise ValueError(f"paired_diff_ci: shapes differ, {a.shape} vs {b.shape}")
  d = _finite_1d(a - b, "paired_diff_ci")
  n = int(d.size)
  mean = float(d.mean())
  out = dict(mean=mean, n=n, df=n - 1, level=level)
  if n < 2:
    nan = math.nan
    return out | dict(low=nan, high=nan, std=nan, t=nan, p=nan)
  std = float(d.std(ddof=1))
  se = std / math.sqrt(n)
  half = distributions.t_critical(level, n - 1) * se
  if se > 0:
    t = mean / se
  else:
    t = math.nan if mean == 0 else math.copysign(math.inf, mean)
  p = distributions.t_two_sided_p(t, n - 1)
  return out | dict(low=mean - half, high=mean + half, std=std, t=t, p=p)


def _per_subject(correct, subjects, what: str):
  """Per-subject sums of (model-averaged) correctness and video counts."""
  c = np.asarray(correct, dtype=float)
  if c.ndim == 2:  # (models, videos): average over the models first
    c = c.mean(axis=0)
  if c.ndim != 1:
    raise ValueError(f"{what}: correct must be 1-D or 2-D, got {c.shape}")
  s = np.asarray(subjects)
  if s.shape != c.shape:
    raise ValueError(
      f"{what}: {s.shape[0] if s.ndim else s.size} subjects for "
      f"{c.shape[0]} videos"
    )
  if c.size == 0:
    raise ValueError(f"{what}: no videos")
  if not np.all(np.isfinite(c)):
    raise ValueError(f"{what}: non-finite correctness")
  groups, inverse = np.unique(s, return_inverse=True)
  sums = np.bincount(inverse, weights=c, minlength=groups.size)
  counts = np.bincount(inverse, minlength=groups.size).astype(float)
  return sums, counts


def _subject_resamples(n_subjects: int, n_boot: int, seed: int) -> np.ndarray:
  """(n_boot, n_subjects) multiplicities: how often each subject is drawn
  when n_subjects are drawn with replacement."""
  if n_boot < 1:
    raise ValueError(f"n_boot must be >= 1, got {n_boot}")
  rng = np.random.default_rng(seed)
  return rng.multinomial(
    n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=n_boot
  ).astype(float)


def _percentiles(boot: np.ndarray, level: float) -> tuple[float, float]:
  low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
  return float(low), float(high)


def accuracy_ci_by_subject(
  correct, subjects, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
  """Accuracy on held-out videos with a subject-level bootstrap interval.

  ``correct``: (videos,) 0/1 (or bool) per video, or (models, videos),
  e.g. every fold x seed's model on every held-out video; then each video's
  correctness is first averaged over the models, so the accuracy is the
  models' mean accuracy and the interval covers the sampling of subjects
  only (the models are held fixed). ``subjects``: (videos,) subject ids.

  Returns ``(acc, low, high)``: ``acc`` the accuracy over all videos;
  ``low, high`` the ``level`` percentile CI of a cluster bootstrap: draw as
  many subjects as there are, with replacement, take the accuracy over all
  videos of the drawn subjects; ``n_boot`` draws. Deterministic in ``seed``.
  """
  distributions.check_level(level)
  sums, counts = _per_subject(correct, subjects, "accuracy_ci_by_subject")
  w = _subject_resamples(sums.size, n_boot, seed)
  boot = (w @ sums) / (w @ counts)
  return float(sums.sum() / counts.sum()), *_percentiles(boot, level)


def paired_bootstrap_diff(
  correct_a,
  correct_b,
  subjects,
  level: float = 0.95,
  n_boot: int = 2000,
  seed: int = 0,
) -> tuple[float, float, float]:
  """Difference in held-out accuracy between two arms, with a paired
  subject-level bootstrap interval.

  ``correct_a``, ``correct_b``: correctness of arms a and b on the same
  held-out videos, each (videos,) or (models, videos) (the number of models
  may differ); a 2-D one is first averaged over its models per video, as in
  :func:`accuracy_ci_by_subject`. ``subjects``: (videos,) subject ids.

  Returns ``(diff, low, high)``: ``diff = acc_a - acc_b`` over all videos,
  and the ``level`` percentile CI of the bootstrap of that difference, each
  draw resampling subjects with replacement, the same subjects for both
  arms. Identical arms give ``(0, 0, 0)``. Deterministic in ``seed``.
  """
  distributions.check_level(level)
  sums_a, counts = _per_subject(correct_a, subjects, "paired_bootstrap_diff")
  sums_b, _ = _per_subject(correct_b, subjects, "paired_bootstrap_diff")
  w = _subject_resamples(sums_a.size, n_boot, seed)
  boot = (w @ (sums_a - sums_b)) / (w @ counts)
  diff = float((sums_a - sums_b).sum() / counts.sum())
  return diff, *_percentiles(boot, level)


# --------------------------------------------------------------------------
# Power.


def paired_t_power(
  diff: float, sd_diff: float, n: int, alpha: float = 0.05
) -> float:
  """Power of the two-sided paired t test at level ``alpha`` with ``n``
  pairs when the true mean difference is ``diff`` and the std of the
  differences ``sd_diff``: P(|T'| > t_{1 - alpha / 2, n - 1}), T'
  noncentral t with n - 1 degrees of freedom, noncentrality ``diff /
  sd_diff * sqrt(n)`` (computed exactly, no normal approximation)."""
  if n < 2:
    raise ValueError(f"a paired t test needs n >= 2 pairs, got {n}")
  if not sd_diff > 0:
    raise ValueError(f"sd_diff must be positive, got {sd_diff}")
  c = distributions.t_critical(1.0 - alpha, n - 1)
  nc = abs(diff) / sd_diff * math.sqrt(n)
  return min(1.0, distributions.t_test_power_nc(nc, c, n - 1)[0])


def minimum_detectable_difference(
  sd_diff: float, n: int, alpha: float = 0.05, power: float = 0.8
) -> float:
  """Minimum detectable difference (MDE) of a two-sided paired t test.

  The smallest true mean paired difference that the paired t test at level
  ``alpha`` on ``n`` pairs (e.g. folds x seeds, as in
  :func:`paired_diff_ci`) detects with probability ``power``, given the
  std of the paired differences ``sd_diff`` (ddof=1, e.g. the ``std`` of
  :func:`paired_diff_ci` from a pilot). Exact: solves
  ``paired_t_power(mde, sd_diff, n, alpha) == power`` for the noncentrality
  of the noncentral t (Newton steps kept in a bisection bracket), not the
  normal approximation ``(z_{1 - alpha / 2} + z_power) * sd / sqrt(n)``,
  which is too small for few pairs (n=10: 0.886 sd vs 0.996 sd).

  In the units of ``sd_diff``; 0 if ``sd_diff`` is 0, nan if it is nan.
  Decreases with n, grows linearly with ``sd_diff``.
  """
  if n < 2:
    raise ValueError(f"a paired t test needs n >= 2 pairs, got {n}")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")
  if not alpha < power < 1.0:
    raise ValueError(f"power must be in (alpha, 1), got {power}")
  sd_diff = float(sd_diff)
  if math.isnan(sd_diff):
    return math.nan
  if sd_diff < 0:
    raise ValueError(f"sd_diff must be >= 0, got {sd_diff}")
  if sd_diff == 0:
    return 0.0
  df = n - 1
  c = distributions.t_critical(1.0 - alpha, df)
  normal = statistics.NormalDist()
  nc = normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)  # a start
  lo, hi = 0.0, nc
  while distributions.t_test_power_nc(hi, c, df)[0] < power:
    lo, hi = hi, 2.0 * hi
  nc = hi
  for _ in range(200):
    value, slope = distributions.t_test_power_nc(nc, c, df)
    if value < power:
      lo = nc
    else:
      hi = nc
    step = (value - power) / slope if slope > 0 else math.inf
    new = nc - step
    if not lo < new < hi:  # Newton left the bracket: bisect
      new = 0.5 * (lo + hi)
    if abs(new - nc) <= 1e-13 * nc or hi - lo <= 1e-13 * hi:
      nc = new
      break
    nc = new
  return nc * sd_diff / math.sqrt(n)


# --------------------------------------------------------------------------
# The gate.


def gate(diff: float, mde: float, factor: float = 3.0) -> str:
  """The benchmark's validity gate: ``"PASS"`` if ``diff >= factor *
  mde``, else ``"FAIL"`` (also when either is nan or infinite).

  ``diff`` is the supervised-pool minus identity-pool accuracy at 10%
  labels, ``mde`` the :func:`minimum_detectable_difference` of the
  benchmark, both in the same units: the benchmark can tell arms apart
  only if its two reference arms differ by several MDEs.
  """
  diff, mde = float(diff), float(mde)
  if not (math.isfinite(diff) and math.isfinite(mde)):
    return "FAIL"
  return "PASS" if diff >= factor * mde else "FAIL"


def gate_line(
  diff: float,
  mde: float,
  factor: float = 3.0,
  scale: float = 100.0,
  unit: str = " pp",
  digits: int = 1,
) -> str:
  """:func:`gate`'s verdict with its numbers, e.g. ``"PASS: diff +12.3 pp
  >= 3 x MDE = 3 x 3.1 pp = 9.3 pp"`` (fractions printed as percentage
  points with the defaults)."""
  verdict = gate(diff, mde, factor)
  relation = ">=" if verdict == "PASS" else "<"
  if not (math.isfinite(float(diff)) and math.isfinite(float(mde))):
    relation = "vs"
  fmt = lambda v, sign="": f"{v * scale:{sign}.{digits}f}{unit}"
  return (
    f"{verdict}: diff {fmt(diff, '+')} {relation} {factor:g} x MDE = "
    f"{factor:g} x {fmt(mde)} = {fmt(factor * mde)}"
  )


# --------------------------------------------------------------------------
# Text.


def format_pm(
  mean: float,
  low: float,
  high: float,
  level: float = 0.95,
  scale: float = 100.0,
  unit: str = "%",
  digits: int = 1,
  signed: bool = False,
  label: str = "CI",
) -> str:
  """A value and its confidence interval, naming the interval:
  ``format_pm(0.612, 0.55, 0.674)`` is ``"61.2% [55.0, 67.4] (95% CI)"``.

  ``scale`` and ``unit`` print fractions as percentages (``unit=" pp"``,
  ``signed=True`` for differences: ``"+3.1 pp [+0.5, +5.7] (95% CI)"``);
  ``label`` names the interval (e.g. ``"CI, subject bootstrap"``). A nan
  interval (one unit) prints as ``[n/a]``.
  """
  sign = "+" if signed else ""
  num = lambda v: f"{v * scale:{sign}.{digits}f}"
  if math.isnan(low) or math.isnan(high):
    interval = "[n/a]"
  else:
    interval = f"[{num(low)}, {num(high)}]"
  return f"{num(mean)}{unit} {interval} ({100 * level:g}% {label})"


def format_std(
  mean: float,
  std: float,
  n: int | None = None,
  scale: float = 100.0,
  unit: str = "%",
  digits: int = 1,
  ddof: int = 1,
) -> str:
  """A mean and a standard deviation, naming it as such:
  ``format_std(0.612, 0.041)`` is ``"61.2 ± 4.1% (std, ddof=1)"``, with
  ``n`` ``"61.2 ± 4.1% (std, ddof=1, n=10)"``. ``ddof`` only labels the
  std given (compute it with ddof=1, as everywhere here)."""
  what = f"std, ddof={ddof}" + ("" if n is None else f", n={n}")
  return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}{unit} ({what})"
