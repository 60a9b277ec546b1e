"""Atomic file writes and tabular reads shared by every stage.

Every artifact kdlens writes goes through :func:`atomic_path`: the data is written to a temporary
file in the same folder and moved into place with ``os.replace`` only after it was written and
flushed completely, so a killed run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from kdlens.errors import KdlensError

TABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
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
