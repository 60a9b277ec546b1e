"""The paper's hypothesis tests H1-H5 (paper.md section 7), each a function returning a Polars frame.

Every function takes the unit table (:func:`kdlens.stats.units.build_units`; a scores DataFrame or
ResultTables is accepted and built strictly) and returns one row per (family, task, group) with:
``hypothesis, test, family, task, group, n, statistic, p_value`` (the paper's numbers: t-test,
ANOVA F, Spearman's asymptotic p), then what kdlens adds: a permutation p-value ``p_exact`` in the
test's own direction (exact enumeration for small n, else Monte Carlo; :mod:`kdlens.stats.permutation`)
with the one-sided ``p_greater`` / ``p_less``, ``min_p`` (the smallest p-value n allows) and
``p_method``; ``estimate`` (mean improvement or rho) with a seeded percentile-bootstrap interval
``ci_low, ci_high`` (``ci_level``, ``bootstrap_resamples``, ``bootstrap_seed``), an effect size
(``effect_size``, ``effect_size_name``), and Holm's correction ``p_holm`` / ``holm_reject`` of the
permutation p-values over all rows of one hypothesis function and family (alpha 0.05), so nothing is
marked significant that the number of units cannot carry. ``note`` says why a cell has no statistic.

Units: (teacher, student, method) triples over every model family in the data, seeds averaged;
tasks and ``average``. H4 and H5 are also run on the other pair metrics the units carry
(:data:`VARIANTS`: the paper's EM2 and BLEU2 tables, a study's token-level agreement), each under its
own label and Holm family.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl
from scipy import stats

from kdlens.stats.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    bootstrap_mean_ci,
    bootstrap_spearman_ci,
    cell_rng,
    cohens_d_one_sample,
    eta_squared,
    holm_adjust,
)
from kdlens.stats.permutation import sign_flip_test, spearman_permutation_test
from kdlens.stats.schema import family_order, task_order
from kdlens.stats.units import as_units

HOLM_ALPHA = 0.05
ALL_GROUP = "all"

RESULT_SCHEMA = {
    "hypothesis": pl.String,
    "test": pl.String,
    "family": pl.String,
    "task": pl.String,
    "group": pl.String,
    "n": pl.Int64,
    "statistic": pl.Float64,
    "p_value": pl.Float64,
    "p_exact": pl.Float64,
    "p_greater": pl.Float64,
    "p_less": pl.Float64,
    "min_p": pl.Float64,
    "p_method": pl.String,
    "estimate": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "ci_level": pl.Float64,
    "bootstrap_resamples": pl.Int64,
    "bootstrap_seed": pl.Int64,
    "effect_size": pl.Float64,
    "effect_size_name": pl.String,
    "p_holm": pl.Float64,
    "holm_reject": pl.Boolean,
    "note": pl.String,
}


def _finish(rows: list[dict]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema={k: v for k, v in RESULT_SCHEMA.items() if k not in ("p_holm", "holm_reject")})
    parts = []
    for (_, _), part in frame.group_by(["hypothesis", "family"], maintain_order=True):
        adjusted = holm_adjust(part["p_exact"].to_list())
        part = part.with_columns(
            pl.Series("p_holm", [None if math.isnan(a) else a for a in adjusted], dtype=pl.Float64)
        ).with_columns(
            pl.when(pl.col("p_holm").is_null()).then(None).otherwise(pl.col("p_holm") < HOLM_ALPHA).alias("holm_reject")
        )
        parts.append(part)
    if not parts:
        return pl.DataFrame(schema=RESULT_SCHEMA)
    return pl.concat(parts).select(list(RESULT_SCHEMA))


def _cells(frame: pl.DataFrame, by_method: bool):
    """(family, task, group, sub-frame) in table order; group 'all' then each method."""
    for family in family_order(frame["family"].unique().to_list()):
        fam = frame.filter(pl.col("family") == family)
        methods = sorted(fam["method"].unique().to_list()) if by_method else []
        for group in [ALL_GROUP, *methods]:
            sub = fam if group == ALL_GROUP else fam.filter(pl.col("method") == group)
            for task in task_order(sub["task"].unique().to_list()):
                yield family, task, group, sub.filter(pl.col("task") == task)


def _empty_row(hypothesis, test, family, task, group, n, note):
    return {
        "hypothesis": hypothesis, "test": test, "family": family, "task": task, "group": group,
        "n": n, "statistic": None, "p_value": None, "p_exact": None, "p_greater": None, "p_less": None,
        "min_p": None, "p_method": None, "estimate": None, "ci_low": None,
        "ci_high": None, "ci_level": None, "bootstrap_resamples": None, "bootstrap_seed": None,
        "effect_size": None, "effect_size_name": None, "note": note,
    }  # fmt: skip


def _none_if_nan(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def h1_improvement_ttest(
    data, *, bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL
) -> pl.DataFrame:
    """H1: one-sided one-sample t-test of improvement > 0, over all units and per method.
    Estimate = mean improvement (points) with a bootstrap CI; effect size = Cohen's d."""
    units = as_units(data).frame
    rows = []
    for family, task, group, cell in _cells(units, by_method=True):
        x = cell["improvement"].to_numpy()
        test = "one-sample t-test, improvement > 0 (one-sided)"
        if x.size < 2:
            rows.append(_empty_row("H1", test, family, task, group, x.size, "fewer than 2 units"))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.ttest_1samp(x, 0.0, alternative="greater")
        label = f"H1|{family}|{task}|{group}"
        low, high = bootstrap_mean_ci(x, n_resamples=bootstrap, level=level, rng=cell_rng(seed, label))
        greater = sign_flip_test(x, alternative="greater", rng=cell_rng(seed, label + "|perm"))
        less = sign_flip_test(x, alternative="less", rng=cell_rng(seed, label + "|perm"))
        rows.append(
            {
                "hypothesis": "H1", "test": test, "family": family, "task": task, "group": group,
                "n": int(x.size), "statistic": _none_if_nan(result.statistic),
                "p_value": _none_if_nan(result.pvalue), "p_exact": _none_if_nan(greater.p_value),
                "p_greater": _none_if_nan(greater.p_value), "p_less": _none_if_nan(less.p_value),
                "min_p": _none_if_nan(greater.min_p), "p_method": greater.method, "estimate": float(x.mean()),
                "ci_low": _none_if_nan(low), "ci_high": _none_if_nan(high), "ci_level": level,
                "bootstrap_resamples": bootstrap, "bootstrap_seed": seed,
                "effect_size": _none_if_nan(cohens_d_one_sample(x)), "effect_size_name": "Cohen's d",
                "note": None if np.isfinite(result.statistic) else "improvement is constant",
            }
        )  # fmt: skip
    return _finish(rows)


