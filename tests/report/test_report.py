"""``kdlens report`` / ``kdlens stats`` end to end: on a synthetic kdlens study (every figure drawn)
and on the paper's released results (no noise runs: the noise figure is stated as excluded)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from scipy import stats

from kdlens.cli import main
from kdlens.report.tables import fmt_cell, fmt_num, fmt_p

PAPER = Path(__file__).resolve().parents[1] / "data" / "paper-results"
FIGURES = ["gain_vs_student_size", "agreement_per_task", "fidelity_vs_gain", "temperature_curves",
           "noise_curves", "teacher_student_heatmap"]  # fmt: skip
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
    tables = re.findall(r"^\*\*(.+)\*\*$", md, flags=re.M)
    assert len(tables) >= 6
    for section in re.split(r"^\*\*", md, flags=re.M)[1:]:
        assert re.search(r"[Uu]nit", section) and re.search(r"\bn\b|n =|n between", section), section[:80]
    # the known H1 of the synthetic study (every unit improves by exactly its GAIN), computed here
    # with SciPy and formatted by hand as in the paper's Table 3: "t (p)"
    gains = [g for per_method in syn.GAIN.values() for g in per_method.values()]
    ref = stats.ttest_1samp(gains, 0.0, alternative="greater")
    p_text = f"{ref.pvalue:.2e}" if ref.pvalue < 1e-3 else f"{ref.pvalue:.3f}"
    assert f"{ref.statistic:.2f} ({p_text})" in md
    # H2 cannot be computed with one teacher: the cell says why
    assert "constant input" in md
    assert "task-unaware teacher are not units" in md


def test_report_on_the_paper_results_states_what_it_cannot_draw(tmp_path):
    out = tmp_path / "paper"
    assert main(["report", "--paper-results", str(PAPER), "-o", str(out), "--bootstrap", "50"]) == 0
    md = (out / "report.md").read_text()
    assert "Figure noise_curves: no run used a noisy teacher" in md
    assert "Teacher-noise ablation table: no run used a noisy teacher" in md
    assert "H5 (commonsense): no fidelity values" in md
    assert "-0.66 (3.38e-05)" in md and "-0.54 (0.001)" in md
    assert not (out / "figures" / "noise_curves.png").exists()
    assert len(list((out / "figures").glob("*.png"))) == 5


def test_stats_command_prints_the_tables_and_rejects_bad_input(tmp_path, capsys, syn):
    assert main(["stats", "--paper-results", str(PAPER), "--bootstrap", "0", "-o", str(tmp_path / "t")]) == 0
    printed = capsys.readouterr().out
    assert "Hypothesis tests, math" in printed and "Hypothesis tests, commonsense" in printed
    assert (tmp_path / "t" / "hypotheses.csv").is_file()
    bad = tmp_path / "bad.csv"
    syn.scores_frame().drop("family").write_csv(bad)
    assert main(["stats", str(bad)]) == 2
    assert "missing column(s) family" in capsys.readouterr().err
    assert main(["stats"]) == 2
