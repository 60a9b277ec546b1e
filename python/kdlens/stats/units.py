"""Units of analysis for H1-H5 (paper.md section 7): one row per (teacher, student, method) and task.

A unit is a (teacher, student, method) triple of a family, built from the task-aware,
noise-free KD runs; its score on a task is the MAX over its temperature variants, and its
improvement is that score minus the SFT score of the same student on the same task. ``average``
rows carry the same for the family average (the reported one where the results have it, else the
mean of the family's tasks for runs that have them all). Each unit also carries the student's size,
the teacher's own SFT score, and the agreement / fidelity of the pair (:data:`PAIR_METRICS`: the
first variants ``agreement``/``fidelity``, the paper's second variants ``agreement2``/``fidelity2``
(its EM2/BLEU2 tables) and ``token_agreement``, the token-level top-1 agreement that a study's
agreement or fidelity rows may carry as an extra column).

Everything left out is said in ``Units.exclusions``; ``strict=True`` turns exclusions caused by
bad input (no SFT row, missing tasks) into a KdlensError.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from kdlens.errors import KdlensError
from kdlens.stats.schema import (
    AVERAGE_TASK,
    BASELINE_METHODS,
    OPTIONAL_VARIANT_COLUMNS,
    PAIR_KEY_COLUMNS,
    PAIR_METRIC_KD_METHOD,
    validate_pair_metric,
    validate_results,
)

RUN_KEY = ["family", "teacher", "student", "method", "temperature", "noise_sigma", "teacher_kind"]
UNIT_KEY = ["family", "teacher", "student", "method"]
# the pair metrics a unit carries, in the order of the unit table's columns
PAIR_METRICS = ("agreement", "fidelity", "agreement2", "fidelity2", "token_agreement")
TOKEN_AGREEMENT = "token_agreement"
UNIT_DESCRIPTION = (
    "(teacher, student, method) triple with a task-aware, noise-free teacher; score = max over "
    "temperature variants; improvement = score - the student's SFT score"
)


@dataclass(frozen=True)
class Units:
    """The unit table and what was left out of it (each entry a sentence)."""

    frame: pl.DataFrame
    exclusions: tuple[str, ...] = field(default_factory=tuple)
    input_problems: tuple[str, ...] = field(default_factory=tuple)

    def family(self, family: str) -> pl.DataFrame:
        return self.frame.filter(pl.col("family") == family)


def _average_seeds(scores: pl.DataFrame) -> pl.DataFrame:
    if "seed" not in scores.columns:
        return scores
    key = [c for c in RUN_KEY + ["task"] if c in scores.columns]
    extra = [c for c in ("student_size_b",) if c in scores.columns]
    return scores.group_by(key, maintain_order=True).agg(
        pl.col("score").mean(), *[pl.col(c).first() for c in extra]
    )


def with_run_averages(scores: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Scores (validated, seeds averaged) with one ``average`` row per run.

    A run keeps its reported ``average`` row; otherwise it gets the mean of its tasks when it has
    every task of its family (the union over the family's runs); runs lacking tasks get none, and
    the returned notes say which.
    """
    scores = _average_seeds(scores)
    tasks = scores.filter(pl.col("task") != AVERAGE_TASK)
    family_tasks = tasks.group_by("family").agg(pl.col("task").unique().sort().alias("family_tasks"))
    is_task = pl.col("task") != AVERAGE_TASK
    per_run = scores.group_by(RUN_KEY, maintain_order=True).agg(
        pl.col("task").filter(is_task).unique().sort().alias("run_tasks"),
        pl.col("score").filter(is_task).mean().alias("mean_score"),
        pl.col("student_size_b").first(),
        (~is_task).any().alias("has_reported"),
    )
    per_run = per_run.join(family_tasks, on="family", how="left")
    notes = []
    complete = pl.col("run_tasks").list.len() == pl.col("family_tasks").list.len()
    for rec in per_run.filter(~complete & ~pl.col("has_reported")).iter_rows(named=True):
        missing = sorted(set(rec["family_tasks"]) - set(rec["run_tasks"]))
        notes.append(
            f"{_run_label(rec)} lacks task(s) {', '.join(missing)} of family {rec['family']}: "
            "it has no Average and is absent from those tasks' columns"
        )
    computed = per_run.filter(complete & ~pl.col("has_reported")).select(
        *RUN_KEY,
        pl.lit(AVERAGE_TASK).alias("task"),
        pl.col("mean_score").alias("score"),
        "student_size_b",
    )
    base = scores.select(*RUN_KEY, "task", "score", "student_size_b")
    return pl.concat([base, computed], how="vertical"), notes


