"""The resumable generation driver: pending items in chunks, each finished chunk an atomic part file.

:func:`run_generation` generates the items of a table that are not yet done (done = present in a
previous final table or in a part file of ``out_dir/.generation-parts``) with
:func:`kdlens.eval.decode.generate`, chunk by chunk, so a killed run resumes where it stopped and
draws what the uninterrupted run would have drawn. :func:`check_manifest` refuses to resume a
folder that belongs to another model or decoding. Tests: ``python -m pytest tests/evaluate -q``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from kdlens.errors import KdlensError
from kdlens.eval.decode import Decoding, generate

ITEM_KEY = ("task", "id", "seed")
PARTS_DIR = ".generation-parts"


def _read_done(out_dir: Path, final_name: str):
    """Rows already generated: the previous final table plus every part file."""
    import polars as pl

    from kdlens.io import read_table

    frames = []
    final = out_dir / final_name
    if final.is_file():
        frames.append(read_table(final))
    parts = sorted((out_dir / PARTS_DIR).glob("part-*.parquet")) if (out_dir / PARTS_DIR).is_dir() else []
    frames.extend(read_table(p) for p in parts)
    if not frames:
        return None, parts
    return pl.concat(frames, how="diagonal_relaxed"), parts


def _flatten(obj: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _holds_outputs(out_dir: Path, manifest_name: str) -> bool:
    """Whether a folder holds anything besides its manifest (and empty folders): generations or parts.
    A run that failed before generating anything (a wrong --model) leaves only the manifest."""
    return any(p.name != manifest_name and not (p.is_dir() and not any(p.iterdir())) for p in out_dir.iterdir())


def check_manifest(out_dir: Path, manifest: dict, name: str = "run.json") -> None:
    """Refuse to mix outputs of different runs in one folder; write the manifest on first use (a
    manifest with no outputs next to it is a failed start, and is replaced)."""
    from kdlens.io import write_json_atomic

    path = out_dir / name
    manifest = json.loads(json.dumps(manifest, sort_keys=True, default=str))
    if path.is_file() and _holds_outputs(out_dir, name):
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != manifest:
            old, new = _flatten(previous), _flatten(manifest)
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise KdlensError(
                f"{out_dir} holds generations of a different run (differs in: {', '.join(diff)}). "
                "Use a new output folder, or delete the old one to start again."
            )
        return
    write_json_atomic(path, manifest)


def run_generation(
    items,
    out_dir: str | os.PathLike,
    decoding: Decoding,
    load_model: Callable[[], tuple],
    *,
    final_name: str = "generations.parquet",
    chunk_size: int | None = None,
    progress: bool = True,
):
    """Generate every pending item of ``items`` and return all generated rows (old and new).

    ``items`` is a Polars frame with columns task, id, seed, prompt (one row per item and seed).
    Items whose (task, id, seed) already appear in ``out_dir/final_name`` or in a part file are not
    generated again. New rows are appended ``chunk_size`` items at a time as
    ``out_dir/.generation-parts/part-NNNNN.parquet`` (each written atomically), so a killed run
    loses at most one chunk. ``load_model()`` returns ``(model, tokenizer)`` and is only called when
    something is pending. Returned columns: task, id, seed, prompt, raw_output, prompt_tokens,
    output_tokens, stop_reason.
    """
    import polars as pl
    from tqdm.auto import tqdm

    from kdlens.io import write_table_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done, parts = _read_done(out, final_name)
    pending = items
    if done is not None:
        done = done.unique(subset=list(ITEM_KEY), keep="last")
        pending = items.join(done.select(ITEM_KEY), on=list(ITEM_KEY), how="anti")
    chunk_size = chunk_size or decoding.batch_size * 8
    new_frames = []
    if pending.height:
        model, tokenizer = load_model()
        # Longest prompts first over the whole run: least padding, and memory trouble shows early.
        lengths = [len(x) for x in tokenizer(pending["prompt"].to_list(), add_special_tokens=True)["input_ids"]]
        pending = pending.with_columns(pl.Series("_len", lengths)).sort(
            ["_len", "task", "id", "seed"], descending=[True, False, False, False]).drop("_len")
        next_part = 1 + max((int(p.stem.split("-")[1]) for p in parts), default=-1)
        bar = tqdm(total=items.height, initial=items.height - pending.height, unit="item",
                   desc="generate", disable=not progress)
        try:
            for start in range(0, pending.height, chunk_size):
                chunk = pending.slice(start, chunk_size)
                rows = []
                for seed in chunk["seed"].unique(maintain_order=True).to_list():
                    sub = chunk.filter(pl.col("seed") == seed)
                    keys = [f"{t}/{i}" for t, i in zip(sub["task"], sub["id"])]
                    gens = generate(model, tokenizer, sub["prompt"].to_list(), decoding, seed=seed,
                                    keys=keys, on_batch=bar.update)
                    rows.append(sub.select(ITEM_KEY + ("prompt",)).with_columns(
                        pl.Series("raw_output", [g.text for g in gens], dtype=pl.String),
                        pl.Series("prompt_tokens", [g.prompt_tokens for g in gens], dtype=pl.Int64),
                        pl.Series("output_tokens", [g.output_tokens for g in gens], dtype=pl.Int64),
                        pl.Series("stop_reason", [g.stop_reason for g in gens], dtype=pl.String),
                    ))
                frame = pl.concat(rows)
                write_table_atomic(frame, out / PARTS_DIR / f"part-{next_part:05d}.parquet")
                next_part += 1
                new_frames.append(frame)
        finally:
            bar.close()
    frames = ([done] if done is not None else []) + new_frames
    if not frames:
        return items.head(0)
    allrows = pl.concat(frames, how="diagonal_relaxed").unique(subset=list(ITEM_KEY), keep="last")
    return allrows


def remove_parts(out_dir: str | os.PathLike) -> None:
    """Delete the part files once their rows are in the final table."""
    folder = Path(out_dir) / PARTS_DIR
    if folder.is_dir():
        for p in folder.glob("part-*.parquet"):
            p.unlink()
        try:
            folder.rmdir()
        except OSError:
            pass
