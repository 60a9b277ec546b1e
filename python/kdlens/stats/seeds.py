"""Repeated runs: scores over seeds with intervals, and paired tests over seeds for every ablation.

A study that repeats each run over seeds (``seed`` in the scores table) is read here run by run and
seed by seed, on each run's family Average (the mean of its tasks):

- :func:`seed_summary`: every model and configuration with the number of seeds, the mean and a 95%
  Student-t interval over seeds (one seed: no interval);
- :func:`paired_contrasts`: each ablation as paired differences, one pair per seed (the same seed
  means the same data order and sampling stream): KD vs SFT of the same student, T = t vs T = 1,
  sigma = s vs sigma = 0, task-unaware vs task-aware teacher, and KD vs SFT agreement with the
  teacher. Each (contrast, student, method) row and each row pooled over methods (``all``) gets the
  mean difference, its t interval and a sign-flip permutation p-value (exact for up to 16 pairs),
  with the smallest p-value its n allows. Tables without seeds pair runs across models instead
  (the paper's released tables: one run per configuration).
"""

from __future__ import annotations

import math

import polars as pl

from kdlens.stats.bootstrap import cell_rng
from kdlens.stats.permutation import sign_flip_test, t_interval
from kdlens.stats.schema import AVERAGE_TASK, BASELINE_METHODS

RUN_KEY = ["family", "teacher", "student", "method", "temperature", "noise_sigma", "teacher_kind"]
CONTRASTS = ("KD - SFT", "T=2 - T=1", "T=5 - T=1", "sigma=1 - sigma=0", "sigma=2 - sigma=0",
             "sigma=5 - sigma=0", "task-unaware - task-aware", "agreement KD - SFT")
CONTRAST_SCHEMA = {
    "contrast": pl.String, "family": pl.String, "student": pl.String, "method": pl.String,
    "n_pairs": pl.Int64, "mean_diff": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
    "p_two_sided": pl.Float64, "p_greater": pl.Float64, "p_less": pl.Float64, "min_p": pl.Float64,
    "p_method": pl.String,
}


def _with_seed(frame: pl.DataFrame) -> pl.DataFrame:
    if "seed" in frame.columns:
        return frame.with_columns(pl.col("seed").cast(pl.Int64))
    return frame.with_columns(pl.lit(None, dtype=pl.Int64).alias("seed"))


