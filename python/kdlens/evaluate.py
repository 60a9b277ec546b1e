"""Zero-shot evaluation: generate answers for benchmark tasks, score them, pair teacher and student.

:func:`evaluate` builds the paper's prompts for each task (the Alpaca template with the response left
open), generates with :mod:`kdlens.generate` (batched, resumable), extracts answers with
:mod:`kdlens.answers` (the one implementation of the paper's rules, shared with the Rust agreement
code) or scores ROUGE-L for instruction following, and writes into ``out_dir``:

- ``generations.parquet``: one row per (model, task, item, seed) with prompt, raw_output, output (the
  response cut at the next "### Instruction"), pred, gold, references, correct, score, prompt_tokens,
  output_tokens, stop_reason;
- ``results.parquet`` / ``results.md``: score (%) per task and the family "Average" (unweighted mean
  over the family's tasks, as in the paper);
- ``run.json``: the model and decoding the folder belongs to (a resumed run must match it).

:func:`compare` pairs a teacher's and a student's generations: answer agreement and BLEU fidelity
per task and per family average (paper section 6) through :mod:`kdlens.metrics`.

Tests: ``python -m pytest tests/evaluate -q``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from kdlens.errors import KdlensError
from kdlens.generate import ITEM_KEY, Decoding, check_manifest, remove_parts, run_generation

GENERATIONS = "generations.parquet"
RESULTS = "results.parquet"


@dataclass
class EvaluationResult:
    """What :func:`evaluate` wrote: the per-item and per-task tables and the folder."""

    generations: object  # polars.DataFrame
    results: object  # polars.DataFrame
    out_dir: Path

    def markdown(self) -> str:
        return results_markdown(self.results)


def model_name(model: str | os.PathLike, adapter: str | os.PathLike | None = None) -> str:
    """A short name for a model: the adapter's or model's folder name ("final"/"best" name their run)."""
    path = Path(str(adapter if adapter is not None else model).rstrip("/"))
    parts = [p for p in path.parts if p not in ("", "/")]
    if not parts:
        return str(model)
    last = parts[-1]
    if len(parts) > 1 and (last in ("final", "best") or last.startswith("checkpoint")):
        return f"{parts[-2]}/{last}"
    return last


# ----------------------------------------------------------------------------------------------
# Scoring


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
    from kdlens import answers

    rule = answers.rule_for_task(task.rule)
    preds = answers.extract_answers(list(outputs), rule)
    correct = [bool(c) for c in answers.is_correct(list(outputs), list(golds), rule)]
    return list(preds), correct, [100.0 if c else 0.0 for c in correct]


def score_generations(frame, tasks_by_name: Mapping[str, object] | None = None):
    """Add pred, correct and score columns to rows with task, output, gold and references."""
    import polars as pl

    from kdlens.tasks import get_task

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

    from kdlens.tasks import get_task, list_tasks

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
    lines = ["| model | family | task | metric | n | score |", "|---|---|---|---|---:|---:|"]
    for r in results.iter_rows(named=True):
        score = f"{r['score']:.2f}" + (f" ± {r['score_std']:.2f}" if r.get("seeds", 1) > 1 and r["task"] != "Average" else "")
        lines.append(f"| {r['model']} | {r['family']} | {r['display']} | {r['metric']} | {r['n']} | {score} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# The evaluation run


def build_items(tasks, *, seeds: Sequence[int], template, data: Mapping[str, str] | None = None,
                data_dir=None, task_options: Mapping[str, Mapping] | None = None,
                limit: int | None = None):
    """One row per (task, item, seed): task, id, seed, prompt, gold, references."""
    import polars as pl

    rows = []
    for task in tasks:
        source = (data or {}).get(task.name)
        examples = task.load(source, data_dir=data_dir, limit=limit,
                             **dict((task_options or {}).get(task.name, {})))
        for ex in examples:
            prompt = template.prompt(ex.instruction, ex.input)
            for seed in seeds:
                rows.append({"task": task.name, "id": ex.id, "seed": int(seed), "prompt": prompt,
                             "gold": ex.gold, "references": list(ex.references)})
    return pl.DataFrame(rows, schema={"task": pl.String, "id": pl.String, "seed": pl.Int64,
                                      "prompt": pl.String, "gold": pl.String,
                                      "references": pl.List(pl.String)})


def _canonical_data(data: Mapping[str, str] | None) -> dict[str, str]:
    from kdlens.tasks import get_task

    return {get_task(k).name: str(v) for k, v in (data or {}).items()}


def evaluate(
    model,
    tasks: str | Sequence,
    out_dir: str | os.PathLike,
    *,
    adapter: str | os.PathLike | None = None,
    tokenizer=None,
    decoding: Decoding = Decoding(),
    data: Mapping[str, str] | None = None,
    data_dir: str | os.PathLike | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    limit: int | None = None,
    template: str = "alpaca",
    name: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate a model zero-shot on ``tasks`` and write the tables into ``out_dir`` (resumable).

    ``model``: a local folder or hub id (loaded with :func:`kdlens.models.load_causal_lm`, with
    ``adapter`` attached), or an already loaded model (then pass ``tokenizer`` and ``name``).
    ``tasks``: "math,commonsense", "gsm8k,ARC-Easy", "all" or Task objects. ``data``: task name ->
    file or hub id; ``data_dir``: a folder in LLM-Adapters/MiniLLM layout. ``task_options``: task
    name -> loader options (e.g. ``{"synthetic": {"seed": 0, "n_test": 300}}``). ``limit``: the first
    N items of each task. Re-running with the same arguments resumes without recomputing.
    """
    import polars as pl
    import torch

    from kdlens.data.prompts import get_template
    from kdlens.io import write_table_atomic, write_text_atomic
    from kdlens.tasks import Task, resolve_tasks

    tmpl = get_template(template)
    task_list = [t for t in tasks] if not isinstance(tasks, str) else resolve_tasks(tasks)
    if not all(isinstance(t, Task) for t in task_list):
        task_list = resolve_tasks([t if isinstance(t, str) else t.name for t in task_list])
    if limit is not None and limit < 1:
        raise KdlensError(f"limit must be >= 1, got {limit}")
    stops = tuple(dict.fromkeys(decoding.stop_strings + tuple(tmpl.stop_strings)))
    if stops != decoding.stop_strings:
        decoding = Decoding(**{**decoding.to_dict(), "stop_strings": stops})
    loaded = not isinstance(model, (str, os.PathLike))
    if loaded and (tokenizer is None or name is None):
        raise KdlensError("evaluating a loaded model needs its tokenizer and a name")
    name = name or model_name(model, adapter)
    if not loaded:  # a device or model folder that cannot work is an error before anything is written
        from kdlens.models import check_model_folder, pick_device

        dev = pick_device(device, option="--device")
        check_model_folder("model", str(model), ("config.json", "adapter_config.json"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = _canonical_data(data)
    items = build_items(task_list, seeds=decoding.seeds, template=tmpl, data=data,
                        data_dir=data_dir, task_options=task_options, limit=limit)
    manifest = {
        "model": name,
        "model_path": name if loaded else str(model),
        "adapter": None if adapter is None else str(adapter),
        "template": template,
        "dtype": dtype,
        "decoding": {k: v for k, v in decoding.to_dict().items() if k != "batch_size"},
    }
    check_manifest(out, manifest)

    def load_model():
        if loaded:
            return model, tokenizer
        from kdlens.models import load_causal_lm, load_tokenizer

        torch_dtype = getattr(torch, dtype) if dtype else None
        tok = tokenizer or load_tokenizer(adapter if adapter is not None and _has_tokenizer(adapter) else model)
        return load_causal_lm(model, adapter=adapter, dtype=torch_dtype, device=dev), tok

    generated = run_generation(items, out, decoding, load_model, final_name=GENERATIONS,
                               chunk_size=chunk_size, progress=progress)
    key = list(ITEM_KEY)
    gen_cols = ["task", "id", "seed", "raw_output", "prompt_tokens", "output_tokens", "stop_reason"]
    fresh = items.join(generated.select(gen_cols), on=key, how="inner")
    if fresh.height != items.height:  # pragma: no cover - run_generation generates every item
        raise KdlensError(f"{items.height - fresh.height} items were not generated; re-run to resume")
    fresh = fresh.with_columns(
        pl.lit(name).alias("model"),
        pl.col("raw_output").map_elements(tmpl.response, return_dtype=pl.String).alias("output"),
    )
    scored = score_generations(fresh, {t.name: t for t in task_list})
    columns = ["model", "task", "id", "seed", "prompt", "raw_output", "output", "pred", "gold",
               "references", "correct", "score", "prompt_tokens", "output_tokens", "stop_reason"]
    scored = scored.select(columns)
    previous = out / GENERATIONS
    if previous.is_file():  # keep earlier tasks of this folder that were not asked for this time
        from kdlens.io import read_table

        old = read_table(previous)
        if set(columns) <= set(old.columns):
            other = old.select(columns).join(items.select(key), on=key, how="anti")
            scored = pl.concat([other, scored], how="vertical_relaxed")
    order = {t.name: i for i, t in enumerate(task_list)}
    scored = scored.with_columns(
        pl.col("task").replace_strict(order, default=len(order)).alias("_o"),
        pl.col("id").cast(pl.Int64, strict=False).alias("_n"),
    ).sort(["_o", "task", "_n", "id", "seed"]).drop(["_o", "_n"])
    results = summarize(scored)
    write_table_atomic(scored, previous)
    write_table_atomic(results, out / RESULTS)
    write_text_atomic(out / "results.md", results_markdown(results))
    remove_parts(out)
    return EvaluationResult(generations=scored, results=results, out_dir=out)


def _has_tokenizer(folder) -> bool:
    p = Path(folder)
    return p.is_dir() and any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


# ----------------------------------------------------------------------------------------------
# Teacher-student pairing


def _load_generations(folder: str | os.PathLike):
    from kdlens.io import read_table

    path = Path(folder)
    path = path / GENERATIONS if path.is_dir() else path
    if not path.is_file():
        raise KdlensError(f"{path}: no generations table; run `kdlens evaluate ... -o {folder}` first")
    return read_table(path)


def compare(teacher_dir: str | os.PathLike, student_dir: str | os.PathLike, **bleu_options):
    """Agreement and BLEU fidelity between a teacher's and a student's generations (paper section 6).

    Items are paired on (task, id, seed) when both used the same seeds, else on (task, id) when each
    side has one generation per item. Per task: n (paired items), agreement (% of items whose
    extracted answers are equal; an item where either has no answer does not agree; null for
    ROUGE-L tasks), fidelity (mean sentence BLEU of student output vs teacher output, 0-100),
    corpus_bleu and bleu_signature. Family rows with task "Average" hold unweighted means over the
    family's tasks. ``bleu_options`` go to :func:`kdlens.metrics.sentence_bleu`/``corpus_bleu``.
    """
    import numpy as np
    import polars as pl

    from kdlens import metrics
    from kdlens.tasks import get_task, list_tasks

    teacher = _load_generations(teacher_dir)
    student = _load_generations(student_dir)
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
    cols = key + ["output", "model"]
    paired = teacher.select(cols).join(student.select(cols), on=key, how="inner", suffix="_student")
    if paired.height == 0:
        raise KdlensError(f"{teacher_dir} and {student_dir} share no (task, item) pairs to compare")
    t_name = teacher["model"][0]
    s_name = student["model"][0]
    order = {t.name: i for i, t in enumerate(list_tasks())}
    rows = []
    for name in sorted(paired["task"].unique().to_list(), key=lambda n: order.get(n, 1 << 30)):
        task = get_task(name)
        sub = paired.filter(pl.col("task") == name)
        t_out = sub["output"].to_list()
        s_out = sub["output_student"].to_list()
        agreement = None
        if task.metric == "accuracy":
            from kdlens import answers

            agreement = float(metrics.agreement(t_out, s_out, answers.rule_for_task(task.rule)))
        sentence = np.asarray(metrics.sentence_bleu(s_out, t_out, **bleu_options), dtype=np.float64)
        corpus = metrics.corpus_bleu(s_out, t_out, **bleu_options)
        rows.append({"teacher": t_name, "student": s_name, "task": name, "display": task.display,
                     "family": task.family, "n": sub.height, "agreement": agreement,
                     "fidelity": float(sentence.mean()), "corpus_bleu": float(corpus.score),
                     "bleu_signature": str(corpus.signature)})
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
    lines = ["| teacher | student | family | task | n | agreement | fidelity (BLEU) |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in table.iter_rows(named=True):
        agree = "-" if r["agreement"] is None else f"{r['agreement']:.2f}"
        lines.append(f"| {r['teacher']} | {r['student']} | {r['family']} | {r['display']} | {r['n']} "
                     f"| {agree} | {r['fidelity']:.2f} |")
    sig = table["bleu_signature"][0] if table.height else ""
    return "\n".join(lines) + f"\n\nBLEU: {sig}\n"
