"""The paper's findings, one by one, as verdicts on a study's data: replicated, not replicated or
inconclusive, each with its estimate, interval, p-value and n.

The rule is the same for every finding that has a direction: *replicated* when the one-sided
permutation test in the paper's direction gives p < 0.05; *not replicated* when the one-sided test
in the opposite direction does; *inconclusive* otherwise, which includes every test whose n cannot
produce p < 0.05 at all (its smallest possible p is shown). "Fidelity correlates weakly with the
gain" has no direction: it is *replicated* when the correlation is not significant (p >= 0.05) and
its interval stays inside (-0.5, 0.5), *not replicated* when it is significant and |rho| >= 0.5, and
*inconclusive* otherwise.

Sources: H1 and H3/H5 rows of the hypothesis table (units of analysis, seed-averaged scores) and the
paired contrasts over seeds (:mod:`kdlens.stats.seeds`), on family Averages.
"""

from __future__ import annotations

import math

import polars as pl

from kdlens.stats.hypotheses import ALL_GROUP
from kdlens.stats.schema import AVERAGE_TASK

ALPHA = 0.05
FINDINGS_SCHEMA = {
    "finding": pl.String, "family": pl.String, "verdict": pl.String, "estimate": pl.Float64,
    "ci_low": pl.Float64, "ci_high": pl.Float64, "p_value": pl.Float64, "min_p": pl.Float64,
    "n": pl.Int64, "measure": pl.String, "evidence": pl.String,
}

# (finding, source, selector, paper's direction: "greater" | "less" | "weak")
PAPER_FINDINGS = (
    ("KD beats SFT", "H1", None, "greater"),
    ("the KD gain shrinks with student size", "H3", None, "less"),
    ("a moderate temperature (T=2) beats T=1", "contrast", "T=2 - T=1", "greater"),
    ("T=5 hurts", "contrast", "T=5 - T=1", "less"),
    ("teacher noise sigma=5 collapses the student", "contrast", "sigma=5 - sigma=0", "less"),
    ("a task-unaware teacher hurts", "contrast", "task-unaware - task-aware", "less"),
    ("KD raises teacher-student agreement", "contrast", "agreement KD - SFT", "greater"),
    ("fidelity correlates only weakly with the gain", "H5", None, "weak"),
)


def _verdict(direction: str, p_with: float | None, p_against: float | None) -> str:
    if p_with is None or math.isnan(p_with):
        return "inconclusive"
    if p_with < ALPHA:
        return "replicated"
    if p_against is not None and not math.isnan(p_against) and p_against < ALPHA:
        return "not replicated"
    return "inconclusive"


def _weak_verdict(rho, low, high, p) -> str:
    if rho is None or p is None or math.isnan(p):
        return "inconclusive"
    if p >= ALPHA and low is not None and high is not None and -0.5 < low and high < 0.5:
        return "replicated"
    if p < ALPHA and abs(rho) >= 0.5:
        return "not replicated"
    return "inconclusive"


def _none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def paper_findings(hypotheses: pl.DataFrame, contrasts: pl.DataFrame) -> pl.DataFrame:
    """One row per (paper finding, family) with the verdict and its evidence (module docstring)."""
    rows = []
    families = sorted(set(hypotheses["family"].unique().to_list()) | set(contrasts["family"].unique().to_list()))
    for family in families:
        for finding, source, selector, direction in PAPER_FINDINGS:
            row = {"finding": finding, "family": family}
            if source in ("H1", "H3", "H5"):
                h = hypotheses.filter((pl.col("hypothesis") == source) & (pl.col("family") == family)
                                      & (pl.col("task") == AVERAGE_TASK) & (pl.col("group") == ALL_GROUP))
                if h.height == 0 or h["p_exact"][0] is None:
                    note = h["note"][0] if h.height and h["note"][0] else "no units with this measure"
                    rows.append({**row, "verdict": "inconclusive", "estimate": None, "ci_low": None, "ci_high": None,
                                 "p_value": None, "min_p": None, "n": int(h["n"][0]) if h.height else 0,
                                 "measure": source, "evidence": note})
                    continue
                r = h.row(0, named=True)
                if direction == "weak":
                    verdict = _weak_verdict(r["estimate"], r["ci_low"], r["ci_high"], r["p_exact"])
                    p = r["p_exact"]
                else:
                    verdict = _verdict(direction, r[f"p_{direction}"], r["p_less" if direction == "greater" else "p_greater"])
                    p = r[f"p_{direction}"]
                measure = ("mean improvement of KD over SFT (points), units = (teacher, student, method)"
                           if source == "H1" else
                           "Spearman rho of improvement vs student size" if source == "H3" else
                           "Spearman rho of improvement vs fidelity (BLEU)")
                rows.append({**row, "verdict": verdict, "estimate": _none(r["estimate"]), "ci_low": _none(r["ci_low"]),
                             "ci_high": _none(r["ci_high"]), "p_value": _none(p), "min_p": _none(r["min_p"]),
                             "n": int(r["n"]), "measure": measure, "evidence": f"{source}: {r['p_method']}"})
                continue
            c = contrasts.filter((pl.col("contrast") == selector) & (pl.col("family") == family)
                                 & (pl.col("method") == "all"))
            pooled = c.filter(pl.col("student") == "all")
            c = pooled if pooled.height else c
            if c.height != 1:
                rows.append({**row, "verdict": "inconclusive", "estimate": None, "ci_low": None, "ci_high": None,
                             "p_value": None, "min_p": None, "n": 0, "measure": selector,
                             "evidence": "the study has no runs for this contrast" if c.height == 0 else
                             f"{c.height} students ran this contrast separately; see the paired tests"})
                continue
            r = c.row(0, named=True)
            against = "p_less" if direction == "greater" else "p_greater"
            verdict = _verdict(direction, r[f"p_{direction}"], r[against])
            who = "all students" if r["student"] == "all" else r["student"]
            rows.append({**row, "verdict": verdict, "estimate": _none(r["mean_diff"]), "ci_low": _none(r["ci_low"]),
                         "ci_high": _none(r["ci_high"]), "p_value": _none(r[f"p_{direction}"]),
                         "min_p": _none(r["min_p"]), "n": int(r["n_pairs"]),
                         "measure": f"paired difference {selector} (points), {who}, methods pooled",
                         "evidence": r["p_method"]})
    return pl.DataFrame(rows, schema=FINDINGS_SCHEMA)
