"""Zero-shot evaluation run: build the prompts, generate (resumable), score, write the tables.

:func:`evaluate` builds the paper's prompts for each task (the Alpaca template with the response left
open), generates with :mod:`kdlens.eval.resume` (batched, resumable), scores with
:mod:`kdlens.eval.score` (the paper's answer rules of :mod:`kdlens.metrics.answers`, or ROUGE-L for
instruction following), and writes into ``out_dir``:

- ``generations.parquet``: one row per (model, task, item, seed) with prompt, raw_output, output (the
  response: by default cut at the next "### Instruction"; ``response_cut="paper"`` is the paper's
  ``split("### Response:")[1].strip()``, see :mod:`kdlens.data.prompts`), pred, gold, references,
  correct, score, prompt_tokens, output_tokens, stop_reason;
- ``results.parquet`` / ``results.md``: score (%) per task and the family "Average" (unweighted mean
  over the family's tasks, as in the paper);
- ``run.json``: the model and decoding the folder belongs to (a resumed run must match it).

Teacher-student pairing of two such folders is :func:`kdlens.metrics.pairs.compare`.

Tests: ``python -m pytest tests/evaluate -q``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from kdlens.errors import KdlensError
from kdlens.eval.decode import Decoding
from kdlens.eval.resume import ITEM_KEY, check_manifest, remove_parts, run_generation
from kdlens.eval.score import results_markdown, score_generations, summarize
from kdlens.metrics.pairs import GENERATIONS

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
    from kdlens.eval.tasks import get_task

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
    response_cut: str = "instruction",
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
    N items of each task. ``template``/``response_cut``: the prompt layout and where a response ends
    (:mod:`kdlens.data.prompts`; the paper's are "alpaca-paper" and "paper"). Re-running with the same arguments resumes without recomputing.
    """
    import polars as pl
    import torch

    from kdlens.data.prompts import get_response_cut, get_template
    from kdlens.io import write_table_atomic, write_text_atomic
    from kdlens.eval.tasks import Task, resolve_tasks

    tmpl = get_template(template)
    cut = get_response_cut(response_cut)
    task_list = [t for t in tasks] if not isinstance(tasks, str) else resolve_tasks(tasks)
    if not all(isinstance(t, Task) for t in task_list):
        task_list = resolve_tasks([t if isinstance(t, str) else t.name for t in task_list])
    if limit is not None and limit < 1:
        raise KdlensError(f"limit must be >= 1, got {limit}")
    stops = tuple(dict.fromkeys(decoding.stop_strings + cut.stop_strings))
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
        "response_cut": response_cut,
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
        pl.Series("output", [cut(p, r) for p, r in zip(fresh["prompt"], fresh["raw_output"])],
                  dtype=pl.String),
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
