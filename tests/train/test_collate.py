"""Tests of kdlens.data.collate against plain-Python expectations: encoding (prompt + output + EOS,
truncation, label masks with train_on_inputs on/off), right padding to a multiple, shifted labels and
valid-token counts. A character-level tokenizer and a one-line template make every expected id list
writable by hand. Run: ``python -m pytest tests/train/test_collate.py -q``."""

import pytest
import torch

from kdlens.data.collate import IGNORE_INDEX, Example, collate, encode_record, shifted_labels
from kdlens.errors import KdlensError

EOS, PAD = 3, 0


class CharTokenizer:
    """One token per character (its code point); EOS and PAD below every printable character."""

    eos_token_id = EOS

    def __call__(self, text, add_special_tokens=False, truncation=False, max_length=None):
        assert add_special_tokens is False
        ids = [ord(c) for c in text]
        return {"input_ids": ids[:max_length] if truncation else ids}


class Template:
    def train_prompt(self, instruction, input=""):
        return f"Q:{instruction}{input}A:"


def ids(text):
    return [ord(c) for c in text]


REC = {"instruction": "2+3", "input": "", "output": "5"}


def test_prompt_output_and_eos_with_labels_on_inputs():
    e = encode_record(REC, CharTokenizer(), Template(), max_length=64, train_on_inputs=True)
    assert e.input_ids == ids("Q:2+3A:5") + [EOS]
    assert e.labels == e.input_ids
    assert e.prompt_len == len("Q:2+3A:")


def test_train_on_inputs_off_masks_exactly_the_prompt():
    e = encode_record({**REC, "input": "?"}, CharTokenizer(), Template(), max_length=64, train_on_inputs=False)
    prompt = "Q:2+3?A:"
    assert e.input_ids == ids(prompt + "5") + [EOS]
    assert e.labels == [IGNORE_INDEX] * len(prompt) + ids("5") + [EOS]


@pytest.mark.parametrize("max_length,train_on_inputs", [(9, True), (8, True), (8, False), (4, False), (4, True)])
def test_truncation_cuts_the_end_and_keeps_label_masks_consistent(max_length, train_on_inputs):
    full = ids("Q:2+3A:5") + [EOS]  # 9 tokens, prompt 7
    e = encode_record(REC, CharTokenizer(), Template(), max_length=max_length, train_on_inputs=train_on_inputs)
    want = full[:max_length]
    assert e.input_ids == want
    n_prompt = min(7, max_length)
    assert e.prompt_len == n_prompt
    masked = [IGNORE_INDEX] * n_prompt + want[n_prompt:]
    assert e.labels == (want if train_on_inputs else masked)
    assert (EOS in e.input_ids) == (max_length >= 9)  # EOS is appended first, then the cut may drop it


def test_bad_records_and_tokenizers_are_clear_errors():
    with pytest.raises(KdlensError, match="'output' must be a string"):
        encode_record({"instruction": "x", "output": 5}, CharTokenizer(), Template(), max_length=16)
    with pytest.raises(KdlensError, match="'output' must be a string"):
        encode_record({"instruction": "x"}, CharTokenizer(), Template(), max_length=16)

    class NoEos(CharTokenizer):
        eos_token_id = None

    with pytest.raises(KdlensError, match="EOS"):
        encode_record(REC, NoEos(), Template(), max_length=16)


def _examples():
    return [Example(input_ids=[10, 11, 12, 13, 14], labels=[-100, -100, 12, 13, 14], prompt_len=2),
            Example(input_ids=[20, 21, 22], labels=[20, 21, 22], prompt_len=1),
            Example(input_ids=[30], labels=[-100], prompt_len=1)]


@pytest.mark.parametrize("multiple,width", [(1, 5), (4, 8), (5, 5), (8, 8)])
def test_collate_right_pads_to_a_multiple(multiple, width):
    batch = collate(_examples(), PAD, pad_to_multiple_of=multiple)
    want_ids, want_labels, want_mask = [], [], []
    for e in _examples():
        pad = width - len(e.input_ids)
        want_ids.append(e.input_ids + [PAD] * pad)
        want_labels.append(e.labels + [IGNORE_INDEX] * pad)
        want_mask.append([1] * len(e.input_ids) + [0] * pad)
    assert batch["input_ids"].tolist() == want_ids
    assert batch["labels"].tolist() == want_labels
    assert batch["attention_mask"].tolist() == want_mask
    assert all(t.dtype == torch.long for t in batch.values())


def test_collate_empty_batch_is_an_error():
    with pytest.raises(KdlensError, match="empty batch"):
        collate([], PAD)


def test_shifted_labels():
    batch = collate(_examples(), PAD, pad_to_multiple_of=4)
    labels = batch["labels"].tolist()
    want_shift = [row[1:] + [IGNORE_INDEX] for row in labels]
    assert shifted_labels(batch["labels"]).tolist() == want_shift


def test_real_bpe_tokenizer_round_trip_with_the_alpaca_template(task_dir):
    """With the synthetic task's BPE tokenizer: the ids decode back to prompt + output and end in EOS."""
    import json

    from kdlens.data.prompts import get_template
    from kdlens.models import load_tokenizer

    tok = load_tokenizer(task_dir / "tokenizer")
    template = get_template("alpaca")
    record = json.loads((task_dir / "train.json").read_text())[0]
    e = encode_record(record, tok, template, max_length=1024, train_on_inputs=False)
    prompt = template.train_prompt(record["instruction"], record.get("input") or "")
    assert e.input_ids[-1] == tok.eos_token_id
    assert tok.decode(e.input_ids[:-1]) == prompt + record["output"]
    assert tok.decode(e.input_ids[:e.prompt_len]) == prompt
    assert e.labels[:e.prompt_len] == [IGNORE_INDEX] * e.prompt_len and e.labels[e.prompt_len:] == e.input_ids[e.prompt_len:]
