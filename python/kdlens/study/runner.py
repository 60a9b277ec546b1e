"""Run a planned study: every unit whose artifacts are missing, in dependency order, in parallel.

Each unit runs in its own process that dies with the runner (it watches the runner's pid, whatever
signal stopped it, SIGKILL included), writes into ``units/<id>/`` (its output
goes to ``units/<id>/log.txt``) and, last and atomically, ``units/<id>/unit.json``. Processes are
forked from a fork server that has imported torch, transformers and the stages once, so a unit
starts in milliseconds instead of seconds; a training unit that asks for several processes per node
runs under torchrun (``python -m kdlens.study.worker STUDY_DIR UNIT_ID``) instead.
A unit with a ``unit.json`` is finished and is never run again, so killing the runner at any moment
and running it again finishes the study; training units resume from their own checkpoints.
One runner works on a study folder at a time: it holds an exclusive ``flock`` on ``STUDY/.lock``.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdlens.errors import KdlensError
from kdlens.study.config import StudyConfig
from kdlens.study.plan import Plan, Unit, plan_study
from kdlens.study.progress import (
    expected_cost,
    planned_steps,
    remaining_path_cost,
    training_step,
)
from kdlens.study.lifeline import RUNNER_PID
from kdlens.study.store import UNIT_DONE, load_plan, unit_dir, unit_result, write_plan

__all__ = ["UNIT_DONE", "StudyOutcome", "describe_plan", "load_plan", "run_study", "unit_dir", "unit_result"]


@dataclass
class StudyOutcome:
    study_dir: Path
    done: list[str] = field(default_factory=list)  # finished in this run
    skipped: list[str] = field(default_factory=list)  # finished before
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # not run because a dependency failed
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked

    @property
    def report_dir(self) -> Path:
        return self.study_dir / "report"


def describe_plan(plan: Plan, study_dir: Path) -> str:
    """The plan as text: one line per unit with its state (for ``--dry-run``)."""
    lines = []
    counts: dict[str, list[int]] = {}
    for u in plan.units:
        done = unit_result(study_dir, u.id) is not None
        c = counts.setdefault(u.kind, [0, 0])
        c[0] += 1
        c[1] += done
        lines.append(f"  {'done   ' if done else 'pending'}  {u.label:<60}  {u.id}")
    summary = ", ".join(f"{k}: {n} ({d} done)" for k, (n, d) in counts.items())
    return f"{len(plan.units)} units in {study_dir}\n  {summary}\n" + "\n".join(lines)


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux)
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _lock_study(study_dir: Path) -> int:
    """Take the exclusive lock of a study folder (held until the returned fd is closed)."""
    path = study_dir / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise KdlensError(f"{study_dir} is in use by another kdlens study runner (pid {holder}); wait for it "
                          "to finish or stop it, then run the same command again") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


# Imported once by the fork server; every unit process starts with them loaded.
# (transformers and kdlens.train import lazily: the modules every training or eval unit reaches are named,
# which saves each unit about a second of imports.)
PRELOAD = ["kdlens.study.forkserver_guard", "torch", "transformers",
           "transformers.models.auto.tokenization_auto", "transformers.models.auto.modeling_auto",
           "transformers.models.qwen2.modeling_qwen2", "datasets", "polars", "kdlens.study.actions",
           "kdlens.train.loop", "kdlens.eval.run"]


# Units that load a model and so hold a device while they run.
MODEL_UNITS = ("base", "sft", "cache", "kd", "eval", "compare")


def visible_gpus(cfg: StudyConfig) -> list[str]:
    """The GPU ids units may use: the config's ``devices``, else every GPU nvidia-smi lists."""
    if cfg.devices:
        return list(cfg.devices)
    try:  # not torch.cuda: initialising CUDA here would break the forked unit processes
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def _devices_needed(unit: Unit, cfg: StudyConfig, gpus: list[str]) -> int:
    if not gpus or unit.kind not in MODEL_UNITS:
        return 0
    nproc = cfg.nproc_per_node if unit.kind in ("sft", "kd") else 1
    if nproc > len(gpus):
        raise KdlensError(f"nproc_per_node = {nproc} but only {len(gpus)} GPU(s) are available")
    return nproc


