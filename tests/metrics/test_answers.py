"""The Rust answer rules against a plain-Python transcription of the paper's code.

The reference below transcribes LLM-Adapters' evaluate.py / commonsense_evaluate.py as
design/paper.md sections 5-6 state them (re.findall, float(), exact string comparison).
"""

import math
import re

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from kdlens import metrics  # noqa: E402
from kdlens.metrics import answers  # noqa: E402
from kdlens.errors import KdlensError  # noqa: E402

PATTERNS = {
    "boolq": r"true|false", "piqa": r"solution1|solution2",
    "siqa": r"answer1|answer2|answer3|answer4|answer5", "arc_challenge": r"answer1|answer2|answer3|answer4|answer5",
    "arc_easy": r"answer1|answer2|answer3|answer4|answer5", "obqa": r"answer1|answer2|answer3|answer4|answer5",
    "hellaswag": r"ending1|ending2|ending3|ending4", "winogrande": r"option1|option2",
    "aqua": r"A|B|C|D|E",
}
MATH = ["gsm8k", "svamp", "multiarith", "singleeq", "addsub", "synthetic"]


def ref_extract(text, task):
    if task in MATH:
        found = re.findall(r"-?\d+\.?\d*", text.replace(",", ""))
        return found[-1] if found else None
    found = re.findall(PATTERNS[task], text.strip())
    return found[0] if found else None


def ref_value(text, task):  # LLM-Adapters: float(pred[-1]), inf when there is none
    a = ref_extract(text, task)
    return float("inf") if a is None else float(a)


def ref_correct(text, gold, task):
    if task in MATH:
        return abs(float(gold) - ref_value(text, task)) <= 0.001
    a = ref_extract(text, task)
    return a is not None and a == gold


def ref_agree(t, s, task):
    a, b = ref_extract(t, task), ref_extract(s, task)
    if a is None or b is None:
        return False
    if task in MATH:
        return abs(float(a) - float(b)) <= 0.001
    return a == b


ALL_TASKS = MATH + list(PATTERNS)
pieces = st.one_of(
    st.sampled_from(["The answer is ", "answer", "answer3", "answer12", "ending4", "option2", "true",
                     "false", "True", "solution1", "A", "B", "e", "E", "1,000", "-3", "5-3", "2.5",
                     "7.", "--4", "٣", "۵.۲", " ", "\n", ",", ".", "$", "x", "0.0001", "99999999999999999999"]),
    st.text(max_size=5))
texts = st.lists(pieces, max_size=20).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=20), st.sampled_from(ALL_TASKS))
def test_extraction_and_agreement_match_the_reference(pairs, task):
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    assert answers.extract_answers(a, task) == [ref_extract(x, task) for x in a]
    agree = metrics.agreement_per_item(a, b, task)
    assert agree.tolist() == [ref_agree(x, y, task) for x, y in pairs]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(texts, st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 3))),
                min_size=1, max_size=20))
def test_math_accuracy_matches_the_reference(rows):
    outputs = [o for o, _ in rows]
    golds = [repr(g) for _, g in rows]
    ok = answers.is_correct(outputs, golds, "gsm8k")
    assert ok.tolist() == [ref_correct(o, g, "gsm8k") for o, g in rows]
    assert math.isclose(metrics.accuracy(outputs, golds, "gsm8k"), 100 * np.mean(ok))


def test_known_cases():
    assert answers.extract_answer("He pays $1,234.50 so the answer is 18.", "gsm8k") == "18."
    assert answers.answers_match("18.", "18.0", "gsm8k")
    assert answers.answers_match("18.0004", 18, "gsm8k") and not answers.answers_match("18.01", 18, "gsm8k")
    assert answers.extract_answer("Answer: (C)", "aqua") == "A"  # the paper's quirk
    assert answers.extract_answer("the correct answer is answer3", "social_i_qa") == "answer3"
    assert answers.extract_answer("no label here", "boolq") is None
    assert not answers.answers_match(None, "true", "boolq")
    # no answer on either side is never agreement
    assert metrics.agreement(["no number", "7"], ["no number", "7.0"], "svamp") == 50.0
    assert metrics.accuracy(["it is true", "false"], ["true", "true"], "boolq") == 50.0


