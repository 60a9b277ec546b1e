"""Write the report: ``report.md`` (figures linked from ``figures/``), a self-contained
``report.html`` (the same content, PNGs embedded as base64), and the analysis tables as CSV.

The report is a list of blocks (headings, paragraphs, lists, tables, figures) rendered twice, so the
Markdown and the HTML say the same thing. Figures and tables the results cannot support are listed
under "Excluded" with the reason. All files are written atomically.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from kdlens.io import output_set, write_table_atomic, write_text_atomic
from kdlens.report import figures as figs
from kdlens.report.error_tables import MAX_COMPARISON_ROWS, error_tables
from kdlens.report.tables import (
    Table,
    contrasts_table,
    estimates_table,
    findings_table,
    frame_table,
    hypothesis_table,
    plural,
    pooling_note,
    scores_table,
)
from kdlens.stats.poster import poster_differences
from kdlens.stats.schema import AVERAGE_TASK, family_order


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class FigureBlock:
    path: Path
    caption: str


Block = Heading | Paragraph | Bullets | Table | FigureBlock


def _curve_table(curves: pl.DataFrame, column: str, label: str, index: list[str], title: str,
                 unit: str) -> Table | None:
    """One row per curve of an ablation (family Average), one column per value of ``column``."""
    runs = curves.filter(pl.col("task") == AVERAGE_TASK)
    if not runs.height:
        return None
    wide = runs.with_columns(pl.format(f"{label}={{}}", pl.col(column).round(2)).alias(label)).pivot(
        on=label, index=index, values="score"
    )
    return frame_table(wide, title, [f"{unit}; n = {runs.height} runs in {wide.height} curves."],
                       percent=tuple(c for c in wide.columns if c.startswith(f"{label}=")))  # fmt: skip


def _ablation_tables(analysis) -> tuple[list[Table], list[str]]:
    tables, excluded = [], []
    unit = "unit: one run (teacher, student, method, temperature, noise), family Average"
    run_key = ["family", "teacher", "student", "method"]

    temp = _curve_table(analysis.temperature, "temperature", "T", run_key,
                        "Temperature ablation: Average score (%) by T", unit)
    if temp is not None:
        tables.append(temp)
    else:
        excluded.append("Temperature ablation table: no (teacher, student, method) was run at two or more temperatures.")

    noise = _curve_table(analysis.noise, "noise_sigma", "sigma", run_key + ["temperature"],
                         "Teacher-noise ablation: Average score (%) by sigma", unit)
    if noise is not None:
        tables.append(noise)
    else:
        excluded.append("Teacher-noise ablation table: no run used a noisy teacher (sigma > 0) next to a sigma = 0 run.")

    kind = analysis.teacher_kind.filter(pl.col("task") == AVERAGE_TASK)
    if kind.height:
        tables.append(frame_table(
            kind.drop("task"), "Task-unaware minus task-aware teacher (Average, points)",
            [f"unit: a run with a task-unaware (base) teacher and its task-aware twin (same teacher model, "
             f"student, method, T, sigma); n = {kind.height} pairs of runs. "
             f"Mean delta {kind['delta'].mean():.2f}, range {kind['delta'].min():.2f} to {kind['delta'].max():.2f}."],
            percent=("task_aware_score", "task_unaware_score", "delta")))  # fmt: skip
    else:
        excluded.append("Teacher-kind ablation table: no task-unaware teacher run has a task-aware twin.")

    best = analysis.best_teacher
    if best.height:
        tables.append(frame_table(best, "Best teacher per student (Average)",
                                  [f"unit: a student; candidates are its units (teacher, method, max over T); n = {best.height} students."],
                                  percent=("score", "sft_score", "improvement")))  # fmt: skip
    gain = analysis.gain_by_size
    if gain.height:
        tables.append(frame_table(gain, "KD gain by student size (Average improvement over SFT, points)",
                                  [f"unit: (teacher, student, method) units grouped by student and method ('all' pools methods); "
                                   f"n = {analysis.units.frame.filter(pl.col('task') == AVERAGE_TASK).height} units in {gain.height} rows (n_units per row)."],
                                  percent=("mean_improvement", "min_improvement", "max_improvement")))  # fmt: skip
    return tables, excluded


def _data_summary(analysis) -> list[str]:
    scores = analysis.tables.scores
    tasks = scores.filter(pl.col("task") != AVERAGE_TASK)
    items = []
    for family in family_order(scores["family"].unique().to_list()):
        fam = tasks.filter(pl.col("family") == family)
        units = analysis.units.frame.filter((pl.col("family") == family) & (pl.col("task") == AVERAGE_TASK))
        seeds = fam["seed"].drop_nulls().n_unique() if "seed" in fam.columns else 0
        items.append(
            f"{family}: {plural(fam['student'].n_unique(), 'model')} evaluated, "
            f"{plural(fam['teacher'].drop_nulls().n_unique(), 'teacher')}, "
            f"methods {', '.join(sorted(fam['method'].unique().to_list()))}, "
            f"{plural(fam['task'].n_unique(), 'task')}, {plural(units.height, 'unit')} of analysis with an Average"
            + (f", {plural(seeds, 'seed')} per student-side run" if seeds else ", one run per configuration")
        )
    return items


def build_blocks(analysis, figure_dir: Path) -> list[Block]:
    """The report as blocks; draws the figures into ``figure_dir``."""
    from kdlens import __version__

    blocks: list[Block] = [
        Heading(1, "kdlens report"),
        Paragraph(
            f"Source: {analysis.tables.source}. kdlens {__version__}. Bootstrap: {analysis.bootstrap_resamples} "
            f"resamples, seed {analysis.seed}, {analysis.level:.0%} percentile intervals. Scores are accuracy in %."
        ),
        Heading(2, "Data"),
        Bullets(_data_summary(analysis)),
    ]
    excluded: list[str] = []
    families = family_order(analysis.hypotheses["family"].unique().to_list())
    blocks.append(Heading(2, "Findings"))
    blocks.append(Paragraph(
        "Each finding of the paper, tested on this data. The verdict is the data's: replicated, not "
        "replicated, or inconclusive when the data cannot tell (see the notes for the rule)."))
    for family in families:
        blocks.append(findings_table(analysis.findings, family, analysis.level))
    blocks.append(Heading(2, "Scores"))
    for family in family_order(analysis.scores_summary["family"].unique().to_list()):
        blocks.append(scores_table(analysis.scores_summary, family, analysis.level))
    if analysis.contrasts.height:
        blocks.append(Heading(2, "Paired tests over seeds (ablations)"))
        for family in family_order(analysis.contrasts["family"].unique().to_list()):
            blocks.append(contrasts_table(analysis.contrasts, family, analysis.level))
    scores = analysis.tables.scores
    pooling = pooling_note(set(scores["student"].to_list()) | set(scores["teacher"].drop_nulls().to_list()))
    blocks.append(Heading(2, "Hypothesis tests (paper section 7)"))
    for family in families:
        blocks.append(hypothesis_table(analysis.hypotheses, family, pooling))
        blocks.append(estimates_table(analysis.hypotheses, family, analysis.level,
                                      analysis.bootstrap_resamples, analysis.seed))  # fmt: skip
    for family in families:
        present = set(analysis.hypotheses.filter(pl.col("family") == family)["hypothesis"].to_list())
        if "H4" not in present:
            excluded.append(f"H4 ({family}): no agreement values for this family's units.")
        if "H5" not in present:
            excluded.append(f"H5 ({family}): no fidelity values for this family's units.")

    if analysis.tables.paper_release:
        blocks.append(Heading(2, "The poster versus the released data"))
        blocks.append(Paragraph(
            "Where the paper's poster prints something other than what its released CSVs give; the data side "
            "is computed here from the CSVs, the poster side is quoted as the poster prints it."))
        blocks.append(Bullets(poster_differences(analysis.hypotheses)))

    if analysis.errors is not None and analysis.errors.correlations.height:
        blocks.append(Heading(2, "Error analysis: per-item correctness vs fidelity"))
        blocks.append(Paragraph(
            "As in the paper's error analysis: are the items a student gets right the ones where it writes like its "
            "teacher? Per task, the point-biserial correlation of per-item correctness with sentence BLEU, and "
            "example items from the four quadrants (correct or wrong x fidelity high or low)."))
        blocks += error_tables(analysis.errors)
        if analysis.errors.correlations.height > MAX_COMPARISON_ROWS:
            blocks.append(Paragraph(f"The {analysis.errors.correlations.height} per-comparison rows, each with its "
                                    "interval: tables/error_correlations.csv."))
    elif analysis.errors is not None:
        excluded.append("Error analysis: no item has a correct/wrong score (tasks without an answer rule, e.g. ROUGE-L).")
    else:
        excluded.append("Error analysis: the results have no per-item teacher-student pairs (items table; a study "
                        "writes results/items.parquet, `kdlens compare --error-analysis -o DIR` writes DIR/items.parquet).")

    blocks.append(Heading(2, "Ablations"))
    tables, table_exclusions = _ablation_tables(analysis)
    blocks += tables
    excluded += table_exclusions

    blocks.append(Heading(2, "Figures"))
    for draw in figs.ALL_FIGURES:
        result = draw(analysis, figure_dir / f"{draw.__name__}.png")
        if result.path is None:
            excluded.append(f"Figure {result.name}: {result.excluded_reason}.")
        else:
            blocks.append(FigureBlock(result.path, result.caption))

    blocks.append(Heading(2, "Excluded"))
    blocks.append(Bullets(excluded or ["Nothing: every table and figure could be drawn."]))
    blocks.append(Heading(2, "Left out of the analyses"))
    blocks.append(Bullets(list(analysis.exclusions) or ["Nothing was left out."]))
    return blocks


def render_markdown(blocks: list[Block], root: Path) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text + "\n")
        elif isinstance(block, Paragraph):
            out.append(block.text + "\n")
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items) + "\n")
        elif isinstance(block, Table):
            out.append(block.to_markdown())
        elif isinstance(block, FigureBlock):
            rel = block.path.relative_to(root).as_posix()
            out.append(f"![{block.path.stem}]({rel})\n\n_{block.caption}_\n")
    return "\n".join(out)


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
    "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "figcaption{font-weight:bold}.note{font-size:0.8em;font-style:italic;margin:0.2em 0}"
    "img{max-width:100%}"
)


def render_html(blocks: list[Block]) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>kdlens report</title><style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            out.append(block.to_html())
        elif isinstance(block, FigureBlock):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            out.append(
                f"<figure><img alt='{html.escape(block.path.stem)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


ANALYSIS_TABLES = ("hypotheses", "units", "temperature_curves", "noise_curves", "teacher_kind_deltas",
                   "best_teacher", "gain_by_student_size", "findings", "scores_over_seeds", "paired_contrasts")
ERROR_TABLES = ("error_correlations", "error_examples")  # written when the results have items
REPORT_ENTRIES = ("report.md", "report.html", "figures", "tables")


def _write_tables(analysis, out_dir: Path) -> list[Path]:
    frames = {
        "hypotheses": analysis.hypotheses, "units": analysis.units.frame,
        "temperature_curves": analysis.temperature, "noise_curves": analysis.noise,
        "teacher_kind_deltas": analysis.teacher_kind, "best_teacher": analysis.best_teacher,
        "gain_by_student_size": analysis.gain_by_size, "findings": analysis.findings,
        "scores_over_seeds": analysis.scores_summary, "paired_contrasts": analysis.contrasts,
    }  # fmt: skip
    if analysis.errors is not None:
        frames["error_correlations"] = analysis.errors.correlations
        frames["error_examples"] = analysis.errors.examples
    return [write_table_atomic(frames[name], out_dir / f"{name}.csv") for name in ANALYSIS_TABLES + ERROR_TABLES
            if name in frames]


def write_analysis_tables(analysis, out_dir: Path) -> list[Path]:
    """The analysis frames as CSV (hypotheses, units, ablations), published into ``out_dir`` as one set."""
    with output_set(out_dir, names=[f"{n}.csv" for n in ANALYSIS_TABLES + ERROR_TABLES],
                    what="set of analysis tables") as stage:
        written = _write_tables(analysis, stage)
    return [Path(out_dir) / p.name for p in written]


def write_report(analysis, out_dir: str | Path) -> dict[str, Path]:
    """Write report.md, report.html, figures/*.png and tables/*.csv under ``out_dir``, as one set:
    an interrupted run leaves the previous report whole."""
    root = Path(out_dir)
    with output_set(root, names=REPORT_ENTRIES, what="kdlens report") as stage:
        blocks = build_blocks(analysis, stage / "figures")
        write_text_atomic(stage / "report.md", render_markdown(blocks, stage))
        write_text_atomic(stage / "report.html", render_html(blocks))
        _write_tables(analysis, stage / "tables")
    return {"markdown": root / "report.md", "html": root / "report.html", "figures": root / "figures",
            "tables": root / "tables"}
