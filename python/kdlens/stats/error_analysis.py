"""The paper's error analysis for any study or comparison: how loosely per-item correctness and
fidelity are linked.

The poster shows SVAMP items with the KD student's output, the teacher's output and their fidelity
(a correct student answer with fidelity 0.77) to argue that fidelity and accuracy are only loosely
linked. kdlens does this for every comparison of a student with its teacher:

* :func:`pair_items` pairs the two ``kdlens evaluate`` folders item by item (the pairing of
  :func:`kdlens.metrics.pairs.compare`) into the *items* table: the instruction, both outputs, the
  sentence BLEU of the student output against the teacher output (the one scorer of fidelity,
  :func:`kdlens.metrics.pairs.score_pairs`; 0-100) and the student's correctness from its own
  evaluation (null for tasks scored by ROUGE-L, which have no correct/wrong).
* :func:`error_analysis` computes, per comparison and task, the point-biserial correlation r_pb of
  correctness (1/0) with sentence BLEU, with its two-sided p-value (t = r sqrt((n-2)/(1-r^2)), n-2
  degrees of freedom) and a Fisher-z interval (tanh(atanh(r) -/+ z_{(1+level)/2} / sqrt(n-3))); the
  items of each comparison and task split into four quadrants, student correct or wrong x fidelity
  high (>= the median sentence BLEU of that comparison and task) or low; and per task and quadrant
  the example items at evenly spaced ranks of fidelity within the quadrant (with one example: the
  quadrant's median item), all comparisons of the task pooled, each labelled with its comparison.

Items with a null correctness are left out (said in ``exclusions``). The report shows a summary per
task and method and the examples; the per-comparison rows go to tables/error_correlations.csv.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import stats as sp

from kdlens.errors import KdlensError
from kdlens.stats.bootstrap import DEFAULT_LEVEL

DEFAULT_EXAMPLES = 2
QUADRANTS = ("correct, high fidelity", "correct, low fidelity", "wrong, high fidelity", "wrong, low fidelity")
# columns that identify one comparison (a student run against its teacher), where the items have them
COMPARISON_COLUMNS = ("teacher", "student", "method", "temperature", "noise_sigma", "teacher_kind", "seed")
ITEM_COLUMNS = ("task", "id", "instruction", "teacher_output", "student_output", "fidelity", "student_correct")
CORRELATION_SCHEMA = {
    "comparison": pl.String, "teacher": pl.String, "student": pl.String, "method": pl.String, "task": pl.String,
    "n": pl.Int64, "n_correct": pl.Int64, "accuracy": pl.Float64, "mean_fidelity": pl.Float64,
    "median_fidelity": pl.Float64, "mean_fidelity_correct": pl.Float64, "mean_fidelity_wrong": pl.Float64,
    "r_pb": pl.Float64, "p_value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
    "ci_level": pl.Float64, "correct_high": pl.Int64, "correct_low": pl.Int64, "wrong_high": pl.Int64,
    "wrong_low": pl.Int64, "note": pl.String,
}  # fmt: skip
EXAMPLE_SCHEMA = {
    "task": pl.String, "quadrant": pl.String, "quadrant_items": pl.Int64, "comparison": pl.String, "id": pl.String,
    "sample_seed": pl.Int64, "fidelity": pl.Float64, "median_fidelity": pl.Float64, "student_correct": pl.Boolean,
    "instruction": pl.String, "teacher_output": pl.String, "student_output": pl.String,
}  # fmt: skip
_INSTRUCTION = re.compile(r"### Instruction:\s*(.*?)\s*(?:### Input:|### Response:)", re.DOTALL)


@dataclass(frozen=True)
class ErrorAnalysis:
    """``correlations``: one row per (comparison, task); ``examples``: per task and quadrant;
    ``summary``: per task and method over its comparisons; ``exclusions``: sentences."""

    correlations: pl.DataFrame
    examples: pl.DataFrame
    summary: pl.DataFrame
    level: float
    examples_per_quadrant: int
    exclusions: tuple[str, ...] = field(default_factory=tuple)


def instruction_of(prompt: str) -> str:
    """The instruction inside an Alpaca-layout prompt (either template); the whole prompt, stripped,
    for a layout without an ``### Instruction:`` section."""
    found = _INSTRUCTION.search(prompt)
    return found.group(1).strip() if found else prompt.strip()


