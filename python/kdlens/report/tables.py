"""Tables of the report: number formatting, the paper's Table-3 layout, and Markdown/HTML rendering.

Formatting is one set of rules everywhere: percentages and statistics with 2 decimals, p-values
with 3 decimals, or in scientific notation (``3.38e-05``) below 1e-3. A hypothesis cell reads
``statistic (p-value)`` like the paper's Table 3; ``*`` marks p < 0.05 and ``†`` a test that
survives Holm's correction. Every table carries its unit of analysis and n in its notes.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import polars as pl

from kdlens.markdown import markdown_table
from kdlens.stats.schema import AVERAGE_TASK, task_display, task_order
from kdlens.stats.units import UNIT_DESCRIPTION

MISSING = "–"
HYPOTHESIS_ROWS = (
    ("H1", "H1 t (improvement > 0)"),
    ("H1-ANOVA", "H1 ANOVA F (methods)"),
    ("H2", "H2 rho vs teacher SFT score"),
    ("H3", "H3 rho vs student size"),
    ("H3.2", "H3.2 rho vs student SFT score"),
    ("H4", "H4 rho vs agreement"),
    ("H4-EM2", "H4 rho vs agreement, 2nd variant (EM2)"),
    ("H5", "H5 rho vs fidelity"),
    ("H5-BLEU2", "H5 rho vs fidelity, 2nd variant (BLEU2)"),
    ("H5-token", "H5-token rho vs token-level agreement"),
)


def _bad(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_num(x, decimals: int = 2) -> str:
    """A percentage or statistic: fixed 2 decimals; missing values as an en dash."""
    return MISSING if _bad(x) else f"{x:.{decimals}f}"


def fmt_p(p) -> str:
    """A p-value: scientific notation below 1e-3, else 3 decimals."""
    if _bad(p):
        return MISSING
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def fmt_cell(statistic, p_value, holm_reject=None) -> str:
    """``statistic (p-value)`` with ``*`` for p < 0.05 and ``†`` for a Holm-surviving test."""
    if _bad(statistic):
        return MISSING
    marks = ("*" if not _bad(p_value) and p_value < 0.05 else "") + ("†" if holm_reject else "")
    return f"{fmt_num(statistic)} ({fmt_p(p_value)}){marks}"


@dataclass
class Table:
    """A rendered table: header cells, rows of cells, and notes (unit of analysis, n, marks)."""

    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = [f"**{self.title}**", "", markdown_table(self.header, self.rows)]
        lines += [""] + [f"_{note}_  " for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in self.rows
        )
        notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in self.notes)
        return (
            f"<figure class='table'><figcaption>{html.escape(self.title)}</figcaption>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}</figure>"
        )


def _n_note(frame: pl.DataFrame) -> str:
    ns = sorted(set(frame["n"].drop_nulls().to_list()))
    if not ns:
        return "n: none"
    return f"n = {ns[0]}" if len(ns) == 1 else f"n between {ns[0]} and {ns[-1]} (per cell; see the CSV)"


def plural(n: int, word: str) -> str:
    """``1 teacher``, ``2 teachers``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def pooling_note(models) -> str:
    """What the units pool, in terms of the data at hand: the model families present, if known."""
    names = {str(m) for m in models if m is not None}
    families = [f for f in ("Qwen", "Llama") if any(f.lower() in n.lower() for n in names)]
    if len(families) > 1:
        return f"{' and '.join(families)} pooled"
    return f"all {plural(len(names), 'model')} of the data pooled"


