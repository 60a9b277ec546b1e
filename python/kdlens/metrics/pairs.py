"""Teacher-student pairs: the one scorer of BLEU fidelity, answer agreement and accuracy.

Every teacher-student number goes through here, so the study's H4/H5 inputs, ``kdlens compare``
and ``kdlens fidelity`` come from one code path:

* :func:`score_pairs` scores aligned teacher/student rows (Arrow tables with task, id, output and
  optionally gold): per pair the sentence BLEU of the student output against the teacher output
  (sacreBLEU 13a/exp/effective order) and its sufficient statistics, both extracted answers,
  agreement, and each side's correctness against gold. Tasks without an answer rule (ROUGE-L tasks,
  unknown names) get null answers, agreement and correctness.
* :class:`PairTotals`, :func:`accumulate` and :func:`summary` reduce per-pair tables, batch by
  batch, to per-task rows (pairs, corpus BLEU from the summed statistics, mean sentence BLEU,
  agreement, accuracies); the signatures say which BLEU was computed.
* :func:`compare` pairs two ``kdlens evaluate`` folders on (task, id, seed) and reports per task and
  family average (``kdlens compare``, the study's compare units).

The file front end for huge generation files (bounded memory) is :mod:`kdlens.metrics.stream`.
Tests: tests/metrics/test_fidelity_cli.py, tests/evaluate/test_evaluate.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from kdlens.errors import KdlensError
from kdlens.markdown import markdown_table
from kdlens.metrics import answers
from kdlens.metrics.bleu import NGRAM_ORDER, BLEUStatistics, bleu_signature, bleu_statistics

GENERATIONS = "generations.parquet"  # the per-item table `kdlens evaluate` writes into its folder
STAT_NAMES = ["hyp_len", "ref_len"] + [f"correct_{k}" for k in range(1, NGRAM_ORDER + 1)] + [
    f"total_{k}" for k in range(1, NGRAM_ORDER + 1)]
# the BLEU the pairs carry: sentence BLEU with effective order, corpus BLEU from summed statistics
SENTENCE_SIGNATURE = bleu_signature(1, "13a", False, "exp", None, True)
CORPUS_SIGNATURE = bleu_signature(1, "13a", False, "exp", None, False)


def score_pairs(t, s, gold_column: str | None = None):
    """The per-pair table of aligned teacher rows ``t`` and student rows ``s`` (pyarrow Tables with
    task, id, output; the same keys in the same order). ``gold_column``: the teacher table's gold
    column, if any. Columns: task, id, bleu, bleu_<stat> (int32), teacher_answer, student_answer,
    agree, and with gold: gold, teacher_correct, student_correct."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for side, label in ((t, "teacher"), (s, "student")):
        out = side.column("output")
        if out.null_count:
            bad = pc.indices_nonzero(out.is_null()).to_pylist()[:5]
            keys = [(side.column("task")[i].as_py(), side.column("id")[i].as_py()) for i in bad]
            raise KdlensError(f"{label} output is null for key(s) {keys}; every row needs text")
    t_out, s_out = t.column("output"), s.column("output")
    stats = bleu_statistics(s_out, t_out)
    bleu = stats.sentence_scores()
    n = t.num_rows
    tasks = t.column("task").to_numpy(zero_copy_only=False).astype(str)
    agree = np.zeros(n, dtype=bool)
    has_rule = np.zeros(n, dtype=bool)
    t_ans = np.full(n, None, dtype=object)
    s_ans = np.full(n, None, dtype=object)
    t_ok = np.zeros(n, dtype=bool)
    s_ok = np.zeros(n, dtype=bool)
    gold = t.column(gold_column) if gold_column else None
    names, codes = np.unique(tasks, return_inverse=True)
    by_rule: dict = {}  # rule -> the task codes it scores (tasks sharing a rule are scored at once)
    for k, name in enumerate(names):
        rule = answers.task_rule(name)
        if rule is not None:
            by_rule.setdefault(rule, []).append(k)
    for rule, ks in by_rule.items():
        rows = slice(None) if len(ks) == len(names) else np.flatnonzero(np.isin(codes, ks))
        sel = None if isinstance(rows, slice) else pa.array(rows)
        tt, ss = (t_out, s_out) if sel is None else (t_out.take(sel), s_out.take(sel))
        t_found = answers.extract_answers(tt, rule)
        s_found = answers.extract_answers(ss, rule)
        # Each side's answer is extracted once. An extracted answer is its own answer under its
        # rule (the last number of "1234" is 1234, the first label of "answer2" is answer2), and ""
        # has none, so agreement and correctness are computed on the short extracted strings.
        t_short = ["" if a is None else a for a in t_found]
        s_short = ["" if a is None else a for a in s_found]
        agree[rows] = answers.agreement_per_item(t_short, s_short, rule)
        has_rule[rows] = True
        t_ans[rows] = t_found
        s_ans[rows] = s_found
        if gold is not None:
            g = gold if sel is None else gold.take(sel)
            if g.null_count:
                task_col = t.column("task") if sel is None else t.column("task").take(sel)
                first = task_col.filter(g.is_null())[0].as_py()
                raise KdlensError(f"gold answer is null for task {first}; fill it or drop the column")
            t_ok[rows] = answers.is_correct(t_short, g, rule)
            s_ok[rows] = answers.is_correct(s_short, g, rule)
    cols = {"task": t.column("task"), "id": t.column("id"), "bleu": pa.array(bleu)}
    cols.update({f"bleu_{k}": pa.array(stats.stats[:, j].astype(np.int32)) for j, k in enumerate(STAT_NAMES)})
    mask = ~has_rule
    cols["teacher_answer"] = pa.array(t_ans, type=pa.large_string(), from_pandas=False)
    cols["student_answer"] = pa.array(s_ans, type=pa.large_string(), from_pandas=False)
    cols["agree"] = pa.array(agree, mask=mask)
    if gold is not None:
        cols["gold"] = gold
        cols["teacher_correct"] = pa.array(t_ok, mask=mask)
        cols["student_correct"] = pa.array(s_ok, mask=mask)
    return pa.table(cols)