def pair_items(teacher_dir, student_dir, **labels) -> pl.DataFrame:
    """The items table of two ``kdlens evaluate`` folders (module docstring): one row per paired item
    (``sample_seed``: the decoding seed of its generations, when both sides used the same seeds).
    ``labels`` (e.g. method="SeqKD", temperature=2.0, seed=1 for the compared run's training seed)
    become constant columns that name the comparison; teacher and student default to the model names
    of the generations."""
    from kdlens.metrics.pairs import load_generations, pair_generations, score_pairs

    teacher = load_generations(teacher_dir)
    student = load_generations(student_dir)
    paired = pair_generations(teacher, student, teacher_dir, student_dir, columns=("prompt", "output", "correct"))
    paired = paired.with_columns(pl.col("id").cast(pl.String))
    oldest = pl.CompatLevel.oldest()  # large_string columns, as the scorer reads them
    scored = score_pairs(paired.select("task", "id", "output").to_arrow(compat_level=oldest),
                         paired.select("task", "id", pl.col("output_student").alias("output")).to_arrow(compat_level=oldest))
    names = {"teacher": str(teacher["model"][0]), "student": str(student["model"][0])}
    names.update({k: v for k, v in labels.items() if v is not None})
    items = paired.select(
        *[pl.lit(v).alias(k) for k, v in names.items()],
        "task", "id", *([pl.col("seed").alias("sample_seed")] if "seed" in paired.columns else []),
        pl.col("prompt").map_elements(instruction_of, return_dtype=pl.String).alias("instruction"),
        pl.col("output").alias("teacher_output"), pl.col("output_student").alias("student_output"),
        pl.Series("fidelity", scored.column("bleu").to_numpy(), dtype=pl.Float64),
        pl.col("correct_student").cast(pl.Boolean).alias("student_correct"),
        pl.col("correct").cast(pl.Boolean).alias("teacher_correct"),
    )
    return items


def comparison_label(row: dict) -> str:
    """``teacher -> student, SeqKD, T=2, seed 1``: the columns of :data:`COMPARISON_COLUMNS` it has."""
    text = f"{row.get('teacher')} -> {row.get('student')}"
    if row.get("method"):
        text += f", {row['method']}"
    if row.get("temperature") is not None:
        text += f", T={row['temperature']:g}"
    if row.get("noise_sigma"):
        text += f", sigma={row['noise_sigma']:g}"
    if row.get("teacher_kind") == "task_unaware":
        text += ", task-unaware teacher"
    if row.get("seed") is not None:
        text += f", seed {row['seed']}"
    return text


def validate_items(items: pl.DataFrame) -> pl.DataFrame:
    """Check an items table and add its ``comparison`` label (when absent)."""
    if not isinstance(items, pl.DataFrame):
        raise KdlensError(f"items table: expected a Polars DataFrame, got {type(items).__name__}")
    required = ("teacher", "student", "task", "id", "fidelity", "student_correct")
    missing = [c for c in required if c not in items.columns]
    if missing:
        raise KdlensError(f"items table is missing column(s) {', '.join(missing)} (has: {', '.join(items.columns)}); "
                          "build it with kdlens.stats.error_analysis.pair_items or `kdlens compare --error-analysis -o`")
    if not items["fidelity"].dtype.is_numeric():
        raise KdlensError(f"items table: column 'fidelity' must be numeric (sentence BLEU 0-100), got {items['fidelity'].dtype}")
    if items["student_correct"].dtype not in (pl.Boolean, pl.Null) and not items["student_correct"].dtype.is_integer():
        raise KdlensError("items table: column 'student_correct' must be boolean (true/false, null for a task "
                          f"without an answer rule), got {items['student_correct'].dtype}")
    items = items.with_columns(pl.col("fidelity").cast(pl.Float64), pl.col("student_correct").cast(pl.Boolean),
                               pl.col("id").cast(pl.String))
    bad = items.filter(pl.col("fidelity").is_null() | ~pl.col("fidelity").is_between(-1e-9, 100.0 + 1e-9))  # BLEU of equal texts: 100 + ulp
    if bad.height:
        raise KdlensError(f"items table: {bad.height} row(s) have a missing fidelity or one outside 0-100 (e.g. task "
                          f"{bad['task'][0]!r}, id {bad['id'][0]!r}); fidelity is sentence BLEU in 0-100")
    for name in ("instruction", "teacher_output", "student_output"):
        if name not in items.columns:
            items = items.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    if "comparison" not in items.columns:
        present = [c for c in COMPARISON_COLUMNS if c in items.columns]
        labels = items.select(present).unique(maintain_order=True)
        labels = labels.with_columns(pl.Series("comparison", [comparison_label(r) for r in labels.iter_rows(named=True)],
                                               dtype=pl.String))
        items = items.join(labels, on=present, how="left", nulls_equal=True)
    return items


