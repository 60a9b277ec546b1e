"""Load a study's results and run every analysis at once (what ``kdlens stats`` and ``kdlens report``
call, and what the study runner calls after its grid).

``load_results(path)`` reads kdlens's own tidy tables: a folder holding ``scores``, and optionally
``agreement``, ``fidelity`` and ``items`` (per-item teacher-student pairs), each as
.parquet/.csv/.jsonl, or a single scores file.
``analyse(tables)`` returns an :class:`Analysis` with the unit table, H1-H5, the ablations, the
scores over seeds, the paired tests over seeds, the paper's findings with verdicts, the error
analysis (when the tables have items) and every exclusion as a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from kdlens.errors import KdlensError
from kdlens.io import TABLE_SUFFIXES, read_table
from kdlens.stats import ablations
from kdlens.stats.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES
from kdlens.stats.error_analysis import DEFAULT_EXAMPLES, ErrorAnalysis, error_analysis
from kdlens.stats.findings import paper_findings
from kdlens.stats.hypotheses import all_hypotheses
from kdlens.stats.paper_results import ResultTables
from kdlens.stats.schema import validate_pair_metric, validate_results
from kdlens.stats.seeds import paired_contrasts, seed_summary
from kdlens.stats.units import Units, build_units


@dataclass(frozen=True)
class Analysis:
    """Everything the report shows. ``exclusions`` are sentences saying what was left out and why."""

    tables: ResultTables
    units: Units
    hypotheses: pl.DataFrame
    temperature: pl.DataFrame
    noise: pl.DataFrame
    teacher_kind: pl.DataFrame
    best_teacher: pl.DataFrame
    gain_by_size: pl.DataFrame
    scores_summary: pl.DataFrame  # every model and configuration: mean and t interval over seeds
    contrasts: pl.DataFrame  # each ablation as a paired test over seeds
    findings: pl.DataFrame  # the paper's findings: replicated / not replicated / inconclusive
    bootstrap_resamples: int
    seed: int
    level: float
    exclusions: tuple[str, ...] = field(default_factory=tuple)
    errors: ErrorAnalysis | None = None  # per-item correctness vs fidelity, when the tables have items


def _find(folder: Path, stem: str) -> Path | None:
    found = [folder / f"{stem}{suffix}" for suffix in TABLE_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        raise KdlensError(f"{folder}: both {found[0].name} and {found[1].name}; keep one {stem} table")
    return found[0] if found else None


def load_results(
    path: str | Path,
    *,
    agreement: str | Path | None = None,
    fidelity: str | Path | None = None,
    items: str | Path | None = None,
    extra_methods=(),
) -> ResultTables:
    """Read kdlens tidy tables from a folder (scores.*, agreement.*, fidelity.*, items.*) or a scores file."""
    src = Path(path)
    if src.is_dir():
        scores_path = _find(src, "scores")
        if scores_path is None:
            raise KdlensError(
                f"{src}: no scores table; expected scores.parquet (or .csv/.jsonl) in the folder, "
                "or pass the scores file itself"
            )
        agreement = agreement or _find(src, "agreement")
        fidelity = fidelity or _find(src, "fidelity")
        items = items or _find(src, "items")
    elif src.is_file():
        scores_path = src
    else:
        raise KdlensError(f"{src}: no such file or folder")
    scores = validate_results(read_table(scores_path), extra_methods=extra_methods)
    agree = validate_pair_metric(read_table(agreement), "agreement", extra_methods=extra_methods) if agreement else None
    fid = validate_pair_metric(read_table(fidelity), "fidelity", extra_methods=extra_methods) if fidelity else None
    return ResultTables(scores=scores, agreement=agree, fidelity=fid, items=read_table(items) if items else None,
                        source=f"kdlens results ({src})")


def analyse(
    tables: ResultTables,
    *,
    bootstrap: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    examples: int = DEFAULT_EXAMPLES,
    extra_methods=(),
) -> Analysis:
    """Units, H1-H5 and the ablations for one study. Bad input that the analyses can work around
    (a student without SFT, missing tasks) becomes an exclusion sentence; anything else raises."""
    if bootstrap < 0:
        raise KdlensError(f"bootstrap resamples must be >= 0, got {bootstrap}")
    if not 0 < level < 1:
        raise KdlensError(f"confidence level must be in (0, 1), got {level}")
    units = build_units(tables.scores, tables.agreement, tables.fidelity, agreement2=tables.agreement2,
                        fidelity2=tables.fidelity2, extra_methods=extra_methods)
    if units.frame.height == 0:
        raise KdlensError("no unit of analysis is left: " + "; ".join(units.exclusions))
    hypotheses = all_hypotheses(units, bootstrap=bootstrap, seed=seed, level=level)
    scores = tables.scores
    contrasts = paired_contrasts(scores, tables.agreement, level=level, seed=seed)
    errors = error_analysis(tables.items, level=level, examples=examples) if tables.items is not None else None
    return Analysis(
        tables=tables,
        units=units,
        hypotheses=hypotheses,
        temperature=ablations.temperature_curves(scores),
        noise=ablations.noise_curves(scores),
        teacher_kind=ablations.teacher_kind_deltas(scores),
        best_teacher=ablations.best_teacher_per_student(units),
        gain_by_size=ablations.kd_gain_by_student_size(units),
        scores_summary=seed_summary(scores, level),
        contrasts=contrasts,
        findings=paper_findings(hypotheses, contrasts),
        bootstrap_resamples=bootstrap,
        seed=seed,
        level=level,
        exclusions=tuple(tables.notes) + units.exclusions + (errors.exclusions if errors else ()),
        errors=errors,
    )
