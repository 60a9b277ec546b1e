"""Scoring against a plain-Python transcription of the paper's rules (paper.md section 5).

The transcription below follows LLM-Adapters' evaluate.py / commonsense_evaluate.py line by line;
kdlens.eval.score.score_task (which calls kdlens.metrics.answers, the Rust implementation shared with the
agreement metric) must agree with it on every edge case. ROUGE-L is checked against rouge-score
and a hand-computed longest common subsequence.
"""

import re

import pytest

from kdlens.eval.score import rouge_l, score_task, summarize
from kdlens.eval.tasks import get_task

LABELS = {
    "aqua": ["A", "B", "C", "D", "E"],
    "boolq": ["true", "false"],
    "piqa": ["solution1", "solution2"],
    "siqa": [f"answer{i}" for i in range(1, 6)],
    "arc_challenge": [f"answer{i}" for i in range(1, 6)],
    "arc_easy": [f"answer{i}" for i in range(1, 6)],
    "obqa": [f"answer{i}" for i in range(1, 6)],
    "hellaswag": [f"ending{i}" for i in range(1, 5)],
    "winogrande": ["option1", "option2"],
}


def paper_number(text):
    """LLM-Adapters math: commas removed, the LAST -?\\d+\\.?\\d* match as a float; none -> None."""
    found = re.findall(r"-?\d+\.?\d*", text.replace(",", ""))
    return float(found[-1]) if found else None


def paper_label(text, labels):
    """LLM-Adapters commonsense / AQuA: the FIRST match of the label alternation; none -> None."""
    found = re.findall("|".join(labels), text.strip())
    return found[0] if found else None


def paper_correct(task, text, gold):
    if task in LABELS:
        pred = paper_label(text, LABELS[task])
        return pred is not None and pred == gold
    pred = paper_number(text)
    return pred is not None and abs(float(gold) - pred) <= 0.001


MATH_CASES = [  # (output, gold)
    ("Step 1: 16 - 3 - 4 = 9. 9 * 2 = 18. The answer is 18.", "18"),
    ("I cannot tell.", "5"),  # no number: no answer, wrong
    ("", "0"),
    ("He has 1,234 apples in total.", "1234"),  # thousands separator
    ("1,234,567.5 is the total", "1234567.5"),
    ("It went from 3 to -5 degrees.", "-5"),  # negative
    ("So 10-8", "-8"),  # the minus glued to a number is read as a sign
    ("It costs 2.50 dollars.", "2.5"),  # decimal
    ("The answer is 7.", "7.0"),  # "7." is a match
    ("18.0004", "18"),  # within 0.001
    ("18.002", "18"),  # outside 0.001
    ("Values 1.2.3", "3"),
    ("--5 and then 6", "6"),
    ("3e5", "5"),
    ("the answer is ٣", "3"),  # Arabic-Indic digit: a decimal digit for Python's \d
    ("total １２ eggs", "12"),  # full-width digits
    ("x² = 4 so x is ½", "4"),  # superscript two and one-half are not decimal digits
    ("🍎🍎 7 apples", "7"),
    ("12345678901234567890", "12345678901234567890"),
    ("The answer is 0.5", ".5"),
    ("-0", "0"),
]

LABEL_CASES = {
    "aqua": [("Answer: C", "A"), ("the correct option is c", "C"), ("(B) 35", "B"), ("Éclair E", "E"),
             ("", "A"), ("The speed is 40 km/h, so (C)", "C")],
    "boolq": [("True, it is false", "false"), ("the correct answer is true", "true"), ("untrue", "true"),
              ("TRUE", "true"), ("false or true", "false")],
    "piqa": [("solution2 or solution1", "solution2"), ("Solution1", "solution1"), ("solution12", "solution1")],
    "siqa": [("answer6 then answer3", "answer3"), ("answer12", "answer1"), ("Answer2", "answer2"),
             ("the correct answer is answer5", "answer5")],
    "hellaswag": [("ending5 ending4", "ending4"), ("the correct answer is ending2", "ending1")],
    "winogrande": [("option2", "option2"), ("Option1", "option1"), ("option3 option1", "option1")],
    "arc_easy": [("answer4", "answer4"), ("réponse answer1", "answer2")],
    "arc_challenge": [("answer5", "answer5")],
    "obqa": [("answer1 answer2", "answer2")],
}


