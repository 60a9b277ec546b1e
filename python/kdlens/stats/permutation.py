"""Permutation p-values that small samples can carry, and t intervals over seeds.

A study with a handful of units or seeds cannot support asymptotic p-values: Spearman's rho over 3
points has the exact p-value 1/3 (one of the 3! = 6 orderings is as extreme in each direction), not
the ~0 a t approximation gives. Every test here counts how many of the equally likely relabellings
of the data are at least as extreme as the observed one:

- :func:`sign_flip_test` (paired differences, or one-sample against 0): the 2^n sign patterns of the
  differences, statistic = their mean;
- :func:`spearman_permutation_test`: the n! orderings of y against x, statistic = rho.

With few enough relabellings they are all enumerated (``exact``); otherwise ``resamples`` of them are
drawn with a seeded generator and p = (k + 1) / (resamples + 1) (``Monte Carlo``), never 0. Each
result also carries ``min_p``: the smallest p-value the design can produce, so a reader (and the
report) can see when significance is out of reach whatever the data say (3 paired seeds: 1/8).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

EXACT_SIGN_FLIP_MAX_N = 16  # 65536 sign patterns
EXACT_PERMUTATION_MAX_N = 8  # 40320 orderings
DEFAULT_PERMUTATIONS = 20000
ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class PermutationResult:
    statistic: float  # mean difference (sign flip) or rho (Spearman)
    p_value: float
    n: int
    method: str  # "exact (2^n sign flips)" | "Monte Carlo (R sign flips)" | ...
    min_p: float  # the smallest p-value this test can give with this n


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def _p_from_null(null: np.ndarray, observed: float, alternative: str, *, exact: bool) -> float:
    tol = 1e-12 * max(1.0, abs(observed))  # ties with the observed value count as extreme
    if alternative == "greater":
        k = int(np.sum(null >= observed - tol))
    elif alternative == "less":
        k = int(np.sum(null <= observed + tol))
    else:
        k = int(np.sum(np.abs(null) >= abs(observed) - tol))
    if exact:
        return k / null.size
    return (k + 1) / (null.size + 1)


def sign_flip_test(d, *, alternative: str = "two-sided", resamples: int = DEFAULT_PERMUTATIONS,
                   rng: np.random.Generator | None = None) -> PermutationResult:
    """Paired permutation test of mean(d) = 0: every sign pattern of ``d`` is equally likely under H0."""
    _check_alternative(alternative)
    d = np.asarray(d, dtype=np.float64)
    n = int(d.size)
    if n == 0:
        return PermutationResult(math.nan, math.nan, 0, "no data", math.nan)
    observed = float(d.mean())
    if n <= EXACT_SIGN_FLIP_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        null = (signs * d).mean(axis=1)
        p = _p_from_null(null, observed, alternative, exact=True)
        min_p = (2.0 if alternative == "two-sided" else 1.0) / 2**n
        return PermutationResult(observed, min(1.0, p), n, f"exact ({2**n} sign flips)", min(1.0, min_p))
    rng = rng if rng is not None else np.random.default_rng(0)
    signs = rng.choice((1.0, -1.0), size=(resamples, n))
    null = (signs * d).mean(axis=1)
    p = _p_from_null(null, observed, alternative, exact=False)
    return PermutationResult(observed, min(1.0, p), n, f"Monte Carlo ({resamples} sign flips)", 1.0 / (resamples + 1))


def _ranks(a: np.ndarray) -> np.ndarray:
    return stats.rankdata(a, axis=-1)


def _rho_rows(rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=-1) / denom, np.nan)


def spearman_permutation_test(x, y, *, alternative: str = "two-sided", resamples: int = DEFAULT_PERMUTATIONS,
                              rng: np.random.Generator | None = None) -> PermutationResult:
    """Permutation test of Spearman's rho = 0 (ties get average ranks): every ordering of ``y``
    against ``x`` is equally likely under H0."""
    _check_alternative(alternative)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return PermutationResult(math.nan, math.nan, n, "undefined (fewer than 3 points or a constant)", math.nan)
    rx, ry = _ranks(x), _ranks(y)
    observed = float(_rho_rows(rx, ry))
    if n <= EXACT_PERMUTATION_MAX_N:
        perms = np.array(list(itertools.permutations(range(n))))
        null = _rho_rows(rx[None, :], ry[perms])
        p = _p_from_null(null, observed, alternative, exact=True)
        extreme = null.max() if alternative != "less" else null.min()
        k_min = int(np.sum(np.abs(null - extreme) < 1e-9)) * (2 if alternative == "two-sided" else 1)
        return PermutationResult(observed, min(1.0, p), n, f"exact ({math.factorial(n)} orderings)",
                                 min(1.0, k_min / null.size))
    rng = rng if rng is not None else np.random.default_rng(0)
    perms = np.argsort(rng.random((resamples, n)), axis=1)
    null = _rho_rows(rx[None, :], ry[perms])
    p = _p_from_null(null, observed, alternative, exact=False)
    return PermutationResult(observed, min(1.0, p), n, f"Monte Carlo ({resamples} orderings)", 1.0 / (resamples + 1))


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t interval for the mean; NaN bounds for fewer than 2 values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if v.size < 2:
        return (mean, math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return (mean, mean - half, mean + half)
