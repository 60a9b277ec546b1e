"""Tokenising records into training examples and padding them into batches.

An example is ``prompt + output`` tokenised and truncated to ``max_length``, EOS appended when
shorter (the paper's finetune.py ``tokenize``); its labels are
the input ids (the paper's train_on_inputs=True) or -100 over the prompt. Batches are right-padded
with the pad id; padded positions get attention 0 and label -100. The token counts the loss is
normalised by are :func:`kdlens.train.step.step_token_counts`.

Tests: ``python -m pytest tests/train/test_collate.py -q``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from kdlens.errors import KdlensError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    prompt_len: int


def _texts(record: dict, template) -> tuple[str, str]:
    """(training prompt, training text) of one record."""
    prompt = template.train_prompt(record["instruction"], record.get("input") or "")
    output = record.get("output")
    if not isinstance(output, str):
        raise KdlensError(f"a record's 'output' must be a string, got {type(output).__name__}")
    return prompt, prompt + output


def _example(full_ids: list[int], prompt_ids: list[int], eos_id: int, *, max_length: int,
             train_on_inputs: bool) -> Example:
    full_ids = list(full_ids)
    if (not full_ids or full_ids[-1] != eos_id) and len(full_ids) < max_length:
        full_ids.append(eos_id)
    n_prompt = min(len(prompt_ids), len(full_ids))
    labels = list(full_ids)
    if not train_on_inputs:
        labels[:n_prompt] = [IGNORE_INDEX] * n_prompt
    return Example(input_ids=full_ids, labels=labels, prompt_len=n_prompt)


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise KdlensError("the tokenizer has no EOS token; training needs one to end responses")
    return tokenizer.eos_token_id


def encode_record(record: dict, tokenizer, template, *, max_length: int, train_on_inputs: bool = True,
                  add_special_tokens: bool = False) -> Example:
    """One LLM-Adapters record -> an :class:`Example`, tokenised as the paper's finetune.py does.

    The training text (``template.full_text``) is tokenised with truncation to ``max_length``; EOS
    is appended when the text is shorter and does not already end in it. ``add_special_tokens``:
    let the tokenizer add its special tokens (e.g. Llama-3's BOS; the paper's default, True) or not
    (kdlens's default). The prompt length is that of the training prompt tokenised the same way.
    """
    prompt, full = _texts(record, template)
    eos = _eos_id(tokenizer)

    def tokenize(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=add_special_tokens, truncation=True,
                              max_length=max_length)["input_ids"])

    return _example(tokenize(full), tokenize(prompt), eos, max_length=max_length, train_on_inputs=train_on_inputs)


def encode_records(records, tokenizer, template, *, max_length: int, train_on_inputs: bool = True,
                   add_special_tokens: bool = False, batch: int = 1024) -> list[Example]:
    """:func:`encode_record` of each record, the texts tokenised ``batch`` at a time (one tokenizer call
    per batch instead of two per record; the ids are those of the per-record calls)."""
    eos = _eos_id(tokenizer)

    def tokenize(column: list[str]) -> list[list[int]]:
        return tokenizer(column, add_special_tokens=add_special_tokens, truncation=True,
                         max_length=max_length)["input_ids"]

    out: list[Example] = []
    records = list(records)
    for start in range(0, len(records), batch):
        texts = [_texts(r, template) for r in records[start:start + batch]]
        prompts, fulls = tokenize([p for p, _ in texts]), tokenize([f for _, f in texts])
        out.extend(_example(f, p, eos, max_length=max_length, train_on_inputs=train_on_inputs)
                   for f, p in zip(fulls, prompts))
    return out


def collate(examples: Sequence[Example], pad_id: int, *, pad_to_multiple_of: int = 1):
    """Right-pad examples into ``{"input_ids", "attention_mask", "labels"}`` int64 tensors."""
    import torch

    if not examples:
        raise KdlensError("cannot collate an empty batch")
    length = max(len(e.input_ids) for e in examples)
    if pad_to_multiple_of > 1:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def shifted_labels(labels):
    """Next-token targets at each position: labels shifted left by one, -100 at the last position."""
    import torch

    out = torch.full_like(labels, IGNORE_INDEX)
    out[:, :-1] = labels[:, 1:]
    return out
