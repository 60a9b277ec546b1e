"""Columns of strings as the Rust side reads them: Python lists in place, Arrow buffers as views.

The leaf of :mod:`kdlens.metrics`: :mod:`~kdlens.metrics.bleu` and :mod:`~kdlens.metrics.answers`
both convert their inputs here. Accepted: lists of str, numpy string/object arrays, pyarrow (chunked)
arrays, Polars Series, pandas Series and other iterables of str. A missing value (None, or pandas'
NaN/NA) is None, which the Rust side reports as a missing row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdlens.errors import KdlensError

__all__ = ["is_column_like", "n_rows", "text_column"]



def _arrow_buffers(arr) -> tuple:
    """(offsets int64[n+1], data uint8, valid bool[n] | None) views of a pyarrow string array."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_string(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_string())
    elif not pa.types.is_large_string(arr.type):
        raise KdlensError(f"expected a string column, got Arrow type {arr.type}")
    _, off_buf, data_buf = arr.buffers()
    n = len(arr)
    offsets = np.frombuffer(off_buf, dtype=np.int64, count=arr.offset + n + 1)[arr.offset:]
    data = (np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None and data_buf.size
            else np.zeros(0, dtype=np.uint8))
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
    return (offsets, data, valid)


def text_column(values: Any, what: str = "texts"):
    """Convert a column of strings to what the Rust side reads, without a Python loop per row."""
    if isinstance(values, list):
        return values
    if isinstance(values, str):
        raise KdlensError(f"{what} must be a column of strings, not a single str; wrap it in a list")
    module = type(values).__module__.split(".")[0]
    if module == "polars":
        import polars as pl

        return _arrow_buffers(values.to_arrow(compat_level=pl.CompatLevel.oldest()))
    if module == "pyarrow":
        return _arrow_buffers(values)
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise KdlensError(f"{what} must be one-dimensional, got shape {values.shape}")
        return values.tolist()
    if module == "pandas":
        # pandas stores a missing value as NaN (or pd.NA) even in object and str columns: it is None
        out = values.to_numpy(dtype=object)
        missing = np.asarray(values.isna(), dtype=bool)
        if missing.any():
            out = out.copy()
            out[missing] = None
        return out.tolist()
    if isinstance(values, (tuple, range)) or hasattr(values, "__iter__"):
        return list(values)
    raise KdlensError(f"{what}: cannot read {type(values).__name__} as a column of strings")


def n_rows(col) -> int:
    return len(col) if isinstance(col, list) else len(col[0]) - 1


def is_column_like(x: Any) -> bool:
    return not isinstance(x, str) and x is not None and hasattr(x, "__len__")


def check_threads(num_threads: Any) -> int | None:
    """``num_threads`` as the native calls take it: None (all cores) or an integer >= 1."""
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise KdlensError(f"num_threads must be None (all cores) or an integer >= 1, got {num_threads!r}")
    return int(num_threads)
