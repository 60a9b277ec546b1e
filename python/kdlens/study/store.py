"""The study folder on disk: the plan, the unit folders and their finished records.

``<study>/plan.json`` is the planned DAG; ``<study>/units/<id>/`` holds a unit's artifacts and, once
it finished, ``unit.json`` (its record, written last and atomically). Every stage that reads or
writes a unit's state goes through here, so the scheduler (kdlens.study.runner) is imported only by
the CLI, and the actions, the worker and the collector depend on this module instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdlens.errors import KdlensError
from kdlens.io import write_json_atomic
from kdlens.study.plan import Plan

UNIT_DONE = "unit.json"
PLAN_FILE = "plan.json"


def unit_dir(study_dir: str | Path, unit_id: str) -> Path:
    return Path(study_dir) / "units" / unit_id


def unit_result(study_dir: str | Path, unit_id: str) -> dict | None:
    """The finished unit's record, or None while it is not finished."""
    path = unit_dir(study_dir, unit_id) / UNIT_DONE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_unit_result(study_dir: str | Path, unit_id: str, record: dict) -> Path:
    """Mark a unit finished: its record, written atomically (the last thing a unit does)."""
    return write_json_atomic(unit_dir(study_dir, unit_id) / UNIT_DONE, record)


def write_plan(plan: Plan, study_dir: str | Path) -> None:
    write_json_atomic(Path(study_dir) / PLAN_FILE, plan.to_dict())


def load_plan(study_dir: str | Path) -> Plan:
    path = Path(study_dir) / PLAN_FILE
    if not path.is_file():
        raise KdlensError(f"{study_dir}: no {PLAN_FILE}; is this a kdlens study folder?")
    return Plan.from_dict(json.loads(path.read_text()))
