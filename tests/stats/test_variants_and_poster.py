"""H4/H5 beside their variants (issue 14 item 5, issue 15 item 4) and the poster note (issue 14 item 7).

H5-token: a synthetic study (tests/stats/synthetic_study.py) whose agreement or fidelity rows carry a
``token_agreement`` column; the expected rho is scipy.stats.spearmanr over the nine units written
out here. The poster note: sentences from a hypothesis table built by hand, and on the released
CSVs the data side against the numbers computed with scipy in test_paper_reproduction.
Run: python -m pytest tests/stats/test_variants_and_poster.py -q
"""

from __future__ import annotations

import polars as pl
import pytest
from scipy import stats

from kdlens.errors import KdlensError
from kdlens.stats import ResultTables, all_hypotheses, analyse, build_units
from kdlens.stats.poster import POSTER_TABLE_3B, poster_differences

import synthetic_study as syn


def token_value(student, method):
    # not monotone in the gain, so rho is neither +1 nor -1
    return 40.0 + (syn.GAIN[student][method] * 7.0) % 11.0


def _with_token(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.struct("student", "method").map_elements(
        lambda r: token_value(r["student"], r["method"]) if r["method"] != "SFT" else 10.0,
        return_dtype=pl.Float64).alias("token_agreement"))


def _h(frame, hypothesis):
    return frame.filter((pl.col("hypothesis") == hypothesis) & (pl.col("task") == "synthetic"))


@pytest.mark.parametrize("carrier", ["fidelity", "agreement"])
def test_h5_token_matches_scipy_on_a_synthetic_study(carrier):
    agreement, fidelity = syn.agreement_frame(), syn.fidelity_frame()
    if carrier == "fidelity":
        fidelity = _with_token(fidelity)
    else:  # the agreement rows have temperatures: the unit's T = 2 row must be the one joined
        agreement = _with_token(agreement).with_columns(  # other temperatures: the ranks reversed
            pl.when(pl.col("temperature") == 2.0).then(pl.col("token_agreement"))
            .otherwise(99.0 - pl.col("token_agreement")).alias("token_agreement"))
    units = build_units(syn.scores_frame(), agreement, fidelity)
    got = _h(all_hypotheses(units, bootstrap=0), "H5-token")
    assert got.height == 1
    gains = [g for _, _, g, *_ in syn.units_expected()]
    tokens = [token_value(s, m) for s, m, *_ in syn.units_expected()]
    ref = stats.spearmanr(gains, tokens)
    row = got.row(0, named=True)
    assert row["n"] == 9 and row["statistic"] == pytest.approx(ref.statistic, abs=1e-12)
    assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert row["test"] == "Spearman: improvement vs token-level top-1 agreement"
    # H5 itself is unchanged beside it
    h5 = _h(all_hypotheses(units, bootstrap=0), "H5").row(0, named=True)
    assert h5["statistic"] == pytest.approx(stats.spearmanr(gains, [f for *_, f in syn.units_expected()]).statistic)


def test_no_token_column_no_row_and_no_error():
    units = build_units(syn.scores_frame(), syn.agreement_frame(), syn.fidelity_frame())
    hyp = all_hypotheses(units, bootstrap=0)
    assert not hyp["hypothesis"].is_in(["H5-token", "H4-EM2", "H5-BLEU2"]).any()
    assert units.frame["token_agreement"].null_count() == units.frame.height
    # a column that is all null (runs compared without --token-agreement) is the same as none
    fid = syn.fidelity_frame().with_columns(pl.lit(None, dtype=pl.Float64).alias("token_agreement"))
    assert "H5-token" not in all_hypotheses(build_units(syn.scores_frame(), None, fid), bootstrap=0)["hypothesis"]


def test_token_column_with_gaps_and_bad_values():
    fid = _with_token(syn.fidelity_frame())
    gappy = fid.with_columns(pl.when(pl.col("student") == "tiny-s3").then(None)
                             .otherwise(pl.col("token_agreement")).alias("token_agreement"))
    row = _h(all_hypotheses(build_units(syn.scores_frame(), None, gappy), bootstrap=0), "H5-token").row(0, named=True)
    assert row["n"] == 6 and row["note"] == "3 unit(s) without token_agreement left out"
    with pytest.raises(KdlensError, match="outside 0-100"):
        build_units(syn.scores_frame(), None, fid.with_columns(pl.col("token_agreement") * 10))
    with pytest.raises(KdlensError, match="must be numeric"):
        build_units(syn.scores_frame(), None, fid.with_columns(pl.col("token_agreement").cast(pl.String)))


