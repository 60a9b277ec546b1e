"""Tables of the error analysis (:mod:`kdlens.stats.error_analysis`): per-item correctness vs fidelity.

The same tables go into report.md/report.html (a study, ``kdlens report``) and into
``kdlens compare --error-analysis`` (error_analysis.md): the summary per task and method, the
per-comparison correlations with their intervals (in the report when there are at most
:data:`MAX_COMPARISON_ROWS`; always in tables/error_correlations.csv), and per task the example
items of the four quadrants with the instruction, both outputs and the sentence BLEU. Texts longer
than :data:`TEXT_CHARS` characters are cut with an ellipsis; the CSV of examples holds them whole.
"""

from __future__ import annotations

import polars as pl

from kdlens.report.tables import MISSING, Table, fmt_num, fmt_p, plural
from kdlens.stats.error_analysis import QUADRANTS
from kdlens.stats.schema import task_display, task_order

MAX_COMPARISON_ROWS = 24
TEXT_CHARS = 240


def _short(text, limit: int = TEXT_CHARS) -> str:
    if text is None:
        return MISSING
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _interval(low, high) -> str:
    return MISSING if low is None or high is None else f"[{fmt_num(low)}, {fmt_num(high)}]"


def _definition(errors) -> str:
    return (f"r_pb: point-biserial correlation of the student's per-item correctness (1 correct, 0 wrong, from its own "
            f"evaluation) with the item's fidelity (sentence BLEU of the student output against the teacher output, "
            f"0-100); p: two-sided t test of r_pb (n - 2 df); interval: Fisher z, {errors.level:.0%} "
            "(tanh(atanh(r) -/+ z / sqrt(n - 3))).")


def summary_table(errors) -> Table:
    s = errors.summary
    header = ["Task", "Method", "Comparisons", "Items", "Accuracy (%)", "Mean fidelity", "Mean r_pb", "r_pb range",
              f"{errors.level:.0%} intervals > 0", "intervals < 0"]
    rows = []
    for task in task_order(s["task"].unique().to_list()):
        for r in s.filter(pl.col("task") == task).iter_rows(named=True):
            rng = MISSING if r["min_r_pb"] is None else f"{fmt_num(r['min_r_pb'])} to {fmt_num(r['max_r_pb'])}"
            rows.append([task_display(task), r["method"], str(r["comparisons"]), str(r["items"]),
                         fmt_num(r["mean_accuracy"]), fmt_num(r["mean_fidelity"]), fmt_num(r["mean_r_pb"]), rng,
                         f"{r['ci_above_0']} of {r['with_r_pb']}", f"{r['ci_below_0']} of {r['with_r_pb']}"])
    notes = [
        f"Unit: an item of one comparison (a student run against the teacher it is compared with); r_pb is computed "
        f"per comparison and task over its items, then summarised over the comparisons of each method; "
        f"{plural(errors.correlations.height, 'comparison-task row')}, "
        f"{int(errors.correlations['n'].sum())} items.",
        _definition(errors),
    ]
    return Table("Per-item correctness vs fidelity (point-biserial r), by task and method", header, rows, notes)


def correlations_table(errors) -> Table:
    c = errors.correlations
    header = ["Comparison", "Task", "n", "Accuracy (%)", "Fidelity: correct", "wrong", "r_pb (p)",
              f"{errors.level:.0%} interval", "Quadrants: correct high / low, wrong high / low"]
    rows, notes = [], []
    for r in c.iter_rows(named=True):
        cell = MISSING if r["r_pb"] is None else f"{fmt_num(r['r_pb'])} ({fmt_p(r['p_value'])})"
        rows.append([r["comparison"], task_display(r["task"]), str(r["n"]), fmt_num(r["accuracy"]),
                     fmt_num(r["mean_fidelity_correct"]), fmt_num(r["mean_fidelity_wrong"]), cell,
                     _interval(r["ci_low"], r["ci_high"]),
                     f"{r['correct_high']} / {r['correct_low']}, {r['wrong_high']} / {r['wrong_low']}"])
        if r["note"]:
            notes.append(f"{r['comparison']}, {task_display(r['task'])}: {r['note']}.")
    notes = [f"Unit: an item; n = the items of each comparison and task ({plural(c.height, 'row')}). "
             "Fidelity columns: mean sentence BLEU of the correct and of the wrong items. High fidelity: at or above "
             "the median sentence BLEU of the comparison and task.", _definition(errors)] + notes
    return Table("Per-item correctness vs fidelity, each comparison", header, rows, notes)


def examples_table(errors, task: str) -> Table:
    ex = errors.examples.filter(pl.col("task") == task)
    header = ["Quadrant (items)", "Comparison", "Item", "Sentence BLEU (median)", "Instruction", "Student output",
              "Teacher output"]
    rows = []
    seen = set()
    for r in ex.iter_rows(named=True):
        seen.add(r["quadrant"])
        item = r["id"] if r["sample_seed"] is None else f"{r['id']} (sample seed {r['sample_seed']})"
        rows.append([f"{r['quadrant']} ({r['quadrant_items']})", r["comparison"], item,
                     f"{fmt_num(r['fidelity'])} ({fmt_num(r['median_fidelity'])})", _short(r["instruction"]),
                     _short(r["student_output"]), _short(r["teacher_output"])])
    empty = [q for q in QUADRANTS if q not in seen]
    notes = [
        f"Unit: an item; n = the items of each quadrant (in brackets beside it); up to "
        f"{errors.examples_per_quadrant} shown per quadrant, at evenly spaced ranks of sentence BLEU "
        "within the quadrant (one: its median item), all comparisons of the task pooled. Quadrant: student correct "
        "or wrong x sentence BLEU at/above (high) or below (low) the median of its comparison and task (in brackets). "
        f"Texts cut at {TEXT_CHARS} characters (…); error_examples.csv holds them whole.",
    ]
    if empty:
        notes.append("No item in: " + ", ".join(empty) + ".")
    return Table(f"Error analysis examples, {task_display(task)}", header, rows, notes)


def error_tables(errors) -> list[Table]:
    """The summary, the per-comparison table (when short enough) and each task's examples."""
    tables = [summary_table(errors)]
    if errors.correlations.height <= MAX_COMPARISON_ROWS:
        tables.append(correlations_table(errors))
    for task in task_order(errors.examples["task"].unique().to_list()):
        if errors.examples.filter(pl.col("task") == task).height:
            tables.append(examples_table(errors, task))
    return tables


def error_analysis_markdown(errors) -> str:
    """``kdlens compare --error-analysis``: the tables as Markdown, then what was left out."""
    parts = [t.to_markdown() for t in error_tables(errors)]
    if errors.correlations.height > MAX_COMPARISON_ROWS:
        parts.append(f"_{errors.correlations.height} comparison-task rows: see error_correlations.csv._\n")
    parts += [f"- left out: {line}\n" for line in errors.exclusions]
    return "\n".join(parts)