def per_seed_averages(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per (run, seed): the family Average (reported, else the mean of the run's tasks)."""
    s = _with_seed(scores)
    key = [*RUN_KEY, "seed"]
    extra = [pl.col("student_size_b").first()] if "student_size_b" in s.columns else []
    reported = s.filter(pl.col("task") == AVERAGE_TASK).group_by(key, maintain_order=True).agg(
        pl.col("score").first(), *extra)
    tasks = s.filter(pl.col("task") != AVERAGE_TASK).group_by(key, maintain_order=True).agg(
        pl.col("score").mean(), *extra)
    missing = tasks.join(reported.select(key), on=key, how="anti", nulls_equal=True)
    return pl.concat([reported, missing.select(reported.columns)], how="vertical")


def seed_summary(scores: pl.DataFrame, level: float = 0.95) -> pl.DataFrame:
    """Every model and configuration: n_seeds, mean and a t interval over seeds (family Average).
    Columns: family, teacher, student, method, temperature, noise_sigma, teacher_kind,
    student_size_b, n_seeds, mean, ci_low, ci_high."""
    runs = per_seed_averages(scores)
    rows = []
    for key, part in runs.group_by(RUN_KEY, maintain_order=True):
        mean, low, high = t_interval(part["score"].to_numpy(), level)
        low, high = (None, None) if math.isnan(low) else (low, high)  # one seed: no interval
        row = dict(zip(RUN_KEY, key))
        row.update(student_size_b=part["student_size_b"][0] if "student_size_b" in part.columns else None,
                   n_seeds=part.height, mean=mean, ci_low=low, ci_high=high)
        rows.append(row)
    schema = {"family": pl.String, "teacher": pl.String, "student": pl.String, "method": pl.String,
              "temperature": pl.Float64, "noise_sigma": pl.Float64, "teacher_kind": pl.String,
              "student_size_b": pl.Float64, "n_seeds": pl.Int64, "mean": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64}
    return pl.DataFrame(rows, schema=schema).sort(
        ["family", "student_size_b", "student", "method", "teacher_kind", "temperature", "noise_sigma"],
        nulls_last=True)


def _pairs(runs: pl.DataFrame, a: pl.Expr, b: pl.Expr, match: list[str], name: str) -> pl.DataFrame:
    """Rows (family, student, method, seed, diff) pairing each ``a`` run with its ``b`` twin."""
    left = runs.filter(a).select(*match, pl.col("score").alias("_a"))
    right = runs.filter(b).select(*match, pl.col("score").alias("_b"))
    joined = left.join(right, on=match, how="inner", nulls_equal=True)
    return joined.select("family", "student", "method", (pl.col("_a") - pl.col("_b")).alias("diff")).with_columns(
        pl.lit(name).alias("contrast"))


def _kd_vs_sft(runs: pl.DataFrame) -> pl.DataFrame:
    kd = runs.filter(~pl.col("method").is_in(BASELINE_METHODS) & (pl.col("teacher_kind") == "task_aware")
                     & (pl.col("noise_sigma") == 0.0) & (pl.col("temperature") == 1.0))
    sft = runs.filter(pl.col("method") == "SFT").select("family", "student", "seed", pl.col("score").alias("_sft"))
    joined = kd.join(sft, on=["family", "student", "seed"], how="inner", nulls_equal=True)
    return joined.select("family", "student", "method", (pl.col("score") - pl.col("_sft")).alias("diff")).with_columns(
        pl.lit("KD - SFT").alias("contrast"))


def _agreement_pairs(agreement: pl.DataFrame | None) -> pl.DataFrame | None:
    if agreement is None or agreement.height == 0:
        return None
    a = _with_seed(agreement).filter(pl.col("task") != AVERAGE_TASK)
    for col, default in (("temperature", None), ("noise_sigma", 0.0), ("teacher_kind", None)):
        if col not in a.columns:
            a = a.with_columns(pl.lit(default, dtype=pl.String if col == "teacher_kind" else pl.Float64).alias(col))
    a = a.group_by(["family", "teacher", "student", "method", "temperature", "noise_sigma", "teacher_kind", "seed"],
                   maintain_order=True).agg(pl.col("agreement").mean())
    kd = a.filter(~pl.col("method").is_in(BASELINE_METHODS)
                  & (pl.col("teacher_kind").is_null() | (pl.col("teacher_kind") == "task_aware"))
                  & (pl.col("noise_sigma") == 0.0)
                  & (pl.col("temperature").is_null() | (pl.col("temperature") == 1.0)))
    sft = a.filter(pl.col("method") == "SFT").select("family", "teacher", "student", "seed",
                                                      pl.col("agreement").alias("_sft"))
    joined = kd.join(sft, on=["family", "teacher", "student", "seed"], how="inner", nulls_equal=True)
    if joined.height == 0:
        return None
    return joined.select("family", "student", "method", (pl.col("agreement") - pl.col("_sft")).alias("diff")).with_columns(
        pl.lit("agreement KD - SFT").alias("contrast"))


def paired_contrasts(scores: pl.DataFrame, agreement: pl.DataFrame | None = None, *, level: float = 0.95,
                     seed: int = 0) -> pl.DataFrame:
    """Paired tests over seeds for every ablation (module docstring); one row per (contrast, family,
    student, method), plus ``method = "all"`` (pooled over methods) and ``student = "all"`` rows."""
    runs = per_seed_averages(scores)
    aware = (pl.col("teacher_kind") == "task_aware")
    kd = ~pl.col("method").is_in(BASELINE_METHODS)
    parts = [_kd_vs_sft(runs)]
    match_t = ["family", "teacher", "student", "method", "noise_sigma", "teacher_kind", "seed"]
    for t in (2.0, 5.0):
        parts.append(_pairs(runs, kd & aware & (pl.col("noise_sigma") == 0.0) & (pl.col("temperature") == t),
                            kd & aware & (pl.col("noise_sigma") == 0.0) & (pl.col("temperature") == 1.0),
                            match_t, f"T={t:g} - T=1"))
    match_s = ["family", "teacher", "student", "method", "temperature", "teacher_kind", "seed"]
    for s in (1.0, 2.0, 5.0):
        parts.append(_pairs(runs, kd & aware & (pl.col("noise_sigma") == s), kd & aware & (pl.col("noise_sigma") == 0.0),
                            match_s, f"sigma={s:g} - sigma=0"))
    match_k = ["family", "teacher", "student", "method", "temperature", "noise_sigma", "seed"]
    parts.append(_pairs(runs, kd & (pl.col("teacher_kind") == "task_unaware"), kd & aware, match_k,
                        "task-unaware - task-aware"))
    agree = _agreement_pairs(agreement)
    if agree is not None:
        parts.append(agree)
    diffs = pl.concat([p for p in parts if p.height], how="vertical") if any(p.height for p in parts) else None
    rows: list[dict] = []
    if diffs is None:
        return pl.DataFrame(schema=CONTRAST_SCHEMA)
    for contrast in CONTRASTS:
        c = diffs.filter(pl.col("contrast") == contrast)
        for family in sorted(c["family"].unique().to_list()):
            f = c.filter(pl.col("family") == family)
            groups = [(s, m, f.filter((pl.col("student") == s) & (pl.col("method") == m)))
                      for s, m in f.select("student", "method").unique(maintain_order=True).iter_rows()]
            for s in f["student"].unique(maintain_order=True).to_list():
                groups.append((s, "all", f.filter(pl.col("student") == s)))
            if f["student"].n_unique() > 1:
                groups.append(("all", "all", f))
            for student, method, g in groups:
                rows.append(_contrast_row(contrast, family, student, method, g["diff"].to_numpy(), level, seed))
    return pl.DataFrame(rows, schema=CONTRAST_SCHEMA)


def _contrast_row(contrast, family, student, method, d, level, seed) -> dict:
    label = f"{contrast}|{family}|{student}|{method}"
    tests = {alt: sign_flip_test(d, alternative=alt, rng=cell_rng(seed, label)) for alt in ("two-sided", "greater", "less")}
    mean, low, high = t_interval(d, level)
    two = tests["two-sided"]
    return {"contrast": contrast, "family": family, "student": student, "method": method, "n_pairs": int(d.size),
            "mean_diff": mean, "ci_low": low, "ci_high": high, "p_two_sided": two.p_value,
            "p_greater": tests["greater"].p_value, "p_less": tests["less"].p_value,
            "min_p": tests["greater"].min_p, "p_method": two.method}
