"""Scoring generations: the paper's answers (or ROUGE-L) per item, and per-task score tables.

:func:`score_task` scores one task's outputs with its registry rule (:mod:`kdlens.metrics.answers`)
or ROUGE-L; :func:`score_generations` adds pred/correct/score columns to a generations frame;
:func:`summarize` gives per-task scores and the family "Average" (unweighted, as in the paper).
Tests: ``python -m pytest tests/evaluate/test_scoring.py -q``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from kdlens.errors import KdlensError
from kdlens.eval.tasks import get_task, list_tasks
from kdlens.markdown import markdown_table
from kdlens.metrics import answers



def rouge_l(outputs: Sequence[str], references: Sequence[Sequence[str]]):
    """ROUGE-L F-measure x 100 with Porter stemming, max over each item's references (rouge-score)."""
    import numpy as np
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = np.zeros(len(outputs), dtype=np.float64)
    for i, (out, refs) in enumerate(zip(outputs, references)):
        if not refs:
            raise KdlensError(f"item {i} has no reference to score against")
        scores[i] = 100.0 * max(scorer.score(ref, out)["rougeL"].fmeasure for ref in refs)
    return scores


def score_task(task, outputs: Sequence[str], golds: Sequence[str], references: Sequence[Sequence[str]]):
    """(pred, correct, score) lists for one task's outputs: extraction + match, or ROUGE-L."""
    if task.metric == "rouge_l":
        scores = rouge_l(outputs, references)
        return [None] * len(outputs), [None] * len(outputs), scores.tolist()
    preds = answers.extract_answers(list(outputs), task.rule)
    correct = [bool(c) for c in answers.is_correct(list(outputs), list(golds), task.rule)]
    return list(preds), correct, [100.0 if c else 0.0 for c in correct]


def score_generations(frame, tasks_by_name: Mapping[str, object] | None = None):
    """Add pred, correct and score columns to rows with task, output, gold and references."""
    import polars as pl


    pieces = []
    for (name,), sub in frame.group_by(["task"], maintain_order=True):
        task = (tasks_by_name or {}).get(name) or get_task(name)
        preds, correct, scores = score_task(task, sub["output"].to_list(), sub["gold"].to_list(),
                                            sub["references"].to_list())
        pieces.append(sub.with_columns(
            pl.Series("pred", preds, dtype=pl.String),
            pl.Series("correct", correct, dtype=pl.Boolean),
            pl.Series("score", scores, dtype=pl.Float64),
        ))
    return pl.concat(pieces, how="vertical_relaxed")


def summarize(generations):
    """Per-task scores and family averages from scored generations (columns below).

    model, task, display, family, metric, n (items), seeds, score (mean over items and seeds, %),
    score_std (standard deviation of the per-seed scores; 0 for one seed). Family rows have
    task "Average": the unweighted mean of the family's task scores (the paper's Average).
    """
    import polars as pl


    order = {t.name: i for i, t in enumerate(list_tasks())}
    per_seed = generations.group_by(["model", "task", "seed"]).agg(pl.col("score").mean())
    rows = []
    for (model, name), sub in per_seed.group_by(["model", "task"], maintain_order=True):
        task = get_task(name)
        items = generations.filter((pl.col("model") == model) & (pl.col("task") == name))
        rows.append({
            "model": model, "task": name, "display": task.display, "family": task.family,
            "metric": task.metric, "n": items["id"].n_unique(), "seeds": sub.height,
            "score": float(sub["score"].mean()),
            "score_std": float(sub["score"].std(ddof=0)) if sub.height > 1 else 0.0,
        })
    rows.sort(key=lambda r: (r["model"], order.get(r["task"], 1 << 30)))
    table = pl.DataFrame(rows, schema={
        "model": pl.String, "task": pl.String, "display": pl.String, "family": pl.String,
        "metric": pl.String, "n": pl.Int64, "seeds": pl.Int64, "score": pl.Float64,
        "score_std": pl.Float64})
    averages = (table.group_by(["model", "family"], maintain_order=True)
                .agg(pl.col("metric").first(), pl.col("n").sum(), pl.col("seeds").max(),
                     pl.col("score").mean(), pl.lit(0.0).alias("score_std"))
                .with_columns(pl.lit("Average").alias("task"), pl.lit("Average").alias("display")))
    out = []
    for (model, family), sub in table.group_by(["model", "family"], maintain_order=True):
        out.append(sub)
        out.append(averages.filter((pl.col("model") == model) & (pl.col("family") == family))
                   .select(table.columns))
    return pl.concat(out) if out else table


def results_markdown(results) -> str:
    """A Markdown table of a results frame (one line per task and family average)."""
    rows = []
    for r in results.iter_rows(named=True):
        spread = r.get("seeds", 1) > 1 and r["task"] != "Average"
        score = f"{r['score']:.2f}" + (f" ± {r['score_std']:.2f}" if spread else "")
        rows.append([r["model"], r["family"], r["display"], r["metric"], r["n"], score])
    return markdown_table(["model", "family", "task", "metric", "n", "score"], rows, right=(4, 5)) + "\n"