@dataclass
class PairTotals:
    """Running sums of one task's pairs (or of all pairs)."""

    pairs: int = 0
    stats: np.ndarray = field(default_factory=lambda: np.zeros(len(STAT_NAMES), dtype=np.int64))
    bleu_sum: Fraction = Fraction(0)  # exact (see exact_sum): the same whatever the batch order
    agree: int = 0
    has_rule: bool = True
    teacher_correct: int = 0
    student_correct: int = 0

    def add(self, other: "PairTotals") -> None:
        self.pairs += other.pairs
        self.stats += other.stats
        self.bleu_sum += other.bleu_sum
        self.agree += other.agree
        self.has_rule &= other.has_rule
        self.teacher_correct += other.teacher_correct
        self.student_correct += other.student_correct

    def mean_sentence_bleu(self) -> float:
        return float(self.bleu_sum / self.pairs) if self.pairs else float("nan")

    def corpus_bleu(self) -> float:
        return BLEUStatistics(self.stats[None, :], nrefs=1, tokenize="13a", lowercase=False,
                              max_ngram_order=NGRAM_ORDER).corpus_score().score


def exact_sum(values: np.ndarray) -> Fraction:
    """The exact sum of finite float64 ``values``, as a fraction.

    A float sum depends on the order of its terms; this one does not, so totals summed batch by
    batch, or shard by shard on a cluster (kdlens.metrics.ray_fidelity), give the same mean to the
    last bit. Each value is mantissa * 2**exponent with an integer mantissa below 2**53; the
    mantissas are summed per exponent in two 26/27-bit halves (int64 cannot overflow below 2**36 terms).
    """
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("exact_sum: values must be finite")
    mantissa, exponent = np.frexp(values)  # values = mantissa * 2**exponent, 0.5 <= |mantissa| < 1
    whole = np.ldexp(mantissa, 53).astype(np.int64)  # exact: 53 significant bits
    high, low = whole >> 26, whole & ((1 << 26) - 1)  # whole = high * 2**26 + low
    total = Fraction(0)
    for e in np.unique(exponent):
        at = exponent == e
        scaled = int(high[at].sum()) * (1 << 26) + int(low[at].sum())
        shift = int(e) - 53
        total += scaled * (1 << shift) if shift >= 0 else Fraction(scaled, 1 << -shift)
    return total


