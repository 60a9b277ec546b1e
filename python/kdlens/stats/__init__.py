"""kdlens.stats: the paper's analyses (H1-H5, ablations) over tidy results tables, in Polars + SciPy.

Entry points: :func:`load_paper_results` (the released CSVs), :func:`validate_results` (a kdlens
tidy table), :func:`build_units` (units of analysis), the hypothesis functions ``h1_*`` ... ``h5_*``,
the ablations, and :func:`analyse` (everything at once, for ``kdlens stats`` and ``kdlens report``).
"""

from kdlens.stats.ablations import (
    best_teacher_per_student,
    kd_gain_by_student_size,
    noise_curves,
    teacher_kind_deltas,
    temperature_curves,
)
from kdlens.stats.analysis import Analysis, analyse, load_results
from kdlens.stats.hypotheses import (
    all_hypotheses,
    h1_anova,
    h1_improvement_ttest,
    h2_teacher_score,
    h3_student_sft,
    h3_student_size,
    h4_agreement,
    h5_fidelity,
    variant_tests,
)
from kdlens.stats.paper_results import PaperResults, ResultTables, load_paper_results
from kdlens.stats.schema import parse_size_b, validate_pair_metric, validate_results
from kdlens.stats.units import Units, build_units

__all__ = [
    "Analysis",
    "PaperResults",
    "ResultTables",
    "Units",
    "all_hypotheses",
    "analyse",
    "best_teacher_per_student",
    "build_units",
    "h1_anova",
    "h1_improvement_ttest",
    "h2_teacher_score",
    "h3_student_sft",
    "h3_student_size",
    "h4_agreement",
    "h5_fidelity",
    "kd_gain_by_student_size",
    "load_paper_results",
    "load_results",
    "noise_curves",
    "parse_size_b",
    "teacher_kind_deltas",
    "temperature_curves",
    "validate_pair_metric",
    "validate_results",
    "variant_tests",
]