def _run_forked(study_dir: str, unit_id: str, log_path: str, threads: int, gpus: str | None) -> None:
    """Body of a unit process forked from the fork server: log to the unit's file, run the unit."""
    if gpus is not None:  # before anything initialises CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    import torch

    torch.set_num_threads(threads)
    from kdlens.study.worker import main

    sys.exit(main([study_dir, unit_id]))


class LocalBackend:
    """Units as processes on this machine (the default backend): forked from a fork server that has
    imported torch once, or torchrun subprocesses; GPUs are handed out from ``visible_gpus``.

    A backend starts one unit at a time and hands back a handle with ``poll()`` (None while running,
    else the exit status), ``kill()``, ``close()``, ``started`` and ``gpus`` (the devices it held);
    the scheduler (plan, order, resume, failures) is the same for every backend (the other one is
    kdlens.study.ray_backend).
    """

    name = "local"

    def __init__(self):
        self._mp_ctx = None

    def visible_gpus(self, cfg: StudyConfig) -> list[str]:
        return visible_gpus(cfg)

    def running_limit(self, jobs: int) -> int:
        return jobs

    def start(self, study_dir: Path, unit: Unit, cfg: StudyConfig, threads: int, env: dict,
              gpus: list[str]) -> "_UnitProcess":
        if self._mp_ctx is None:
            self._mp_ctx = multiprocessing.get_context("forkserver")
            self._mp_ctx.set_forkserver_preload(PRELOAD)
        return _UnitProcess(study_dir, unit, cfg, threads, env, self._mp_ctx, gpus)


