"""Benchmark statistics (stclr_jax/evaluation/stats.py), checked against
scipy.stats on fixed numbers."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import optimize, stats

from stclr_jax.evaluation import stats as stats_lib

# Accuracy of two arms on 5 folds x 3 seeds (made-up, fixed).
ARM_A = np.array(
  [
    [0.612, 0.598, 0.634],
    [0.571, 0.560, 0.589],
    [0.655, 0.640, 0.671],
    [0.590, 0.615, 0.602],
    [0.628, 0.611, 0.645],
  ]
)
ARM_B = np.array(
  [
    [0.583, 0.590, 0.601],
    [0.569, 0.541, 0.566],
    [0.620, 0.633, 0.629],
    [0.588, 0.579, 0.597],
    [0.601, 0.609, 0.612],
  ]
)


def _scipy_power(diff, sd, n, alpha=0.05):
  """Two-sided paired t test power from scipy's noncentral t (both tails
  as upper tails: scipy's nct.cdf is nan far in the lower tail)."""
  df = n - 1
  c = stats.t.ppf(1 - alpha / 2, df)
  nc = diff / sd * math.sqrt(n)
  return stats.nct.sf(c, df, nc) + stats.nct.sf(c, df, -nc)


def test_mean_ci_is_scipy_t_interval():
  values = ARM_A[:, 0]
  for level in (0.95, 0.9):
    mean, low, high = stats_lib.mean_ci(values, level)
    want = stats.t.interval(
      level, len(values) - 1, loc=values.mean(), scale=stats.sem(values)
    )
    np.testing.assert_allclose(mean, values.mean(), rtol=1e-14)
    np.testing.assert_allclose((low, high), want, rtol=1e-10)
  # One unit: no interval. Equal units: a zero-width one.
  mean, low, high = stats_lib.mean_ci([0.7])
  assert mean == 0.7 and math.isnan(low) and math.isnan(high)
  assert stats_lib.mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
  with pytest.raises(ValueError, match="non-finite"):
    stats_lib.mean_ci([0.5, math.nan])
  with pytest.raises(ValueError, match="no values"):
    stats_lib.mean_ci([])


