"""Seeded percentile-bootstrap confidence intervals, Holm's correction, and effect sizes.

Resampling is over units of analysis (rows), vectorised: one ``(n_resamples, n)`` index matrix per
interval. Every interval gets its own generator seeded from ``(seed, label)`` (a CRC32 of the
label), so a cell's interval does not depend on which other cells were computed, and the seed is
recorded next to it.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95


def cell_rng(seed: int, label: str) -> np.random.Generator:
    """The generator for one interval: seeded by the study seed and the cell's label."""
    return np.random.default_rng([int(seed), zlib.crc32(label.encode("utf-8"))])


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def bootstrap_mean_ci(
    x, *, n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``x`` (NaN, NaN for fewer than 2 values)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2 or n_resamples <= 0:
        return (math.nan, math.nan)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    return _percentile_interval(x[idx].mean(axis=1), level)


def _rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair (ranks with ties averaged; NaN where a row is constant)."""
    rx = stats.rankdata(x, axis=1)
    ry = stats.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=1) / denom, np.nan)


def bootstrap_spearman_ci(
    x, y, *, n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman's rho over paired (x, y) units; resamples in
    which either variable is constant are dropped (rho undefined there)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 3 or n_resamples <= 0:
        return (math.nan, math.nan)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    return _percentile_interval(_rowwise_spearman(x[idx], y[idx]), level)


def holm_adjust(p_values) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN."""
    p = [float(v) if v is not None else math.nan for v in p_values]
    finite = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(finite)
    adjusted = [math.nan] * len(p)
    running = 0.0
    for rank, (value, index) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * value))
        adjusted[index] = running
    return adjusted


def cohens_d_one_sample(x, mu: float = 0.0) -> float:
    """(mean - mu) / sample standard deviation (ddof 1)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        return math.nan
    sd = x.std(ddof=1)
    return float((x.mean() - mu) / sd) if sd > 0 else math.nan


def eta_squared(groups) -> float:
    """Share of the total sum of squares explained by group membership (one-way ANOVA)."""
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    allv = np.concatenate(arrays)
    grand = allv.mean()
    ss_total = float(((allv - grand) ** 2).sum())
    ss_between = float(sum(a.size * (a.mean() - grand) ** 2 for a in arrays))
    return ss_between / ss_total if ss_total > 0 else math.nan
