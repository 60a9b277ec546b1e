"""``kdlens report`` / ``kdlens stats`` end to end: on a synthetic kdlens study (every figure drawn)
and on the paper's released results (no noise runs: the noise figure is stated as excluded)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import numpy as np
from scipy import stats

from kdlens.cli import main
from kdlens.report.tables import fmt_cell, fmt_num, fmt_p

PAPER = Path(__file__).resolve().parents[2] / "python" / "kdlens" / "stats" / "paper_data"
FIGURES = ["kd_vs_sft", "gain_vs_student_size", "temperature_curves", "noise_curves", "teacher_kind",
           "agreement_like_with_like", "fidelity_vs_gain", "teacher_student_heatmap"]  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_number_formats():
    assert fmt_num(12.3456) == "12.35" and fmt_num(None) == "–"
    assert fmt_p(3.3792835153289885e-05) == "3.38e-05"
    assert fmt_p(0.0012) == "0.001" and fmt_p(0.05180) == "0.052"
    assert fmt_cell(-0.6561923549473493, 3.38e-05, True) == "-0.66 (3.38e-05)*†"
    assert fmt_cell(0.2, 0.4, False) == "0.20 (0.400)"


@pytest.fixture(scope="module")
def synthetic_results(tmp_path_factory, syn):
    folder = tmp_path_factory.mktemp("study")
    syn.scores_frame().write_parquet(folder / "scores.parquet")
    syn.agreement_frame().write_parquet(folder / "agreement.parquet")
    syn.fidelity_frame().write_csv(folder / "fidelity.csv")
    return folder


def test_report_on_a_synthetic_study(synthetic_results, tmp_path, syn):
    out = tmp_path / "report"
    assert main(["report", str(synthetic_results), "-o", str(out), "--bootstrap", "200"]) == 0
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for name in FIGURES:
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC, name
        assert f"](figures/{name}.png)" in md
    # self-contained HTML: every figure embedded, nothing linked
    assert page.count("src='data:image/png;base64,") == len(FIGURES)
    assert "figures/" not in page
    # every figure has a caption naming its data; every table states its unit and n
    assert md.count("Data: ") >= len(FIGURES)
    tables = re.findall(r"^\*\*(.+)\*\*$", md, flags=re.MULTILINE)
    assert len(tables) >= 6
    for section in re.split(r"^\*\*", md, flags=re.MULTILINE)[1:]:
        assert re.search(r"[Uu]nit", section) and re.search(r"\bn\b|n =|n between", section), section[:80]
    # the known H1 of the synthetic study (every unit improves by exactly its GAIN), computed here
    # with SciPy and formatted by hand as in the paper's Table 3: "t (p)", p being the exact
    # permutation p-value (all sign flips of the 9 units), which the report uses for every test
    gains = [g for per_method in syn.GAIN.values() for g in per_method.values()]
    ref = stats.ttest_1samp(gains, 0.0, alternative="greater")
    perm = stats.permutation_test((np.array(gains),), np.mean, permutation_type="samples",
                                  alternative="greater", n_resamples=np.inf)
    p_text = f"{perm.pvalue:.2e}" if perm.pvalue < 1e-3 else f"{perm.pvalue:.3f}"
    assert f"{ref.statistic:.2f} ({p_text})" in md
    assert "## Findings" in md and "Findings of the paper on this data, synthetic" in md
    # the tables behind the findings, scores and paired tests are written beside the figures
    import polars as pl

    findings = pl.read_csv(out / "tables" / "findings.csv")
    assert findings.height >= 7 and all(f"| {v} |" in md or v in md for v in findings["verdict"])
    assert {"mean", "ci_low", "ci_high"} <= set(pl.read_csv(out / "tables" / "scores_over_seeds.csv").columns)
    assert "p_two_sided" in pl.read_csv(out / "tables" / "paired_contrasts.csv").columns
    assert "1 teacher," in md and "Qwen and Llama" not in md  # footnotes speak of the data at hand
    # H2 cannot be computed with one teacher: the cell says why
    assert "constant input" in md
    assert "task-unaware teacher are not units" in md


def test_report_on_the_paper_results_states_what_it_cannot_draw(tmp_path):
    out = tmp_path / "paper"
    assert main(["report", "--paper", "-o", str(out), "--bootstrap", "50"]) == 0  # the shipped CSVs
    md = (out / "report.md").read_text()
    assert "Figure noise_curves: no run used a noisy teacher" in md
    assert "Teacher-noise ablation table: no run used a noisy teacher" in md
    assert "H5 (commonsense): no fidelity values" in md
    assert "-0.66 (" in md and "-0.54 (" in md  # H3 rho of the paper; p is the permutation p here
    assert "Qwen and Llama pooled" in md and "one run per configuration" in md
    assert not (out / "figures" / "noise_curves.png").exists()
    drawn = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert drawn == sorted(re.findall(r"!\[(\w+)\]\(figures/", md))


def test_stats_command_prints_the_tables_and_rejects_bad_input(tmp_path, capsys, syn):
    assert main(["stats", "--paper-results", str(PAPER), "--bootstrap", "0", "-o", str(tmp_path / "t")]) == 0
    printed = capsys.readouterr().out
    assert "Hypothesis tests, math" in printed and "Hypothesis tests, commonsense" in printed
    assert "Findings of the paper on this data, math" in printed
    assert main(["stats", "--paper", "--bootstrap", "0"]) == 0
    assert "paper_data" in capsys.readouterr().out  # the copy shipped with kdlens
    assert main(["stats", "--paper", str(tmp_path)]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert (tmp_path / "t" / "hypotheses.csv").is_file()
    bad = tmp_path / "bad.csv"
    syn.scores_frame().drop("family").write_csv(bad)
    assert main(["stats", str(bad)]) == 2
    assert "missing column(s) family" in capsys.readouterr().err
    assert main(["stats"]) == 2


def _items_frame():
    """Per-item pairs of two comparisons on the synthetic task: correctness tied loosely to BLEU."""
    import polars as pl

    rng = np.random.default_rng(3)
    frames = []
    for method in ("SeqKD", "RevKD"):
        fid = rng.uniform(0, 100, 60)
        correct = (fid / 100 + rng.normal(0, 0.5, 60)) > 0.5
        frames.append(pl.DataFrame({
            "teacher": "tiny-teacher", "student": "tiny-s1", "method": method, "temperature": 2.0, "seed": 0,
            "task": "synthetic", "id": [str(i) for i in range(60)], "sample_seed": 6,
            "instruction": [f"What is {i} + {i}?" for i in range(60)],
            "teacher_output": [f"{i} + {i} = {2 * i}." for i in range(60)],
            "student_output": [f"It is {2 * i if c else 2 * i + 1}." for i, c in enumerate(correct)],
            "fidelity": fid, "student_correct": correct}))
    return pl.concat(frames)


def test_report_shows_the_error_analysis_of_the_items(synthetic_results, tmp_path, syn):
    import shutil

    import polars as pl

    folder = tmp_path / "with_items"
    shutil.copytree(synthetic_results, folder)
    items = _items_frame()
    items.write_parquet(folder / "items.parquet")
    out = tmp_path / "report"
    assert main(["report", str(folder), "-o", str(out), "--bootstrap", "0"]) == 0
    md = (out / "report.md").read_text()
    assert "## Error analysis: per-item correctness vs fidelity" in md
    assert "Per-item correctness vs fidelity (point-biserial r), by task and method" in md
    assert "Error analysis examples, synthetic" in md and "What is " in md
    for section in re.split(r"^\*\*", md.split("## Error analysis")[1].split("## Ablations")[0], flags=re.MULTILINE)[1:]:
        assert re.search(r"[Uu]nit", section) and re.search(r"\bn\b|n =|n between", section), section[:80]
    corr = pl.read_csv(out / "tables" / "error_correlations.csv")
    assert (out / "tables" / "error_examples.csv").is_file()
    for method in ("SeqKD", "RevKD"):
        part = items.filter(pl.col("method") == method)
        ref = stats.pointbiserialr(part["student_correct"].to_numpy(), part["fidelity"].to_numpy())
        row = corr.filter(pl.col("method") == method).row(0, named=True)
        assert row["r_pb"] == pytest.approx(ref.statistic) and row["p_value"] == pytest.approx(ref.pvalue)
        ci = stats.pearsonr(part["student_correct"].to_numpy().astype(float), part["fidelity"].to_numpy()) \
            .confidence_interval(0.95)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert f"{ref.statistic:.2f} ({ref.pvalue:.3f})" in md or f"{ref.statistic:.2f} ({ref.pvalue:.2e})" in md
    # without items the report says why it has no error analysis
    plain = (tmp_path / "plain")
    assert main(["report", str(synthetic_results), "-o", str(plain), "--bootstrap", "0"]) == 0
    assert "Error analysis: the results have no per-item teacher-student pairs" in (plain / "report.md").read_text()
    assert "The poster versus the released data" not in (plain / "report.md").read_text()


def test_paper_report_has_the_variants_and_the_poster_note(tmp_path, capsys):
    out = tmp_path / "paper"
    assert main(["report", "--paper", "-o", str(out), "--bootstrap", "0"]) == 0
    md = (out / "report.md").read_text()
    assert "## The poster versus the released data" in md
    assert "ARC-c and ARC-e appear swapped" in md and "HellaSwag: the poster prints -0.44" in md
    assert "| H4 rho vs agreement, 2nd variant (EM2) | all |" in md
    assert "| H5 rho vs fidelity, 2nd variant (BLEU2) | all |" in md
    assert "-0.50 (" in md and "-0.28 (" in md  # the EM2 and BLEU2 rho on the math Average
    assert "H5-token" not in md  # the released data has no token-level agreement
    assert main(["stats", "--paper", "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    assert "H4 rho vs agreement, 2nd variant (EM2)" in printed and "H5 rho vs fidelity, 2nd variant (BLEU2)" in printed


def test_report_shows_h5_token_when_the_rows_carry_it(synthetic_results, tmp_path, syn):
    import shutil

    import polars as pl

    folder = tmp_path / "token"
    shutil.copytree(synthetic_results, folder)
    fid = pl.read_csv(folder / "fidelity.csv")
    fid.with_columns((50.0 + pl.col("fidelity") % 7).alias("token_agreement")).write_csv(folder / "fidelity.csv")
    out = tmp_path / "report"
    assert main(["report", str(folder), "-o", str(out), "--bootstrap", "0"]) == 0
    md = (out / "report.md").read_text()
    assert "| H5-token rho vs token-level agreement | all |" in md
    hyp = pl.read_csv(out / "tables" / "hypotheses.csv")
    assert sorted(hyp.filter(pl.col("hypothesis") == "H5-token")["task"].to_list()) == ["average", "synthetic"]