def _run_label(rec: dict) -> str:
    if rec["method"] in BASELINE_METHODS:
        return f"{rec['method']} run of {rec['student']}"
    parts = [f"{rec['method']} run {rec['teacher']} -> {rec['student']}"]
    if rec.get("temperature") is not None:
        parts.append(f"T={rec['temperature']:g}")
    if rec.get("noise_sigma"):
        parts.append(f"sigma={rec['noise_sigma']:g}")
    if rec.get("teacher_kind") == "task_unaware":
        parts.append("task-unaware teacher")
    return " ".join(parts)


def _pair_metric_for_units(units: pl.DataFrame, metric: pl.DataFrame | None, value: str) -> pl.DataFrame:
    """Attach the pair metric to each unit row: the row of the unit's own method (and the
    temperature whose score was the max, when the metric has temperatures), else the pair's
    ``KD`` row (the paper's layout), averaged over the family's tasks for ``average``."""
    if metric is None:
        return units.with_columns(pl.lit(None, dtype=pl.Float64).alias(value))
    key = [c for c in (*PAIR_KEY_COLUMNS, *OPTIONAL_VARIANT_COLUMNS) if c in metric.columns]
    metric = metric.select(*key, *(["seed"] if "seed" in metric.columns else []), value)
    if "seed" in metric.columns:  # repeated runs: the unit's metric is the mean over its seeds
        metric = metric.group_by(key, maintain_order=True).agg(pl.col(value).mean())
    if "teacher_kind" in metric.columns:
        metric = metric.filter(pl.col("teacher_kind").is_null() | (pl.col("teacher_kind") == "task_aware"))
    if "noise_sigma" in metric.columns:
        metric = metric.filter(pl.col("noise_sigma") == 0.0)
    own_key = ["teacher", "student", "method", "task"]
    own = metric.filter(pl.col("method") != PAIR_METRIC_KD_METHOD)
    if "temperature" in metric.columns:  # match the variant whose score was the max; null T = -1
        own = own.with_columns(pl.col("temperature").fill_null(-1.0).alias("_t"))
        units = units.with_columns(pl.col("temperature_at_max").fill_null(-1.0).alias("_t"))
        own_key = own_key + ["_t"]
    own = own.select(*own_key, pl.col(value).alias("_own"))
    pair = metric.filter(pl.col("method") == PAIR_METRIC_KD_METHOD).select(
        "teacher", "student", "task", pl.col(value).alias("_pair")
    )
    tasks = units.filter(pl.col("task") != AVERAGE_TASK)
    tasks = (
        tasks.join(own, on=own_key, how="left")
        .join(pair, on=["teacher", "student", "task"], how="left")
        .with_columns(pl.coalesce("_own", "_pair").alias(value))
        .drop("_own", "_pair", "_t", strict=False)
    )
    units = units.drop("_t", strict=False)
    n_family_tasks = metric.filter(pl.col("task") != AVERAGE_TASK).group_by("family").agg(
        pl.col("task").n_unique().alias("_n_tasks")
    )
    avg = (
        tasks.group_by(UNIT_KEY)
        .agg(pl.col(value).mean().alias("_avg"), pl.col(value).count().alias("_n"))
        .join(n_family_tasks, on="family", how="left")
        .with_columns(
            pl.when(pl.col("_n") == pl.col("_n_tasks")).then(pl.col("_avg")).alias(value)
        )
        .select(*UNIT_KEY, value)
    )
    averages = units.filter(pl.col("task") == AVERAGE_TASK).join(avg, on=UNIT_KEY, how="left")
    return pl.concat([tasks, averages.select(tasks.columns)], how="vertical")


def token_agreement_table(agreement: pl.DataFrame | None, fidelity: pl.DataFrame | None) -> pl.DataFrame | None:
    """The ``token_agreement`` rows of a study: the fidelity table's column where it has one (its rows
    cover every task), else the agreement table's; rows with a null value are runs compared without
    it. None when neither table has the column (or no row has a value): no H5-token, no error."""
    for table, value in ((fidelity, "fidelity"), (agreement, "agreement")):
        if table is None or TOKEN_AGREEMENT not in table.columns:
            continue
        if table[TOKEN_AGREEMENT].dtype != pl.Null and not table[TOKEN_AGREEMENT].dtype.is_numeric():
            raise KdlensError(f"{value} table: column 'token_agreement' must be numeric (percent), "
                              f"got {table[TOKEN_AGREEMENT].dtype}")
        rows = table.drop(value).with_columns(pl.col(TOKEN_AGREEMENT).cast(pl.Float64)).filter(
            pl.col(TOKEN_AGREEMENT).is_not_null())
        if rows.height == 0:
            return None
        bad = rows.filter(~pl.col(TOKEN_AGREEMENT).is_between(0.0, 100.0))
        if bad.height:
            raise KdlensError(f"{value} table: column 'token_agreement' has {bad.height} value(s) outside "
                              f"0-100 (e.g. {bad[TOKEN_AGREEMENT][0]}); it is a percentage of tokens")
        return rows
    return None