def h1_anova(data, *, seed: int = 0) -> pl.DataFrame:
    """H1 (ANOVA): one-way ANOVA of improvement across methods (F, p); effect size eta^2."""
    units = as_units(data).frame
    rows = []
    test = "one-way ANOVA of improvement across methods"
    for family, task, _, cell in _cells(units, by_method=False):
        groups = [g["improvement"].to_numpy() for _, g in cell.group_by("method", maintain_order=True)]
        groups = [g for g in groups if g.size]
        n = int(sum(g.size for g in groups))
        if len(groups) < 2 or any(g.size < 2 for g in groups):
            rows.append(_empty_row("H1-ANOVA", test, family, task, ALL_GROUP, n, "needs >= 2 methods with >= 2 units each"))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = stats.f_oneway(*groups)
        p_perm, method = _anova_permutation_p(groups, float(result.statistic), seed, f"H1-ANOVA|{family}|{task}")
        rows.append(
            {
                **_empty_row("H1-ANOVA", test, family, task, ALL_GROUP, n, None),
                "statistic": _none_if_nan(float(result.statistic)),
                "p_value": _none_if_nan(float(result.pvalue)), "p_exact": p_perm, "p_greater": p_perm,
                "p_method": method,
                "effect_size": _none_if_nan(eta_squared(groups)), "effect_size_name": "eta^2",
                "note": None if np.isfinite(result.statistic) else "no variance within methods",
            }
        )  # fmt: skip
    return _finish(rows)


