"""The tidy results schema every kdlens analysis reads, and its validation.

A study's results are three long (tidy) Polars tables, one row per measured number:

* scores: ``teacher, student, method, temperature, noise_sigma, teacher_kind, task, family, score``
  (score = accuracy in percent). ``method`` is ``BaseModel`` or ``SFT`` for the baselines (teacher
  null) or a KD objective (``SeqKD``, ``RevKD``, ``GKD`` or any objective in :data:`KNOWN_METHODS`).
  Optional columns: ``student_size_b`` (student parameters in billions; wins over the name),
  ``seed`` (repeated runs, averaged before analysis), ``run_name`` (free text, kept for display).
  The reserved task name :data:`AVERAGE_TASK` holds a family average that was *reported* with the
  results (the paper's ``Average`` column); when absent kdlens averages the family's tasks itself.
* agreement / fidelity: ``teacher, student, method, task, family`` and ``agreement`` or ``fidelity``.
  ``method`` is ``SFT`` (the SFT student against the teacher), ``KD`` (the paper's one KD row per
  pair) or a kdlens method name; optional ``temperature`` / ``noise_sigma`` / ``teacher_kind``.

:func:`validate_results` and :func:`validate_pair_metric` check a frame, normalise it (types,
canonical task names, ``noise_sigma`` 0.0 for null, ``student_size_b`` parsed from the name) and
raise :class:`~kdlens.errors.KdlensError` saying what is wrong and how to fix it.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import polars as pl

from kdlens.errors import KdlensError
from kdlens.objectives import ALIASES, OBJECTIVE_NAMES, PAPER_NAMES
from kdlens.eval.tasks import find_task, list_tasks

AVERAGE_TASK = "average"
AVERAGE_DISPLAY = "Average"

BASELINE_METHODS = ("BaseModel", "SFT")
PAPER_KD_METHODS = tuple(PAPER_NAMES.values())  # SeqKD, RevKD, GKD
# kdlens objective names (kdlens.objectives) and their aliases, accepted as KD methods; ce_mix names
# a KD run with cross-entropy mixed in.
KD_OBJECTIVES = OBJECTIVE_NAMES + ALIASES + ("ce_mix",)
KNOWN_METHODS = BASELINE_METHODS + PAPER_KD_METHODS + KD_OBJECTIVES
PAIR_METRIC_KD_METHOD = "KD"  # the paper's agreement/fidelity files have one "KD" row per pair

TEACHER_KINDS = ("task_aware", "task_unaware")

# The paper's tasks, derived from the task registry (kdlens.eval.tasks, the one registry):
# canonical key -> (column header in the paper's tables, family, aliases).
PAPER_FAMILIES = ("math", "commonsense")
TASKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    t.name: (t.short, t.family, t.aliases) for f in PAPER_FAMILIES for t in list_tasks(f)
}
FAMILY_ORDER = ("math", "commonsense", "synthetic")

SCORE_COLUMNS: dict[str, pl.DataType] = {
    "teacher": pl.String,
    "student": pl.String,
    "method": pl.String,
    "temperature": pl.Float64,
    "noise_sigma": pl.Float64,
    "teacher_kind": pl.String,
    "task": pl.String,
    "family": pl.String,
    "score": pl.Float64,
}
PAIR_KEY_COLUMNS: dict[str, pl.DataType] = {
    "teacher": pl.String,
    "student": pl.String,
    "method": pl.String,
    "task": pl.String,
    "family": pl.String,
}
OPTIONAL_VARIANT_COLUMNS: dict[str, pl.DataType] = {
    "temperature": pl.Float64,
    "noise_sigma": pl.Float64,
    "teacher_kind": pl.String,
}

_SIZE = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)\s*([BMK])(?![A-Za-z0-9])", re.IGNORECASE)
_SIZE_SCALE = {"b": 1.0, "m": 1e-3, "k": 1e-6}


def _paper_task(name: str) -> str | None:
    task = find_task(name)
    return task.name if task is not None and task.name in TASKS else None


def canonical_task(name: str) -> str:
    """Canonical lowercase key of a task column name (``GSM8K`` -> ``gsm8k``, ``social_i_qa`` ->
    ``siqa``), by the task registry; names outside the paper's tasks (e.g. ``synthetic``) are
    returned unchanged."""
    if name.strip().lower() == AVERAGE_TASK:
        return AVERAGE_TASK
    return _paper_task(name) or name.strip()


def is_known_task(name: str) -> bool:
    return _paper_task(name) is not None


def task_display(task: str) -> str:
    """Display name for tables (``arc_challenge`` -> ``ARC-c``, ``average`` -> ``Average``)."""
    if task == AVERAGE_TASK:
        return AVERAGE_DISPLAY
    return TASKS[task][0] if task in TASKS else task


def task_order(tasks: Iterable[str]) -> list[str]:
    """Tasks in table order: the paper's order for known tasks, then the rest sorted, Average last."""
    known = list(TASKS)
    uniq = set(tasks)
    ordered = [t for t in known if t in uniq]
    ordered += sorted(t for t in uniq if t not in TASKS and t != AVERAGE_TASK)
    if AVERAGE_TASK in uniq:
        ordered.append(AVERAGE_TASK)
    return ordered


