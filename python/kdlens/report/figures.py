"""The report's figures (matplotlib, Agg backend, PNG), one function each: one per finding of the
paper (KD vs SFT, the gain by student size, temperature, noise, teacher kind, agreement, fidelity),
with error bars from seeds where the runs were repeated and student sizes in millions of parameters.

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
from kdlens.stats.schema import AVERAGE_TASK, family_order

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


def _yerr(frame: pl.DataFrame, mean: str, low: str, high: str) -> np.ndarray:
    """Error bars (2, n) from an interval; 0 where a row has none (one seed)."""
    m = frame[mean].to_numpy().astype(float)
    lo = np.nan_to_num(m - frame[low].fill_null(np.nan).to_numpy().astype(float), nan=0.0)
    hi = np.nan_to_num(frame[high].fill_null(np.nan).to_numpy().astype(float) - m, nan=0.0)
    return np.vstack([lo, hi])


def _size_axis(ax, sizes_m) -> None:
    """Log x axis in millions of parameters, ticked at the sizes present, labelled readably."""
    sizes = sorted({float(s) for s in sizes_m if s is not None and s > 0})
    if not sizes:
        return
    if sizes[-1] / sizes[0] > 3:
        ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s:.3g}M" for s in sizes], rotation=30, ha="right")
    ax.minorticks_off()
    ax.set_xlabel("student size (millions of parameters)")


def _seed_note(summary: pl.DataFrame) -> str:
    seeds = sorted(set(summary["n_seeds"].to_list())) if summary.height else []
    if not seeds or seeds == [1]:
        return "One run per configuration: no error bars."
    return (f"Points are means over {', '.join(map(str, seeds))} seeds; error bars are 95% Student-t intervals "
            "over seeds.")


def _main_runs(summary: pl.DataFrame) -> pl.DataFrame:
    return summary.filter(~pl.col("method").is_in(["SFT", "BaseModel"]) & (pl.col("teacher_kind") == "task_aware")
                          & (pl.col("noise_sigma") == 0.0) & (pl.col("temperature").fill_null(1.0) == 1.0))


def kd_vs_sft(analysis, path: Path) -> FigureResult:
    """Finding: KD beats SFT. Score of SFT and of each KD method (main runs) per student size."""
    name = "kd_vs_sft"
    summary = analysis.scores_summary.filter(pl.col("student_size_b").is_not_null())
    sft = summary.filter(pl.col("method") == "SFT")
    kd = _main_runs(summary)
    students = set(kd["student"].to_list())
    sft = sft.filter(pl.col("student").is_in(list(students)))
    if kd.height == 0 or sft.height == 0:
        return FigureResult(name, None, excluded_reason="no student has both SFT and main KD runs with a known size")
    families = family_order(kd["family"].unique().to_list())
    fig, axes = _panels(len(families), width=6.0)
    seen: dict = {}
    for ax, family in zip(axes, families):
        frames = [sft.filter(pl.col("family") == family)] + [
            kd.filter((pl.col("family") == family) & (pl.col("method") == m))
            for m in sorted(kd.filter(pl.col("family") == family)["method"].unique().to_list())]
        for k, part in enumerate(f for f in frames if f.height):
            part = part.group_by(["student", "method"], maintain_order=True).agg(pl.all().first()).sort(["student_size_b", "student"])
            method = part["method"][0]
            x = part["student_size_b"].to_numpy() * 1e3 * (1 + 0.04 * (k - 1.5))  # dodge
            ax.errorbar(x, part["mean"], yerr=_yerr(part, "mean", "ci_low", "ci_high"), marker="o", capsize=3,
                        color=_color(method, seen), label=method, linestyle="-" if method != "SFT" else "--")
        _size_axis(ax, (sft.filter(pl.col("family") == family)["student_size_b"] * 1e3).to_list())
        ax.set_ylabel("accuracy (%, Average)")
        ax.set_title(f"{family}: KD (T=1, task-aware) vs SFT")
        ax.legend(fontsize=8)
    _save(fig, path)
    return FigureResult(name, path,
                        "Finding 'KD beats SFT': accuracy of each student after SFT (dashed) and after each KD "
                        "method's main run (T = 1, no noise, task-aware teacher), by student size. "
                        f"{_seed_note(summary)} Data: {analysis.tables.source}.")


def gain_vs_student_size(analysis, path: Path) -> FigureResult:
    """Finding: the KD gain shrinks with student size. KD - SFT per student and method, paired by seed."""
    name = "gain_vs_student_size"
    gains = analysis.contrasts.filter((pl.col("contrast") == "KD - SFT") & (pl.col("student") != "all"))
    sizes = analysis.scores_summary.filter(pl.col("student_size_b").is_not_null()).group_by(["family", "student"], maintain_order=True).agg(
        pl.col("student_size_b").first())
    gains = gains.join(sizes, on=["family", "student"], how="inner")
    source = "paired differences over seeds"
    if gains.height == 0:  # no seeds paired (e.g. one run per configuration): the units themselves
        units = analysis.units.frame.filter((pl.col("task") == AVERAGE_TASK) & pl.col("student_size_b").is_not_null())
        if units.height == 0:
            return FigureResult(name, None, excluded_reason="no unit has a student size (name without a size and no student_size_b column)")
        gains = units.group_by(["family", "student", "method"], maintain_order=True).agg(
            pl.col("improvement").mean().alias("mean_diff"), pl.col("student_size_b").first(),
            pl.col("improvement").min().alias("ci_low"), pl.col("improvement").max().alias("ci_high"))
        source = "units of analysis (bars: range over teachers and temperatures)"
    families = family_order(gains["family"].unique().to_list())
    fig, axes = _panels(len(families), width=6.0)
    seen: dict = {}
    h3 = analysis.hypotheses.filter((pl.col("hypothesis") == "H3") & (pl.col("task") == AVERAGE_TASK)
                                    & (pl.col("group") == "all"))
    from kdlens.report.tables import fmt_num, fmt_p

    for ax, family in zip(axes, families):
        fam = gains.filter(pl.col("family") == family)
        methods = sorted(fam["method"].unique().to_list(), key=lambda m: (m == "all", m))
        for k, method in enumerate(methods):
            part = fam.filter(pl.col("method") == method).sort("student_size_b")
            x = part["student_size_b"].to_numpy() * 1e3 * (1 + 0.04 * (k - len(methods) / 2))
            ax.errorbar(x, part["mean_diff"], yerr=_yerr(part, "mean_diff", "ci_low", "ci_high"), marker="o",
                        capsize=3, color="black" if method == "all" else _color(method, seen),
                        linewidth=2.5 if method == "all" else 1.2, label="methods pooled" if method == "all" else method)
        _size_axis(ax, (fam["student_size_b"] * 1e3).to_list())
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel("KD - SFT (points, Average)")
        row = h3.filter(pl.col("family") == family)
        title = family
        if row.height and row["statistic"][0] is not None:
            title += f": H3 rho = {fmt_num(row['statistic'][0])}, p = {fmt_p(row['p_exact'][0])}, n = {row['n'][0]}"
        ax.set_title(title)
        ax.legend(fontsize=8)
    _save(fig, path)
    return FigureResult(
        name, path,
        "Finding 'the KD gain shrinks with student size': the gain of each KD method's main run over the "
        f"student's SFT, by student size ({source}); error bars are 95% intervals. The title gives H3 "
        f"(Spearman rho over units, permutation p). Data: {analysis.tables.source}.")


def agreement_like_with_like(analysis, path: Path) -> FigureResult:
    """Finding: KD raises agreement. SFT and each method's main runs; the ablation runs on their own."""
    name = "agreement_like_with_like"
    agreement = analysis.tables.agreement
    if agreement is None or agreement.height == 0:
        return FigureResult(name, None, excluded_reason="the results have no agreement table")
    a = agreement.filter(pl.col("task") != AVERAGE_TASK)
    for col, dtype, default in (("temperature", pl.Float64, None), ("noise_sigma", pl.Float64, 0.0),
                                ("teacher_kind", pl.String, None), ("seed", pl.Int64, None)):
        if col not in a.columns:
            a = a.with_columns(pl.lit(default, dtype=dtype).alias(col))
    # one value per run (seed): the mean over the family's tasks
    a = a.group_by(["family", "teacher", "student", "method", "temperature", "noise_sigma", "teacher_kind", "seed"],
                   maintain_order=True).agg(pl.col("agreement").mean())
    main = (pl.col("method") == "SFT") | (
        (pl.col("teacher_kind").is_null() | (pl.col("teacher_kind") == "task_aware"))
        & (pl.col("noise_sigma") == 0.0) & (pl.col("temperature").fill_null(1.0) == 1.0))

    def label(r) -> str:
        if r["method"] == "SFT":
            return "SFT"
        if r["teacher_kind"] == "task_unaware":
            return f"{r['method']} task-unaware"
        if r["noise_sigma"]:
            return f"{r['method']} sigma={r['noise_sigma']:g}"
        return r["method"] if r["temperature"] is None else f"{r['method']} T={r['temperature']:g}"

    panels = [("main runs (T=1, no noise, task-aware) and SFT", a.filter(main)),
              ("ablation runs (each against the teacher it learned from)", a.filter(~main))]
    panels = [(t, f) for t, f in panels if f.height]
    fig, axes = _panels(len(panels), width=6.5)
    seen: dict = {}
    for ax, (title, frame) in zip(axes, panels):
        frame = frame.with_columns(pl.struct(["method", "teacher_kind", "noise_sigma", "temperature"]).map_elements(
            label, return_dtype=pl.String).alias("label"))
        stats_ = frame.group_by("label", maintain_order=True).agg(pl.col("agreement").mean().alias("mean"),
                                             pl.col("agreement").std().alias("sd"), pl.len().alias("n"),
                                             pl.col("method").first())
        stats_ = stats_.sort("label", descending=False)
        order = sorted(stats_["label"].to_list(), key=lambda s: (s != "SFT", s))
        stats_ = stats_.join(pl.DataFrame({"label": order, "_o": range(len(order))}), on="label").sort("_o")
        from scipy import stats as sps

        half = [float(sps.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 and sd is not None else 0.0
                for n, sd in zip(stats_["n"], stats_["sd"])]
        ax.bar(range(stats_.height), stats_["mean"], yerr=half, capsize=3,
               color=[_color(m, seen) for m in stats_["method"]])
        ax.set_xticks(range(stats_.height), [f"{lab}\n(n={n})" for lab, n in zip(stats_["label"], stats_["n"])],
                      rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("agreement with its teacher (%)")
        ax.set_ylim(0, 100)  # intervals over few runs can reach past the scale
        ax.set_title(title, fontsize=9)
    _save(fig, path)
    return FigureResult(
        name, path,
        "Finding 'KD raises agreement': % of test items whose extracted answer equals the teacher's, "
        "compared like with like. Left: SFT students and each method's main runs. Right: the ablation "
        "runs (other temperatures, noisy teachers, the task-unaware teacher, which is the agreement with "
        "the base teacher). Bars: mean over runs (students x seeds, n in the labels); error bars: 95% "
        f"t intervals over those runs. Data: the agreement table of {analysis.tables.source}.")


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

            ax.set_title(f"{family}: rho = {fmt_num(row['statistic'][0])}, p = {fmt_p(row['p_exact'][0])}, n = {row['n'][0]}")
        else:
            ax.set_title(family)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("fidelity (BLEU, teacher vs student rationale, task mean)")
        ax.set_ylabel("improvement over SFT (points, Average)")
        ax.legend(fontsize=8)
    _save(fig, path)
    return FigureResult(
        name, path,
        "Finding 'fidelity correlates only weakly with the gain': each point is a unit (seeds averaged); x is the pair's KD fidelity averaged over "
        "the family's tasks, y its Average improvement over SFT; the title gives Spearman's rho (H5, "
        "permutation p). "
        f"Data: the fidelity table of {analysis.tables.source}.",
    )  # fmt: skip


def _summary_curves(analysis, runs: pl.DataFrame, x: str, path: Path, xlabel: str) -> None:
    """Mean score with seed intervals vs ``x``, one line per (teacher, student, method[, T])."""
    families = family_order(runs["family"].unique().to_list())
    fig, axes = _panels(len(families))
    seen: dict = {}
    key = ["teacher", "student", "method"] + (["temperature"] if x == "noise_sigma" else [])
    for ax, family in zip(axes, families):
        fam = runs.filter(pl.col("family") == family)
        for group_key, part in fam.group_by(key, maintain_order=True):
            part = part.sort(x)
            method = group_key[2]
            ax.errorbar(part[x], part["mean"], yerr=_yerr(part, "mean", "ci_low", "ci_high"), marker="o",
                        capsize=3, color=_color(method, seen), alpha=0.8, label=f"{method} {group_key[1]}")
        ax.set_xticks(sorted(set(fam[x].to_list())))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%, Average)")
        ax.set_title(family)
        ax.legend(fontsize=7)
    _save(fig, path)


def _varied(summary: pl.DataFrame, x: str, where: pl.Expr) -> pl.DataFrame:
    key = ["family", "teacher", "student", "method"] + (["temperature"] if x == "noise_sigma" else [])
    runs = summary.filter(where & ~pl.col("method").is_in(["SFT", "BaseModel"]))
    varied = runs.group_by(key, maintain_order=True).agg(pl.col(x).n_unique().alias("_n")).filter(pl.col("_n") >= 2)
    return runs.join(varied.select(key), on=key, how="semi", nulls_equal=True)


def temperature_curves(analysis, path: Path) -> FigureResult:
    """Findings: a moderate T is best; T=5 hurts."""
    name = "temperature_curves"
    runs = _varied(analysis.scores_summary, "temperature",
                   (pl.col("teacher_kind") == "task_aware") & (pl.col("noise_sigma") == 0.0)
                   & pl.col("temperature").is_not_null())
    if runs.height == 0:
        return FigureResult(name, None, excluded_reason="no (teacher, student, method) was run at two or more temperatures with the family's full task set")
    _summary_curves(analysis, runs, "temperature", path, "temperature T")
    return FigureResult(
        name, path,
        "Findings 'a moderate T is best' and 'T=5 hurts': family-Average accuracy vs T, one line per "
        "(teacher, student, method) with a task-aware, noise-free teacher. "
        f"{_seed_note(runs)} Data: {analysis.tables.source}.",
    )


def noise_curves(analysis, path: Path) -> FigureResult:
    """Finding: sigma = 5 collapses the student."""
    name = "noise_curves"
    runs = _varied(analysis.scores_summary, "noise_sigma", pl.col("teacher_kind") == "task_aware")
    if runs.height == 0:
        return FigureResult(name, None, excluded_reason="no run used a noisy teacher (sigma > 0) next to a sigma = 0 run")
    _summary_curves(analysis, runs, "noise_sigma", path, "teacher-logit noise sigma")
    return FigureResult(
        name, path,
        "Finding 'sigma = 5 collapses the student': family-Average accuracy vs the sigma of Gaussian noise "
        "added to the teacher logits, one line per (teacher, student, method, T) with a task-aware teacher. "
        f"{_seed_note(runs)} Data: {analysis.tables.source}.",
    )


def teacher_kind(analysis, path: Path) -> FigureResult:
    """Finding: a task-unaware teacher hurts."""
    name = "teacher_kind"
    summary = analysis.scores_summary.filter(~pl.col("method").is_in(["SFT", "BaseModel"]))
    key = ["family", "teacher", "student", "method", "temperature", "noise_sigma"]
    unaware = summary.filter(pl.col("teacher_kind") == "task_unaware")
    pairs = summary.filter(pl.col("teacher_kind") == "task_aware").join(
        unaware.select(key), on=key, how="semi", nulls_equal=True)
    if unaware.height == 0 or pairs.height == 0:
        return FigureResult(name, None, excluded_reason="no task-unaware teacher run has a task-aware twin")
    both = pl.concat([pairs, unaware.join(pairs.select(key), on=key, how="semi", nulls_equal=True)])
    families = family_order(both["family"].unique().to_list())
    fig, axes = _panels(len(families), width=6.0)
    for ax, family in zip(axes, families):
        fam = both.filter(pl.col("family") == family).with_columns(
            pl.format("{} {} T={}", "student", "method", pl.col("temperature").round(1)).alias("run"))
        runs = sorted(fam["run"].unique().to_list())
        for k, (kind, color) in enumerate((("task_aware", "#1f77b4"), ("task_unaware", "#ff7f0e"))):
            part = fam.filter(pl.col("teacher_kind") == kind)
            part = part.join(pl.DataFrame({"run": runs, "_o": range(len(runs))}), on="run").sort("_o")
            ax.bar(part["_o"].to_numpy() + (k - 0.5) * 0.4, part["mean"], 0.4,
                   yerr=_yerr(part, "mean", "ci_low", "ci_high"), capsize=3, color=color,
                   label=kind.replace("_", "-") + " teacher")
        ax.set_xticks(range(len(runs)), runs, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("accuracy (%, Average)")
        ax.set_title(family)
        ax.legend(fontsize=8)
    _save(fig, path)
    return FigureResult(
        name, path,
        "Finding 'a task-unaware teacher hurts': each KD run with the task-aware teacher (the teacher after "
        "task fine-tuning) next to its twin with the task-unaware teacher (the teacher's base model). "
        f"{_seed_note(both)} Data: {analysis.tables.source}.")


def teacher_student_heatmap(analysis, path: Path) -> FigureResult:
    name = "teacher_student_heatmap"
    units = analysis.units.frame.filter(pl.col("task") == AVERAGE_TASK)
    if units.height == 0:
        return FigureResult(name, None, excluded_reason="no unit has an Average score")
    best = units.group_by(["family", "teacher", "student"], maintain_order=True).agg(
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


# One figure per finding of the paper, in the order of the findings table, then the overview.
ALL_FIGURES = (
    kd_vs_sft,
    gain_vs_student_size,
    temperature_curves,
    noise_curves,
    teacher_kind,
    agreement_like_with_like,
    fidelity_vs_gain,
    teacher_student_heatmap,
)
