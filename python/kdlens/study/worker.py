"""Run one study unit in this process: ``python -m kdlens.study.worker STUDY_DIR UNIT_ID``.

The runner starts one worker per unit. The unit's ``unit.json`` is written last and atomically (by
rank 0 under torchrun), so a worker killed at any point leaves the unit unfinished, never half-done.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def run_unit(study_dir: Path, unit_id: str) -> dict:
    from kdlens.study.actions import ACTIONS, UnitContext
    from kdlens.study.config import study_config_from_dict
    from kdlens.study.store import load_plan, write_unit_result

    plan = load_plan(study_dir)
    units = plan.by_id()
    if unit_id not in units:
        raise SystemExit(f"unit {unit_id} is not in {study_dir}/plan.json")
    unit = units[unit_id]
    cfg = study_config_from_dict(plan.config, "plan.json")
    ctx = UnitContext(Path(study_dir), unit, cfg, plan)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    t0, started = time.perf_counter(), time.time()
    result = ACTIONS[unit.kind](ctx)
    record = {**unit.to_dict(), "elapsed_s": round(time.perf_counter() - t0, 3),
              "started_unix": round(started, 3), "ended_unix": round(time.time(), 3),
              "devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "result": result}
    if int(os.environ.get("RANK", "0")) == 0:
        write_unit_result(study_dir, unit_id, record)
    return record


def main(argv=None) -> int:
    from kdlens.errors import KdlensError

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m kdlens.study.worker STUDY_DIR UNIT_ID", file=sys.stderr)
        return 2
    if os.environ.get("KDLENS_RUNNER_PID"):  # die with the study runner, however it was stopped
        from kdlens.study.lifeline import watch_runner

        watch_runner(int(os.environ["KDLENS_RUNNER_PID"]))
    try:
        run_unit(Path(args[0]), args[1])
    except KdlensError as exc:
        print(f"kdlens: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
