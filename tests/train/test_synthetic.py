"""Tests of the built-in synthetic task, its tokenizer and the tiny model configs.

Run: ``python -m pytest tests/train/test_synthetic.py -q``.
"""

import re

import pytest

from kdlens.data.synthetic import (EOS_TOKEN, OPERATIONS, PAD_TOKEN, answer_of, make_task,
                                   train_tokenizer, write_task)
from kdlens.errors import KdlensError

EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def test_same_seed_same_task_and_different_seed_differs():
    a, b = make_task(seed=3, n_train=200, n_test=50), make_task(seed=3, n_train=200, n_test=50)
    assert a.train == b.train and a.test == b.test
    c = make_task(seed=4, n_train=200, n_test=50)
    assert [r["instruction"] for r in c.train] != [r["instruction"] for r in a.train]


def test_splits_do_not_overlap_and_test_does_not_depend_on_n_train():
    small = make_task(seed=0, n_train=100, n_test=80)
    big = make_task(seed=0, n_train=1500, n_test=80)
    train_q = {r["instruction"] for r in big.train}
    test_q = {r["instruction"] for r in big.test}
    assert len(train_q) == 1500 and len(test_q) == 80  # no duplicates inside a split
    assert not train_q & test_q
    assert small.test == big.test
    assert small.train == big.train[:100]


def test_every_rationale_is_correct_arithmetic_ending_in_the_answer():
    task = make_task(seed=1, n_train=600, n_test=100, levels=(1, 2, 3))
    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
    for r in task.train + task.test:
        assert set(r) >= {"instruction", "input", "output", "answer"}
        assert r["input"] == ""
        assert r["output"].endswith(f"The answer is {r['answer']}.")
        equations = EQUATION.findall(r["output"])
        assert equations, r
        for x, op, y, z in equations:
            x, y, z = int(x), int(y), int(z)
            if op == "/":
                assert y * z == x, r  # exact division
            else:
                assert ops[op](x, y) == z, r
            assert z >= 0
        assert int(equations[-1][3]) == int(r["answer"])
        assert answer_of(r["output"]) == float(r["answer"])
        # the operands of the first equation come from the question itself
        first = equations[0]
        q_numbers = re.findall(r"\d+", r["instruction"])
        assert first[0] in q_numbers or first[0] == str(sum(int(n) for n in q_numbers[:2]))
    assert {r["op"] for r in task.train} == set(OPERATIONS)
    assert {r["level"] for r in task.train} == {1, 2, 3}


def test_levels_scale_the_numbers():
    easy = make_task(seed=0, n_train=300, n_test=10, levels=(1,))
    hard = make_task(seed=0, n_train=300, n_test=10, levels=(3,))
    mean = lambda t: sum(int(r["answer"]) for r in t.train) / len(t.train)  # noqa: E731
    assert mean(hard) > 5 * mean(easy)


@pytest.mark.parametrize("kwargs", [
    dict(n_train=0, n_test=0), dict(levels=(7,)), dict(operations=("modulo",)), dict(test_share=1.5),
])
def test_bad_arguments_are_clear_errors(kwargs):
    with pytest.raises(KdlensError):
        make_task(**kwargs)


def test_impossible_request_is_a_clear_error():
    with pytest.raises(KdlensError, match="distinct problems"):
        make_task(n_train=26000, n_test=0, levels=(1,), operations=("divide",))


def test_tokenizer_round_trips_splits_digits_and_saves(tmp_path):
    from transformers import AutoTokenizer

    task = make_task(seed=0, n_train=300, n_test=20)
    tok = train_tokenizer(task.texts(), vocab_size=400)
    assert len(tok) == 400
    assert tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert tok.eos_token_id != tok.pad_token_id
    for text in task.texts()[:50] + [r["instruction"] for r in task.test]:
        ids = tok(text).input_ids
        assert tok.decode(ids) == text
    digits = [t for t in tok.convert_ids_to_tokens(tok("x 1234 = 5").input_ids) if any(c.isdigit() for c in t)]
    assert digits == ["1", "2", "3", "4", "5"]
    paths = write_task(tmp_path / "task", task, tokenizer=tok)
    again = AutoTokenizer.from_pretrained(str(paths["tokenizer"]))
    assert again(task.texts()[0]).input_ids == tok(task.texts()[0]).input_ids
    assert again.eos_token_id == tok.eos_token_id and again.pad_token_id == tok.pad_token_id
    import json
    assert json.loads(paths["test"].read_text()) == task.test


def test_tiny_configs_build_ordered_sizes_and_run(tmp_path):
    import torch

    from kdlens.models import (TINY_CONFIGS, load_causal_lm, make_tiny_model, size_in_billions,
                               tiny_param_count)

    sizes = [tiny_param_count(n, 512) for n in ("tiny-s1", "tiny-s2", "tiny-s3", "tiny-s4", "tiny-teacher")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 5
    assert sizes[3] / sizes[0] >= 10  # the students span at least 10x, as the paper's do
    assert 2e4 < sizes[0] and sizes[-1] < 5e6
    model = make_tiny_model("tiny-s2", vocab_size=512, seed=1)
    assert sum(p.numel() for p in model.parameters()) == sizes[1]
    assert size_in_billions(model) == pytest.approx(sizes[1] / 1e9)
    same = make_tiny_model("tiny-s2", vocab_size=512, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))
    out = model(torch.tensor([[3, 4, 5]])).logits
    assert out.shape == (1, 3, 512)
    model.save_pretrained(tmp_path / "m")
    loaded = load_causal_lm(tmp_path / "m")
    assert torch.allclose(loaded(torch.tensor([[3, 4, 5]])).logits, out)
    assert set(TINY_CONFIGS) == {"tiny-teacher", "tiny-s1", "tiny-s2", "tiny-s3", "tiny-s4"}
    with pytest.raises(KdlensError):
        make_tiny_model("tiny-huge")