def _anova_permutation_p(groups, observed: float, seed: int, label: str, resamples: int = 5000):
    """Monte Carlo permutation p of the one-way ANOVA F: method labels shuffled over the units."""
    if not np.isfinite(observed):
        return None, None
    values = np.concatenate(groups)
    sizes = [g.size for g in groups]
    bounds = np.cumsum([0, *sizes])
    rng = cell_rng(seed, label + "|perm")
    perms = np.argsort(rng.random((resamples, values.size)), axis=1)
    shuffled = values[perms]
    grand = values.mean()
    between = sum(size * (shuffled[:, lo:hi].mean(axis=1) - grand) ** 2
                  for size, lo, hi in zip(sizes, bounds[:-1], bounds[1:]))
    within = sum(((shuffled[:, lo:hi] - shuffled[:, lo:hi].mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
                 for lo, hi in zip(bounds[:-1], bounds[1:]))
    k, n = len(groups), values.size
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (between / (k - 1)) / (within / (n - k))
    count = int(np.sum(f >= observed * (1 - 1e-12)))
    return (count + 1) / (resamples + 1), f"Monte Carlo ({resamples} label permutations)"


def _spearman(
    data, column: str, hypothesis: str, test: str, *, by_method: bool, bootstrap: int, seed: int, level: float
) -> pl.DataFrame:
    units = as_units(data).frame
    with_data = units.filter(pl.col(column).is_not_null())["family"].unique().to_list()
    units = units.filter(pl.col("family").is_in(with_data))  # families without the metric: no rows
    rows = []
    for family, task, group, cell in _cells(units, by_method=by_method):
        usable = cell.filter(pl.col(column).is_not_null() & pl.col("improvement").is_not_null())
        missing = cell.height - usable.height
        x, y = usable["improvement"].to_numpy(), usable[column].to_numpy()
        if usable.height < 3:
            note = f"fewer than 3 units with {column}"
            if missing:
                note += f" ({missing} unit(s) have none)"
            rows.append(_empty_row(hypothesis, test, family, task, group, usable.height, note))
            continue
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            rows.append(_empty_row(hypothesis, test, family, task, group, usable.height, "constant input: rho undefined"))
            continue
        result = stats.spearmanr(x, y)
        label = f"{hypothesis}|{family}|{task}|{group}"
        low, high = bootstrap_spearman_ci(x, y, n_resamples=bootstrap, level=level, rng=cell_rng(seed, label))
        rho = float(result.statistic)
        perm = {alt: spearman_permutation_test(x, y, alternative=alt, rng=cell_rng(seed, label + "|perm"))
                for alt in ("two-sided", "greater", "less")}
        rows.append(
            {
                "hypothesis": hypothesis, "test": test, "family": family, "task": task, "group": group,
                "n": usable.height, "statistic": rho, "p_value": float(result.pvalue),
                "p_exact": _none_if_nan(perm["two-sided"].p_value), "p_greater": _none_if_nan(perm["greater"].p_value),
                "p_less": _none_if_nan(perm["less"].p_value), "min_p": _none_if_nan(perm["two-sided"].min_p),
                "p_method": perm["two-sided"].method, "estimate": rho,
                "ci_low": _none_if_nan(low), "ci_high": _none_if_nan(high), "ci_level": level,
                "bootstrap_resamples": bootstrap, "bootstrap_seed": seed, "effect_size": rho,
                "effect_size_name": "Spearman rho",
                "note": f"{missing} unit(s) without {column} left out" if missing else None,
            }
        )  # fmt: skip
    return _finish(rows)


def h2_teacher_score(data, *, bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL) -> pl.DataFrame:
    """H2: Spearman rho of improvement vs the teacher's SFT score on the same task."""
    return _spearman(data, "teacher_sft_score", "H2", "Spearman: improvement vs teacher SFT score",
                     by_method=False, bootstrap=bootstrap, seed=seed, level=level)  # fmt: skip


def h3_student_size(data, *, bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL) -> pl.DataFrame:
    """H3: Spearman rho of improvement vs student size (billions), over all units and per method."""
    return _spearman(data, "student_size_b", "H3", "Spearman: improvement vs student size (B)",
                     by_method=True, bootstrap=bootstrap, seed=seed, level=level)  # fmt: skip


def h3_student_sft(data, *, bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL) -> pl.DataFrame:
    """H3.2: Spearman rho of improvement vs the student's own SFT score."""
    return _spearman(data, "sft_score", "H3.2", "Spearman: improvement vs student SFT score",
                     by_method=False, bootstrap=bootstrap, seed=seed, level=level)  # fmt: skip


def h4_agreement(data, *, bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL) -> pl.DataFrame:
    """H4: Spearman rho of improvement vs teacher-student agreement (the pair's KD agreement)."""
    return _spearman(data, "agreement", "H4", "Spearman: improvement vs agreement",
                     by_method=False, bootstrap=bootstrap, seed=seed, level=level)  # fmt: skip


def h5_fidelity(data, *, bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL) -> pl.DataFrame:
    """H5: Spearman rho of improvement vs reasoning fidelity (BLEU of the pair's KD rationales)."""
    return _spearman(data, "fidelity", "H5", "Spearman: improvement vs fidelity",
                     by_method=False, bootstrap=bootstrap, seed=seed, level=level)  # fmt: skip


# H4/H5 on the other pair metrics, beside the first: (unit column, hypothesis label, test). The
# paper released a second agreement (EM2) and fidelity (BLEU2) table without analysing them; a
# study's token-level top-1 agreement (teacher-forced along the teacher's generations) is a finer
# reasoning fidelity than BLEU over decoded text.
VARIANTS = (
    ("agreement2", "H4-EM2", "Spearman: improvement vs agreement, second variant (the paper's EM2)"),
    ("fidelity2", "H5-BLEU2", "Spearman: improvement vs fidelity, second variant (the paper's BLEU2)"),
    ("token_agreement", "H5-token", "Spearman: improvement vs token-level top-1 agreement"),
)


def variant_tests(data, *, bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL) -> pl.DataFrame:
    """H4-EM2, H5-BLEU2 and H5-token: the H4/H5 test on each variant column the units carry (rows only
    for the variants with values; an empty frame when there are none)."""
    units = as_units(data)
    frames = [_spearman(units, column, hypothesis, test, by_method=False, bootstrap=bootstrap, seed=seed, level=level)
              for column, hypothesis, test in VARIANTS
              if column in units.frame.columns and units.frame[column].null_count() < units.frame.height]
    return pl.concat(frames) if frames else pl.DataFrame(schema=RESULT_SCHEMA)


def all_hypotheses(data, *, bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = DEFAULT_LEVEL) -> pl.DataFrame:
    """H1, H1-ANOVA, H2, H3, H3.2, H4, H4-EM2, H5, H5-BLEU2, H5-token stacked in that order (H4/H5
    and their variants only where the metric exists)."""
    units = as_units(data)
    kw = {"bootstrap": bootstrap, "seed": seed, "level": level}
    frames = [h1_improvement_ttest(units, **kw), h1_anova(units, seed=seed), h2_teacher_score(units, **kw),
              h3_student_size(units, **kw), h3_student_sft(units, **kw)]  # fmt: skip
    variants = variant_tests(units, **kw)
    if units.frame["agreement"].null_count() < units.frame.height:
        frames.append(h4_agreement(units, **kw))
    frames.append(variants.filter(pl.col("hypothesis") == "H4-EM2"))
    if units.frame["fidelity"].null_count() < units.frame.height:
        frames.append(h5_fidelity(units, **kw))
    frames.append(variants.filter(pl.col("hypothesis") != "H4-EM2"))
    return pl.concat(frames)
