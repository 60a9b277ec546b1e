"""The study's processes die with their runner: the runner's pid travels in ``KDLENS_RUNNER_PID`` to
every process of a study (fork server, forked units, torchrun ranks); units watch it (worker.main), the
fork server dies with it (study/forkserver_guard.py). Imported by the runner and by the units, so that
the units never import the scheduler."""

from __future__ import annotations

import os
import select
import signal
import time

# The runner's pid, in the environment of every process of the study (fork server, forked units,
# torchrun ranks): units watch it (worker.main), the fork server dies with it (study/forkserver_guard.py).
RUNNER_PID = "KDLENS_RUNNER_PID"


def watch_runner(runner_pid: int) -> None:
    """Kill this unit process as soon as the runner exits, however it was stopped.

    Units are forked from the fork server (or are torchrun ranks in their own session), so
    PR_SET_PDEATHSIG would fire with their parent, not the runner; a pidfd of the runner itself
    becomes readable the moment it exits.
    """
    import threading

    try:
        fd = os.pidfd_open(runner_pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)  # the runner is already gone
        return
    except (AttributeError, OSError):  # no pidfd (old kernel): poll the pid instead
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                try:
                    os.kill(runner_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="kdlens-watch-runner", daemon=True).start()