def hypothesis_table(hypotheses: pl.DataFrame, family: str, pooling: str = "all pairs pooled") -> Table:
    """The paper's Table 3 for one family: rows H1..H5 (group 'all', then per method where the
    hypothesis is also run per method), columns the family's tasks and Average."""
    fam = hypotheses.filter(pl.col("family") == family)
    tasks = task_order(fam["task"].unique().to_list())
    header = ["Test", "Group", *[task_display(t) for t in tasks], "n (Average)"]
    rows, notes = [], []
    for hypothesis, label in HYPOTHESIS_ROWS:
        part = fam.filter(pl.col("hypothesis") == hypothesis)
        if part.height == 0:
            continue
        groups = part["group"].unique(maintain_order=True).to_list()
        for group in groups:
            cells = part.filter(pl.col("group") == group)
            by_task = {r["task"]: r for r in cells.iter_rows(named=True)}
            row = [label, group]
            for task in tasks:
                r = by_task.get(task)
                row.append(MISSING if r is None else fmt_cell(r["statistic"], r["p_exact"], r["holm_reject"]))
            avg = by_task.get(AVERAGE_TASK)
            row.append(str(avg["n"]) if avg else MISSING)
            rows.append(row)
            for r in cells.iter_rows(named=True):
                if r["note"]:
                    notes.append(f"{label}, {group}, {task_display(r['task'])}: {r['note']}")
    notes = [
        f"Unit of analysis: {UNIT_DESCRIPTION}; {pooling}; repeated seeds averaged. {_n_note(fam)}.",
        "Cells: statistic (permutation p-value: exact over all sign flips or orderings for small n, "
        "else Monte Carlo; see tables/hypotheses.csv for the method, the smallest p each n allows and "
        "the paper's asymptotic p_value); * p < 0.05; † still significant after Holm's correction "
        "over all cells of the same test and family (alpha 0.05). H1 is one-sided (improvement > 0).",
    ] + sorted(set(notes))
    return Table(f"Hypothesis tests, {family} (the paper's Table 3 layout)", header, rows, notes)


def estimates_table(hypotheses: pl.DataFrame, family: str, level: float, resamples: int, seed: int) -> Table:
    """Beyond the paper, family Average only: estimate with bootstrap CI, effect size, Holm p."""
    fam = hypotheses.filter((pl.col("family") == family) & (pl.col("task") == AVERAGE_TASK))
    header = ["Test", "Group", "n", "Estimate", f"{level:.0%} bootstrap CI", "Effect size", "p (Holm)"]
    rows = []
    for hypothesis, label in HYPOTHESIS_ROWS:
        for r in fam.filter(pl.col("hypothesis") == hypothesis).iter_rows(named=True):
            ci = MISSING if _bad(r["ci_low"]) else f"[{fmt_num(r['ci_low'])}, {fmt_num(r['ci_high'])}]"
            effect = MISSING if _bad(r["effect_size"]) else f"{r['effect_size_name']} = {fmt_num(r['effect_size'])}"
            rows.append([label, r["group"], str(r["n"]), fmt_num(r["estimate"]), ci, effect, fmt_p(r["p_holm"])])
    notes = [
        f"Family Average; unit of analysis: {UNIT_DESCRIPTION}. {_n_note(fam)}.",
        "Estimate: mean improvement in points (H1) or Spearman rho; percentile bootstrap over units "
        f"with {resamples} resamples, seed {seed} (each cell seeded from the seed and its label).",
    ]
    return Table(f"Estimates, intervals and effect sizes, {family} Average", header, rows, notes)


def frame_table(
    frame: pl.DataFrame, title: str, notes: list[str], *, percent: tuple[str, ...] = (), decimals: dict | None = None
) -> Table:
    """Any small frame as a table; columns in ``percent`` get 2 decimals, ``task`` gets display names."""
    decimals = decimals or {}
    rows = []
    for rec in frame.iter_rows(named=True):
        row = []
        for name, value in rec.items():
            if name == "task" and isinstance(value, str):
                row.append(task_display(value))
            elif name in percent or name in decimals:
                row.append(fmt_num(value, decimals.get(name, 2)))
            elif isinstance(value, float):
                row.append(MISSING if _bad(value) else f"{value:g}")
            else:
                row.append(MISSING if value is None else str(value))
        rows.append(row)
    return Table(title, list(frame.columns), rows, notes)


def _interval(low, high) -> str:
    return MISSING if _bad(low) or _bad(high) else f"[{fmt_num(low)}, {fmt_num(high)}]"