def test_task_names_of_the_paper_results_resolve():
    import csv

    from kdlens.stats.paper_results import bundled_paper_results

    root = bundled_paper_results()  # the paper's CSVs ship with kdlens
    assert len(list(root.glob("*.csv"))) == 10
    for f in root.glob("*.csv"):
        header = next(csv.reader(open(f)))
        for col in header:
            if col in ("Teacher", "Student", "Pair", "Method", "Average"):
                continue
            assert answers.rule_for_task(col) is answers.TASK_RULES[answers.canonical_task(col)]
    assert answers.rule_for_task("ARC-Easy") is answers.ANSWER_1_TO_5
    assert answers.rule_for_task("SVAMP") is answers.LAST_NUMBER
    assert answers.rule_for_task("openbookqa") is answers.TASK_RULES["obqa"]
    with pytest.raises(KdlensError, match="no answer rule"):
        answers.rule_for_task("mmlu")


def test_bad_gold_is_named():
    with pytest.raises(KdlensError, match="row 1"):
        answers.is_correct(["1", "2"], ["1", "two"], "gsm8k")


def test_arrow_and_polars_columns():
    pl = pytest.importorskip("polars")
    outs = ["so 4", "answer is 5", "none"]
    assert answers.extract_answers(pl.Series(outs), "gsm8k") == ["4", "5", None]
    assert answers.is_correct(pl.Series(outs), np.array([4.0, 6.0, 1.0]), "gsm8k").tolist() == [True, False, False]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(texts, st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.integers(-10**6, 10**6))),
                min_size=1, max_size=20))
def test_numeric_golds_are_read_as_the_paper_reads_them(rows):
    """The paper's *_1.json files carry float answers; its evaluate.py does abs(label - pred) <= 0.001
    with the number as is. Lists, numpy, pandas and polars columns of numbers all score alike."""
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    outputs = [o for o, _ in rows]
    golds = [g for _, g in rows]
    want = [abs(g - ref_value(o, "gsm8k")) <= 0.001 for o, g in rows]
    assert answers.is_correct(outputs, golds, "gsm8k").tolist() == want
    assert answers.is_correct(outputs, np.array(golds, dtype=float), "gsm8k").tolist() == want
    assert answers.is_correct(outputs, pd.Series(golds, dtype=float), "gsm8k").tolist() == want
    assert answers.is_correct(pl.Series(outputs), pl.Series(golds, dtype=pl.Float64), "gsm8k").tolist() == want


def test_issue_numeric_gold_and_thousands_separators():
    assert answers.is_correct(["5"], [5.0], "gsm8k").tolist() == [True]
    assert answers.is_correct(["The answer is 1,000."], ["1,000"], "gsm8k").tolist() == [True]
    assert answers.is_correct(["1000", "999"], ["1,000", "1,000.0"], "gsm8k").tolist() == [True, False]
    assert metrics.accuracy(["so 7", "so 8"], [7, 7.0004], "svamp") == 50.0  # |8 - 7.0004| > 0.001
    assert metrics.accuracy(["so 7", "so 7"], [7, 7.0004], "svamp") == 100.0


def test_golds_the_papers_code_would_crash_on_name_the_row():
    pd = pytest.importorskip("pandas")
    with pytest.raises(KdlensError, match="row 1.*not a number"):
        answers.is_correct(["1", "2"], ["1", "two"], "gsm8k")  # float('two'): ValueError in the paper
    with pytest.raises(KdlensError, match=r"golds\[1\] is null"):
        answers.is_correct(["1", "2"], ["1", None], "gsm8k")  # abs(None - pred): TypeError
    with pytest.raises(KdlensError, match=r"row 2 is missing \(NaN\)"):
        answers.is_correct(["1", "2", "3"], pd.Series([1.0, 2.0, None]), "gsm8k")
    with pytest.raises(KdlensError, match=r"golds\[0\] is null"):
        answers.is_correct(["1"], pd.Series([None], dtype=object), "gsm8k")
    with pytest.raises(KdlensError, match="row 0 is a bool"):
        answers.is_correct(["1"], [True], "gsm8k")
    with pytest.raises(KdlensError, match="row 0 is a number.*compares labels"):
        answers.is_correct(["answer1"], [1.0], "arc_easy")
