"""The study runner: plan the grid of a KD study as a DAG of units, run what is missing, report.

``kdlens study`` with no argument runs the offline miniature (synthetic task, tiny models);
``kdlens study CONFIG.toml`` runs any grid, e.g. the paper's (``kdlens study --preset paper``).
Tests: ``python -m pytest tests/study -q``.
"""

from kdlens.study.config import StudyConfig, load_study_config
from kdlens.study.plan import Plan, Unit, plan_study
from kdlens.study.runner import run_study

__all__ = ["Plan", "StudyConfig", "Unit", "load_study_config", "plan_study", "run_study"]
