"""The study runner: plan the grid of a KD study as a DAG of units, run what is missing, report.

``kdlens study`` with no argument runs the offline miniature (synthetic task, pretrained tiny
models, 3 seeds); ``kdlens study CONFIG.toml`` runs any grid, e.g. the paper's
(``kdlens study paper-qwen-math``).

Layers, each importing only those below it: ``config`` (the TOML) -> ``plan`` (the DAG of units) ->
``store`` (the study folder: plan.json, unit folders, finished records) -> ``actions`` (what each
unit kind does), ``collect`` (the tidy tables and the report), ``worker`` (one unit in a process)
-> ``runner`` (the scheduler, imported only by the CLI and by ``run_study`` here, lazily).
Tests: ``python -m pytest tests/study -q``.
"""

from kdlens.study.config import StudyConfig, load_study_config
from kdlens.study.plan import Plan, Unit, plan_study

__all__ = ["Plan", "StudyConfig", "Unit", "load_study_config", "plan_study", "run_study"]


def __getattr__(name: str):
    if name == "run_study":  # the scheduler is loaded only when a study is run
        from kdlens.study.runner import run_study

        return run_study
    raise AttributeError(f"module 'kdlens.study' has no attribute {name!r}")