def test_paired_diff_ci_is_scipy_ttest_rel_and_t_interval():
  out = stats_lib.paired_diff_ci(ARM_A, ARM_B)
  d = (ARM_A - ARM_B).ravel()
  ref = stats.ttest_rel(ARM_A.ravel(), ARM_B.ravel())
  assert out["n"] == 15 and out["df"] == 14
  np.testing.assert_allclose(out["mean"], d.mean(), rtol=1e-14)
  np.testing.assert_allclose(out["std"], d.std(ddof=1), rtol=1e-14)
  np.testing.assert_allclose(out["t"], ref.statistic, rtol=1e-12)
  np.testing.assert_allclose(out["p"], ref.pvalue, rtol=1e-9)
  want = stats.t.interval(0.95, 14, loc=d.mean(), scale=stats.sem(d))
  np.testing.assert_allclose((out["low"], out["high"]), want, rtol=1e-10)
  assert out["low"] < out["mean"] < out["high"]
  # A smaller effect with a larger p value, in the other direction.
  a, b = ARM_A[:, 0], ARM_B[:, 0] + 0.02
  out = stats_lib.paired_diff_ci(a, b, level=0.9)
  ref = stats.ttest_rel(a, b)
  np.testing.assert_allclose((out["t"], out["p"]), ref, rtol=1e-9)
  want = stats.t.interval(0.9, 4, loc=(a - b).mean(), scale=stats.sem(a - b))
  np.testing.assert_allclose((out["low"], out["high"]), want, rtol=1e-10)
  # Degenerate cases, as scipy's ttest_rel.
  same = stats_lib.paired_diff_ci(ARM_A, ARM_A)
  assert (same["mean"], same["low"], same["high"], same["std"]) == (0, 0, 0, 0)
  assert math.isnan(same["t"]) and math.isnan(same["p"])
  shifted = stats_lib.paired_diff_ci([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
  assert shifted["t"] == math.inf and shifted["p"] == 0.0
  one = stats_lib.paired_diff_ci([0.6], [0.5])
  assert one["n"] == 1 and all(
    math.isnan(one[k]) for k in ("low", "high", "std", "t", "p")
  )
  with pytest.raises(ValueError, match="shapes differ"):
    stats_lib.paired_diff_ci(ARM_A, ARM_B[:, :2])


def _held_out(seed=0, n_subjects=30, per_subject=6):
  """Held-out videos: subject ids and correctness, with subjects that are
  easy or hard (correctness clustered by subject)."""
  rng = np.random.default_rng(seed)
  subjects = np.repeat(np.arange(100, 100 + n_subjects), per_subject)
  p_subject = rng.uniform(0.2, 1.0, n_subjects)
  correct = rng.random(subjects.size) < np.repeat(p_subject, per_subject)
  return correct, subjects


def test_accuracy_ci_by_subject():
  correct, subjects = _held_out()
  acc, low, high = stats_lib.accuracy_ci_by_subject(correct, subjects, seed=1)
  assert acc == correct.mean()
  assert low < acc < high
  # Deterministic in the seed; another seed moves the ends a little.
  assert stats_lib.accuracy_ci_by_subject(correct, subjects, seed=1) == (
    acc,
    low,
    high,
  )
  other = stats_lib.accuracy_ci_by_subject(correct, subjects, seed=2)
  assert other[0] == acc
  np.testing.assert_allclose(other[1:], (low, high), atol=0.02)
  # (With 0/1 correctness the ends are multiples of 1/180 and often agree
  # across seeds; with fractional, model-averaged correctness they do not.)
  soft = np.random.default_rng(7).random(subjects.size)
  assert stats_lib.accuracy_ci_by_subject(
    soft, subjects, seed=1
  ) != stats_lib.accuracy_ci_by_subject(soft, subjects, seed=2)
  # Narrower at a lower level.
  _, low50, high50 = stats_lib.accuracy_ci_by_subject(
    correct, subjects, level=0.5, seed=1
  )
  assert low < low50 < high50 < high
  # Equal-sized subjects: the accuracy is the mean of k subject accuracies,
  # so the bootstrap interval is about +-1.96 of sd(ddof=0) / sqrt(k).
  per_subject = correct.reshape(30, 6).mean(axis=1)
  half = 1.96 * per_subject.std() / math.sqrt(30)
  _, low, high = stats_lib.accuracy_ci_by_subject(
    correct, subjects, n_boot=4000, seed=1
  )
  np.testing.assert_allclose((high - low) / 2, half, rtol=0.1)
  # Subjects, not videos, are resampled: with whole subjects right or
  # wrong, the interval is much wider than a video-level one would be.
  clustered = np.repeat(np.arange(30) % 2 == 0, 6)
  _, low, high = stats_lib.accuracy_ci_by_subject(clustered, subjects)
  video_half = 1.96 * math.sqrt(0.25 / clustered.size)
  assert (high - low) / 2 > 2 * video_half
  # One subject: nothing to resample. Subject ids in any order and type.
  assert stats_lib.accuracy_ci_by_subject([1, 0, 1, 1], ["s"] * 4) == (
    0.75,
    0.75,
    0.75,
  )
  perm = np.random.default_rng(3).permutation(subjects.size)
  names = np.array([f"subj{s}" for s in subjects])
  np.testing.assert_allclose(
    stats_lib.accuracy_ci_by_subject(correct[perm], names[perm], seed=1),
    stats_lib.accuracy_ci_by_subject(correct, subjects, seed=1),
    rtol=1e-12,
  )
  # (models, videos): correctness averaged over the models first.
  models = np.stack([correct, np.roll(correct, 5), np.roll(correct, 11)])
  assert stats_lib.accuracy_ci_by_subject(
    models, subjects, seed=4
  ) == stats_lib.accuracy_ci_by_subject(models.mean(axis=0), subjects, seed=4)
  with pytest.raises(ValueError, match="subjects for"):
    stats_lib.accuracy_ci_by_subject(correct, subjects[:-1])


def test_paired_bootstrap_diff():
  correct, subjects = _held_out()
  # Identical arms: difference 0, interval [0, 0].
  assert stats_lib.paired_bootstrap_diff(correct, correct, subjects) == (
    0.0,
    0.0,
    0.0,
  )
  # Arm b: arm a with 8 of its right answers made wrong.
  worse = correct.copy()
  worse[np.flatnonzero(correct)[::10][:8]] = False
  diff, low, high = stats_lib.paired_bootstrap_diff(
    correct, worse, subjects, seed=5
  )
  np.testing.assert_allclose(diff, correct.mean() - worse.mean(), rtol=1e-12)
  assert 0 < low < diff < high
  assert stats_lib.paired_bootstrap_diff(correct, worse, subjects, seed=5) == (
    diff,
    low,
    high,
  )
  # Pairing: the interval of the difference is far narrower than either
  # arm's own interval (subject difficulty cancels).
  _, acc_low, acc_high = stats_lib.accuracy_ci_by_subject(
    correct, subjects, seed=5
  )
  assert high - low < 0.5 * (acc_high - acc_low)
  # Swapping the arms negates the difference and its interval.
  np.testing.assert_allclose(
    stats_lib.paired_bootstrap_diff(worse, correct, subjects, seed=5),
    (-diff, -high, -low),
    atol=1e-12,
  )
  # 2-D arms (models x videos, different numbers of models): averaged over
  # models per video, then bootstrapped over subjects.
  models_a = np.stack([correct, np.roll(correct, 1), np.roll(correct, 7)])
  models_b = np.stack([worse, np.roll(worse, 3)])
  np.testing.assert_allclose(
    stats_lib.paired_bootstrap_diff(models_a, models_b, subjects, seed=6),
    stats_lib.paired_bootstrap_diff(
      models_a.mean(axis=0), models_b.mean(axis=0), subjects, seed=6
    ),
    rtol=1e-12,
  )
  with pytest.raises(ValueError, match="1-D or 2-D"):
    stats_lib.paired_bootstrap_diff(models_a[None], models_b, subjects)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30, 200])