def family_order(families: Iterable[str]) -> list[str]:
    uniq = set(families)
    return [f for f in FAMILY_ORDER if f in uniq] + sorted(uniq - set(FAMILY_ORDER))


def parse_size_b(name: str | None) -> float | None:
    """Parameter count in billions from a model name, or None when the name carries no size.

    ``Qwen2.5-1.5B`` -> 1.5, ``Llama-3.2-1B`` -> 1.0, ``tiny-64M`` -> 0.064, ``tiny-s1`` -> None.
    The last size-looking token wins (``Qwen2.5`` is a version, not a size: no unit follows it).
    """
    if name is None:
        return None
    matches = _SIZE.findall(name)
    if not matches:
        return None
    number, unit = matches[-1]
    return float(number) * _SIZE_SCALE[unit.lower()]


def _check_columns(df: pl.DataFrame, required: dict[str, pl.DataType], what: str, fix: str) -> None:
    if not isinstance(df, pl.DataFrame):
        raise KdlensError(f"{what}: expected a Polars DataFrame, got {type(df).__name__}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise KdlensError(
            f"{what} is missing column(s) {', '.join(missing)} (has: {', '.join(df.columns)}); {fix}"
        )


def _cast(df: pl.DataFrame, columns: dict[str, pl.DataType], what: str) -> pl.DataFrame:
    exprs = []
    for name, dtype in columns.items():
        if name not in df.columns:
            continue
        if df[name].dtype == pl.Null:
            exprs.append(pl.col(name).cast(dtype))
            continue
        if dtype == pl.Float64 and not df[name].dtype.is_numeric():
            raise KdlensError(f"{what}: column {name!r} must be numeric, got {df[name].dtype}")
        exprs.append(pl.col(name).cast(dtype))
    return df.with_columns(exprs) if exprs else df


def _no_nulls(df: pl.DataFrame, columns: Iterable[str], what: str) -> None:
    for name in columns:
        nulls = df[name].null_count()
        if nulls:
            raise KdlensError(f"{what}: column {name!r} has {nulls} null value(s); every row needs one")


def _check_finite(df: pl.DataFrame, column: str, what: str) -> None:
    values = df[column].to_list()
    bad = [i for i, v in enumerate(values) if v is None or not math.isfinite(v)]
    if bad:
        raise KdlensError(
            f"{what}: column {column!r} has {len(bad)} missing or non-finite value(s) "
            f"(first at row {bad[0]}); drop those runs or re-evaluate them"
        )


def _check_methods(df: pl.DataFrame, allowed: Iterable[str], what: str) -> None:
    allowed = set(allowed)
    unknown = sorted(set(df["method"].to_list()) - allowed)
    if unknown:
        raise KdlensError(
            f"{what}: unknown method name(s) {', '.join(map(repr, unknown))}; known methods are "
            f"{', '.join(sorted(allowed))} (pass extra_methods=... / --method NAME to accept a new "
            "objective)"
        )


def _check_duplicates(df: pl.DataFrame, key: list[str], what: str) -> None:
    dup = df.group_by(key).agg(pl.len().alias("rows")).filter(pl.col("rows") > 1)
    if dup.height:
        first = dup.row(0, named=True)
        shown = ", ".join(f"{k}={first[k]!r}" for k in key)
        raise KdlensError(
            f"{what}: {dup.height} key(s) appear more than once, e.g. {shown}; "
            "keep one row per run and task (add a 'seed' column to mark repeated runs)"
        )


