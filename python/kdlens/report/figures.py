"""The report's figures (matplotlib, Agg backend, PNG), one function each.

Every function takes an :class:`~kdlens.stats.analysis.Analysis` and a PNG path and returns a
:class:`FigureResult`: the caption (what it shows, from which data) when it drew the figure, or
the reason it could not (the report states it instead of dropping the figure silently).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from kdlens.io import atomic_path
from kdlens.stats.schema import AVERAGE_TASK, family_order, task_display, task_order

METHOD_COLORS = {"SFT": "#7f7f7f", "KD": "#1f77b4", "SeqKD": "#1f77b4", "RevKD": "#d62728", "GKD": "#2ca02c"}
_FALLBACK = ["#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#ff7f0e"]


@dataclass(frozen=True)
class FigureResult:
    name: str
    path: Path | None
    caption: str | None = None
    excluded_reason: str | None = None


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _color(method: str, seen: dict) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return seen.setdefault(method, _FALLBACK[len(seen) % len(_FALLBACK)])


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def _panels(n: int, width: float = 5.0, height: float = 3.6):
    plt = _plt()
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def gain_vs_student_size(analysis, path: Path) -> FigureResult:
    name = "gain_vs_student_size"
    units = analysis.units.frame.filter(
        (pl.col("task") == AVERAGE_TASK) & pl.col("student_size_b").is_not_null()
    )
    if units.height == 0:
        return FigureResult(name, None, excluded_reason="no unit has a student size (name without a size and no student_size_b column)")
    families = family_order(units["family"].unique().to_list())
    fig, axes = _panels(len(families))
    seen: dict = {}
    for ax, family in zip(axes, families):
        fam = units.filter(pl.col("family") == family)
        for method in sorted(fam["method"].unique().to_list()):
            part = fam.filter(pl.col("method") == method)
            color = _color(method, seen)
            ax.scatter(part["student_size_b"], part["improvement"], color=color, alpha=0.7, label=method)
            means = part.group_by("student_size_b").agg(pl.col("improvement").mean()).sort("student_size_b")
            ax.plot(means["student_size_b"], means["improvement"], color=color, alpha=0.9)
        ax.axhline(0.0, color="black", linewidth=0.8)
        if fam["student_size_b"].min() > 0 and fam["student_size_b"].max() / fam["student_size_b"].min() > 5:
            ax.set_xscale("log")
        ax.set_xlabel("student size (billions of parameters)")
        ax.set_ylabel("improvement over SFT (points, Average)")
        ax.set_title(family)
        ax.legend(fontsize=8)
    _save(fig, path)
    return FigureResult(
        name, path,
        "KD gain vs student size: each point is a unit (teacher, student, method), its family-Average "
        "score (max over temperatures) minus the student's SFT Average; lines join the per-size means "
        f"of each method. Data: {analysis.tables.source}.",
    )  # fmt: skip


def agreement_per_task(analysis, path: Path) -> FigureResult:
    name = "agreement_per_task"
    agreement = analysis.tables.agreement
    if agreement is None or agreement.height == 0:
        return FigureResult(name, None, excluded_reason="the results have no agreement table")
    agreement = agreement.filter(pl.col("task") != AVERAGE_TASK)
    families = family_order(agreement["family"].unique().to_list())
    fig, axes = _panels(len(families), width=6.0)
    seen: dict = {}
    for ax, family in zip(axes, families):
        fam = agreement.filter(pl.col("family") == family)
        tasks = task_order(fam["task"].unique().to_list())
        methods = sorted(fam["method"].unique().to_list(), key=lambda m: (m != "SFT", m))
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            means = dict(
                fam.filter(pl.col("method") == method).group_by("task").agg(pl.col("agreement").mean()).iter_rows()
            )
            heights = [means.get(t, np.nan) for t in tasks]
            ax.bar(np.arange(len(tasks)) + i * width, heights, width, label=method, color=_color(method, seen))
        ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2)
        ax.set_xticklabels([task_display(t) for t in tasks], rotation=30, ha="right")
        ax.set_ylabel("agreement with the teacher (%)")
        ax.set_title(family)
        ax.legend(fontsize=8)
    _save(fig, path)
    return FigureResult(
        name, path,
        "Teacher-student answer agreement per task: mean over (teacher, student) pairs of the % of test "
        "items whose extracted answers match, for the SFT student and the KD student(s). "
        f"Data: the agreement table of {analysis.tables.source}.",
    )  # fmt: skip


def fidelity_vs_gain(analysis, path: Path) -> FigureResult:
    name = "fidelity_vs_gain"
    units = analysis.units.frame.filter((pl.col("task") == AVERAGE_TASK) & pl.col("fidelity").is_not_null())
    if units.height == 0:
        return FigureResult(name, None, excluded_reason="the results have no fidelity table (or none matching the units)")
    families = family_order(units["family"].unique().to_list())
    fig, axes = _panels(len(families))
    seen: dict = {}
    h5 = analysis.hypotheses.filter(
        (pl.col("hypothesis") == "H5") & (pl.col("task") == AVERAGE_TASK) & (pl.col("group") == "all")
    )
    for ax, family in zip(axes, families):
        fam = units.filter(pl.col("family") == family)
        for method in sorted(fam["method"].unique().to_list()):
            part = fam.filter(pl.col("method") == method)
            ax.scatter(part["fidelity"], part["improvement"], label=method, color=_color(method, seen), alpha=0.75)
        row = h5.filter(pl.col("family") == family)
        if row.height and row["statistic"][0] is not None:
            from kdlens.report.tables import fmt_num, fmt_p

            ax.set_title(f"{family}: rho = {fmt_num(row['statistic'][0])}, p = {fmt_p(row['p_value'][0])}, n = {row['n'][0]}")
        else:
            ax.set_title(family)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("fidelity (BLEU, teacher vs student rationale, task mean)")
        ax.set_ylabel("improvement over SFT (points, Average)")
        ax.legend(fontsize=8)
    _save(fig, path)
    return FigureResult(
        name, path,
        "Reasoning fidelity vs KD gain: each point is a unit; x is the pair's KD fidelity averaged over "
        "the family's tasks, y its Average improvement over SFT; the title gives Spearman's rho (H5). "
        f"Data: the fidelity table of {analysis.tables.source}.",
    )  # fmt: skip


def _curves(frame: pl.DataFrame, x: str, path: Path, xlabel: str):
    avg = frame.filter(pl.col("task") == AVERAGE_TASK)
    families = family_order(avg["family"].unique().to_list())
    fig, axes = _panels(len(families))
    seen: dict = {}
    key = ["teacher", "student", "method"] + (["temperature"] if x == "noise_sigma" else [])
    for ax, family in zip(axes, families):
        fam = avg.filter(pl.col("family") == family)
        labelled = set()
        for group_key, part in fam.group_by(key, maintain_order=True):
            part = part.sort(x)
            method = group_key[2]
            label = method if method not in labelled else None
            labelled.add(method)
            ax.plot(part[x], part["score"], marker="o", color=_color(method, seen), alpha=0.7, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("score (%, Average)")
        ax.set_title(family)
        ax.legend(fontsize=8)
    _save(fig, path)
    return avg


def temperature_curves(analysis, path: Path) -> FigureResult:
    name = "temperature_curves"
    if analysis.temperature.filter(pl.col("task") == AVERAGE_TASK).height == 0:
        return FigureResult(name, None, excluded_reason="no (teacher, student, method) was run at two or more temperatures with the family's full task set")
    _curves(analysis.temperature, "temperature", path, "temperature T")
    return FigureResult(
        name, path,
        "Temperature ablation: family-Average score vs T, one line per (teacher, student, method) with a "
        f"task-aware, noise-free teacher, coloured by method. Data: {analysis.tables.source}.",
    )


def noise_curves(analysis, path: Path) -> FigureResult:
    name = "noise_curves"
    if analysis.noise.filter(pl.col("task") == AVERAGE_TASK).height == 0:
        return FigureResult(name, None, excluded_reason="no run used a noisy teacher (sigma > 0) next to a sigma = 0 run")
    _curves(analysis.noise, "noise_sigma", path, "teacher-logit noise sigma")
    return FigureResult(
        name, path,
        "Teacher-noise ablation: family-Average score vs the sigma of Gaussian noise added to the teacher "
        "logits, one line per (teacher, student, method, T) with a task-aware teacher. "
        f"Data: {analysis.tables.source}.",
    )


def teacher_student_heatmap(analysis, path: Path) -> FigureResult:
    name = "teacher_student_heatmap"
    units = analysis.units.frame.filter(pl.col("task") == AVERAGE_TASK)
    if units.height == 0:
        return FigureResult(name, None, excluded_reason="no unit has an Average score")
    best = units.group_by(["family", "teacher", "student"]).agg(
        pl.col("improvement").max(), pl.col("student_size_b").first()
    )
    families = family_order(best["family"].unique().to_list())
    fig, axes = _panels(len(families), width=5.5, height=4.2)
    plt = _plt()
    for ax, family in zip(axes, families):
        fam = best.filter(pl.col("family") == family)
        students = fam.sort(["student_size_b", "student"], nulls_last=True)["student"].unique(maintain_order=True).to_list()
        teachers = sorted(fam["teacher"].unique().to_list())
        grid = np.full((len(teachers), len(students)), np.nan)
        for rec in fam.iter_rows(named=True):
            grid[teachers.index(rec["teacher"]), students.index(rec["student"])] = rec["improvement"]
        bound = np.nanmax(np.abs(grid)) or 1.0
        image = ax.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
        for i in range(len(teachers)):
            for j in range(len(students)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(students)), students, rotation=30, ha="right")
        ax.set_yticks(range(len(teachers)), teachers)
        ax.set_xlabel("student")
        ax.set_ylabel("teacher")
        ax.set_title(family)
        plt.colorbar(image, ax=ax, label="best KD improvement (points)")
    _save(fig, path)
    return FigureResult(
        name, path,
        "Teacher x student: the best improvement over SFT (family Average, points) across methods and "
        "temperatures for each pair; blank cells are pairs that were not run. "
        f"Data: {analysis.tables.source}.",
    )


ALL_FIGURES = (
    gain_vs_student_size,
    agreement_per_task,
    fidelity_vs_gain,
    temperature_curves,
    noise_curves,
    teacher_student_heatmap,
)
