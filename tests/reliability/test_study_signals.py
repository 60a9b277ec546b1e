"""``kdlens study`` stops its units when told (issue 12 item 2, review D2/U3/U4): the runner killed with
SIGINT, SIGTERM or SIGKILL mid-unit leaves no process of the study running 5 s later, and a second
runner on the same study folder is refused while the first one runs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from kdlens.errors import KdlensError
from kdlens.study.runner import _lock_study

from .helpers import kdlens_cmd, kdlens_env

# One teacher and one student with 150-step SFT units: long enough to be killed mid-unit.
LONG_STUDY = """
name = "long"
jobs = 1
[task]
kind = "synthetic"
n_train = 200
n_test = 24
[models]
teachers = ["tiny-teacher"]
students = ["tiny-s1"]
[grid]
objectives = ["forward_kl"]
temperatures = [1.0]
noise_sigmas = [0.0]
task_unaware = false
[train]
lora = false
max_length = 128
micro_batch_size = 8
grad_accum = 1
lr = 3e-3
warmup_steps = 2
max_steps = 150
save_every = 3
val_size = 16
progress = false
"""


def _study_processes(runner: int) -> list[str]:
    """Live (not zombie) processes of the study: the runner's session (runner, fork server, units) and
    every process carrying its pid in KDLENS_RUNNER_PID (torchrun starts ranks in their own session)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ours = int(fields[3]) == runner or f"KDLENS_RUNNER_PID={runner}".encode() in environ
        if ours and fields[0] != "Z":
            found.append(f"{proc.name} {stat.split(')')[0].split('(', 1)[1]}")
    return found


def test_a_second_lock_on_a_study_folder_is_refused(tmp_path):
    fd = _lock_study(tmp_path)
    try:
        with pytest.raises(KdlensError, match=rf"in use by another kdlens study runner \(pid {os.getpid()}\)"):
            _lock_study(tmp_path)
    finally:
        os.close(fd)
    os.close(_lock_study(tmp_path))  # free again once the holder closed it


CASES = [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGKILL, 1), (signal.SIGKILL, 2)]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "nproc"), CASES, ids=[f"{s.name}-nproc{n}" for s, n in CASES])
def test_killed_runner_leaves_no_study_process(tmp_path, sig, nproc):
    """nproc 2: the training units run under torchrun (2 CPU ranks, gloo), ranks in their own session."""
    (tmp_path / "long.toml").write_text(LONG_STUDY.replace("jobs = 1", f"jobs = 1\nnproc_per_node = {nproc}"))
    runner = subprocess.Popen(kdlens_cmd("study", "long.toml", "-o", "S", "--no-progress"), cwd=tmp_path,
                              env=kdlens_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 400
        while not list((tmp_path / "S" / "units").glob("sft-*/run/metrics.jsonl")):  # a unit is training
            assert runner.poll() is None, runner.stderr.read()
            assert time.monotonic() < deadline, "no training unit started"
            time.sleep(0.2)
        assert len(_study_processes(runner.pid)) >= 3 + nproc  # runner, tracker, fork server, unit (+ ranks)
        if sig == signal.SIGTERM:  # while it runs, a second runner on the same folder is refused
            second = subprocess.run(kdlens_cmd("study", "long.toml", "-o", "S", "--no-progress"),
                                    cwd=tmp_path, env=kdlens_env(), capture_output=True, text=True, timeout=300)
            assert second.returncode == 2, second.stderr
            assert f"in use by another kdlens study runner (pid {runner.pid})" in second.stderr
            assert "Traceback" not in second.stderr
        os.kill(runner.pid, sig)
        killed_at = time.monotonic()
        rc = runner.wait(timeout=30)
        assert rc == {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}[sig]
        while _study_processes(runner.pid) and time.monotonic() - killed_at < 5:
            time.sleep(0.1)
        assert _study_processes(runner.pid) == [], "study processes outlived the runner by 5 s"
    finally:
        for line in _study_processes(runner.pid):
            os.kill(int(line.split()[0]), signal.SIGKILL)
        runner.wait(timeout=30)


@pytest.mark.slow
def test_an_incomplete_study_says_so_on_stderr(tmp_path):
    """U15: the "study is incomplete" error went to stdout. A model folder that passes the plan-time
    check (it has a config.json) but cannot load makes its units fail."""
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    (tmp_path / "s.toml").write_text(LONG_STUDY.replace('students = ["tiny-s1"]', f'students = ["{tmp_path}/broken"]'))
    done = subprocess.run(kdlens_cmd("study", "s.toml", "-o", "S", "--no-progress"), cwd=tmp_path, env=kdlens_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "kdlens: error: the study is incomplete" in done.stderr
    assert "the study is incomplete" not in done.stdout