def findings_table(findings: pl.DataFrame, family: str, level: float) -> Table:
    """The paper's findings with the verdict of this data: estimate, interval, p, n."""
    fam = findings.filter(pl.col("family") == family)
    header = ["Paper finding", "Verdict", "Estimate", f"{level:.0%} interval", "p", "smallest p possible", "n",
              "Measured as"]
    rows = [[r["finding"], r["verdict"], fmt_num(r["estimate"]), _interval(r["ci_low"], r["ci_high"]),
             fmt_p(r["p_value"]), fmt_p(r["min_p"]), str(r["n"]), f"{r['measure']} ({r['evidence']})"]
            for r in fam.iter_rows(named=True)]
    notes = [
        "Unit and n: per row, as 'Measured as' and the n column say (units of analysis for H1/H3/H5, pairs "
        "of runs sharing a seed for the ablations).",
        "replicated: the one-sided permutation test in the paper's direction gives p < 0.05; not replicated: "
        "the test in the opposite direction does; inconclusive: neither (also whenever the smallest possible "
        "p is >= 0.05, i.e. n cannot carry significance). The fidelity finding (no direction): replicated when "
        "rho is not significant and its interval lies inside (-0.5, 0.5), not replicated when it is significant "
        "with |rho| >= 0.5.",
        "Intervals: bootstrap over units (H1, H3, H5) or Student-t over paired differences (ablations). "
        "Paired differences pair runs of the same seed (same data order and sampling stream).",
    ]
    return Table(f"Findings of the paper on this data, {family}", header, rows, notes)


def scores_table(summary: pl.DataFrame, family: str, level: float) -> Table:
    """Every model and configuration (teacher included): n seeds, mean and interval over seeds."""
    fam = summary.filter(pl.col("family") == family)
    header = ["Model", "Params (M)", "Method", "Teacher", "T", "sigma", "Teacher kind", "Seeds", "Mean",
              f"{level:.0%} interval"]
    rows = []
    for r in fam.iter_rows(named=True):
        size = MISSING if _bad(r["student_size_b"]) else f"{r['student_size_b'] * 1e3:.3g}"
        rows.append([r["student"], size, r["method"], r["teacher"] or MISSING,
                     MISSING if _bad(r["temperature"]) else f"{r['temperature']:g}",
                     f"{r['noise_sigma']:g}", r["teacher_kind"] or MISSING, str(r["n_seeds"]), fmt_num(r["mean"]),
                     _interval(r["ci_low"], r["ci_high"])])
    seeds = sorted(set(fam["n_seeds"].to_list()))
    notes = [f"Unit: one run configuration (model, method, teacher, T, sigma, teacher kind); {plural(fam.height, 'row')}. "
             f"Accuracy (%) on the family Average; mean over seeds with a Student-t {level:.0%} interval "
             f"(n = {', '.join(map(str, seeds))} seeds per row; one seed: no interval). BaseModel: the base "
             "model before any fine-tuning; a teacher's SFT row is its task-aware version."]
    return Table(f"Scores of every model and configuration, {family}", header, rows, notes)


def contrasts_table(contrasts: pl.DataFrame, family: str, level: float) -> Table:
    """Each ablation as paired differences over seeds, per student and method and pooled."""
    fam = contrasts.filter(pl.col("family") == family)
    header = ["Contrast", "Student", "Method", "Pairs", "Mean diff", f"{level:.0%} interval", "p (two-sided)",
              "p (>0)", "p (<0)", "smallest p"]
    rows = [[r["contrast"], r["student"], r["method"], str(r["n_pairs"]), fmt_num(r["mean_diff"]),
             _interval(r["ci_low"], r["ci_high"]), fmt_p(r["p_two_sided"]), fmt_p(r["p_greater"]),
             fmt_p(r["p_less"]), fmt_p(r["min_p"])] for r in fam.iter_rows(named=True)]
    notes = [f"Unit: a pair of runs that differ only in the contrasted factor and share a seed; n = the Pairs "
             f"column ({plural(fam.height, 'row')}). Differences in points of the family Average (agreement: in points of agreement with the teacher), "
             "one pair per seed; 'all' pools methods (and students). p: sign-flip permutation test, exact "
             "for up to 16 pairs; 'smallest p' is the least p-value the number of pairs allows (one-sided)."]
    return Table(f"Paired tests over seeds, {family}", header, rows, notes)