@pytest.mark.parametrize("task", ["gsm8k", "svamp", "multiarith", "singleeq", "addsub", "synthetic"])
def test_math_scoring_matches_paper_transcription(task):
    outputs = [o for o, _ in MATH_CASES]
    golds = [g for _, g in MATH_CASES]
    preds, correct, scores = score_task(get_task(task), outputs, golds, [[g] for g in golds])
    for out, gold, pred, ok, score in zip(outputs, golds, preds, correct, scores):
        expected = paper_number(out)
        assert (pred is None) == (expected is None), out
        if pred is not None:
            assert float(pred) == expected, out
        assert ok == paper_correct(task, out, gold), out
        assert score == (100.0 if ok else 0.0)
    assert any(correct) and not all(correct)


@pytest.mark.parametrize("task", list(LABEL_CASES))
def test_label_scoring_matches_paper_transcription(task):
    outputs = [o for o, _ in LABEL_CASES[task]]
    golds = [g for _, g in LABEL_CASES[task]]
    preds, correct, _ = score_task(get_task(task), outputs, golds, [[g] for g in golds])
    assert preds == [paper_label(o, LABELS[task]) for o in outputs]
    assert correct == [paper_correct(task, o, g) for o, g in zip(outputs, golds)]


def _lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_rouge_l_f_stemmed_max_over_references():
    from rouge_score import rouge_scorer

    # Plain LCS on words no stemmer changes: LCS("the cat sat on the mat", "the cat is on the mat") = 5.
    hyp, ref = "The cat sat on the mat", "the cat is on the mat"
    lcs = _lcs(hyp.lower().split(), ref.lower().split())
    p, r = lcs / 6, lcs / 6
    assert rouge_l([hyp], [[ref]])[0] == pytest.approx(100 * 2 * p * r / (p + r))
    # Stemming: cats/cat and running/runs reduce to the same stems.
    assert rouge_l(["cats running"], [["cat runs"]])[0] == pytest.approx(100.0)
    # Max over references, and agreement with rouge-score on several items.
    outs = ["J'aime le fromage.", "green grass", "apple and banana", ""]
    refs = [["J'aime le fromage.", "J'adore le fromage."], ["green"], ["apple and pear", "banana and kiwi"],
            ["anything"]]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [100 * max(scorer.score(r, o)["rougeL"].fmeasure for r in rs) for o, rs in zip(outs, refs)]
    assert rouge_l(outs, refs).tolist() == pytest.approx(expected)
    assert expected[0] == pytest.approx(100.0) and expected[-1] == 0.0
    preds, correct, scores = score_task(get_task("sinst"), outs, [r[0] for r in refs], refs)
    assert preds == [None] * 4 and correct == [None] * 4 and scores == pytest.approx(expected)


def test_summarize_family_average_is_unweighted_mean_over_tasks():
    import polars as pl

    rows = []
    # gsm8k: 1 of 4 right (25%); svamp: 1 of 1 (100%): Average 62.5, not 2/5 = 40%.
    for i, ok in enumerate([1, 0, 0, 0]):
        rows.append(("m", "gsm8k", str(i), 6, 100.0 * ok))
    rows.append(("m", "svamp", "0", 6, 100.0))
    # two seeds on dolly: per-seed means 50 and 30 -> 40 +- 10
    rows += [("m", "dolly", "0", 1, 60.0), ("m", "dolly", "1", 1, 40.0),
             ("m", "dolly", "0", 2, 20.0), ("m", "dolly", "1", 2, 40.0)]
    frame = pl.DataFrame(rows, schema=["model", "task", "id", "seed", "score"], orient="row")
    res = summarize(frame)
    got = {(r["family"], r["task"]): r for r in res.iter_rows(named=True)}
    assert got[("math", "gsm8k")]["score"] == 25.0 and got[("math", "gsm8k")]["n"] == 4
    assert got[("math", "Average")]["score"] == 62.5 and got[("math", "Average")]["n"] == 5
    assert got[("instruct", "dolly")]["score"] == pytest.approx(40.0)
    assert got[("instruct", "dolly")]["score_std"] == pytest.approx(10.0)
    assert got[("instruct", "dolly")]["n"] == 2 and got[("instruct", "dolly")]["seeds"] == 2
    assert [r["task"] for r in res.iter_rows(named=True)] == ["gsm8k", "svamp", "Average", "dolly", "Average"]
