"""Bootstrap intervals against SciPy's own bootstrap, Holm against a plain transcription, and the
effect sizes against their textbook formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from kdlens.stats.bootstrap import (
    bootstrap_mean_ci,
    bootstrap_spearman_ci,
    cell_rng,
    cohens_d_one_sample,
    eta_squared,
    holm_adjust,
)
from scipy import stats


def test_spearman_interval_agrees_with_scipy_bootstrap():
    gen = np.random.default_rng(11)
    x = gen.normal(size=30)
    y = 0.6 * x + gen.normal(size=30)
    ours = bootstrap_spearman_ci(x, y, n_resamples=4000, rng=cell_rng(0, "a"))
    ref = stats.bootstrap((x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False,
                          n_resamples=2000, method="percentile", rng=np.random.default_rng(5)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.05)
    assert ours[1] == pytest.approx(ref.high, abs=0.05)


def test_mean_interval_agrees_with_scipy_bootstrap():
    x = np.random.default_rng(2).normal(3.0, 2.0, size=40)
    ours = bootstrap_mean_ci(x, n_resamples=4000, rng=cell_rng(1, "b"))
    ref = stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", rng=np.random.default_rng(9)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.1)
    assert ours[1] == pytest.approx(ref.high, abs=0.1)


def test_seeding_is_per_cell_and_reproducible():
    x = np.arange(10.0)
    a = bootstrap_mean_ci(x, n_resamples=500, rng=cell_rng(0, "cell"))
    assert bootstrap_mean_ci(x, n_resamples=500, rng=cell_rng(0, "cell")) == a
    assert bootstrap_mean_ci(x, n_resamples=500, rng=cell_rng(1, "cell")) != a
    assert all(math.isnan(v) for v in bootstrap_mean_ci([1.0], n_resamples=10, rng=cell_rng(0, "x")))


def test_holm_matches_a_plain_transcription():
    p = [0.01, 0.04, 0.03, 0.005, float("nan"), 0.5]
    finite = [(v, i) for i, v in enumerate(p) if not math.isnan(v)]
    finite.sort()
    m, expected, prev = len(finite), {}, 0.0
    for k, (v, i) in enumerate(finite):
        prev = max(prev, min(1.0, (m - k) * v))
        expected[i] = prev
    got = holm_adjust(p)
    for i, v in expected.items():
        assert got[i] == pytest.approx(v)
    assert math.isnan(got[4])
    # by hand: 5 x 0.005, 4 x 0.01, 3 x 0.03, max(2 x 0.04, 0.09) (monotone), 1 x 0.5
    assert [got[i] for i in (3, 0, 2, 1, 5)] == pytest.approx([0.025, 0.04, 0.09, 0.09, 0.5])


def test_effect_sizes():
    x = [1.0, 2.0, 3.0, 6.0]
    assert cohens_d_one_sample(x) == pytest.approx(np.mean(x) / np.std(x, ddof=1))
    groups = [[1.0, 2.0], [3.0, 5.0]]
    grand = 11.0 / 4
    ss_total = sum((v - grand) ** 2 for g in groups for v in g)
    ss_between = 2 * (1.5 - grand) ** 2 + 2 * (4.0 - grand) ** 2
    assert eta_squared(groups) == pytest.approx(ss_between / ss_total)
