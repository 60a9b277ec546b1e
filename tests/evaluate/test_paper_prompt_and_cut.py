# ruff: noqa: W291, W293  (the paper's f-strings below keep their trailing spaces: they are the bytes under test)
"""The paper's prompt bytes and response cut, against its own code transcribed.

The functions ``paper_*`` below are transcribed from the paper's repository (LCS2-IIITD/
KD_generalization, generative/): ``generate_prompt`` of evaluate.py / commonsense_evaluate.py (the
evaluation prompt), ``generate_prompt`` of finetune.py (the training text) and the cut of
``evaluate()`` (``output.split("### Response:")[1].strip()``). Their triple-quoted f-strings keep
the source file's indentation and trailing spaces, which are the point of these tests.
Run: ``python -m pytest tests/evaluate/test_paper_prompt_and_cut.py -q``.
"""

import json

import polars as pl
import pytest

from kdlens.data.prompts import ALPACA, get_response_cut, get_template
from kdlens.errors import KdlensError
from kdlens.metrics import answers


def paper_eval_prompt(instruction, input_text=None):  # evaluate.py
    if input_text != None and input_text != "":  # noqa: E711
        return f"""Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.

                ### Instruction:
                {instruction}

                ### Input:
                {input_text}

                ### Response:
                """  # noqa: E501
    else:
        return f"""Below is an instruction that describes a task. Write a response that appropriately completes the request. 

                ### Instruction:
                {instruction}

                ### Response:
                """  # noqa: E501


def paper_train_text(data_point):  # finetune.py
    full_prompt = ""
    if data_point["input"]:
        full_prompt = f"""Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request. 

                ### Instruction:
                {data_point["instruction"]}
                
                ### Input:
                {data_point["input"]}
                
                ### Response:
                {data_point["output"]}""" # noqa: E501
    else:
        full_prompt = f"""Below is an instruction that describes a task. Write a response that appropriately completes the request.  

                ### Instruction:
                {data_point["instruction"]}
                
                ### Response:
                {data_point["output"]}""" # noqa: E501
    return full_prompt


def paper_cut(decoded_prompt_and_generation):  # evaluate.py evaluate()
    return decoded_prompt_and_generation.split("### Response:")[1].strip()


RECORDS = [
    {"instruction": "Tom has 3 apples and buys 4 more. How many apples does he have?", "input": "",
     "output": "Tom has 3 + 4 = 7 apples. The answer is 7."},
    {"instruction": "Add the numbers.", "input": "12 and 30", "output": "12 + 30 = 42. The answer is 42."},
    {"instruction": "Ünïcödé {braces} and a \\t tab\\nand a newline", "input": "  spaced input  ",
     "output": ""},
]


@pytest.mark.parametrize("record", RECORDS)
def test_alpaca_paper_evaluation_prompt_is_the_papers_bytes(record):
    paper = get_template("alpaca-paper")
    got = paper.prompt(record["instruction"], record["input"])
    assert got.encode("utf-8") == paper_eval_prompt(record["instruction"], record["input"]).encode("utf-8")
    assert paper.prompt(record["instruction"], None) == paper_eval_prompt(record["instruction"], None)


@pytest.mark.parametrize("record", RECORDS)
def test_alpaca_paper_training_text_is_the_papers_bytes(record):
    paper = get_template("alpaca-paper")
    got = paper.full_text(record["instruction"], record["input"], record["output"])
    assert got.encode("utf-8") == paper_train_text(record).encode("utf-8")
    # the prompt part (what train_on_inputs=False masks) is the paper's text with an empty output
    assert paper.train_prompt(record["instruction"], record["input"]) == paper_train_text({**record, "output": ""})


def test_the_clean_template_is_shorter_by_the_issues_counts():
    """issue 14 item 1: evaluation prompts 65 characters shorter, training texts 82 (129 with an input)."""
    no_in, with_in = RECORDS[0], RECORDS[1]
    assert len(paper_eval_prompt(no_in["instruction"])) - len(ALPACA.prompt(no_in["instruction"])) == 65
    assert len(paper_train_text(no_in)) - len(ALPACA.full_text(no_in["instruction"], "", no_in["output"])) == 82
    assert len(paper_train_text(with_in)) - len(
        ALPACA.full_text(with_in["instruction"], with_in["input"], with_in["output"])) == 129


