"""The decoder: batched generation for any transformers causal LM, left padding, KV cache, greedy or
seeded sampling.

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

The resumable driver over it is :mod:`kdlens.eval.resume`; GKD's on-policy sampling in training
uses this decoder too. Tests: ``python -m pytest tests/evaluate/test_generate.py -q``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from kdlens.errors import KdlensError


@dataclass(frozen=True)
class Decoding:
    """How to decode. ``do_sample=False`` is greedy; the paper sampled with T=1, top_k 0, top_p 1.

    ``seeds``: one generation per item per seed (sampling only; greedy needs a single seed).
    ``stop_strings``: generation of an item ends once its continuation contains one of them (the
    evaluation adds its response cut's, e.g. ``"### Instruction"``; see :mod:`kdlens.data.prompts`).
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seeds: tuple[int, ...] = (6,)
    batch_size: int = 16
    stop_strings: tuple[str, ...] = ()

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

    transformers' ``TopKLogitsWarper`` then ``TopPLogitsWarper`` (the order ``generate`` applies
    them in): the nucleus sorts ascending, drops the tokens whose cumulative probability is
    <= 1 - top_p and always keeps the most likely token.
    """
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    if top_k and top_k < logits.size(-1):
        logits = TopKLogitsWarper(top_k)(None, logits)
    if top_p < 1.0:
        logits = TopPLogitsWarper(top_p)(None, logits)
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


def generate_ids(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    decoding: Decoding = Decoding(),
    *,
    seed: int | None = None,
    keys: Sequence[str] | None = None,
    eos_token_ids: Iterable[int] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[tuple[list[int], str]]:
    """Decode already tokenised prompts: (new token ids, stop reason) per prompt, in prompt order.

    The stop reason is "eos" (the last id is the EOS token), "stop" (a stop string) or "length".
    ``seed`` (default: the first of ``decoding.seeds``) and ``keys`` (default: the prompt's position)
    seed each item's sampler. ``eos_token_ids`` defaults to the model's and tokenizer's EOS ids.
    ``on_batch(n)`` is called after each batch with its number of prompts (progress bars).
    """
    import torch

    prompt_ids = [list(p) for p in prompt_ids]
    if keys is None:
        keys = [str(i) for i in range(len(prompt_ids))]
    if len(keys) != len(prompt_ids):
        raise KdlensError(f"got {len(prompt_ids)} prompts but {len(keys)} keys")
    if seed is None:
        seed = decoding.seeds[0]
    if tokenizer.pad_token_id is None:
        raise KdlensError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to EOS)")
    eos = set(eos_token_ids) if eos_token_ids is not None else _eos_ids(model, tokenizer)
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))  # less padding per batch
    results: list[tuple[list[int], str] | None] = [None] * len(prompt_ids)
    device = _device_of(model)
    for start in range(0, len(order), decoding.batch_size):
        rows = order[start:start + decoding.batch_size]
        batch = [prompt_ids[i] for i in rows]
        generators = None
        if decoding.do_sample:
            generators = [torch.Generator(device=device).manual_seed(item_seed(seed, keys[i]))
                          for i in rows]
        outs = _generate_batch(model, tokenizer, batch, decoding, eos, generators, device)
        for i, out in zip(rows, outs):
            results[i] = out
        if on_batch is not None:
            on_batch(len(rows))
    return results  # type: ignore[return-value]


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

    Tokenises the prompts and decodes them with :func:`generate_ids` (same ``seed``, ``keys``,
    ``eos_token_ids`` and ``on_batch``). Returns the generations in the order of ``prompts``.
    """
    prompts = list(prompts)
    if keys is not None and len(keys) != len(prompts):
        raise KdlensError(f"got {len(prompts)} prompts but {len(keys)} keys")
    if tokenizer.pad_token_id is None:
        raise KdlensError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to EOS)")
    if not prompts:
        return []
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    outs = generate_ids(model, tokenizer, encoded, decoding, seed=seed, keys=keys,
                        eos_token_ids=eos_token_ids, on_batch=on_batch)
    results = []
    for ids, (tokens, reason) in zip(encoded, outs):
        body = tokens[:-1] if reason == "eos" else tokens
        results.append(Generation(text=tokenizer.decode(body, skip_special_tokens=True), token_ids=tokens,
                                  prompt_tokens=len(ids), stop_reason=reason))
    return results


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
