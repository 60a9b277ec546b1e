"""Imported once, by the study's fork server only (``runner.PRELOAD``): the fork server dies with the
study runner that started it, at once, even when the runner is killed with SIGKILL. Left alone it
would shut down only seconds later (its interpreter holds torch and transformers)."""

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def _die_with_runner() -> None:
    runner = os.environ.get("KDLENS_RUNNER_PID")
    if not runner:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the fork server exits when its runner's pipe closes
        return
    if os.getppid() != int(runner):  # the runner died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


_die_with_runner()
