"""``kdlens study --backend ray`` on a local Ray cluster (2 CPUs): the smoke study's tables equal the
local backend's; a unit whose Ray worker is killed mid-run is retried (and the study finishes with
the results of an undisturbed run), or, with no retries left, reported failed with its log while its
dependents are blocked."""

import os
import signal
import threading
import time
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("ray", reason="ray is not installed: pip install 'kdlens[ray]' (CI installs it)")

from kdlens.study import load_study_config, plan_study  # noqa: E402
from kdlens.study.config import study_config_from_dict  # noqa: E402
from kdlens.study.ray_backend import ATTEMPT, RayBackend  # noqa: E402
from kdlens.study.runner import run_study, unit_dir, unit_result  # noqa: E402

pytestmark = pytest.mark.slow
TABLES = ("scores", "agreement", "fidelity")


def _tables(study_dir: Path) -> dict:
    return {n: pl.read_parquet(study_dir / "results" / f"{n}.parquet") for n in TABLES}


def test_smoke_study_on_ray_equals_the_local_backend(ray_cluster, tmp_path):
    cfg = load_study_config("smoke")
    local = run_study(cfg, tmp_path / "local", progress=False, echo=lambda s: None)
    assert local.ok, (local.failed, local.blocked)
    lines = []
    on_ray = run_study(cfg, tmp_path / "ray", progress=False, echo=lines.append, backend=RayBackend())
    assert on_ray.ok, "\n".join(lines)
    plan = plan_study(cfg)
    assert sorted(on_ray.done) == sorted(u.id for u in plan.units)  # same plan, same unit ids
    got, want = _tables(tmp_path / "ray"), _tables(tmp_path / "local")
    for name in TABLES:
        assert got[name].equals(want[name]), name
    for u in plan.of_kind("eval"):  # the same generations, item by item
        a = pl.read_parquet(Path(unit_result(tmp_path / "ray", u.id)["result"]["eval_dir"]) / "generations.parquet")
        b = pl.read_parquet(Path(unit_result(tmp_path / "local", u.id)["result"]["eval_dir"]) / "generations.parquet")
        assert a["output"].to_list() == b["output"].to_list(), u.label
    assert all(ATTEMPT in (unit_dir(tmp_path / "ray", u.id) / "log.txt").read_text() for u in plan.units)
    again = run_study(cfg, tmp_path / "ray", progress=False, echo=lambda s: None, backend=RayBackend())
    assert again.ok and not again.done and len(again.skipped) == len(plan.units)  # resume: nothing to do


TINY = {
    "task": {"kind": "synthetic", "n_train": 40, "n_test": 4, "corpus_docs": 20},
    "models": {"teachers": ["tiny-teacher"], "students": ["tiny-s1"]},
    "grid": {"objectives": ["forward_kl"], "temperatures": [1.0], "noise_sigmas": [0.0], "task_unaware": False},
    "pretrain": {"max_steps": 2, "val_size": 0},
    "train": {"lora": False, "max_steps": 2, "val_size": 0, "progress": False},
    "evaluate": {"max_new_tokens": 8},
}


def _kill_ray_worker_of(study_dir: Path, prefix: str, killed: list, stop: threading.Event) -> None:
    """Kill (SIGKILL) the Ray worker whose unit process runs the first unit whose id starts with
    ``prefix``: the unit process is ``python -m kdlens.study.worker STUDY UNIT``, its parent the Ray
    worker running the unit's task (process title ``ray::kdlens-unit-UNIT``)."""
    while not stop.is_set() and not killed:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if b"kdlens.study.worker" in argv and str(study_dir).encode() in argv and any(
                    a.startswith(prefix.encode()) for a in argv):
                parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
                unit = next(a for a in argv if a.startswith(prefix.encode()))
                if not Path(f"/proc/{parent}/cmdline").read_bytes().startswith(b"ray::kdlens-unit-" + unit):
                    continue
                time.sleep(1.0)  # well into the unit
                os.kill(parent, signal.SIGKILL)
                killed.append(parent)
                return
        time.sleep(0.05)


def _run_with_a_killed_worker(study_dir: Path, prefix: str, retries: int):
    cfg = study_config_from_dict(TINY)
    killed, stop, lines = [], threading.Event(), []
    killer = threading.Thread(target=_kill_ray_worker_of, args=(study_dir.resolve(), prefix, killed, stop))
    killer.start()
    try:
        outcome = run_study(cfg, study_dir, progress=False, echo=lines.append,
                            backend=RayBackend(max_retries=retries))
    finally:
        stop.set()
        killer.join()
    assert killed, f"no {prefix} unit process was found to kill"
    return cfg, outcome, lines


def test_a_unit_whose_worker_is_killed_is_retried(ray_cluster, tmp_path):
    cfg, outcome, lines = _run_with_a_killed_worker(tmp_path / "study", "sft-", retries=1)
    assert outcome.ok, "\n".join(lines)
    plan = plan_study(cfg)
    killed_unit = next(u for u in plan.units if u.id.startswith("sft-") and (
        unit_dir(tmp_path / "study", u.id) / "log.txt").read_text().count(ATTEMPT) == 2)
    assert any(line.startswith("[done") and killed_unit.label in line and "retry" in line for line in lines)
    assert unit_result(tmp_path / "study", killed_unit.id) is not None


def test_a_unit_whose_worker_is_killed_without_retries_is_reported_with_its_log(ray_cluster, tmp_path):
    cfg, outcome, lines = _run_with_a_killed_worker(tmp_path / "study", "sft-", retries=0)
    assert not outcome.ok
    assert len(outcome.failed) == 1 and outcome.failed[0].startswith("sft-")
    failed = outcome.failed[0]
    assert unit_result(tmp_path / "study", failed) is None  # a killed unit is never half-done
    log = unit_dir(tmp_path / "study", failed) / "log.txt"
    report = next(line for line in lines if line.startswith("[FAILED"))
    assert "no retries left" in report and f"log: {log.resolve()}" in report
    assert any(i.startswith(("kd-", "eval-", "report-")) for i in outcome.blocked)
