"""Atomic file writes, output sets and tabular reads shared by every stage.

Every artifact kdlens writes goes through :func:`atomic_path`: the data is written to a temporary
file in the same folder and moved into place with ``os.replace`` only after it was written and
flushed completely, so a killed run never leaves a half-written file under the final name. Files
get the usual mode (0666 less the umask), as if created with ``open``.

A command that writes several files that belong together (``kdlens fidelity``: pairs and summaries;
``kdlens report``: report, figures and tables) writes them as one :func:`output_set`: the files are
built in a hidden sibling folder and published with a single rename, so a reader sees the old set
or the new set, never a mix. Staging folders of a killed run are removed by the next run.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from kdlens.errors import KdlensError

TABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; the file gets open()'s usual mode
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # make the bytes durable before the rename
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _remove_dead_temporaries(final: Path) -> None:
    """Remove ``.<name>.<pid>.*.tmp`` files a killed process left while writing ``final``."""
    prefix = f".{final.name}."
    for entry in final.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = entry.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            entry.unlink(missing_ok=True)


def current_umask() -> int:
    """This process's umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_table_atomic(frame: Any, path: str | os.PathLike) -> Path:
    """Write a Polars DataFrame as Parquet, CSV or JSONL (by suffix), atomically."""
    final = Path(path)
    suffix = final.suffix.lower()
    with atomic_path(final) as tmp:
        if suffix == ".parquet":
            frame.write_parquet(tmp)
        elif suffix == ".csv":
            frame.write_csv(tmp)
        elif suffix in (".jsonl", ".ndjson"):
            frame.write_ndjson(tmp)
        else:
            raise KdlensError(f"cannot write {final}: use a .parquet, .csv or .jsonl file name")
    return final


def read_table(path: str | os.PathLike):
    """Read a Parquet, JSONL, JSON (list of records) or CSV file into a Polars DataFrame.

    Raises KdlensError naming the file when it is missing, of an unknown kind, or unreadable.
    """
    import polars as pl

    src = Path(path)
    if not src.is_file():
        raise KdlensError(f"{src}: no such file")
    suffix = src.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(src)
        if suffix in (".jsonl", ".ndjson"):
            return pl.read_ndjson(src)
        if suffix == ".json":
            return pl.read_json(src)
        if suffix == ".csv":
            return pl.read_csv(src)
    except Exception as exc:  # polars raises several types; the user needs the file and the cause
        raise KdlensError(f"{src}: could not be read as {suffix[1:]}: {exc}") from exc
    raise KdlensError(f"{src}: unknown file type {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}")


# ------------------------------------------------------------------------------------ output sets
_STAGING = re.compile(r"^\.(?P<name>.+)\.kdlens-(?P<kind>new|old)-(?P<pid>\d+)$")
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(final: Path) -> None:
    """Remove the staging folders a killed run left next to ``final``; if a run was killed between
    the two renames of the fallback publish (``final`` missing), put the old set back first."""
    parent = final.parent
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        m = _STAGING.match(entry.name)
        if not m or m["name"] != final.name or _pid_alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not final.exists():
            os.rename(entry, final)
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _is_temporary(name: str, names: Iterable[str]) -> bool:
    """A temporary a kdlens write leaves while it runs (``.<file>.*.tmp``, ``.kdlens-*``)."""
    return name.startswith(".kdlens-") or any(
        name.startswith(f".{n}.") and name.endswith(".tmp") for n in names)


def _check_replaceable(final: Path, names: tuple[str, ...], carry: tuple[str, ...], what: str) -> None:
    if not final.exists() and not final.is_symlink():
        return
    if not final.is_dir():
        raise KdlensError(f"output {final} exists and is not a folder; -o names a folder for the {what}")
    foreign = sorted(e.name for e in final.iterdir()
                     if e.name not in names and e.name not in carry and not _is_temporary(e.name, names))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise KdlensError(
            f"output folder {final} holds files that are not part of a {what} ({shown}); kdlens replaces "
            "the whole folder, so choose a new or empty folder, or move those files out")


def _carry_over(final: Path, staging: Path, carry: tuple[str, ...]) -> None:
    """Hard-link (else copy) the ``carry`` entries of the old folder into the new set."""
    for name in carry:
        src = final / name
        if not src.exists() or (staging / name).exists():
            continue
        if src.is_dir():
            try:
                shutil.copytree(src, staging / name, copy_function=os.link)
            except OSError:
                shutil.rmtree(staging / name, ignore_errors=True)
                shutil.copytree(src, staging / name)
        else:
            try:
                os.link(src, staging / name)
            except OSError:
                shutil.copy2(src, staging / name)


def _publish(staging: Path, final: Path) -> None:
    """Make ``staging`` the folder ``final`` with one rename (an atomic swap when ``final`` exists)."""
    if not final.exists():
        os.rename(staging, final)
        return
    if _exchange(staging, final):  # staging now holds the old set
        shutil.rmtree(staging, ignore_errors=True)
        return
    old = final.with_name(f".{final.name}.kdlens-old-{os.getpid()}")
    os.rename(final, old)  # a kill here leaves no `final`; the next run puts `old` back
    os.rename(staging, final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def output_set(path: str | os.PathLike, *, names: Iterable[str], what: str,
               carry: Iterable[str] = ()) -> Iterator[Path]:
    """Build a set of files in a staging folder next to ``path`` and publish it as folder ``path``.

    ``names`` are the entries the set writes; an existing ``path`` is replaced whole, so it may hold
    only those (and ``carry`` entries, which are kept in the new set: hard-linked, else copied). The
    yielded staging folder is published with one rename on success and removed on an exception.
    """
    final = Path(os.path.abspath(path))
    names, carry = tuple(names), tuple(carry)
    if final.parent != final:
        final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(final)
    _check_replaceable(final, names, carry, what)
    staging = final.with_name(f".{final.name}.kdlens-new-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        yield staging
        if final.is_dir():
            _carry_over(final, staging, carry)
        _publish(staging, final)
    except OSError as exc:  # name the output the user gave, not the staging folder or "no file"
        if exc.errno is not None and (exc.filename is None or str(staging) in str(exc.filename)):
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(final)) from exc
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
