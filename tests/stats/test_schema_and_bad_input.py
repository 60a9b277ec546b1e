"""Validation of the tidy schema and the treatment of bad input: a KdlensError that names the
problem, or an exclusion sentence, never a silent drop."""

from __future__ import annotations

import polars as pl
import pytest
import synthetic_study as syn
from kdlens.errors import KdlensError
from kdlens.stats import (
    build_units,
    h1_improvement_ttest,
    parse_size_b,
    validate_pair_metric,
    validate_results,
)
from kdlens.stats.schema import canonical_task


@pytest.mark.parametrize(
    "name, size",
    [("Qwen2.5-1.5B", 1.5), ("Llama-3.2-1B", 1.0), ("Llama-3.1-8B", 8.0), ("Qwen2.5-14B", 14.0),
     ("tiny-64M", 0.064), ("tiny-s1", None), ("tiny-teacher", None), (None, None)],
)  # fmt: skip
def test_parse_size_b(name, size):
    assert parse_size_b(name) == size


def test_explicit_size_column_wins_and_fills_from_names():
    df = pl.DataFrame({"teacher": [None, None], "student": ["Qwen2.5-1.5B", "tiny-s1"], "method": ["SFT", "SFT"],
                       "temperature": [None, None], "task": ["gsm8k", "gsm8k"], "family": ["math", "math"],
                       "score": [1.0, 2.0], "student_size_b": [None, 0.002]})  # fmt: skip
    out = validate_results(df)
    assert out["student_size_b"].to_list() == [1.5, 0.002]
    assert out["noise_sigma"].to_list() == [0.0, 0.0]


@pytest.mark.parametrize("alias, key", [("GSM8K", "gsm8k"), ("social_i_qa", "siqa"), ("ARC-Challenge", "arc_challenge"),
                                        ("openbookqa", "obqa"), ("synthetic", "synthetic"), ("Average", "average")])  # fmt: skip
def test_canonical_task(alias, key):
    assert canonical_task(alias) == key


def test_missing_columns_are_named():
    df = syn.scores_frame().drop("score", "family")
    with pytest.raises(KdlensError, match=r"missing column\(s\) family, score"):
        validate_results(df)


def test_unknown_method_is_named_and_can_be_allowed():
    df = syn.scores_frame().with_columns(
        pl.when(pl.col("method") == "GKD").then(pl.lit("MiniLLM")).otherwise(pl.col("method")).alias("method")
    )
    with pytest.raises(KdlensError, match="unknown method name.*'MiniLLM'"):
        validate_results(df)
    assert "MiniLLM" in validate_results(df, extra_methods=["MiniLLM"])["method"].to_list()
    # kdlens objective names are known
    ok = syn.scores_frame().with_columns(pl.col("method").replace({"GKD": "symmetric_kl"}))
    assert "symmetric_kl" in validate_results(ok)["method"].to_list()


def test_kd_row_without_teacher_and_bad_teacher_kind():
    df = syn.scores_frame()
    with pytest.raises(KdlensError, match="KD row.*no teacher"):
        validate_results(df.with_columns(pl.lit(None, dtype=pl.String).alias("teacher")))
    with pytest.raises(KdlensError, match="teacher_kind must be one of"):
        validate_results(df.with_columns(pl.lit("clever").alias("teacher_kind")))


def test_duplicates_and_non_finite_scores():
    df = syn.scores_frame()
    with pytest.raises(KdlensError, match="appear more than once"):
        validate_results(pl.concat([df, df.head(1)]))
    with pytest.raises(KdlensError, match="non-finite"):
        validate_results(df.with_columns(pl.lit(float("nan")).alias("score")))


def test_seed_column_marks_repeats_which_are_averaged():
    df = syn.scores_frame()
    twice = pl.concat([df.with_columns(pl.lit(0).alias("seed")),
                       df.with_columns(pl.lit(1).alias("seed"), pl.col("score") + 2.0)])  # fmt: skip
    units = build_units(twice, strict=True).frame.filter(pl.col("task") == "synthetic")
    # KD and SFT both rise by 1 on average: the improvement is unchanged
    for rec in units.iter_rows(named=True):
        assert rec["improvement"] == pytest.approx(syn.GAIN[rec["student"]][rec["method"]])


def test_student_without_sft_is_an_error_when_strict_and_an_exclusion_otherwise():
    df = syn.scores_frame().filter(~((pl.col("student") == "tiny-s2") & (pl.col("method") == "SFT")))
    with pytest.raises(KdlensError, match="tiny-s2.*no SFT score"):
        build_units(df, strict=True)
    with pytest.raises(KdlensError, match="tiny-s2.*no SFT score"):
        h1_improvement_ttest(df)  # a bare DataFrame is analysed strictly
    units = build_units(df)
    assert "tiny-s2" not in units.frame["student"].to_list()
    assert any("tiny-s2" in e and "no SFT" in e for e in units.exclusions)


def test_task_missing_for_one_method_is_stated():
    rows = []
    for model, sft in [("Qwen2.5-0.5B", 40.0), ("Qwen2.5-1.5B", 50.0), ("Qwen2.5-3B", 60.0)]:
        for task in ("gsm8k", "svamp"):
            rows.append({"teacher": None, "student": model, "method": "SFT", "temperature": None, "task": task,
                         "family": "math", "score": sft})  # fmt: skip
            for method in ("SeqKD", "RevKD"):
                if method == "RevKD" and task == "svamp":
                    continue  # RevKD was never evaluated on svamp
                rows.append({"teacher": "Qwen2.5-7B", "student": model, "method": method, "temperature": 1.0,
                             "task": task, "family": "math", "score": sft + 1.0})  # fmt: skip
    units = build_units(pl.DataFrame(rows))
    assert any("RevKD" in e and "lacks task(s) svamp" in e for e in units.exclusions)
    with pytest.raises(KdlensError, match="lacks task"):
        build_units(pl.DataFrame(rows), strict=True)
    avg = units.frame.filter(pl.col("task") == "average")
    assert set(avg["method"].to_list()) == {"SeqKD"}  # no Average for runs missing a task
    assert units.frame.filter(pl.col("task") == "svamp")["method"].unique().to_list() == ["SeqKD"]


def test_pair_metric_validation():
    agree = syn.agreement_frame()
    assert validate_pair_metric(agree, "agreement").height == agree.height
    with pytest.raises(KdlensError, match=r"missing column\(s\) agreement"):
        validate_pair_metric(agree.drop("agreement"), "agreement")
    with pytest.raises(KdlensError, match="unknown method"):
        validate_pair_metric(agree.with_columns(pl.lit("Distil").alias("method")), "agreement")


def test_no_kd_run_is_an_error():
    df = syn.scores_frame().filter(pl.col("method") == "SFT")
    with pytest.raises(KdlensError, match="no KD run"):
        build_units(df)