def accumulate(table, totals: dict[str, PairTotals], with_gold: bool) -> None:
    """Add one per-pair table (from :func:`score_pairs`) to the per-task totals."""
    tasks = table.column("task").to_numpy(zero_copy_only=False).astype(str)
    stats = np.stack([table.column(f"bleu_{k}").to_numpy().astype(np.int64) for k in STAT_NAMES], axis=1)
    bleu = table.column("bleu").to_numpy()
    agree_col = table.column("agree")
    agree = agree_col.fill_null(False).to_numpy(zero_copy_only=False)
    rule_known = agree_col.is_valid().to_numpy(zero_copy_only=False)
    if with_gold:
        t_ok = table.column("teacher_correct").fill_null(False).to_numpy(zero_copy_only=False)
        s_ok = table.column("student_correct").fill_null(False).to_numpy(zero_copy_only=False)
    for task in np.unique(tasks):
        idx = np.flatnonzero(tasks == task)
        tot = totals.setdefault(task, PairTotals())
        tot.pairs += len(idx)
        tot.stats += stats[idx].sum(axis=0)
        tot.bleu_sum += exact_sum(bleu[idx])
        if not rule_known[idx].all():
            tot.has_rule = False
            continue
        tot.agree += int(agree[idx].sum())
        if with_gold:
            tot.teacher_correct += int(t_ok[idx].sum())
            tot.student_correct += int(s_ok[idx].sum())


def summary(totals: dict[str, PairTotals], with_gold: bool):
    """Per-task rows, sorted by task, then "ALL": pairs, corpus_bleu, mean_sentence_bleu, agreement
    (null without an answer rule) and with gold teacher_accuracy, student_accuracy; plus the two
    BLEU signatures."""
    import polars as pl

    rows = []
    items = sorted(totals.items())
    overall = PairTotals()
    for _, tt in items:
        overall.add(tt)
    for task, tt in items + [("ALL", overall)]:
        row = {"task": task, "pairs": tt.pairs, "corpus_bleu": tt.corpus_bleu(),
               "mean_sentence_bleu": tt.mean_sentence_bleu(),
               "agreement": 100.0 * tt.agree / tt.pairs if tt.has_rule and tt.pairs else None}
        if with_gold:
            row["teacher_accuracy"] = 100.0 * tt.teacher_correct / tt.pairs if tt.has_rule else None
            row["student_accuracy"] = 100.0 * tt.student_correct / tt.pairs if tt.has_rule else None
        rows.append(row)
    return pl.DataFrame(rows).with_columns(pl.lit(CORPUS_SIGNATURE).alias("corpus_bleu_signature"),
                                           pl.lit(SENTENCE_SIGNATURE).alias("sentence_bleu_signature"))


