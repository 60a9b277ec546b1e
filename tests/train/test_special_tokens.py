"""Training texts tokenised as the paper's finetune.py does, with a tokenizer that adds a BOS token.

The reference is finetune.py's ``tokenize`` / ``generate_and_tokenize_prompt`` transcribed below
(default ``add_special_tokens=True``, truncation to ``cutoff_len``, EOS appended when shorter, the
prompt length from the prompt tokenised alone). The tokenizer is built offline with ``tokenizers``:
the synthetic task's byte-level BPE plus a ``TemplateProcessing`` post-processor that puts a BOS
first, as Llama-3's does. Run: ``python -m pytest tests/train/test_special_tokens.py -q``.
"""

import pytest

from kdlens.data.collate import IGNORE_INDEX, encode_record, encode_records
from kdlens.data.prompts import get_template

BOS = "<|bos|>"


@pytest.fixture(scope="module")
def bos_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from kdlens.data.synthetic import make_task, train_tokenizer

    texts = make_task(seed=0, n_train=120, n_test=0).texts(get_template("alpaca-paper"))
    base = train_tokenizer(texts, vocab_size=300)
    raw = Tokenizer.from_str(base.backend_tokenizer.to_str())
    raw.add_special_tokens([BOS])
    bos_id = raw.token_to_id(BOS)
    raw.post_processor = TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                            special_tokens=[(BOS, bos_id)])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=BOS, eos_token=base.eos_token,
                                  pad_token=base.pad_token)
    assert tok("7")["input_ids"][0] == bos_id  # the tokenizer really adds a BOS
    assert tok("7", add_special_tokens=False)["input_ids"][0] != bos_id
    return tok


def paper_generate_and_tokenize(tokenizer, data_point, cutoff_len, train_on_inputs, generate_prompt):
    """finetune.py's tokenize + generate_and_tokenize_prompt (the chatglm branches left out)."""
    def tokenize(prompt, add_eos_token=True):
        result = tokenizer(prompt, truncation=True, max_length=cutoff_len, padding=False, return_tensors=None)
        if (result["input_ids"][-1] != tokenizer.eos_token_id and len(result["input_ids"]) < cutoff_len
                and add_eos_token):
            result["input_ids"].append(tokenizer.eos_token_id)
            result["attention_mask"].append(1)
        result["labels"] = result["input_ids"].copy()
        return result

    tokenized_full_prompt = tokenize(generate_prompt(data_point))
    user_prompt = generate_prompt({**data_point, "output": ""})
    user_prompt_len = len(tokenize(user_prompt, add_eos_token=False)["input_ids"])
    if not train_on_inputs:
        tokenized_full_prompt["labels"] = [-100] * user_prompt_len + tokenized_full_prompt["labels"][user_prompt_len:]
    return tokenized_full_prompt, user_prompt_len


RECORDS = [
    {"instruction": "Mia has 12 pens and gives away 5. How many pens are left?", "input": "",
     "output": "Mia starts with 12 pens. 12 - 5 = 7. The answer is 7."},
    {"instruction": "Add the two numbers.", "input": "31 and 8", "output": "31 + 8 = 39. The answer is 39."},
]


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.parametrize("cutoff_len", [256, 40, 12])
@pytest.mark.parametrize("train_on_inputs", [True, False])
def test_paper_special_tokens_match_finetune_py(bos_tokenizer, record, cutoff_len, train_on_inputs):
    paper = get_template("alpaca-paper")

    def generate_prompt(dp):
        return paper.full_text(dp["instruction"], dp["input"], dp["output"])

    want, want_prompt_len = paper_generate_and_tokenize(bos_tokenizer, record, cutoff_len, train_on_inputs,
                                                        generate_prompt)
    got = encode_record(record, bos_tokenizer, paper, max_length=cutoff_len, train_on_inputs=train_on_inputs,
                        add_special_tokens=True)
    assert got.input_ids == want["input_ids"]
    assert got.labels == want["labels"]
    assert got.prompt_len == min(want_prompt_len, len(want["input_ids"]))
    assert got.input_ids[0] == bos_tokenizer.bos_token_id


@pytest.mark.parametrize("cutoff_len", [256, 40, 12])
@pytest.mark.parametrize("train_on_inputs", [True, False])
def test_batched_encoding_matches_finetune_py(bos_tokenizer, cutoff_len, train_on_inputs):
    """encode_records (the training path: one tokenizer call per batch of texts) against the paper's
    per-record tokenize, for batches that split the records unevenly."""
    paper = get_template("alpaca-paper")
    records = RECORDS * 4

    def generate_prompt(dp):
        return paper.full_text(dp["instruction"], dp["input"], dp["output"])

    for batch in (1, 3, 1024):
        got = encode_records(records, bos_tokenizer, paper, max_length=cutoff_len,
                             train_on_inputs=train_on_inputs, add_special_tokens=True, batch=batch)
        assert len(got) == len(records)
        for record, example in zip(records, got):
            want, want_prompt_len = paper_generate_and_tokenize(bos_tokenizer, record, cutoff_len,
                                                                train_on_inputs, generate_prompt)
            assert example.input_ids == want["input_ids"] and example.labels == want["labels"]
            assert example.prompt_len == min(want_prompt_len, len(want["input_ids"]))


def test_kdlens_default_adds_no_special_tokens(bos_tokenizer):
    paper = get_template("alpaca-paper")
    rec = RECORDS[0]
    plain = encode_record(rec, bos_tokenizer, paper, max_length=256, add_special_tokens=False)
    with_bos = encode_record(rec, bos_tokenizer, paper, max_length=256, add_special_tokens=True)
    assert with_bos.input_ids == [bos_tokenizer.bos_token_id] + plain.input_ids
    assert plain.input_ids[-1] == bos_tokenizer.eos_token_id and with_bos.prompt_len == plain.prompt_len + 1
    assert IGNORE_INDEX not in plain.labels


def test_the_paper_presets_use_the_paper_conditions():
    import tomllib
    from importlib import resources

    from kdlens.train.config import PRESETS, TrainConfig

    for name in PRESETS:
        teacher = {"teacher": "t"} if PRESETS[name]["mode"] == "kd" else {}
        cfg = TrainConfig.from_preset(name, out_dir="x", data="d.json", student="s", **teacher)
        assert (cfg.template, cfg.add_special_tokens) == ("alpaca-paper", True), name
    assert (TrainConfig.template, TrainConfig.add_special_tokens) == ("alpaca", False)  # new studies: clean
    for preset in resources.files("kdlens.study.presets").iterdir():
        if preset.name.startswith("paper-") and preset.name.endswith(".toml"):
            study = tomllib.loads(preset.read_text())
            assert study["train"]["template"] == "alpaca-paper" and study["train"]["add_special_tokens"] is True
            assert study["evaluate"]["response_cut"] == "paper"
