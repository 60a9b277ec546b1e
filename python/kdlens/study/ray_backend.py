"""``kdlens study --backend ray``: the study's units as Ray tasks, on a local or a multi-node cluster.

The scheduler is the local one (kdlens.study.runner: same plan, unit ids, order, resume and failure
handling); only where a unit runs changes. Each unit becomes one Ray task that asks for the unit's
resources (``num_cpus``: the CPUs a unit gets on the local backend, or ``--cpus-per-unit``;
``num_gpus``: 1 for a model unit, ``nproc_per_node`` for a torchrun training unit, when the cluster
has GPUs; Ray sets ``CUDA_VISIBLE_DEVICES`` to the devices it assigned) and runs the same worker as
the local backend, ``python -m kdlens.study.worker STUDY_DIR UNIT_ID`` (under torchrun with several
processes per node), in a subprocess that dies with the task's worker. The unit reads and writes
``STUDY_DIR/units/<id>/`` directly, so on a multi-node cluster the study folder must be on a
filesystem every node mounts at the same path; a node that cannot see it fails the unit with a
message saying so.

Failures: a unit that exits with an error is failed, not retried (it would fail again), and its
log's tail is shown as on the local backend. A unit whose worker dies (killed, node lost, out of
memory) is retried by Ray up to ``max_retries`` times; the retry starts the unit again (training
units resume from their checkpoints; ``unit.json`` is written last, so a half-done attempt never
counts as finished); when the retries are used up the unit is failed with its log. Every attempt
writes a header line into ``units/<id>/log.txt`` naming its node and worker.
Tests: tests/ray/test_ray_study.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from kdlens.errors import KdlensError
from kdlens.metrics.ray_cluster import require_ray
from kdlens.study.config import StudyConfig
from kdlens.study.plan import Unit
from kdlens.study.runner import MODEL_UNITS
from kdlens.study.store import PLAN_FILE, unit_dir

ATTEMPT = "[kdlens ray] attempt"  # starts the header line each attempt writes into the unit's log
# the driver's environment that travels with a unit (the rest is the node's own)
FORWARDED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "TOKENIZERS_PARALLELISM")
FORWARDED_PREFIXES = ("HF_", "TRANSFORMERS_", "TORCHINDUCTOR_")


def _attempts(log: Path) -> int:
    try:
        return log.read_text(errors="replace").count(ATTEMPT)
    except OSError:
        return 0


def run_unit_task(study_dir: str, unit_id: str, nproc: int, env_extra: dict) -> int:
    """Body of a unit's Ray task (on a worker of the cluster): run the unit's worker process, return
    its exit status. The process watches this worker's pid and dies with it (kdlens.study.lifeline)."""
    import socket
    import subprocess
    import sys

    import ray

    from kdlens.study.runner import _die_with_parent

    folder = unit_dir(study_dir, unit_id)
    if not (Path(study_dir) / PLAN_FILE).is_file():
        raise KdlensError(f"node {socket.gethostname()} does not see the study folder {study_dir}; put it on "
                          "a filesystem every node of the Ray cluster mounts at the same path")
    folder.mkdir(parents=True, exist_ok=True)
    gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    env = dict(os.environ, **env_extra, KDLENS_RUNNER_PID=str(os.getpid()))
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "kdlens.study.worker", study_dir, unit_id]
    else:
        cmd = [sys.executable, "-m", "kdlens.study.worker", study_dir, unit_id]
    with open(folder / "log.txt", "ab") as log:
        log.write(f"{ATTEMPT} on {socket.gethostname()}, Ray worker pid {os.getpid()}, "
                  f"GPUs {','.join(map(str, gpus)) or 'none'}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent)
        return proc.wait()


class RayUnit:
    """A unit running as a Ray task: the handle the scheduler polls (see runner.LocalBackend)."""

    def __init__(self, ref, log: Path, gpus: list[str]):
        self.ref = ref
        self.log = log
        self.gpus = gpus  # devices the scheduler handed out: none, Ray assigns them
        self.started = time.perf_counter()
        self.note = ""
        self._before = _attempts(log)
        self._rc: int | None = None

    def poll(self) -> int | None:
        import ray

        if self._rc is not None:
            return self._rc
        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        attempts = _attempts(self.log) - self._before
        try:
            self._rc = int(ray.get(self.ref))
        except ray.exceptions.RayTaskError as exc:  # the task itself raised (e.g. no shared folder)
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
            self.note = f": {str(cause).splitlines()[0]}"
            self._rc = 1
            return self._rc
        except ray.exceptions.RayError as exc:  # its worker died more often than the retries allow
            self.note = (f"; its Ray worker died in each of {attempts} attempt(s) "
                         f"({type(exc).__name__}), no retries left")
            self._rc = -9
            return self._rc
        if attempts > 1:
            self.note = f" (after {attempts - 1} retry(ies): its Ray worker was lost)"
        return self._rc

    def kill(self) -> None:
        import ray

        if self._rc is None:
            try:
                ray.cancel(self.ref, force=True)
            except Exception:  # already finished or the cluster is gone
                pass

    def close(self) -> None:
        pass


class RayBackend:
    """Units as Ray tasks (``kdlens study --backend ray``). Connect first (kdlens.metrics.ray_cluster).

    ``max_retries``: how often a unit whose worker died is started again. ``jobs``: the most units
    in flight (None: every ready unit is submitted and Ray queues them on the cluster's resources).
    ``cpus_per_unit``: the CPUs each unit asks for (None: what a unit gets on the local backend).
    """

    name = "ray"

    def __init__(self, *, max_retries: int = 2, jobs: int | None = None, cpus_per_unit: int | None = None):
        if max_retries < 0:
            raise KdlensError("--max-retries must be >= 0")
        if cpus_per_unit is not None and cpus_per_unit < 1:
            raise KdlensError("--cpus-per-unit must be >= 1")
        self.max_retries = max_retries
        self.jobs = jobs
        self.cpus_per_unit = cpus_per_unit
        self._task = None
        self._node_gpus: int | None = None

    def visible_gpus(self, cfg: StudyConfig) -> list[str]:
        return []  # Ray places units on GPUs; the scheduler hands none out

    def running_limit(self, jobs: int) -> int:
        return self.jobs if self.jobs is not None else 1 << 30

    def _gpus_needed(self, unit: Unit, cfg: StudyConfig) -> int:
        ray = require_ray()
        if self._node_gpus is None:
            self._node_gpus = max([int(n.get("Resources", {}).get("GPU", 0)) for n in ray.nodes()
                                   if n.get("Alive")] or [0])
        if not self._node_gpus or unit.kind not in MODEL_UNITS:
            return 0
        nproc = cfg.nproc_per_node if unit.kind in ("sft", "kd") else 1
        if nproc > self._node_gpus:
            raise KdlensError(f"nproc_per_node = {nproc} but the largest node of the Ray cluster has "
                              f"{self._node_gpus} GPU(s); a torchrun unit runs on one node")
        return nproc

    def start(self, study_dir: Path, unit: Unit, cfg: StudyConfig, threads: int, env: dict,
              gpus: list[str]) -> RayUnit:
        ray = require_ray()
        if self._task is None:
            self._task = ray.remote(run_unit_task)
        nproc = cfg.nproc_per_node if unit.kind in ("sft", "kd") else 1
        cpus = self.cpus_per_unit or threads
        num_gpus = self._gpus_needed(unit, cfg)
        extra = {k: v for k, v in env.items() if k in FORWARDED or k.startswith(FORWARDED_PREFIXES)}
        extra.update(OMP_NUM_THREADS=str(cpus), MKL_NUM_THREADS=str(cpus))
        ref = self._task.options(num_cpus=cpus * nproc, num_gpus=num_gpus,
                                 max_retries=self.max_retries, retry_exceptions=False,
                                 name=f"kdlens-unit-{unit.id}").remote(str(study_dir), unit.id, nproc, extra)
        return RayUnit(ref, unit_dir(study_dir, unit.id) / "log.txt", gpus)
