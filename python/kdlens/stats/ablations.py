"""Ablation views over a tidy results table: temperature and noise curves, task-aware vs task-unaware
teacher deltas, the best teacher per student, and KD gain by student size.

Each function returns a Polars frame; an empty frame means the results hold no runs that vary the
factor (the report says so, with the reason). Scores include the ``average`` task (reported, or
the mean of the family's tasks; see :func:`kdlens.stats.units.with_run_averages`).
"""

from __future__ import annotations

import polars as pl

from kdlens.stats.schema import AVERAGE_TASK, BASELINE_METHODS, validate_results
from kdlens.stats.units import as_units, with_run_averages

CURVE_KEY = ["family", "teacher", "student", "method"]


def _kd_runs(scores: pl.DataFrame) -> pl.DataFrame:
    runs, _ = with_run_averages(validate_results(scores, extra_methods=_extra(scores)))
    return runs.filter(~pl.col("method").is_in(BASELINE_METHODS))


def _extra(scores: pl.DataFrame) -> list[str]:
    # Ablations read tables that were validated when the study was analysed; any method is fine here.
    return scores["method"].unique().to_list() if "method" in scores.columns else []


def temperature_curves(scores: pl.DataFrame) -> pl.DataFrame:
    """Score vs temperature for every (teacher, student, method) run with a task-aware, noise-free
    teacher at two or more temperatures. Columns: family, teacher, student, method, temperature,
    task, score."""
    kd = _kd_runs(scores).filter(
        (pl.col("teacher_kind") == "task_aware") & (pl.col("noise_sigma") == 0.0) & pl.col("temperature").is_not_null()
    )
    varied = kd.group_by(CURVE_KEY).agg(pl.col("temperature").n_unique().alias("_n")).filter(pl.col("_n") >= 2)
    return (
        kd.join(varied.select(CURVE_KEY), on=CURVE_KEY, how="semi")
        .select(*CURVE_KEY, "temperature", "task", "score")
        .sort([*CURVE_KEY, "task", "temperature"])
    )


def noise_curves(scores: pl.DataFrame) -> pl.DataFrame:
    """Score vs teacher-noise sigma for every (teacher, student, method, temperature) with a
    task-aware teacher at two or more sigmas (sigma 0 = no noise). Columns: family, teacher, student,
    method, temperature, noise_sigma, task, score."""
    key = [*CURVE_KEY, "temperature"]
    kd = _kd_runs(scores).filter(pl.col("teacher_kind") == "task_aware")
    kd = kd.with_columns(pl.col("temperature").fill_null(-1.0).alias("_t"))
    varied = (
        kd.group_by([*CURVE_KEY, "_t"]).agg(pl.col("noise_sigma").n_unique().alias("_n")).filter(pl.col("_n") >= 2)
    )
    return (
        kd.join(varied.select(*CURVE_KEY, "_t"), on=[*CURVE_KEY, "_t"], how="semi")
        .select(*key, "noise_sigma", "task", "score")
        .sort([*key, "task", "noise_sigma"], nulls_last=True)
    )


def teacher_kind_deltas(scores: pl.DataFrame) -> pl.DataFrame:
    """Task-unaware minus task-aware teacher, run by run (same teacher model, student, method,
    temperature, noise). Columns: family, teacher, student, method, temperature, noise_sigma, task,
    task_aware_score, task_unaware_score, delta (points)."""
    kd = _kd_runs(scores).with_columns(pl.col("temperature").fill_null(-1.0).alias("_t"))
    key = [*CURVE_KEY, "_t", "noise_sigma", "task"]
    aware = kd.filter(pl.col("teacher_kind") == "task_aware").select(
        *key, "temperature", pl.col("score").alias("task_aware_score")
    )
    unaware = kd.filter(pl.col("teacher_kind") == "task_unaware").select(*key, pl.col("score").alias("task_unaware_score"))
    return (
        aware.join(unaware, on=key, how="inner")
        .with_columns((pl.col("task_unaware_score") - pl.col("task_aware_score")).alias("delta"))
        .select(*CURVE_KEY, "temperature", "noise_sigma", "task", "task_aware_score", "task_unaware_score", "delta")
        .sort([*CURVE_KEY, "temperature", "noise_sigma", "task"], nulls_last=True)
    )


def best_teacher_per_student(data) -> pl.DataFrame:
    """For each student, the unit (teacher, method) with the highest family-average score, its
    improvement over the student's SFT score, and how many units competed. Columns: family, student,
    student_size_b, best_teacher, best_method, score, sft_score, improvement, n_units."""
    units = as_units(data).frame.filter(pl.col("task") == AVERAGE_TASK)
    return (
        units.sort("score", descending=True)
        .group_by(["family", "student"], maintain_order=True)
        .agg(
            pl.col("student_size_b").first(),
            pl.col("teacher").first().alias("best_teacher"),
            pl.col("method").first().alias("best_method"),
            pl.col("score").first(),
            pl.col("sft_score").first(),
            pl.col("improvement").first(),
            pl.len().alias("n_units"),
        )
        .sort(["family", "student_size_b", "student"], nulls_last=True)
    )


def kd_gain_by_student_size(data) -> pl.DataFrame:
    """KD gain (family-average improvement over SFT) per student and method, plus method 'all'.
    Columns: family, student, student_size_b, method, n_units, mean_improvement, min_improvement,
    max_improvement."""
    units = as_units(data).frame.filter(pl.col("task") == AVERAGE_TASK)
    aggs = [
        pl.col("student_size_b").first(),
        pl.len().alias("n_units"),
        pl.col("improvement").mean().alias("mean_improvement"),
        pl.col("improvement").min().alias("min_improvement"),
        pl.col("improvement").max().alias("max_improvement"),
    ]
    per_method = units.group_by(["family", "student", "method"]).agg(aggs)
    pooled = units.group_by(["family", "student"]).agg(aggs).with_columns(pl.lit("all").alias("method"))
    columns = ["family", "student", "student_size_b", "method", "n_units", "mean_improvement",
               "min_improvement", "max_improvement"]  # fmt: skip
    return pl.concat([pooled.select(columns), per_method.select(columns)]).sort(
        ["family", "student_size_b", "student", "method"], nulls_last=True
    )
