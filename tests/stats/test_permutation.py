"""Permutation p-values against independent references: hand-counted small cases, scipy's
permutation_test, and the smallest p-value a design can give."""

import itertools
import math

import numpy as np
import pytest
from kdlens.stats.permutation import (
    sign_flip_test,
    spearman_permutation_test,
    t_interval,
)
from scipy import stats


def test_spearman_over_three_points_has_exact_p_one_third():
    # issue 10: rho = -1 over 3 points is 1 ordering of 6 in each direction: two-sided p = 2/6
    r = spearman_permutation_test([1, 2, 3], [9, 5, 1])
    assert r.statistic == pytest.approx(-1.0)
    assert r.p_value == pytest.approx(1 / 3)
    assert r.min_p == pytest.approx(1 / 3)
    assert spearman_permutation_test([1, 2, 3], [9, 5, 1], alternative="less").p_value == pytest.approx(1 / 6)
    assert stats.spearmanr([1, 2, 3], [9, 5, 1]).pvalue < 1e-6  # what the asymptotic test claims


def test_spearman_exact_matches_a_plain_enumeration():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=6), rng.normal(size=6)
    rho = stats.spearmanr(x, y).statistic
    null = [stats.spearmanr(x, np.array(p)).statistic for p in itertools.permutations(y)]
    want = sum(abs(v) >= abs(rho) - 1e-12 for v in null) / len(null)
    got = spearman_permutation_test(x, y)
    assert got.statistic == pytest.approx(rho)
    assert got.p_value == pytest.approx(want)
    assert got.method.startswith("exact")


def test_spearman_with_ties_uses_average_ranks():
    x = [0.03, 0.03, 0.03, 0.08, 0.08, 0.08, 0.18, 0.18]  # 3 students' sizes, several units each
    y = [5.0, 4.0, 6.0, 3.0, 2.0, 4.5, 1.0, 0.5]
    got = spearman_permutation_test(x, y, alternative="less")
    assert got.statistic == pytest.approx(stats.spearmanr(x, y).statistic)
    ref = stats.permutation_test((np.array(y),), lambda yy: stats.spearmanr(x, yy).statistic,
                                 permutation_type="pairings", alternative="less", n_resamples=np.inf)
    assert got.p_value == pytest.approx(ref.pvalue)


def test_sign_flip_exact_against_scipy_and_a_hand_count():
    d = np.array([1.5, 2.0, -0.5, 3.0, 1.0])
    got = sign_flip_test(d, alternative="greater")
    flips = [np.mean(np.array(s) * d) for s in itertools.product((1, -1), repeat=5)]
    assert got.p_value == pytest.approx(sum(f >= d.mean() - 1e-12 for f in flips) / 32)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="greater", n_resamples=np.inf)
    assert got.p_value == pytest.approx(ref.pvalue)
    assert got.min_p == pytest.approx(1 / 32)


def test_three_seeds_can_never_be_significant():
    # three paired seeds, all in the same direction: the exact p is 1/8, the t-test says 0.002
    d = [4.0, 4.1, 3.9]
    got = sign_flip_test(d, alternative="greater")
    assert got.p_value == pytest.approx(1 / 8) and got.min_p == pytest.approx(1 / 8)
    assert stats.ttest_1samp(d, 0.0, alternative="greater").pvalue < 0.01
    assert sign_flip_test(d).p_value == pytest.approx(2 / 8)


def test_large_n_falls_back_to_seeded_monte_carlo():
    rng = np.random.default_rng(0)
    d = rng.normal(0.3, 1.0, size=40)
    a = sign_flip_test(d, alternative="greater", rng=np.random.default_rng(1))
    b = sign_flip_test(d, alternative="greater", rng=np.random.default_rng(1))
    assert a == b and a.method.startswith("Monte Carlo") and a.p_value > 0
    t = stats.ttest_1samp(d, 0.0, alternative="greater").pvalue
    assert abs(a.p_value - t) < 0.02  # the permutation and t tests agree at this n


def test_t_interval_matches_scipy():
    v = [31.2, 29.8, 33.0]
    mean, low, high = t_interval(v)
    ref = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert mean == pytest.approx(np.mean(v)) and (low, high) == pytest.approx(ref)
    assert math.isnan(t_interval([1.0])[1])
