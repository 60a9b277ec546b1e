"""H1-H5 and the ablations on a synthetic tidy table whose answers are known by construction
(tests/stats/synthetic_study.py); the test statistics are checked against direct SciPy calls on
the known improvement lists."""

from __future__ import annotations

import polars as pl
import pytest
import synthetic_study as syn
from kdlens.stats import (
    ResultTables,
    analyse,
    best_teacher_per_student,
    build_units,
    h1_anova,
    h1_improvement_ttest,
    h2_teacher_score,
    h3_student_size,
    h4_agreement,
    h5_fidelity,
    kd_gain_by_student_size,
    noise_curves,
    teacher_kind_deltas,
    temperature_curves,
)
from scipy import stats


@pytest.fixture(scope="module")
def units():
    return build_units(syn.scores_frame(), syn.agreement_frame(), syn.fidelity_frame(), strict=True)


def _cell(frame, task="average", group="all"):
    rows = frame.filter((pl.col("task") == task) & (pl.col("group") == group))
    assert rows.height == 1
    return rows.row(0, named=True)


def test_units_take_the_max_over_temperature_and_subtract_sft(units):
    frame = units.frame.filter(pl.col("task") == "synthetic")
    assert frame.height == 9
    for rec in frame.iter_rows(named=True):
        assert rec["improvement"] == pytest.approx(syn.GAIN[rec["student"]][rec["method"]])
        assert rec["temperature_at_max"] == 2.0
        assert rec["n_variants"] == 3  # noisy and task-unaware runs are not variants of the unit
        assert rec["teacher_sft_score"] == 80.0
        assert rec["student_size_b"] == syn.STUDENTS[rec["student"]]
        assert rec["agreement"] == syn.agreement_value(rec["student"], rec["method"], 2.0)
        assert rec["fidelity"] == pytest.approx(syn.fidelity_value(rec["student"], rec["method"]))
    # one task: the family Average is that task
    avg = units.frame.filter(pl.col("task") == "average").sort(["student", "method"])
    assert avg["improvement"].to_list() == frame.sort(["student", "method"])["improvement"].to_list()
    assert any("task-unaware" in e for e in units.exclusions)
    assert any("noisy teacher" in e for e in units.exclusions)


def test_h1_matches_scipy_on_the_known_gains(units):
    gains = [g for per in syn.GAIN.values() for g in per.values()]
    expected = stats.ttest_1samp(gains, 0.0, alternative="greater")
    frame = h1_improvement_ttest(units, bootstrap=300, seed=3)
    row = _cell(frame)
    assert row["n"] == 9
    assert row["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
    assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert row["estimate"] == pytest.approx(sum(gains) / 9)
    assert row["ci_low"] <= row["estimate"] <= row["ci_high"]
    for method in syn.METHODS:
        per = [syn.GAIN[s][method] for s in syn.STUDENTS]
        r = _cell(frame, group=method)
        assert r["n"] == 3
        assert r["statistic"] == pytest.approx(stats.ttest_1samp(per, 0.0, alternative="greater").statistic)
    # the same seed gives the same interval; the interval is recorded with its seed
    again = _cell(h1_improvement_ttest(units, bootstrap=300, seed=3))
    assert (again["ci_low"], again["ci_high"], again["bootstrap_seed"]) == (row["ci_low"], row["ci_high"], 3)


def test_anova_matches_scipy(units):
    groups = [[syn.GAIN[s][m] for s in syn.STUDENTS] for m in sorted(syn.METHODS)]
    expected = stats.f_oneway(*groups)
    row = _cell(h1_anova(units))
    assert row["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
    assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)


def test_spearman_hypotheses_match_scipy(units):
    known = syn.units_expected()
    gains = [u[2] for u in known]
    for frame, ys in [
        (h3_student_size(units, bootstrap=0), [u[3] for u in known]),
        (h4_agreement(units, bootstrap=0), [u[4] for u in known]),
        (h5_fidelity(units, bootstrap=0), [u[5] for u in known]),
    ]:
        expected = stats.spearmanr(gains, ys)
        row = _cell(frame)
        assert row["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
        assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)
    # per method, gain falls with size except RevKD's -0.5 at the largest student
    h3 = h3_student_size(units, bootstrap=0)
    assert _cell(h3, group="SeqKD")["statistic"] == pytest.approx(-1.0)
    assert _cell(h3, group="GKD")["statistic"] == pytest.approx(-1.0)


def test_h2_with_one_teacher_is_undefined_and_says_so(units):
    row = _cell(h2_teacher_score(units))
    assert row["statistic"] is None and row["p_value"] is None
    assert "constant" in row["note"]


def test_holm_flags_follow_the_adjusted_permutation_p(units):
    frame = h1_improvement_ttest(units, bootstrap=0)
    ps = frame["p_exact"].to_list()
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    running = 0.0
    for rank, i in enumerate(order):  # plain transcription of Holm's step-down procedure
        running = max(running, min(1.0, (m - rank) * ps[i]))
        assert frame["p_holm"][i] == pytest.approx(running)
        assert frame["holm_reject"][i] == (running < 0.05)


def test_ablations_on_the_synthetic_grid(units):
    scores = syn.scores_frame()
    temp = temperature_curves(scores).filter(pl.col("task") == "synthetic")
    assert temp.height == 27  # 9 (student, method) curves x 3 temperatures
    for rec in temp.iter_rows(named=True):
        expected = syn.SFT[rec["student"]] + syn.GAIN[rec["student"]][rec["method"]] - syn.T_PENALTY[rec["temperature"]]
        assert rec["score"] == pytest.approx(expected)
    noise = noise_curves(scores).filter(pl.col("task") == "synthetic")
    assert noise.height == 9 and set(noise["method"].to_list()) == {"SeqKD"}
    for rec in noise.iter_rows(named=True):
        expected = syn.SFT[rec["student"]] + syn.GAIN[rec["student"]]["SeqKD"] - 1.0 - syn.NOISE_PENALTY[rec["noise_sigma"]]
        assert rec["score"] == pytest.approx(expected)
    kind = teacher_kind_deltas(scores).filter(pl.col("task") == "synthetic")
    assert kind.height == 3
    for rec in kind.iter_rows(named=True):
        assert rec["delta"] == pytest.approx(-30.0 - syn.GAIN[rec["student"]]["SeqKD"] + 1.0)
    best = best_teacher_per_student(units)
    assert dict(zip(best["student"], best["best_method"])) == {"tiny-s1": "RevKD", "tiny-s2": "GKD", "tiny-s3": "GKD"}
    gain = kd_gain_by_student_size(units).filter(pl.col("method") == "all")
    for rec in gain.iter_rows(named=True):
        per = list(syn.GAIN[rec["student"]].values())
        assert rec["mean_improvement"] == pytest.approx(sum(per) / 3)
        assert (rec["min_improvement"], rec["max_improvement"]) == (min(per), max(per))


def test_analyse_bundles_everything():
    tables = ResultTables(syn.scores_frame(), syn.agreement_frame(), syn.fidelity_frame(), source="synthetic")
    analysis = analyse(tables, bootstrap=100, seed=1)
    assert set(analysis.hypotheses["hypothesis"].to_list()) == {"H1", "H1-ANOVA", "H2", "H3", "H3.2", "H4", "H5"}
    assert analysis.noise.height and analysis.temperature.height and analysis.teacher_kind.height
