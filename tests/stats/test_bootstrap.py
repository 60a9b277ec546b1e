"""Bootstrap intervals against an independent computation on the same resample-index matrix, Holm
against hand-computed values, and the effect sizes against their textbook formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from kdlens.stats.bootstrap import (
    bootstrap_mean_ci,
    bootstrap_spearman_ci,
    cell_rng,
    cohens_d_one_sample,
    eta_squared,
    holm_adjust,
)


def _percentile(values, q):
    """The q-quantile by its linear-interpolation definition (numpy's default method), by hand."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    return v[lo] + (pos - lo) * (v[min(lo + 1, len(v) - 1)] - v[lo])


# Both sides get the same resample-index matrix: kdlens draws it as rng.integers(0, n, (R, n)) from
# the cell's generator, so the test draws it the same way from a generator seeded alike. The
# reference then computes each resample's statistic on its own (scipy.stats.spearmanr, a Python
# mean) and the percentiles by hand, so the intervals must agree to rounding, and a wrong level,
# resample count or rank method cannot pass.


@pytest.mark.parametrize("level", [0.95, 0.90])
def test_spearman_interval_equals_an_independent_computation_on_the_same_resamples(level):
    gen = np.random.default_rng(11)
    x = np.round(gen.normal(size=30), 1)  # rounded: ties inside resamples, as with real scores
    y = np.round(0.6 * x + gen.normal(size=30), 1)
    ours = bootstrap_spearman_ci(x, y, n_resamples=1000, level=level, rng=cell_rng(0, "a"))
    idx = cell_rng(0, "a").integers(0, x.size, size=(1000, x.size))
    rhos = []
    for row in idx:
        a, b = x[row], y[row]
        if np.ptp(a) > 0 and np.ptp(b) > 0:  # rho is undefined for a constant resample
            rhos.append(stats.spearmanr(a, b).statistic)
    tail = (1 - level) / 2
    assert ours == pytest.approx((_percentile(rhos, tail), _percentile(rhos, 1 - tail)), abs=1e-12)


@pytest.mark.parametrize("level", [0.95, 0.90])
def test_mean_interval_equals_an_independent_computation_on_the_same_resamples(level):
    x = np.random.default_rng(2).normal(3.0, 2.0, size=40)
    ours = bootstrap_mean_ci(x, n_resamples=1000, level=level, rng=cell_rng(1, "b"))
    idx = cell_rng(1, "b").integers(0, x.size, size=(1000, x.size))
    means = [math.fsum(x[row]) / x.size for row in idx]
    tail = (1 - level) / 2
    assert ours == pytest.approx((_percentile(means, tail), _percentile(means, 1 - tail)), abs=1e-12)


def test_levels_give_different_intervals():
    # the two levels differ by far more than the rounding the tests above allow
    x = np.random.default_rng(2).normal(3.0, 2.0, size=40)
    wide = bootstrap_mean_ci(x, n_resamples=1000, level=0.95, rng=cell_rng(1, "b"))
    narrow = bootstrap_mean_ci(x, n_resamples=1000, level=0.90, rng=cell_rng(1, "b"))
    assert wide[0] < narrow[0] - 0.01 and wide[1] > narrow[1] + 0.01


def test_seeding_is_per_cell_and_reproducible():
    x = np.arange(10.0)
    a = bootstrap_mean_ci(x, n_resamples=500, rng=cell_rng(0, "cell"))
    assert bootstrap_mean_ci(x, n_resamples=500, rng=cell_rng(0, "cell")) == a
    assert bootstrap_mean_ci(x, n_resamples=500, rng=cell_rng(1, "cell")) != a
    assert all(math.isnan(v) for v in bootstrap_mean_ci([1.0], n_resamples=10, rng=cell_rng(0, "x")))


@pytest.mark.parametrize("p, expected", [
    # by hand: 5 x 0.005, 4 x 0.01, 3 x 0.03, max(2 x 0.04, 0.09) (monotone), 1 x 0.5; NaN stays NaN
    ([0.01, 0.04, 0.03, 0.005, float("nan"), 0.5], [0.04, 0.09, 0.09, 0.025, float("nan"), 0.5]),
    # 3 x 0.2 = 0.6, 2 x 0.3 = 0.6, 1 x 0.6: every step ties
    ([0.6, 0.2, 0.3], [0.6, 0.6, 0.6]),
    # 2 x 0.4 = 0.8, then max(0.8, 0.5) keeps the order monotone
    ([0.5, 0.4], [0.8, 0.8]),
    # capped at 1: 3 x 0.5 = 1.5 -> 1, and everything after it stays 1
    ([0.5, 0.7, 0.9], [1.0, 1.0, 1.0]),
    ([], []),
])
def test_holm_against_hand_computed_values(p, expected):
    got = holm_adjust(p)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (math.isnan(g) and math.isnan(e)) or g == pytest.approx(e, abs=1e-15)


def test_effect_sizes():
    x = [1.0, 2.0, 3.0, 6.0]
    assert cohens_d_one_sample(x) == pytest.approx(np.mean(x) / np.std(x, ddof=1))
    groups = [[1.0, 2.0], [3.0, 5.0]]
    grand = 11.0 / 4
    ss_total = sum((v - grand) ** 2 for g in groups for v in g)
    ss_between = 2 * (1.5 - grand) ** 2 + 2 * (4.0 - grand) ** 2
    assert eta_squared(groups) == pytest.approx(ss_between / ss_total)