def build_units(
    scores: pl.DataFrame,
    agreement: pl.DataFrame | None = None,
    fidelity: pl.DataFrame | None = None,
    *,
    agreement2: pl.DataFrame | None = None,
    fidelity2: pl.DataFrame | None = None,
    strict: bool = False,
    extra_methods=(),
) -> Units:
    """The unit table for H1-H5 (module docstring). Columns: family, teacher, student, method,
    task, score, temperature_at_max, n_variants, sft_score, improvement, teacher_sft_score,
    student_size_b, and the pair metrics :data:`PAIR_METRICS` (null where the data has none).
    ``agreement2``/``fidelity2``: a second variant of each (the paper's EM2/BLEU2 tables)."""
    scores = validate_results(scores, extra_methods=extra_methods)
    metrics = {"agreement": agreement, "fidelity": fidelity, "agreement2": agreement2, "fidelity2": fidelity2}
    for name, table in metrics.items():
        if table is not None:
            value = name.rstrip("2")
            metrics[name] = validate_pair_metric(table, value, extra_methods=extra_methods).rename({value: name})
    metrics[TOKEN_AGREEMENT] = token_agreement_table(metrics["agreement"], metrics["fidelity"])
    runs, problems = with_run_averages(scores)
    exclusions: list[str] = []

    kd = runs.filter(~pl.col("method").is_in(BASELINE_METHODS))
    unaware = kd.filter(pl.col("teacher_kind") == "task_unaware").select(RUN_KEY).unique().height
    if unaware:
        exclusions.append(
            f"{unaware} run(s) with a task-unaware teacher are not units of H1-H5 (the paper "
            "excludes base_teacher runs); they appear in the teacher-kind ablation"
        )
    noisy = kd.filter(pl.col("noise_sigma") != 0.0).select(RUN_KEY).unique().height
    if noisy:
        exclusions.append(
            f"{noisy} run(s) with a noisy teacher (sigma > 0) are not units of H1-H5; they "
            "appear in the noise ablation"
        )
    kd = kd.filter((pl.col("teacher_kind") == "task_aware") & (pl.col("noise_sigma") == 0.0))
    if kd.height == 0:
        raise KdlensError(
            "results table has no KD run with a task-aware, noise-free teacher: nothing to analyse "
            "(H1-H5 compare such runs against the student's SFT run)"
        )
    units = (
        kd.sort(["temperature"], nulls_last=True)
        .group_by(UNIT_KEY + ["task"], maintain_order=True)
        .agg(
            pl.col("score").max(),
            pl.col("temperature").get(pl.col("score").arg_max()).alias("temperature_at_max"),
            pl.len().alias("n_variants"),
            pl.col("student_size_b").first(),
        )
    )
    sft = runs.filter(pl.col("method") == "SFT").select(
        "family", "student", "task", pl.col("score").alias("sft_score")
    )
    units = units.join(sft, on=["family", "student", "task"], how="left")
    no_sft = units.filter(pl.col("sft_score").is_null())
    if no_sft.height:
        for (family, student), group in no_sft.group_by(["family", "student"], maintain_order=True):
            tasks = ", ".join(sorted(set(group["task"].to_list())))
            problems.append(
                f"student {student} ({family}) has no SFT score for task(s) {tasks}: its units "
                "are left out there (add the student's SFT run to the results)"
            )
        units = units.filter(pl.col("sft_score").is_not_null())
    teacher_sft = sft.rename({"student": "teacher", "sft_score": "teacher_sft_score"})
    units = units.join(teacher_sft, on=["family", "teacher", "task"], how="left").with_columns(
        (pl.col("score") - pl.col("sft_score")).alias("improvement")
    )
    for name in PAIR_METRICS:
        units = _pair_metric_for_units(units, metrics[name], name)
    units = units.select(
        "family", "teacher", "student", "method", "task", "score", "temperature_at_max",
        "n_variants", "sft_score", "improvement", "teacher_sft_score", "student_size_b",
        *PAIR_METRICS,
    ).sort(UNIT_KEY + ["task"])  # fmt: skip
    if strict and problems:
        raise KdlensError("; ".join(problems))
    return Units(frame=units, exclusions=tuple(exclusions + problems), input_problems=tuple(problems))


def as_units(data, **kwargs) -> Units:
    """Accept a Units, a ResultTables or a scores DataFrame (built strictly) and return Units."""
    if isinstance(data, Units):
        return data
    if isinstance(data, pl.DataFrame):
        return build_units(data, strict=True, **kwargs)
    scores = getattr(data, "scores", None)
    if isinstance(scores, pl.DataFrame):
        return build_units(scores, data.agreement, data.fidelity, agreement2=getattr(data, "agreement2", None),
                           fidelity2=getattr(data, "fidelity2", None), strict=True, **kwargs)
    raise KdlensError(f"expected results (a scores DataFrame, ResultTables or Units), got {type(data).__name__}")
