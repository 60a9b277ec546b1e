"""The error analysis (issue 14 item 6): per-item correctness vs fidelity.

References: scipy.stats.pointbiserialr (r and p), scipy.stats.pearsonr(...).confidence_interval
(the Fisher-z interval) and a percentile bootstrap over items written here with numpy; sacreBLEU's
sentence_bleu for the per-item fidelity; the quadrants and example picks written out in plain Python.
Run: python -m pytest tests/stats/test_error_analysis.py -q
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from kdlens.cli import main
from kdlens.errors import KdlensError
from kdlens.metrics.pairs import GENERATIONS
from kdlens.stats.error_analysis import QUADRANTS, error_analysis, instruction_of, pair_items, point_biserial


def _items(correct, fidelity, task="gsm8k", **extra):
    n = len(correct)
    return pl.DataFrame({"teacher": "T", "student": "S", "method": "SeqKD", "task": task,
                         "id": [str(i) for i in range(n)], "fidelity": np.asarray(fidelity, dtype=float),
                         "student_correct": list(map(bool, correct)), "instruction": [f"q{i}" for i in range(n)],
                         "teacher_output": [f"t{i}" for i in range(n)], "student_output": [f"s{i}" for i in range(n)],
                         **extra})


# Fidelity as a BLEU score is reported to two decimals; values on that grid keep scipy's own
# arithmetic exact enough to be the reference (on subnormal spreads such as 5e-324 scipy's r is off
# by 10%: see the scaled test below, which checks those against scipy on the unscaled values).
_FIDELITY = st.integers(0, 10_000).map(lambda v: v / 100)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _FIDELITY), min_size=5, max_size=80),
       st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_point_biserial_matches_scipy(pairs, level):
    correct = np.array([c for c, _ in pairs])
    fid = np.array([f for _, f in pairs])
    r, p, low, high, note = point_biserial(correct, fid, level)
    if correct.all() or not correct.any() or np.ptp(fid) == 0:
        assert r is None and note
        return
    ref = stats.pointbiserialr(correct, fid)
    assert r == pytest.approx(ref.statistic, abs=1e-9)
    if abs(r) < 1 - 1e-9:
        assert p == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)
        ci = stats.pearsonr(correct.astype(float), fid).confidence_interval(level)
        assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10_000)), min_size=5, max_size=40),
       st.sampled_from([5e-324, 1e-310, 1e-200, 1e200]))
def test_point_biserial_is_exact_on_tiny_and_huge_spreads(pairs, scale):
    """r and p do not change under fidelity -> scale * fidelity, even where the scaled values are
    subnormal or their squares overflow; integer fidelities times the scale are exact (to 5e-14 of the
    spread at 1e-310), and the reference is scipy on the unscaled integers."""
    correct = np.array([c for c, _ in pairs])
    fid = np.array([f for _, f in pairs], dtype=float)
    if correct.all() or not correct.any() or np.ptp(fid) == 0:
        return
    r, p, low, high, _ = point_biserial(correct, scale * fid, 0.95)
    ref = stats.pointbiserialr(correct, fid)
    assert r == pytest.approx(ref.statistic, abs=1e-9)
    if abs(r) < 1 - 1e-9:
        assert p == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)


def test_point_biserial_on_a_subnormal_spread():
    # the CI counterexample: one item 5e-324 above the rest; r is that of fidelity [0, 0, 0, 1, 0]
    correct = np.array([False, False, False, False, True])
    r, *_ = point_biserial(correct, np.array([0, 0, 0, 5e-324, 0.0]))
    assert r == pytest.approx(stats.pointbiserialr(correct, [0, 0, 0, 1, 0]).statistic, abs=1e-12)


def test_fisher_interval_agrees_with_a_bootstrap_over_items():
    rng = np.random.default_rng(7)
    n = 3000
    fid = rng.uniform(0, 100, n)
    correct = (fid / 100 + rng.normal(0, 0.6, n)) > 0.5  # a loose link, as the paper argues
    r, _, low, high, _ = point_biserial(correct, fid, 0.95)
    boot = []
    for _ in range(1000):
        idx = rng.integers(0, n, n)
        c, f = correct[idx], fid[idx]
        boot.append(np.corrcoef(c.astype(float), f)[0, 1])
    b_low, b_high = np.percentile(boot, [2.5, 97.5])
    assert low < r < high
    assert low == pytest.approx(b_low, abs=0.015) and high == pytest.approx(b_high, abs=0.015)


def test_quadrants_counts_and_example_picks():
    # 10 items; median fidelity 55 (mean of 50 and 60): high = fidelity >= 55
    fid = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    correct = [1, 0, 1, 0, 0, 1, 1, 0, 1, 1]
    ea = error_analysis(_items(correct, fid), examples=1)
    row = ea.correlations.row(0, named=True)
    median = float(np.median(fid))
    expected = {q: [] for q in QUADRANTS}
    for i, (c, f) in enumerate(zip(correct, fid)):
        expected[f"{'correct' if c else 'wrong'}, {'high' if f >= median else 'low'} fidelity"].append((f, str(i)))
    assert (row["correct_high"], row["correct_low"], row["wrong_high"], row["wrong_low"]) == tuple(
        len(expected[q]) for q in QUADRANTS)
    assert row["n"] == 10 and row["n_correct"] == 6 and row["accuracy"] == 60.0
    assert row["median_fidelity"] == median
    assert row["mean_fidelity_correct"] == pytest.approx(np.mean([f for c, f in zip(correct, fid) if c]))
    ref = stats.pointbiserialr(correct, fid)
    assert row["r_pb"] == pytest.approx(ref.statistic) and row["p_value"] == pytest.approx(ref.pvalue)
    # one example per quadrant: its median-rank item (the upper middle for an even count)
    for q in QUADRANTS:
        members = sorted(expected[q])
        pick = members[len(members) // 2]
        got = ea.examples.filter(pl.col("quadrant") == q)
        assert got.height == 1 and got["quadrant_items"][0] == len(members)
        assert (got["fidelity"][0], got["id"][0]) == pick, q
        assert got["instruction"][0] == f"q{pick[1]}" and got["student_output"][0] == f"s{pick[1]}"


def test_examples_spread_over_the_quadrant_and_pool_comparisons():
    a = _items([1] * 6, [10, 20, 30, 40, 50, 60])
    b = _items([1] * 6, [15, 25, 35, 45, 55, 65]).with_columns(pl.lit("SeqKD-b").alias("method"))
    ea = error_analysis(pl.concat([a, b]), examples=3)
    assert set(ea.correlations["note"].to_list()) == {"the student is always correct"}
    assert ea.correlations["r_pb"].null_count() == 2
    high = ea.examples.filter(pl.col("quadrant") == "correct, high fidelity")
    # each comparison's median is its own (35 and 40): high = {40, 50, 60} and {45, 55, 65}
    assert high["quadrant_items"][0] == 6
    assert high["fidelity"].to_list() == [45.0, 55.0, 65.0]  # ranks 1, 3, 5 of 6: the centres of 3 slices
    every = error_analysis(pl.concat([a, b]), examples=6).examples.filter(pl.col("quadrant") == "correct, high fidelity")
    assert every["fidelity"].to_list() == [40.0, 45.0, 50.0, 55.0, 60.0, 65.0]  # pooled, in fidelity order
    assert every["comparison"].to_list() == ["T -> S, SeqKD", "T -> S, SeqKD-b"] * 3
    assert ea.examples.filter(pl.col("quadrant").str.starts_with("wrong")).height == 0


def test_tasks_without_correctness_and_bad_items():
    items = pl.concat([_items([1, 0, 1, 0], [1, 2, 3, 4]),
                       _items([1, 0, 1, 0], [1, 2, 3, 4], task="dolly").with_columns(
                           pl.lit(None, dtype=pl.Boolean).alias("student_correct"))])
    ea = error_analysis(items)
    assert ea.correlations["task"].to_list() == ["gsm8k"]
    assert "4 item(s) without a correct/wrong score (task(s) dolly" in ea.exclusions[0]
    with pytest.raises(KdlensError, match="missing column.*student_correct"):
        error_analysis(items.drop("student_correct"))
    with pytest.raises(KdlensError, match="outside 0-100"):
        error_analysis(_items([1, 0], [0.0, 101.0]))
    with pytest.raises(KdlensError, match="fidelity' must be numeric"):
        error_analysis(_items([1, 0], [1.0, 2.0]).with_columns(pl.col("fidelity").cast(pl.String)))


def test_instruction_is_read_from_either_alpaca_template():
    from kdlens.data.prompts import get_template

    for name in ("alpaca", "alpaca-paper"):
        template = get_template(name)
        assert instruction_of(template.prompt("What is 3 + 4?")) == "What is 3 + 4?"
        assert instruction_of(template.prompt("Add them.", "3 and 4")) == "Add them."
    assert instruction_of("  plain text document ") == "plain text document"


def _write_generations(folder, model, outputs, correct, prompts, seed=6):
    from kdlens.io import write_table_atomic

    n = len(outputs)
    write_table_atomic(pl.DataFrame({"model": model, "task": ["gsm8k"] * n, "id": [str(i) for i in range(n)],
                                     "seed": [seed] * n, "prompt": prompts, "output": outputs,
                                     "correct": correct}), folder / GENERATIONS)


TEACHER_OUT = ["Step 1: 13 blocks for the house. Step 2: 7 for the tower. The answer is 6.",
               "She has 3 + 4 = 7 apples. The answer is 7.", "12 / 4 = 3. The answer is 3.",
               "The total is 5 * 2 = 10. The answer is 10.", "So 9 - 2 = 7. The answer is 7."]
STUDENT_OUT = ["To find the difference between the blocks, 13 - 7 = 6. The answer is 6.",
               "She has 3 + 4 = 7 apples. The answer is 7.", "12 / 4 = 4. The answer is 4.",
               "The answer is 11.", "So 9 - 2 = 7. The answer is 7."]
STUDENT_OK = [True, True, False, False, True]


@pytest.fixture
def eval_dirs(tmp_path):
    from kdlens.data.prompts import get_template

    prompts = [get_template("alpaca-paper").prompt(f"Question {i}?") for i in range(5)]
    _write_generations(tmp_path / "t", "teacher-7B", TEACHER_OUT, [True] * 5, prompts)
    _write_generations(tmp_path / "s", "student-1B", STUDENT_OUT, STUDENT_OK, prompts)
    return tmp_path / "t", tmp_path / "s"


def test_pair_items_from_two_evaluation_folders(eval_dirs):
    import sacrebleu

    items = pair_items(*eval_dirs, method="SeqKD", seed=1).sort("id")
    assert items["instruction"].to_list() == [f"Question {i}?" for i in range(5)]
    assert items["student_correct"].to_list() == STUDENT_OK
    assert items["teacher"].unique().to_list() == ["teacher-7B"] and items["seed"].unique().to_list() == [1]
    assert items["sample_seed"].unique().to_list() == [6]
    expected = [sacrebleu.sentence_bleu(s, [t]).score for s, t in zip(STUDENT_OUT, TEACHER_OUT)]
    assert items["fidelity"].to_list() == pytest.approx(expected, abs=1e-9)
    ea = error_analysis(items)
    assert ea.correlations["comparison"].to_list() == ["teacher-7B -> student-1B, SeqKD, seed 1"]
    assert ea.correlations["r_pb"][0] == pytest.approx(stats.pointbiserialr(STUDENT_OK, expected).statistic)


def test_compare_cli_error_analysis(eval_dirs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, eval_dirs), "--error-analysis", "--examples", "1", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Per-item correctness vs fidelity" in printed and "Error analysis examples, GSM8K" in printed
    md = (out / "error_analysis.md").read_text()
    assert "To find the difference between the blocks" in md  # the student's output is shown
    items = pl.read_parquet(out / "items.parquet")
    assert items.height == 5 and (out / "error_correlations.csv").is_file() and (out / "comparison.md").is_file()
    r = pl.read_csv(out / "error_correlations.csv")["r_pb"][0]
    assert r == pytest.approx(stats.pointbiserialr(STUDENT_OK, items.sort("id")["fidelity"].to_list()).statistic)
    assert main(["compare", *map(str, eval_dirs), "--error-analysis", "--examples", "-1"]) == 2
    assert "kdlens: error: --examples must be >= 0" in capsys.readouterr().err
    # without the flag: no error analysis; the same OUT is replaced whole, the error files go with it
    assert main(["compare", *map(str, eval_dirs), "-o", str(out)]) == 0
    assert "Per-item correctness" not in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["comparison.md", "comparison.parquet"]


def test_compare_error_analysis_needs_evaluate_columns(tmp_path, capsys):
    from kdlens.io import write_table_atomic

    for side in ("t", "s"):
        write_table_atomic(pl.DataFrame({"model": side, "task": ["gsm8k"], "id": ["0"], "seed": [6],
                                         "output": ["The answer is 1."]}), tmp_path / side / GENERATIONS)
    assert main(["compare", str(tmp_path / "t"), str(tmp_path / "s"), "--error-analysis"]) == 2
    assert "no column(s) prompt, correct" in capsys.readouterr().err