def test_token_agreement_over_seeds_is_averaged_like_the_other_metrics():
    # two seeds per KD configuration: the unit's value is the mean over its seeds
    fid = _with_token(syn.fidelity_frame())
    seeds = pl.concat([fid.with_columns(pl.lit(0).alias("seed"), pl.col("token_agreement") - 1.0),
                       fid.with_columns(pl.lit(1).alias("seed"), pl.col("token_agreement") + 1.0)])
    units = build_units(syn.scores_frame(), None, seeds).frame
    expected = {(s, m): token_value(s, m) for s, m, *_ in syn.units_expected()}
    for r in units.iter_rows(named=True):
        assert r["token_agreement"] == pytest.approx(expected[(r["student"], r["method"])])


def _table(rows):
    return pl.DataFrame([{"hypothesis": h, "family": f, "task": t, "group": "all", "statistic": s, "p_value": p,
                          "n": 33} for h, f, t, s, p in rows])


def test_poster_note_from_a_hand_built_table():
    swapped = _table([("H3", "commonsense", "arc_easy", -0.781, 1e-6), ("H3", "commonsense", "arc_challenge", -0.626, 1e-4),
                      ("H3", "commonsense", "hellaswag", -0.44, 0.01), ("H3", "commonsense", "obqa", -0.551, 0.001),
                      ("H4", "math", "average", -0.2, 0.3)])
    lines = poster_differences(swapped)
    assert lines[0].startswith("Table 3(b)") and "ARC-c and ARC-e appear swapped" in lines[0]
    assert "the poster prints -0.78 / -0.63, the data gives -0.63 / -0.78" in lines[0]
    assert lines[1] == "Table 3(b), H3, OBQA: the poster prints -0.58, the data gives -0.55."
    assert not any("HellaSwag" in line for line in lines)  # -0.44 on both sides: no difference
    assert not any(line.startswith("H4") for line in lines)  # not significant: the poster's claim holds
    assert lines[-1].startswith("The released notebooks hold no H4/H5")
    agreeing = _table([("H3", "commonsense", t, v, 0.01) for t, v in POSTER_TABLE_3B]
                      + [("H4", "math", "average", -0.5, 0.002), ("H4", "math", "gsm8k", -0.3, 0.06),
                         ("H4", "math", "svamp", -0.4, 0.03)])
    lines = poster_differences(agreeing)
    assert len(lines) == 2 and lines[0].startswith("H4 (agreement, EM1)")
    assert "rho = -0.50 (Spearman p = 0.002, n = 33)" in lines[0] and "1 of 2 are not significant (GSM8K)" in lines[0]


def test_poster_note_on_the_released_data():
    import importlib

    repro = importlib.import_module("test_paper_reproduction")
    cs, _ = repro.reference_cells("commonsense")
    math_cells, _ = repro.reference_cells("math")
    from kdlens.stats import load_paper_results

    analysis = analyse(load_paper_results(), bootstrap=0)
    assert analysis.tables.paper_release
    lines = poster_differences(analysis.hypotheses)
    data = {t: round(float(cs[("H3", t, "all")][0]), 2) for t, _ in POSTER_TABLE_3B}
    assert (data["arc_easy"], data["arc_challenge"], data["hellaswag"], data["obqa"]) == (-0.78, -0.63, -0.40, -0.55)
    assert f"the data gives {data['arc_challenge']:.2f} / {data['arc_easy']:.2f}" in lines[0]
    assert f"HellaSwag: the poster prints -0.44, the data gives {data['hellaswag']:.2f}" in lines[1]
    assert f"OBQA: the poster prints -0.58, the data gives {data['obqa']:.2f}" in lines[2]
    rho, p = math_cells[("H4", "average", "all")]
    not_sig = sum(1 for (h, t, g), (_, pv) in math_cells.items() if h == "H4" and t != "average" and pv >= 0.05)
    assert f"rho = {rho:.2f} (Spearman p = {p:.3f}, n = 33)" in lines[3]
    assert f"per task, {not_sig} of 6 are not significant" in lines[3]
    # kdlens tidy tables are not the release: no poster note
    assert not ResultTables(scores=syn.scores_frame()).paper_release
