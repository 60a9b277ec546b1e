"""Loading LLM-Adapters-format records (instruction, input, output, answer) from files or the hub.

Files: a JSON list, JSON Lines or Parquet, read through ``datasets``. A hub dataset id works when
online; offline it fails with a message that says how to point at local files instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from kdlens.errors import KdlensError

_BUILDERS = {".json": "json", ".jsonl": "json", ".ndjson": "json", ".parquet": "parquet"}


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0", "false", "False") for v in
               ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _json_problem(path: Path) -> str | None:
    """Where a .json (one document) or .jsonl (one object per line) file stops being valid JSON."""
    import json

    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start}); save it as UTF-8"
    docs = [(1, text)] if path.suffix.lower() == ".json" else list(enumerate(text.splitlines(), 1))
    for first_line, doc in docs:
        if not doc.strip():
            continue
        try:
            json.loads(doc)
        except ValueError as exc:
            return f"invalid JSON at line {first_line + exc.lineno - 1}, column {exc.colno}: {exc.msg}"
    return None


def load_records(
    source: str | os.PathLike,
    required: Sequence[str] = ("instruction", "output"),
    *,
    split: str = "train",
    defaults: dict | None = None,
):
    """Load records as a ``datasets.Dataset`` and check that every required field is present.

    ``source`` is a local file (.json list, .jsonl, .parquet) or a hub dataset id. ``defaults``
    fills optional fields that a file lacks (e.g. ``{"input": ""}``). Raises KdlensError for a
    missing file, an unreadable file, an empty dataset, missing fields or null values in them.
    """
    import datasets

    datasets.disable_progress_bars()
    path = Path(source)
    if path.suffix.lower() in _BUILDERS or path.exists():
        if not path.is_file():
            raise KdlensError(f"{path}: no such data file")
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise KdlensError(f"{path}: unknown data file type; use .json, .jsonl or .parquet")
        if path.stat().st_size == 0:
            raise KdlensError(f"{path}: the file is empty; it must hold training records "
                              "(a JSON list, one JSON object per line, or Parquet)")
        verbosity = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its parse-error log lines: said below
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as exc:
            cause = _json_problem(path) if builder == "json" else None
            raise KdlensError(f"{path}: could not be read as {builder}: {cause or exc}") from exc
        finally:
            datasets.logging.set_verbosity(verbosity)
        origin = str(path)
    else:
        try:
            ds = datasets.load_dataset(str(source), split=split)
        except Exception as exc:
            hint = (
                "hub access is off (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE); "
                if _offline() else ""
            )
            raise KdlensError(
                f"could not load dataset {str(source)!r} from the Hugging Face hub ({hint}{type(exc).__name__}). "
                "Point kdlens at a local file instead: a .json list, .jsonl or .parquet of records "
                f"with fields {', '.join(required)}."
            ) from exc
        origin = f"hub:{source}"
    return validate_records(ds, required, origin=origin, defaults=defaults)


def validate_records(ds, required: Iterable[str], *, origin: str, defaults: dict | None = None):
    """Check fields and values of a ``datasets.Dataset``; fill ``defaults`` for absent optional fields."""
    required = list(required)
    if len(ds) == 0:
        raise KdlensError(f"{origin}: the dataset is empty")
    for name, value in (defaults or {}).items():
        if name not in ds.column_names:
            ds = ds.add_column(name, [value] * len(ds))
    missing = [f for f in required if f not in ds.column_names]
    if missing:
        raise KdlensError(
            f"{origin}: records lack the field(s) {', '.join(missing)} "
            f"(found: {', '.join(ds.column_names)})"
        )
    for field in required:
        column = ds[field]
        bad = [i for i, v in enumerate(column) if v is None or (isinstance(v, str) and field == "instruction" and not v.strip())]
        if bad:
            shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
            raise KdlensError(f"{origin}: field {field!r} is null or empty in record(s) {shown}")
    return ds