class _UnitProcess:
    """A running unit: a forked process, or a torchrun subprocess for multi-process training."""

    def __init__(self, study_dir: Path, unit: Unit, cfg: StudyConfig, threads: int, env: dict, mp_ctx,
                 gpus: list[str]):
        log_path = unit_dir(study_dir, unit.id) / "log.txt"
        nproc = cfg.nproc_per_node if unit.kind in ("sft", "kd") else 1
        self.started = time.perf_counter()
        self.gpus = gpus
        visible = ",".join(gpus) if gpus else None
        if nproc > 1:
            self._log = open(log_path, "ab")
            if visible is not None:
                env = dict(env, CUDA_VISIBLE_DEVICES=visible)
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={nproc}", "-m", "kdlens.study.worker", str(study_dir), unit.id]
            self._popen = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                           preexec_fn=_die_with_parent)
            self._proc = None
        else:
            self._log = None
            self._popen = None
            self._proc = mp_ctx.Process(target=_run_forked, name=unit.id,
                                        args=(str(study_dir), unit.id, str(log_path), threads, visible))
            self._proc.start()

    def poll(self) -> int | None:
        if self._popen is not None:
            return self._popen.poll()
        return self._proc.exitcode

    def kill(self) -> None:
        if self._popen is not None:
            self._popen.kill()
            self._popen.wait()
        else:
            self._proc.kill()
            self._proc.join()
        self.close()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def run_study(
    cfg: StudyConfig,
    study_dir: str | os.PathLike,
    *,
    jobs: int | None = None,
    echo: Callable[[str], None] | None = None,
    progress: bool = True,
    backend=None,
) -> StudyOutcome:
    """Run every unfinished unit of ``cfg``'s plan; return what happened (failures included).
    ``backend``: where units run, :class:`LocalBackend` (default) or kdlens.study.ray_backend's."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no helper thread: workers are forked with a pre-exec hook
    study_dir = Path(study_dir).resolve()
    if study_dir.exists() and not study_dir.is_dir():
        raise KdlensError(f"output {study_dir} exists and is not a folder; -o names the study folder")
    study_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_study(study_dir)
    try:
        return _run_locked(cfg, study_dir, jobs, echo, progress, backend or LocalBackend())
    finally:
        os.close(lock)


def _run_locked(cfg: StudyConfig, study_dir: Path, jobs: int | None, echo: Callable[[str], None] | None,
                progress: bool, backend) -> StudyOutcome:
    from tqdm import tqdm

    plan = plan_study(cfg)
    write_plan(plan, study_dir)
    jobs = jobs or cfg.jobs
    cores = os.cpu_count() or 1
    threads = max(1, cores // jobs)
    free_gpus = backend.visible_gpus(cfg)
    running_limit = backend.running_limit(jobs)
    need = {u.id: _devices_needed(u, cfg, free_gpus) for u in plan.units}

    units = plan.by_id()
    outcome = StudyOutcome(study_dir)
    # Progress counts expected seconds (units differ 1000x in cost); ready units start costliest
    # remaining chain first, so the long teacher chain is not left for last.
    cost = {u.id: expected_cost(u, plan) for u in plan.units}
    priority = remaining_path_cost(plan, cost)
    pending = sorted(plan.units, key=lambda u: -priority[u.id])
    for u in list(pending):
        if unit_result(study_dir, u.id) is not None:
            outcome.skipped.append(u.id)
            pending.remove(u)
    finished = set(outcome.skipped)
    running: dict[str, _UnitProcess] = {}
    done_cost = sum(cost[i] for i in finished)
    bar = tqdm(total=round(sum(cost.values()), 1), initial=round(done_cost, 1), desc=cfg.name,
               disable=not progress, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} (work weighted by expected cost)")
    say = echo or (lambda s: bar.write(s))
    last_report = time.perf_counter()
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
               TOKENIZERS_PARALLELISM="false")
    os.environ[RUNNER_PID] = env[RUNNER_PID] = str(os.getpid())  # before the fork server starts
    for key in ("OMP_WAIT_POLICY", "TOKENIZERS_PARALLELISM"):  # inherited by the fork server
        os.environ.setdefault(key, env[key])
    dead: dict[str, str] = {}  # failed or blocked unit -> label of the failed unit that caused it
    try:
        while pending or running:
            for u in list(pending):
                cause = next((dead[d] for d in u.deps.values() if d in dead), None)
                if cause is not None:
                    pending.remove(u)
                    dead[u.id] = cause
                    outcome.blocked.append(u.id)
                    say(f"[blocked] {u.label}: it needs {cause}, which failed")
            ready = [u for u in pending if all(d in finished for d in u.deps.values())]
            for u in ready:
                if len(running) >= running_limit:
                    break
                if need[u.id] > len(free_gpus):
                    continue  # waits for a device; a unit that needs none may go first
                pending.remove(u)
                held, free_gpus = free_gpus[:need[u.id]], free_gpus[need[u.id]:]
                unit_dir(study_dir, u.id).mkdir(parents=True, exist_ok=True)
                running[u.id] = backend.start(study_dir, u, cfg, threads, env, held)
                say(f"[start] {u.label}")
            if not running:
                if pending:  # nothing can run: only blocked work is left (handled above)
                    continue
                break
            time.sleep(0.05)
            if time.perf_counter() - last_report >= 15.0:  # training steps of the running units
                last_report = time.perf_counter()
                partial = 0.0
                lines = []
                for uid, proc in running.items():
                    u, total = units[uid], planned_steps(units[uid], plan)
                    step = training_step(unit_dir(study_dir, uid) / "run") if total else None
                    if step is not None:
                        partial += cost[uid] * min(1.0, step / total)
                        lines.append(f"{u.label}: step {step}/{total}")
                    else:
                        lines.append(f"{u.label}: {last_report - proc.started:.0f}s")
                bar.n = round(done_cost + partial, 1)
                bar.refresh()
                say(f"[running {time.perf_counter() - start:6.0f}s] " + "; ".join(lines))
            for uid, proc in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                proc.close()
                del running[uid]
                free_gpus = sorted(free_gpus + proc.gpus, key=lambda g: (len(g), g))
                u = units[uid]
                took = time.perf_counter() - proc.started
                note = getattr(proc, "note", "")  # e.g. the Ray backend's retries after a lost worker
                if rc == 0 and unit_result(study_dir, uid) is not None:
                    finished.add(uid)
                    outcome.done.append(uid)
                    done_cost += cost[uid]
                    bar.n = round(done_cost, 1)
                    bar.refresh()
                    say(f"[done {took:7.1f}s] {u.label}{note}")
                else:
                    dead[uid] = u.label
                    outcome.failed.append(uid)
                    tail = _tail(unit_dir(study_dir, uid) / "log.txt")
                    say(f"[FAILED {took:6.1f}s] {u.label} (exit {rc}){note}; log: "
                        f"{unit_dir(study_dir, uid) / 'log.txt'}\n{tail}")
    finally:
        for proc in running.values():
            proc.kill()
        bar.close()
    outcome.elapsed_s = time.perf_counter() - start
    return outcome


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])