def summary_markdown(frame) -> str:
    """The summary table as Markdown, with the BLEU signatures underneath."""
    shown = frame.drop("corpus_bleu_signature", "sentence_bleu_signature")
    rows = [[f"{v:.2f}" if isinstance(v, float) else ("n/a" if v is None else str(v)) for v in r]
            for r in shown.iter_rows()]
    lines = [markdown_table(shown.columns, rows), "",
             f"Sentence BLEU (student vs teacher as reference): `{SENTENCE_SIGNATURE}`",
             f"Corpus BLEU: `{CORPUS_SIGNATURE}`",
             "Agreement and accuracy in %, answers extracted with the paper's rules (kdlens.metrics.answers)."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# two `kdlens evaluate` folders


def load_generations(folder: str | os.PathLike):
    """The generations table of a `kdlens evaluate` folder (or the table file itself)."""
    from kdlens.io import read_table

    path = Path(folder)
    path = path / GENERATIONS if path.is_dir() else path
    if not path.is_file():
        raise KdlensError(f"{path}: no generations table; run `kdlens evaluate ... -o {folder}` first")
    return read_table(path)


def pair_generations(teacher, student, teacher_dir, student_dir, columns=("output",)):
    """Teacher and student generation rows paired on (task, id, seed) when both used the same seeds,
    else on (task, id) when each side has one generation per item; ``columns`` of both sides, the
    student's suffixed ``_student``."""
    t_seeds = set(teacher["seed"].unique().to_list())
    s_seeds = set(student["seed"].unique().to_list())
    key = ["task", "id", "seed"] if t_seeds == s_seeds else ["task", "id"]
    if key == ["task", "id"]:
        for side, frame in (("teacher", teacher), ("student", student)):
            if frame.select(key).is_duplicated().any():
                raise KdlensError(
                    f"the {side}'s generations have several seeds per item but the seeds differ "
                    f"between teacher ({sorted(t_seeds)}) and student ({sorted(s_seeds)}); evaluate "
                    "both with the same seeds")
    for side, frame, folder in (("teacher", teacher, teacher_dir), ("student", student, student_dir)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise KdlensError(f"{folder}: the {side}'s generations have no column(s) {', '.join(missing)}; "
                              "re-run `kdlens evaluate` to write them")
    cols = key + list(columns)
    paired = teacher.select(cols).join(student.select(cols), on=key, how="inner", suffix="_student")
    if paired.height == 0:
        raise KdlensError(f"{teacher_dir} and {student_dir} share no (task, item) pairs to compare")
    return paired


def compare(teacher_dir: str | os.PathLike, student_dir: str | os.PathLike):
    """Agreement and BLEU fidelity between a teacher's and a student's generations (paper section 6).

    Items are paired on (task, id, seed) when both used the same seeds, else on (task, id) when each
    side has one generation per item. Per task: n (paired items), agreement (% of items whose
    extracted answers are equal; an item where either has no answer does not agree; null for
    ROUGE-L tasks), fidelity (mean sentence BLEU of student output vs teacher output, 0-100),
    corpus_bleu and bleu_signature (of the corpus BLEU). Family rows with task "Average" hold
    unweighted means over the family's tasks.
    """
    import polars as pl

    from kdlens.eval.tasks import get_task, list_tasks

    teacher = load_generations(teacher_dir)
    student = load_generations(student_dir)
    paired = pair_generations(teacher, student, teacher_dir, student_dir)
    t_name = teacher["model"][0]
    s_name = student["model"][0]
    tasks = {name: get_task(name) for name in paired["task"].unique().to_list()}
    paired = paired.with_columns(pl.col("id").cast(pl.String))
    oldest = pl.CompatLevel.oldest()  # large_string columns, as the scorer reads them
    scored = score_pairs(paired.select("task", "id", "output").to_arrow(compat_level=oldest),
                         paired.select("task", "id", pl.col("output_student").alias("output"))
                         .to_arrow(compat_level=oldest))
    totals: dict[str, PairTotals] = {}
    accumulate(scored, totals, with_gold=False)
    order = {t.name: i for i, t in enumerate(list_tasks())}
    rows = []
    for name in sorted(totals, key=lambda n: order.get(n, 1 << 30)):
        task, tot = tasks[name], totals[name]
        rows.append({"teacher": t_name, "student": s_name, "task": name, "display": task.display,
                     "family": task.family, "n": tot.pairs,
                     "agreement": 100.0 * tot.agree / tot.pairs if task.rule is not None else None,
                     "fidelity": tot.mean_sentence_bleu(), "corpus_bleu": tot.corpus_bleu(),
                     "bleu_signature": CORPUS_SIGNATURE})
    table = pl.DataFrame(rows, schema={
        "teacher": pl.String, "student": pl.String, "task": pl.String, "display": pl.String,
        "family": pl.String, "n": pl.Int64, "agreement": pl.Float64, "fidelity": pl.Float64,
        "corpus_bleu": pl.Float64, "bleu_signature": pl.String})
    out = []
    for (family,), sub in table.group_by(["family"], maintain_order=True):
        out.append(sub)
        out.append(sub.group_by("family").agg(
            pl.col("teacher").first(), pl.col("student").first(), pl.lit("Average").alias("task"),
            pl.lit("Average").alias("display"), pl.col("n").sum(), pl.col("agreement").mean(),
            pl.col("fidelity").mean(), pl.col("corpus_bleu").mean(),
            pl.col("bleu_signature").first()).select(table.columns))
    return pl.concat(out)


def comparison_markdown(table) -> str:
    tokens = "token_agreement" in table.columns  # kdlens compare --token-agreement
    rows = [[r["teacher"], r["student"], r["family"], r["display"], r["n"],
             "-" if r["agreement"] is None else f"{r['agreement']:.2f}", f"{r['fidelity']:.2f}"]
            + (["-" if r["token_agreement"] is None else f"{r['token_agreement']:.2f}"] if tokens else [])
            for r in table.iter_rows(named=True)]
    text = markdown_table(["teacher", "student", "family", "task", "n", "agreement", "fidelity (BLEU)"]
                          + (["token agreement"] if tokens else []), rows, right=(4, 5, 6, 7) if tokens else (4, 5, 6))
    sig = table["bleu_signature"][0] if table.height else ""
    return text + f"\n\nBLEU: {sig}\n"