ISSUE_CONTINUATION = "The answer is 5.\n\n### Instruction:\nWhat is 3 + 4?\n\n### Response:\nThe answer is 7."


def test_the_two_response_cuts_on_the_issues_example():
    prompt = paper_eval_prompt("What is 2 + 3?")
    paper_text = paper_cut(prompt + ISSUE_CONTINUATION)
    got = get_response_cut("paper")(prompt, ISSUE_CONTINUATION)
    assert got == paper_text == "The answer is 5.\n\n### Instruction:\nWhat is 3 + 4?"
    assert float(answers.extract_answer(got, "gsm8k")) == 4.0  # the paper's reading
    kdlens_cut = get_response_cut("instruction")(prompt, ISSUE_CONTINUATION)
    assert kdlens_cut == "The answer is 5."
    assert float(answers.extract_answer(kdlens_cut, "gsm8k")) == 5.0
    # both cut nothing from a continuation that stops on its own
    assert get_response_cut("paper")(prompt, " 42 \n") == get_response_cut("instruction")(prompt, " 42 \n") == "42"


@pytest.mark.parametrize("continuation", [
    "", "   ", "7", "x ### Response: y", "### Response:", "a\n\n### Input:\nb\n\n### Response:\nc ### Response: d",
    "no marker at all\n### Instruction", " ### Instruction:\nQ\n### Response:\nA",
])
def test_paper_cut_matches_the_papers_split(continuation):
    for prompt in (paper_eval_prompt("Q?"), paper_eval_prompt("Q?", "some input"), ALPACA.prompt("Q?")):
        assert get_response_cut("paper")(prompt, continuation) == paper_cut(prompt + continuation)


def test_unknown_names_and_a_prompt_without_the_marker_are_clear_errors():
    with pytest.raises(KdlensError, match="unknown prompt template 'alpaca_paper'.*alpaca-paper"):
        get_template("alpaca_paper")
    with pytest.raises(KdlensError, match="unknown response cut 'next'"):
        get_response_cut("next")
    with pytest.raises(KdlensError, match="'### Response:'"):
        get_response_cut("paper")("Q: 1 + 1\nA:", " 2")


def test_evaluate_with_the_papers_prompt_and_cut(tiny_lm, tmp_path):
    """evaluate(template='alpaca-paper', response_cut='paper'): the prompt column holds the paper's
    bytes, the output column is the paper's cut of prompt + generation, and generation stops at the
    next "### Response:" (not at "### Instruction", which the paper's cut keeps)."""
    from kdlens.eval.decode import Decoding
    from kdlens.eval.run import evaluate
    from kdlens.eval.tasks import get_task

    model, tok, _ = tiny_lm
    res = evaluate(model, "synthetic", tmp_path / "paper", tokenizer=tok, name="tiny",
                   decoding=Decoding(max_new_tokens=12, batch_size=2), template="alpaca-paper",
                   response_cut="paper", task_options={"synthetic": {"n_test": 4}}, progress=False)
    gens = res.generations.sort("id")
    examples = {ex.id: ex for ex in get_task("synthetic").load(n_test=4)}
    for row in gens.iter_rows(named=True):
        ex = examples[row["id"]]
        assert row["prompt"] == paper_eval_prompt(ex.instruction, ex.input)
        assert row["output"] == paper_cut(row["prompt"] + row["raw_output"])
    run = json.loads((tmp_path / "paper" / "run.json").read_text())
    assert run["template"] == "alpaca-paper" and run["response_cut"] == "paper"
    assert run["decoding"]["stop_strings"] == ["### Response:"]
    # the default run of the same model: the clean prompt, cut at "### Instruction"
    dflt = evaluate(model, "synthetic", tmp_path / "clean", tokenizer=tok, name="tiny",
                    decoding=Decoding(max_new_tokens=12, batch_size=2),
                    task_options={"synthetic": {"n_test": 4}}, progress=False).generations
    assert dflt["prompt"].to_list() != gens["prompt"].to_list()
    assert dflt.select(pl.col("raw_output").str.split("### Instruction").list.first().str.strip_chars()
                       .alias("o"))["o"].to_list() == dflt["output"].to_list()
    assert json.loads((tmp_path / "clean" / "run.json").read_text())["decoding"]["stop_strings"] == ["### Instruction"]
