"""Helpers of the reliability tests: run kdlens in a subprocess, kill it at the N-th rename (strace),
and fingerprint a folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAPER_RESULTS = REPO / "python" / "kdlens" / "stats" / "paper_data"  # the CSVs shipped in the wheel


def kdlens_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def kdlens_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kdlens", *args]


def run_kdlens(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(kdlens_cmd(*args), cwd=cwd, env=kdlens_env(), capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"kdlens {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def need_strace() -> str:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    probe = subprocess.run([strace, "-qq", "-o", "/dev/null", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("strace cannot trace here (ptrace not permitted)")
    return strace


RENAMES = "rename,renameat,renameat2"


def rename_points(strace: str, args: list[str], cwd: Path, trace: Path) -> list[tuple[str, int]]:
    """Run kdlens under strace; its rename system calls (the commit points) in order, each as
    (syscall, k): the k-th call of that syscall (strace counts each syscall separately)."""
    subprocess.run([strace, "-f", "-qq", "-o", str(trace), "-e", f"trace={RENAMES}", *kdlens_cmd(*args)],
                   cwd=cwd, env=kdlens_env(), check=True, capture_output=True, timeout=600)
    points: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    for line in trace.read_text().splitlines():
        if "resumed" in line:
            continue
        call = line.split(None, 1)[1].split("(", 1)[0].strip() if " " in line else ""
        if call in RENAMES.split(","):
            seen[call] = seen.get(call, 0) + 1
            points.append((call, seen[call]))
    return points


def killed_at(strace: str, args: list[str], cwd: Path, point: tuple[str, int]) -> int:
    """Run kdlens and deliver SIGKILL exactly at a rename point (before the call runs); the exit code."""
    call, k = point
    cmd = [strace, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={RENAMES}",
           "-e", f"inject={call}:signal=SIGKILL:when={k}", *kdlens_cmd(*args)]
    return subprocess.run(cmd, cwd=cwd, env=kdlens_env(), capture_output=True, timeout=600).returncode


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256 of its bytes)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def staging_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".kdlens-" in p.name)
