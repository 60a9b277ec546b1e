"""The ``kdlens`` command line: parse arguments, build the config, call the stage. No logic here.

Subcommands are discovered from :mod:`kdlens.commands` (one module each).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import signal
import sys
import threading
from typing import Sequence

from kdlens import __version__, commands
from kdlens.errors import KdlensError, one_line


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdlens",
        description="Run and analyse knowledge-distillation studies of language models.",
    )
    parser.add_argument("--version", action="version", version=f"kdlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised like SIGINT's KeyboardInterrupt so that every ``finally`` cleans up."""


def _raise_stopped(signum, frame):
    raise Stopped(signal.Signals(signum).name)


# What the user can do about an operating-system error while kdlens reads or writes their files.
_OS_HINTS = {
    errno.ENOSPC: "free some space or write to another disk",
    errno.EDQUOT: "free some space or write to another disk",
    errno.EROFS: "choose an output folder on a writable file system",
    errno.EACCES: "choose a path you may write to, or fix its permissions",
    errno.EPERM: "choose a path you may write to, or fix its permissions",
    errno.EEXIST: "a file is in the way of a folder kdlens needs; choose another output path",
    errno.ENOTDIR: "a file is in the way of a folder kdlens needs; choose another output path",
    errno.EISDIR: "a folder is in the way of a file kdlens writes; choose another output path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EFBIG: "the file system cannot hold a file this large; write to another disk",
    errno.EMFILE: "raise the open-files limit (ulimit -n)",
}


def os_error_message(exc: OSError) -> str | None:
    """A one-line message for an environment error (disk full, read-only, ...), or None for others."""
    hint = _OS_HINTS.get(exc.errno)
    if hint is None:
        return None
    where = exc.filename if exc.filename is not None else "an output file"
    return f"{where}: {exc.strerror or os.strerror(exc.errno)}; {hint}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if in_main_thread else None
    try:
        return int(args._run(args) or 0)
    except KdlensError as exc:
        print(f"kdlens: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        message = os_error_message(exc)
        if message is None:
            raise
        print(f"kdlens: error: {one_line(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        stopped_by = "SIGTERM" if isinstance(exc, Stopped) else "SIGINT"
        print(f"kdlens: stopped by {stopped_by}; unfinished output was removed, finished work is kept. "
              "Run the same command again to finish", file=sys.stderr)
        return 143 if isinstance(exc, Stopped) else 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # python -m kdlens.cli
    sys.exit(main())