def point_biserial(correct: np.ndarray, fidelity: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple:
    """(r_pb, two-sided p, Fisher-z interval low, high, note) of 0/1 ``correct`` and ``fidelity``:
    r_pb = (M1 - M0) / s * sqrt(p q) with s the population standard deviation of fidelity, M1/M0 the
    mean fidelity of correct/wrong items and p/q their shares."""
    x = np.asarray(correct, dtype=bool)
    y = np.asarray(fidelity, dtype=np.float64)
    n = x.size
    if n < 3:
        return None, None, None, None, "fewer than 3 items"
    if x.all() or not x.any():
        return None, None, None, None, "the student is " + ("always correct" if x.all() else "never correct")
    span = float(np.ptp(y))
    if span == 0:
        return None, None, None, None, "fidelity is constant"
    y = (y - y.min()) / span  # r is invariant to affine maps; this keeps a tiny spread from underflowing
    s = y.std()
    p = x.mean()
    r = float((y[x].mean() - y[~x].mean()) / s * math.sqrt(p * (1 - p)))
    r = max(-1.0, min(1.0, r))
    if abs(r) == 1.0:
        return r, 0.0, r, r, "correctness is a threshold of fidelity (|r| = 1)"
    t = r * math.sqrt((n - 2) / (1 - r * r))
    p_value = float(2 * sp.t.sf(abs(t), n - 2))
    if n < 4:
        return r, p_value, None, None, "no Fisher-z interval below 4 items"
    half = sp.norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
    z = math.atanh(r)
    return r, p_value, math.tanh(z - half), math.tanh(z + half), None


def _spread(frame: pl.DataFrame, k: int) -> pl.DataFrame:
    """k rows at evenly spaced ranks of an ordered frame: rank floor((i + 1/2) m / k) for i < k (the
    middle one for k = 1, the upper middle for an even m); all rows when there are at most k."""
    m = frame.height
    if m <= k:
        return frame
    picks = [int((i + 0.5) * m / k) for i in range(k)]  # the centres of k equal slices
    return frame[picks]


def error_analysis(items: pl.DataFrame, *, level: float = DEFAULT_LEVEL,
                   examples: int = DEFAULT_EXAMPLES) -> ErrorAnalysis:
    """The error analysis of an items table (module docstring)."""
    if not 0 < level < 1:
        raise KdlensError(f"confidence level must be in (0, 1), got {level}")
    if examples < 0:
        raise KdlensError(f"examples per quadrant must be >= 0, got {examples}")
    items = validate_items(items)
    exclusions = []
    unscored = items.filter(pl.col("student_correct").is_null())
    if unscored.height:
        tasks = ", ".join(sorted(set(unscored["task"].to_list())))
        exclusions.append(f"{unscored.height} item(s) without a correct/wrong score (task(s) {tasks}: no answer rule, "
                          "e.g. ROUGE-L) are not in the error analysis")
    items = items.filter(pl.col("student_correct").is_not_null())
    median = pl.col("fidelity").median().over(["comparison", "task"])
    items = items.with_columns(median.alias("median_fidelity")).with_columns(pl.concat_str(
        pl.when(pl.col("student_correct")).then(pl.lit("correct")).otherwise(pl.lit("wrong")),
        pl.when(pl.col("fidelity") >= pl.col("median_fidelity")).then(pl.lit("high")).otherwise(pl.lit("low")),
        separator=", ").alias("quadrant") + pl.lit(" fidelity"))
    rows = []
    for (comparison, task), part in items.group_by(["comparison", "task"], maintain_order=True):
        correct = part["student_correct"].to_numpy()
        fid = part["fidelity"].to_numpy()
        r, p, low, high, note = point_biserial(correct, fid, level)
        counts = dict(part.group_by("quadrant").len().iter_rows())
        first = part.row(0, named=True)
        rows.append({
            "comparison": comparison, "teacher": first["teacher"], "student": first["student"],
            "method": first.get("method"), "task": task, "n": part.height, "n_correct": int(correct.sum()),
            "accuracy": 100.0 * float(correct.mean()), "mean_fidelity": float(fid.mean()),
            "median_fidelity": float(first["median_fidelity"]),
            "mean_fidelity_correct": float(fid[correct].mean()) if correct.any() else None,
            "mean_fidelity_wrong": float(fid[~correct].mean()) if (~correct).any() else None,
            "r_pb": r, "p_value": p, "ci_low": low, "ci_high": high, "ci_level": level,
            "correct_high": counts.get(QUADRANTS[0], 0), "correct_low": counts.get(QUADRANTS[1], 0),
            "wrong_high": counts.get(QUADRANTS[2], 0), "wrong_low": counts.get(QUADRANTS[3], 0), "note": note,
        })  # fmt: skip
    correlations = pl.DataFrame(rows, schema=CORRELATION_SCHEMA)
    picked = []
    if "sample_seed" not in items.columns:
        items = items.with_columns(pl.lit(None, dtype=pl.Int64).alias("sample_seed"))
    for (task,), part in items.group_by(["task"], maintain_order=True):
        for quadrant in QUADRANTS:
            q = part.filter(pl.col("quadrant") == quadrant).sort(["fidelity", "comparison", "id", "sample_seed"], nulls_last=True)
            chosen = _spread(q, examples) if examples else q.head(0)
            picked.append(chosen.with_columns(pl.lit(quadrant).alias("quadrant"),
                                              pl.lit(q.height, dtype=pl.Int64).alias("quadrant_items"))
                          .select(list(EXAMPLE_SCHEMA)).cast(EXAMPLE_SCHEMA))  # type: ignore[arg-type]
    examples_frame = pl.concat(picked) if picked else pl.DataFrame(schema=EXAMPLE_SCHEMA)
    return ErrorAnalysis(correlations=correlations, examples=examples_frame, summary=summarise(correlations),
                         level=level, examples_per_quadrant=examples, exclusions=tuple(exclusions))


def summarise(correlations: pl.DataFrame) -> pl.DataFrame:
    """Per task and method: comparisons, items, mean/min/max r_pb over the comparisons with one, and
    how many comparisons' intervals lie above or below 0."""
    frame = correlations.with_columns(pl.col("method").fill_null("-"))
    return frame.group_by(["task", "method"], maintain_order=True).agg(
        pl.len().alias("comparisons"), pl.col("n").sum().alias("items"),
        pl.col("accuracy").mean().alias("mean_accuracy"), pl.col("mean_fidelity").mean().alias("mean_fidelity"),
        pl.col("r_pb").count().alias("with_r_pb"), pl.col("r_pb").mean().alias("mean_r_pb"),
        pl.col("r_pb").min().alias("min_r_pb"), pl.col("r_pb").max().alias("max_r_pb"),
        (pl.col("ci_low") > 0).sum().alias("ci_above_0"), (pl.col("ci_high") < 0).sum().alias("ci_below_0"),
    )