def validate_results(df: pl.DataFrame, *, extra_methods: Iterable[str] = ()) -> pl.DataFrame:
    """Check a tidy scores table and return it normalised (see the module docstring).

    Raises KdlensError naming missing columns, unknown methods, bad teacher kinds, nulls,
    non-finite scores, KD rows without a teacher, and duplicated (run, task) rows.
    """
    what = "results table"
    required = {k: v for k, v in SCORE_COLUMNS.items() if k not in ("noise_sigma", "teacher_kind")}
    _check_columns(
        df,
        required,
        what,
        "the tidy schema is teacher, student, method, temperature, noise_sigma, teacher_kind, "
        "task, family, score",
    )
    if "noise_sigma" not in df.columns:
        df = df.with_columns(pl.lit(0.0).alias("noise_sigma"))
    if "teacher_kind" not in df.columns:
        df = df.with_columns(
            pl.when(pl.col("method").is_in(BASELINE_METHODS))
            .then(pl.lit(None, dtype=pl.String))
            .otherwise(pl.lit("task_aware"))
            .alias("teacher_kind")
        )
    extra = {"student_size_b": pl.Float64} if "student_size_b" in df.columns else {}
    df = _cast(df, {**SCORE_COLUMNS, **extra}, what)
    if df.height == 0:
        raise KdlensError(f"{what} has no rows")
    _no_nulls(df, ("student", "method", "task", "family"), what)
    _check_finite(df, "score", what)
    _check_methods(df, (*KNOWN_METHODS, *extra_methods), what)
    df = df.with_columns(
        pl.col("noise_sigma").fill_null(0.0),
        pl.col("task").map_elements(canonical_task, return_dtype=pl.String),
    )
    kinds = set(df["teacher_kind"].drop_nulls().to_list()) - set(TEACHER_KINDS)
    if kinds:
        raise KdlensError(
            f"{what}: teacher_kind must be one of {', '.join(TEACHER_KINDS)} or null, "
            f"got {', '.join(sorted(kinds))}"
        )
    kd = df.filter(~pl.col("method").is_in(BASELINE_METHODS))
    if kd["teacher"].null_count():
        raise KdlensError(
            f"{what}: {kd['teacher'].null_count()} KD row(s) have no teacher; only BaseModel and "
            "SFT rows may leave teacher empty"
        )
    kd_kind_nulls = kd["teacher_kind"].null_count()
    if kd_kind_nulls:
        df = df.with_columns(
            pl.when(~pl.col("method").is_in(BASELINE_METHODS) & pl.col("teacher_kind").is_null())
            .then(pl.lit("task_aware"))
            .otherwise(pl.col("teacher_kind"))
            .alias("teacher_kind")
        )
    key = ["family", "teacher", "student", "method", "temperature", "noise_sigma", "teacher_kind", "task"]
    if "seed" in df.columns:
        key.append("seed")
    _check_duplicates(df, key, what)
    return with_student_size(df)


def with_student_size(df: pl.DataFrame) -> pl.DataFrame:
    """Add/complete ``student_size_b``: an explicit value wins, else the size parsed from the name
    (null when the name carries none, e.g. ``tiny-s1``)."""
    parsed = pl.col("student").map_elements(parse_size_b, return_dtype=pl.Float64)
    if "student_size_b" in df.columns:
        return df.with_columns(pl.col("student_size_b").cast(pl.Float64).fill_null(parsed))
    return df.with_columns(parsed.alias("student_size_b"))


def validate_pair_metric(
    df: pl.DataFrame, value: str, *, extra_methods: Iterable[str] = ()
) -> pl.DataFrame:
    """Check an agreement (``value="agreement"``) or fidelity (``value="fidelity"``) table and return
    it normalised: canonical task names, optional variant columns typed."""
    what = f"{value} table"
    _check_columns(
        df,
        {**PAIR_KEY_COLUMNS, value: pl.Float64},
        what,
        f"the schema is teacher, student, method, task, family, {value} "
        "(optional temperature, noise_sigma, teacher_kind)",
    )
    df = _cast(df, {**PAIR_KEY_COLUMNS, value: pl.Float64, **OPTIONAL_VARIANT_COLUMNS}, what)
    if df.height == 0:
        raise KdlensError(f"{what} has no rows")
    _no_nulls(df, ("teacher", "student", "method", "task", "family"), what)
    _check_finite(df, value, what)
    _check_methods(df, (*KNOWN_METHODS, PAIR_METRIC_KD_METHOD, *extra_methods), what)
    df = df.with_columns(pl.col("task").map_elements(canonical_task, return_dtype=pl.String))
    if "noise_sigma" in df.columns:
        df = df.with_columns(pl.col("noise_sigma").fill_null(0.0))
    key = ["family", "teacher", "student", "method", "task"] + [
        c for c in OPTIONAL_VARIANT_COLUMNS if c in df.columns
    ]
    _check_duplicates(df, key, what)
    return df