def test_minimum_detectable_difference_is_exact_paired_t_power(n):
  sd = 0.037
  mde = stats_lib.minimum_detectable_difference(sd, n)
  # scipy's noncentral t, solved independently.
  want = optimize.brentq(
    lambda d: _scipy_power(d, sd, n) - 0.8, 1e-6, 30 * sd, xtol=1e-15
  )
  np.testing.assert_allclose(mde, want, rtol=1e-8)
  np.testing.assert_allclose(_scipy_power(mde, sd, n), 0.8, atol=1e-9)
  np.testing.assert_allclose(
    stats_lib.paired_t_power(mde, sd, n), 0.8, atol=1e-9
  )
  # Larger than the normal approximation, which ignores the t's tails.
  z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
  assert mde > z * sd / math.sqrt(n)


def test_minimum_detectable_difference_properties():
  mde = stats_lib.minimum_detectable_difference
  # n=10, sd=1: a true difference of 0.996 sd (solved with scipy's nct by
  # hand; not 1.0, and well above the normal approximation's 0.886).
  np.testing.assert_allclose(mde(1.0, 10), 0.99600137, rtol=1e-7)
  ns = [2, 3, 4, 6, 10, 15, 30, 100]
  by_n = [mde(0.05, n) for n in ns]
  assert all(x > y for x, y in zip(by_n, by_n[1:]))
  by_sd = [mde(sd, 15) for sd in (0.01, 0.02, 0.05, 0.1)]
  assert all(x < y for x, y in zip(by_sd, by_sd[1:]))
  np.testing.assert_allclose(mde(0.1, 15), 2 * mde(0.05, 15), rtol=1e-9)
  assert mde(0.05, 15, power=0.9) > mde(0.05, 15) > mde(0.05, 15, alpha=0.1)
  assert mde(0.0, 15) == 0.0 and math.isnan(mde(math.nan, 15))
  for diff, n in ((0.02, 5), (0.05, 12), (0.0, 8)):
    np.testing.assert_allclose(
      stats_lib.paired_t_power(diff, 0.04, n),
      _scipy_power(diff, 0.04, n),
      atol=1e-9,
    )
  with pytest.raises(ValueError, match="n >= 2"):
    mde(0.05, 1)
  with pytest.raises(ValueError, match="power"):
    mde(0.05, 10, power=0.03)


def test_gate():
  assert stats_lib.gate(0.12, 0.03) == "PASS"
  assert stats_lib.gate(0.09, 0.03) == "PASS"  # exactly 3 x MDE
  assert stats_lib.gate(0.089, 0.03) == "FAIL"
  assert stats_lib.gate(-0.2, 0.03) == "FAIL"
  assert stats_lib.gate(0.05, 0.03, factor=1.5) == "PASS"
  assert stats_lib.gate(math.nan, 0.03) == "FAIL"
  assert stats_lib.gate(0.12, math.nan) == "FAIL"
  assert stats_lib.gate(0.12, math.inf) == "FAIL"
  assert stats_lib.gate_line(0.123, 0.031) == (
    "PASS: diff +12.3 pp >= 3 x MDE = 3 x 3.1 pp = 9.3 pp"
  )
  assert stats_lib.gate_line(0.05, 0.031).startswith("FAIL: diff +5.0 pp <")
  assert stats_lib.gate_line(math.nan, 0.031).startswith("FAIL: diff +nan")


def test_format_names_the_interval():
  assert (
    stats_lib.format_pm(0.612, 0.55, 0.674) == "61.2% [55.0, 67.4] (95% CI)"
  )
  assert (
    stats_lib.format_pm(0.031, 0.005, 0.057, unit=" pp", signed=True)
    == "+3.1 pp [+0.5, +5.7] (95% CI)"
  )
  assert (
    stats_lib.format_pm(0.6, 0.5, 0.7, level=0.9, label="CI, subject bootstrap")
    == "60.0% [50.0, 70.0] (90% CI, subject bootstrap)"
  )
  one = stats_lib.format_pm(*stats_lib.mean_ci([0.7]))
  assert one == "70.0% [n/a] (95% CI)"
  assert stats_lib.format_std(0.612, 0.041) == "61.2 ± 4.1% (std, ddof=1)"
  with_n = stats_lib.format_std(0.612, 0.041, n=10)
  assert with_n == "61.2 ± 4.1% (std, ddof=1, n=10)"


def test_imports_and_runs_without_scipy():
  code = (
    "import sys; sys.modules['scipy'] = None\n"
    "from stclr_jax.evaluation import stats\n"
    "print(round(stats.minimum_detectable_difference(1.0, 10), 6),"
    " round(stats.paired_diff_ci([1, 2, 4], [0, 1, 1])['p'], 6))\n"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True
  )
  assert out.stdout.split() == [
    "0.996001",
    str(round(stats.ttest_rel([1, 2, 4], [0, 1, 1]).pvalue, 6)),
  ]
