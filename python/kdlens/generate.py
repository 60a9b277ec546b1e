"""Batched generation for any transformers causal LM: left padding, KV cache, greedy or seeded sampling.

:func:`generate` turns prompts into continuations, ``batch_size`` prompts at a time. Each batch is
left-padded; position ids are counted from the first real token of each row (so padding never
shifts a row's positions); finished rows (EOS or a stop string such as the next
``### Instruction``) are dropped from the batch and its KV cache, so the batch shrinks as it ends.

Reproducibility:
- Greedy decoding does not depend on the batch size or on which prompts share a batch: each row sees
  exactly the positions and keys it would see alone (tested against ``model.generate`` batch 1, in
  float32 on CPU). Exact ties go to the lowest token id. In half precision on a GPU, kernels chosen
  per batch shape round differently, so a near-tie can flip between batch sizes (as in any batched
  generation); evaluate in float32 when bit-identical outputs across batch sizes matter.
- Sampling uses one random generator per item, seeded from the run seed and the item's key, so an
  item's sample is the same whatever its batch (up to floating-point differences between batch
  shapes) and a resumed run draws what the uninterrupted run would have drawn.

:func:`run_generation` is the resumable driver: it generates pending items in chunks, appends each
finished chunk as an atomically written Parquet part file, and skips items already present in the
parts or in a previous final table. Tests: ``python -m pytest tests/evaluate -q``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from kdlens.errors import KdlensError

ITEM_KEY = ("task", "id", "seed")
PARTS_DIR = ".generation-parts"


@dataclass(frozen=True)
class Decoding:
    """How to decode. ``do_sample=False`` is greedy; the paper sampled with T=1, top_k 0, top_p 1.

    ``seeds``: one generation per item per seed (sampling only; greedy needs a single seed).
    ``stop_strings``: generation of an item ends once its continuation contains one of them (the
    prompt template's stop strings are added by the evaluation).
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seeds: tuple[int, ...] = (6,)
    batch_size: int = 16
    stop_strings: tuple[str, ...] = ("### Instruction",)

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))
        if self.max_new_tokens < 1:
            raise KdlensError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise KdlensError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.seeds:
            raise KdlensError("give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise KdlensError(f"seeds must be distinct, got {list(self.seeds)}")
        if self.do_sample:
            if not self.temperature > 0:
                raise KdlensError(f"sampling needs temperature > 0, got {self.temperature}")
            if self.top_k < 0:
                raise KdlensError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
            if not 0 < self.top_p <= 1:
                raise KdlensError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        elif len(self.seeds) > 1:
            raise KdlensError(
                "several seeds only make sense with sampling: greedy decoding gives the same output "
                "for every seed; pass one seed or turn sampling on (do_sample / --sample)"
            )
        if any(not s for s in self.stop_strings):
            raise KdlensError("stop strings must be non-empty")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The paper's decoding (section 5): sampling, T 1.0, top_k 0, top_p 1, 256 new tokens, seed 6.
PAPER_DECODING = Decoding(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=256,
                          seeds=(6,))


@dataclass
class Generation:
    """One continuation: its decoded text, its new token ids and why it ended (eos/stop/length)."""

    text: str
    token_ids: list[int] = field(repr=False)
    prompt_tokens: int
    stop_reason: str

    @property
    def output_tokens(self) -> int:
        return len(self.token_ids)


def item_seed(seed: int, key: str) -> int:
    """The sampling seed of one item: a stable 63-bit hash of the run seed and the item key."""
    digest = hashlib.sha256(f"{int(seed)}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def filter_logits(logits, top_k: int = 0, top_p: float = 1.0):
    """Set logits outside the top-k / nucleus (top-p) to -inf; 0 and 1.0 switch them off.

    The nucleus follows transformers' TopPLogitsWarper: sort ascending, drop the tokens whose
    cumulative probability is <= 1 - top_p, always keep the most likely token.
    """
    import torch

    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= (1 - top_p)
        drop_sorted[..., -1:] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is None:
            continue
        ids.update([value] if isinstance(value, int) else list(value))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _device_of(model):
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        import torch

        return torch.device("cpu")


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    decoding: Decoding = Decoding(),
    *,
    seed: int | None = None,
    keys: Sequence[str] | None = None,
    eos_token_ids: Iterable[int] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Generate one continuation per prompt, in batches of ``decoding.batch_size``.

    ``seed`` (default: the first of ``decoding.seeds``) and ``keys`` (default: the prompt's position)
    seed each item's sampler. ``eos_token_ids`` defaults to the model's and tokenizer's EOS ids.
    ``on_batch(n)`` is called after each batch with its number of prompts (progress bars).
    Returns the generations in the order of ``prompts``.
    """
    import torch

    prompts = list(prompts)
    if keys is None:
        keys = [str(i) for i in range(len(prompts))]
    if len(keys) != len(prompts):
        raise KdlensError(f"got {len(prompts)} prompts but {len(keys)} keys")
    if seed is None:
        seed = decoding.seeds[0]
    if tokenizer.pad_token_id is None:
        raise KdlensError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to EOS)")
    eos = set(eos_token_ids) if eos_token_ids is not None else _eos_ids(model, tokenizer)
    if not prompts:
        return []
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # less padding per batch
    results: list[Generation | None] = [None] * len(prompts)
    device = _device_of(model)
    for start in range(0, len(order), decoding.batch_size):
        rows = order[start:start + decoding.batch_size]
        batch = [encoded[i] for i in rows]
        generators = None
        if decoding.do_sample:
            generators = [torch.Generator(device=device).manual_seed(item_seed(seed, keys[i]))
                          for i in rows]
        outs = _generate_batch(model, tokenizer, batch, decoding, eos, generators, device)
        for i, (tokens, reason) in zip(rows, outs):
            body = tokens[:-1] if reason == "eos" else tokens
            text = tokenizer.decode(body, skip_special_tokens=True)
            results[i] = Generation(text=text, token_ids=tokens, prompt_tokens=len(encoded[i]),
                                    stop_reason=reason)
        if on_batch is not None:
            on_batch(len(rows))
    return results  # type: ignore[return-value]


def _generate_batch(model, tokenizer, batch: list[list[int]], decoding: Decoding, eos: set[int],
                    generators, device) -> list[tuple[list[int], str]]:
    """Decode one left-padded batch with a KV cache; return (new token ids, stop reason) per row."""
    import torch

    width = max(len(ids) for ids in batch)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=device)
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch],
                                  device=device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    stop_window = max((len(s.encode("utf-8")) for s in decoding.stop_strings), default=0) + 1

    generated: list[list[int]] = [[] for _ in batch]
    reasons = ["length"] * len(batch)
    active = list(range(len(batch)))  # original rows still decoding, in cache order
    with torch.inference_mode():
        try:  # logits of the last position only (most causal LMs in transformers accept this)
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=True, logits_to_keep=1)
        except TypeError:
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=True)
        cache = out.past_key_values
        next_positions = position_ids[:, -1] + 1
        for step in range(decoding.max_new_tokens):
            logits = out.logits[:, -1, :].float()
            tokens = _pick(logits, decoding, [generators[r] for r in active] if generators else None)
            keep = []
            for j, (row, token) in enumerate(zip(active, tokens.tolist())):
                generated[row].append(token)
                if token in eos:
                    reasons[row] = "eos"
                elif decoding.stop_strings and _hits_stop(tokenizer, generated[row], stop_window,
                                                          decoding.stop_strings):
                    reasons[row] = "stop"
                else:
                    keep.append(j)
            if not keep or step == decoding.max_new_tokens - 1:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                attention_mask = attention_mask[index]
                next_positions = next_positions[index]
                tokens = tokens[index]
                active = [active[j] for j in keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(active), 1)], 1)
            out = model(input_ids=tokens[:, None], attention_mask=attention_mask,
                        position_ids=next_positions[:, None], past_key_values=cache, use_cache=True)
            next_positions = next_positions + 1
    return list(zip(generated, reasons))


def _pick(logits, decoding: Decoding, generators):
    import torch

    if not decoding.do_sample:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / decoding.temperature, decoding.top_k, decoding.top_p)
    probs = logits.softmax(dim=-1)
    return torch.cat([torch.multinomial(probs[j], 1, generator=g) for j, g in enumerate(generators)])


def _hits_stop(tokenizer, tokens: list[int], window: int, stop_strings: Sequence[str]) -> bool:
    """Whether the tail of the continuation contains a stop string (a stop string of n bytes spans
    at most n tokens, plus one that may carry text before it)."""
    tail = tokenizer.decode(tokens[-window:], skip_special_tokens=True)
    return any(s in tail for s in stop_strings)


# ----------------------------------------------------------------------------------------------
# Resumable, chunked driver


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
