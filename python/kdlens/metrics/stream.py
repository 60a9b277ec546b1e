"""``kdlens fidelity``'s file front end: join two generation files in bounded memory and score them.

``score_files(teacher, student, out)`` reads two generation tables (Parquet, JSONL or CSV with
columns task, id, output and optionally gold or answer), joins them on (task, id) and streams
through them in batches. Memory is bounded by design, whatever the row count: nothing holds all
keys or all texts at once.

1. key pass: the (task, id, row) keys of both files are spread over temporary hash partitions on
   disk (partitions grow in number with the input, not in size); each partition is checked on its
   own for null keys, duplicates and keys without a partner, and whether both files list the keys
   in the same order;
2. same order: both files are streamed side by side in batches;
   different orders: both files (texts included) are hash-partitioned to disk, each partition is
   joined and scored on its own and written as a run sorted by teacher row, and the runs are merged
   back into teacher row order;
3. each batch is scored by :func:`kdlens.metrics.pairs.score_pairs` (the one teacher-student
   scorer) and appended to the per-pair table; :mod:`kdlens.metrics.pairs` also sums the totals.

Pairs are written in the teacher file's row order in both cases, in the same batches, so the
outputs do not depend on the student file's order.

Outputs in ``out`` (a folder), written as one set (kdlens.io.output_set: built next to ``out``
and published with one rename, so a killed run leaves the previous results whole): ``pairs.parquet``
(or .csv), ``summary.parquet``, ``summary.csv``, ``summary.md``. Tests: tests/metrics/test_fidelity_cli.py.

Every text is checked as it is read: valid UTF-8, and an output of at most ``MAX_TEXT_BYTES`` (1 MiB;
scoring a pair takes about 140 bytes of memory per byte of text, so one runaway generation of a few
hundred MB would exhaust the memory); a bad row is an error naming the file and the row.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from kdlens.errors import KdlensError
from kdlens.metrics.pairs import PairTotals, accumulate, score_pairs, summary, summary_markdown

KEY = ("task", "id")
GOLD_NAMES = ("gold", "answer")
DEFAULT_BATCH = 50_000
MAX_TEXT_BYTES = 1 << 20  # longest output scored (bytes of UTF-8); see the module docstring
OUTPUT_NAMES = ("pairs.parquet", "pairs.csv", "summary.parquet", "summary.csv", "summary.md")


# ------------------------------------------------------------------------------------------------
# reading


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise KdlensError(f"{path}: unknown file type {suffix!r}; use .parquet, .jsonl or .csv")


def _schema_names(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    kind = _kind(path)
    try:
        if kind == "parquet":
            return list(pq.read_schema(path).names)
        if kind == "csv":
            with open(path, encoding="utf-8") as f:
                import csv

                return next(csv.reader([f.readline()]), [])
        names: list[str] = []
        import json

        with open(path, encoding="utf-8") as f:
            for number, line in zip(range(1, 101), f):
                if line.strip():
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise KdlensError(_not_an_object(path, number, record))
                    for k in record:
                        if k not in names:
                            names.append(k)
        return names
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        found = _text_problem(path, kind)
        raise KdlensError(found or f"{path}: could not be read as {kind}: {exc}") from exc


def _not_an_object(path: Path, number: int, record) -> str:
    return (f"{path}: line {number} is a JSON {type(record).__name__}, not an object; a .jsonl file holds one "
            "object per line (a JSON array of records? write one record per line)")


def _text_problem(path: Path, kind: str) -> str | None:
    """The first line of a CSV or JSONL file that is not UTF-8 (JSONL: or not a JSON object), described."""
    import json

    if kind not in ("csv", "jsonl"):
        return None
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"{path}: line {number} is not UTF-8 text (byte {exc.start} of the line); save it as UTF-8"
            if kind == "csv" or not line.strip():
                continue
            try:
                record = json.loads(line.rstrip("\r\n"))
            except ValueError as exc:
                return f"{path}: line {number} is not valid JSON ({exc.msg} at column {exc.colno})"
            if not isinstance(record, dict):
                return _not_an_object(path, number, record)
    return None


def _bad_utf8_row(col) -> int:
    """Index of the first value of a string column that is not valid UTF-8."""
    import pyarrow as pa

    offset = 0
    for chunk in col.chunks:
        try:
            chunk.validate(full=True)
        except pa.ArrowInvalid:
            for i in range(len(chunk)):
                try:
                    chunk.slice(i, 1).validate(full=True)
                except pa.ArrowInvalid:
                    return offset + i
        offset += len(chunk)
    return -1


def _check_texts(table, path: Path, first_row: int) -> None:
    """Every value valid UTF-8 and every output at most MAX_TEXT_BYTES (``first_row``: 1-based row
    number of the table's first row in the file)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in table.column_names:
        col = table.column(name)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        try:
            col.validate(full=True)
        except pa.ArrowInvalid:
            row = first_row + _bad_utf8_row(col)
            raise KdlensError(f"{path}, row {row}: column {name!r} is not valid UTF-8 text; "
                              "fix the file's encoding (save it as UTF-8)") from None
    if "output" in table.column_names and table.num_rows:
        sizes = pc.binary_length(table.column("output"))
        longest = pc.max(sizes).as_py()
        if longest is not None and longest > MAX_TEXT_BYTES:
            i = pc.index(sizes, longest).as_py()
            task, key = table.column("task")[i].as_py(), table.column("id")[i].as_py()
            raise KdlensError(
                f"{path}, row {first_row + i} (task {task}, id {key}): the output is {longest:,} bytes, over "
                f"the {MAX_TEXT_BYTES:,}-byte limit per text (scoring needs ~140 bytes of memory per byte); "
                "truncate runaway generations or drop the row")


def _iter_batches(path: Path, columns: list[str], rows: int) -> Iterator:
    """pyarrow Tables of the given columns, task/id/gold cast to string, in file order; every text
    checked by :func:`_check_texts`."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    kind = _kind(path)
    try:
        if kind == "parquet":
            # pre_buffer=False: with pre-buffering the reader caches every row group it has read
            # until it is closed, so memory would grow with the file; buffer_size: column chunks
            # are read through a 4 MiB buffer, not whole (a file may hold one huge row group)
            reader = pq.ParquetFile(path, pre_buffer=False, buffer_size=4 << 20).iter_batches(
                batch_size=rows, columns=columns)
        elif kind == "csv":
            types = {c: pa.large_string() for c in columns}
            reader = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=columns, strings_can_be_null=False))
        else:
            reader = pajson.open_json(path, read_options=pajson.ReadOptions(block_size=1 << 24))
        first_row = 1
        for batch in reader:
            table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
            if kind == "jsonl":
                missing = [c for c in columns if c not in table.column_names]
                if missing:
                    raise KdlensError(f"{path}: some rows lack column(s) {missing}")
                table = table.select(columns)
            table = _normalise(table, path)
            _check_texts(table, path, first_row)
            first_row += table.num_rows
            yield table
    except KdlensError:
        raise
    except (pa.ArrowException, OSError) as exc:
        found = _text_problem(path, kind)
        raise KdlensError(found or f"{path}: could not be read: {exc}") from exc


def _normalise(table, path: Path):
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if name == "output":
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
                    or pa.types.is_string_view(col.type)):
                if pa.types.is_null(col.type):
                    raise KdlensError(f"{path}: column 'output' is all null; every row needs text")
                raise KdlensError(f"{path}: column 'output' must hold strings, found {col.type}")
            col = col.cast(pa.large_string())
        else:
            if pa.types.is_floating(col.type) and name == "id":
                raise KdlensError(f"{path}: column 'id' holds floats; use integer or string ids")
            col = pc.cast(col, pa.large_string())
        cols[name] = col
    return pa.table(cols)


def _rebatch(tables: Iterator, rows: int) -> Iterator:
    """Tables of exactly ``rows`` rows (the last may be shorter)."""
    import pyarrow as pa

    pending = []
    count = 0
    for t in tables:
        pending.append(t)
        count += t.num_rows
        while count >= rows:
            merged = pa.concat_tables(pending)
            yield merged.slice(0, rows)
            rest = merged.slice(rows)
            pending, count = ([rest] if rest.num_rows else []), rest.num_rows
    if count:
        yield pa.concat_tables(pending)


@dataclass
class _Side:
    path: Path
    gold: str | None
    columns: list[str] = field(default_factory=list)


def _inspect(path: Path, label: str) -> _Side:
    if not path.is_file():
        what = "is a folder, not a generation file" if path.is_dir() else "no such file"
        raise KdlensError(f"{label} file {path}: {what}")
    names = _schema_names(path)
    missing = [c for c in ("task", "id", "output") if c not in names]
    if missing:
        raise KdlensError(f"{label} file {path} lacks column(s) {', '.join(missing)} "
                          f"(it has: {', '.join(names) or 'none'}); generations need task, id, output")
    gold = next((g for g in GOLD_NAMES if g in names), None)
    cols = ["task", "id", "output"] + ([gold] if gold else [])
    return _Side(path, gold, cols)


# ------------------------------------------------------------------------------------------------
# bounded-memory key checks and reordering: hash partitions on disk
#
# Rows are spread over P temporary Arrow IPC files by a hash of (task, id), so a key's rows on both
# sides land in the same partition and each partition is checked (or joined) on its own. P grows
# with the input (KEY_PARTITION_ROWS keys, or about PARTITION_BYTES of text, per partition), so the
# memory a partition needs does not grow with the row count.

KEY_PARTITION_ROWS = 250_000  # (task, id, row) keys per partition in the key pass
PARTITION_BYTES = 64 << 20  # text bytes (teacher + student) per partition when reordering
RUN_CHUNK_ROWS = 4096  # scored rows per IPC batch of a partition's run (the merge reads one at a time)
ROW = "__kdlens_row"  # teacher row number carried through the reorder pass
MAX_SPLIT_LEVELS = 3  # a reorder partition over 2x PARTITION_BYTES is split again, this deep at most


def _row_bound(path: Path) -> int:
    """An upper bound on the rows of a generation file, read cheaply."""
    import pyarrow.parquet as pq

    if _kind(path) == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    lines = 1
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            lines += chunk.count(b"\n")
    return lines


def _text_bytes(path: Path) -> int:
    """About how many bytes the file's rows take in memory (uncompressed)."""
    import pyarrow.parquet as pq

    if _kind(path) != "parquet":
        return path.stat().st_size
    meta = pq.ParquetFile(path).metadata
    return sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))


def _partition_ids(table, parts: int, level: int = 0) -> np.ndarray:
    """Partition of each row by a hash of (task, id); each split level hashes with its own seed."""
    import polars as pl

    if parts == 1:
        return np.zeros(table.num_rows, dtype=np.int64)
    keys = pl.from_arrow(table.select(list(KEY)))
    h = keys.select(pl.struct(list(KEY)).hash(seed=20240501 + level)).to_series().to_numpy()
    return (h % np.uint64(parts)).astype(np.int64)


class _PartitionWriter:
    """P Arrow IPC stream files in ``folder``; rows are routed by their partition id."""

    def __init__(self, folder: Path, name: str, parts: int, compress: bool):
        import pyarrow as pa

        self.paths = [folder / f"{name}-{p:05d}.arrow" for p in range(parts)]
        self.writers: list = [None] * parts
        self.bytes = [0] * parts  # in-memory (decoded) size of the rows written to each partition
        self.options = pa.ipc.IpcWriteOptions(compression="lz4" if compress else None)

    def write(self, table, part_ids: np.ndarray) -> None:
        import pyarrow as pa

        order = np.argsort(part_ids, kind="stable")
        counts = np.bincount(part_ids, minlength=len(self.paths))
        table = table.take(pa.array(order))
        start = 0
        for p, c in enumerate(counts):
            if c:
                if self.writers[p] is None:
                    self.writers[p] = pa.ipc.new_stream(self.paths[p], table.schema, options=self.options)
                part = table.slice(start, c)
                self.bytes[p] += part.nbytes
                self.writers[p].write_table(part)
            start += c

    def close(self) -> None:
        for w in self.writers:
            if w is not None:
                w.close()

    def batches(self, p: int) -> Iterator:
        """The partition's rows as tables, one stored batch at a time."""
        import pyarrow as pa

        if self.writers[p] is None:
            return
        with pa.ipc.open_stream(pa.OSFile(str(self.paths[p]))) as reader:
            for batch in reader:
                yield pa.Table.from_batches([batch])

    def read(self, p: int, schema):
        import pyarrow as pa

        if self.writers[p] is None:
            return schema.empty_table()
        with pa.ipc.open_stream(pa.OSFile(str(self.paths[p]))) as reader:
            return reader.read_all()


def _with_row_numbers(tables: Iterator) -> Iterator:
    import pyarrow as pa

    start = 0
    for t in tables:
        yield t.append_column(ROW, pa.array(np.arange(start, start + t.num_rows, dtype=np.int64))), start
        start += t.num_rows


def _partition_keys(side: _Side, label: str, parts: int, folder: Path, rows: int) -> _PartitionWriter:
    import pyarrow.compute as pc

    writer = _PartitionWriter(folder, f"keys-{label}", parts, compress=False)
    try:
        for t, start in _with_row_numbers(_iter_batches(side.path, list(KEY), rows)):
            null = pc.or_(t.column("task").is_null(), t.column("id").is_null())
            if pc.any(null).as_py():
                bad = (pc.indices_nonzero(null).to_numpy()[:5] + start).tolist()
                raise KdlensError(f"{label} file {side.path}: null task or id at row(s) {bad}; "
                                  "every row needs both")
            writer.write(t, _partition_ids(t, parts))
    finally:
        writer.close()
    return writer


def _show_keys(df, with_row: bool) -> str:
    if with_row:
        return "; ".join(f"({a}, {b}) at row {r}" for a, b, r in df.select(*KEY, ROW).head(5).iter_rows())
    return ", ".join(f"({a}, {b})" for a, b in df.select(*KEY).head(5).iter_rows())


def _check_keys(t_side: _Side, s_side: _Side, tmpdir: Path, rows: int) -> tuple[int, bool]:
    """Check both files' keys in bounded memory; return (rows, whether both list keys in one order).

    Raises KdlensError for null keys, duplicate keys (per side) and keys without a partner.
    """
    import polars as pl
    import pyarrow as pa

    bound = max(_row_bound(t_side.path), _row_bound(s_side.path))
    parts = max(1, -(-bound // KEY_PARTITION_ROWS))
    t_parts = _partition_keys(t_side, "teacher", parts, tmpdir, rows)
    s_parts = _partition_keys(s_side, "student", parts, tmpdir, rows)
    schema = pa.schema([("task", pa.large_string()), ("id", pa.large_string()), (ROW, pa.int64())])
    dups = {"teacher": [0, []], "student": [0, []]}
    unmatched = {"teacher": [0, []], "student": [0, []]}
    total = 0
    aligned = True
    for p in range(parts):
        t = pl.from_arrow(t_parts.read(p, schema))
        s = pl.from_arrow(s_parts.read(p, schema))
        for df, label in ((t, "teacher"), (s, "student")):
            d = df.filter(pl.struct(*KEY).is_duplicated())
            if len(d):
                dups[label][0] += len(d)
                dups[label][1].append(d.sort(ROW).head(5))
        for df, other, label in ((t, s, "teacher"), (s, t, "student")):
            u = df.join(other.select(*KEY), on=list(KEY), how="anti")
            if len(u):
                unmatched[label][0] += len(u)
                unmatched[label][1].append(u.sort(ROW).head(5))
        total += len(t)
        if aligned:
            j = t.join(s, on=list(KEY), how="inner", suffix="_s")
            aligned = len(j) == len(t) == len(s) and bool((j[ROW] == j[ROW + "_s"]).all())
        (t_parts.paths[p]).unlink(missing_ok=True)
        (s_parts.paths[p]).unlink(missing_ok=True)
    for label, side in (("teacher", t_side), ("student", s_side)):
        count, shown = dups[label]
        if count:
            examples = _show_keys(pl.concat(shown).sort(ROW), True)
            raise KdlensError(f"{label} file {side.path}: {count} rows share a (task, id) key, e.g. "
                              f"{examples}; each key must appear once")
    if unmatched["teacher"][0] or unmatched["student"][0]:
        msg = []
        for label, other in (("teacher", "student"), ("student", "teacher")):
            count, shown = unmatched[label]
            if count:
                examples = _show_keys(pl.concat(shown).sort(ROW), False)
                msg.append(f"{count} {label} key(s) have no {other} row, e.g. {examples}")
        raise KdlensError("teacher and student do not cover the same (task, id) keys: "
                          + "; ".join(msg) + ". Score matching files, or filter them first.")
    return total, aligned


def _reordered_batches(t_side: _Side, s_side: _Side, tmpdir: Path, rows: int, total: int) -> Iterator:
    """Scored pair tables in teacher row order, for files that list their keys in different orders.

    Both files are hash-partitioned to disk with their texts (the partition count comes from the
    files' estimated size; a partition that turns out over twice PARTITION_BYTES is split again on
    disk before it is loaded); each partition is joined and scored on its own and written as a run
    sorted by teacher row; the runs are then merged by teacher row into tables of ``rows`` rows
    (the same batches the aligned path yields).
    """
    import polars as pl
    import pyarrow as pa

    parts = max(1, -(-(_text_bytes(t_side.path) + _text_bytes(s_side.path)) // PARTITION_BYTES))
    writers = {}
    for side, label in ((t_side, "teacher"), (s_side, "student")):
        w = _PartitionWriter(tmpdir, f"rows-{label}", parts, compress=True)
        try:
            for t, _ in _with_row_numbers(_iter_batches(side.path, side.columns, rows)):
                w.write(t, _partition_ids(t, parts))
        finally:
            w.close()
        writers[label] = w
    t_schema = pa.schema([(c, pa.large_string()) for c in t_side.columns] + [(ROW, pa.int64())])
    s_schema = pa.schema([(c, pa.large_string()) for c in s_side.columns] + [(ROW, pa.int64())])
    run_paths = []

    def score_partition(t_w, s_w, p: int, level: int) -> None:
        size = t_w.bytes[p] + s_w.bytes[p]
        if size > 2 * PARTITION_BYTES and level < MAX_SPLIT_LEVELS:
            # the estimate behind `parts` was low (e.g. dictionary-encoded Parquet text): split this
            # partition again on disk, with another hash seed, before loading anything
            k = min(256, -(-size // PARTITION_BYTES))
            subs = []
            for w in (t_w, s_w):
                sub = _PartitionWriter(tmpdir, f"{w.paths[p].stem}-split", k, compress=True)
                try:
                    for table in w.batches(p):
                        sub.write(table, _partition_ids(table, k, level + 1))
                finally:
                    sub.close()
                w.paths[p].unlink(missing_ok=True)
                subs.append(sub)
            for q in range(k):
                score_partition(subs[0], subs[1], q, level + 1)
            return
        t = pl.from_arrow(t_w.read(p, t_schema))
        s = pl.from_arrow(s_w.read(p, s_schema)).drop(ROW)
        t_w.paths[p].unlink(missing_ok=True)
        s_w.paths[p].unlink(missing_ok=True)
        j = t.join(s, on=list(KEY), how="inner", suffix="_student").sort(ROW)
        del t, s
        run = tmpdir / f"run-{len(run_paths):05d}.arrow"
        writer = None
        for lo in range(0, len(j), rows):
            chunk = j.slice(lo, rows)
            tt = chunk.select(t_side.columns).to_arrow()
            ss = chunk.select(*KEY, pl.col("output_student").alias("output")).to_arrow()
            scored = score_pairs(_large(tt), _large(ss), t_side.gold)
            scored = scored.append_column(ROW, chunk[ROW].to_arrow())
            if writer is None:
                writer = pa.ipc.new_stream(run, scored.schema)
            writer.write_table(scored, max_chunksize=RUN_CHUNK_ROWS)
        if writer is not None:
            writer.close()
            run_paths.append(run)

    for p in range(parts):
        score_partition(writers["teacher"], writers["student"], p, 0)
    yield from _merge_runs(run_paths, rows, total)


def _large(table):
    """Polars exports strings as views; the scoring code reads large_string buffers."""
    import pyarrow as pa

    return pa.table({n: table.column(n).cast(pa.large_string()) if pa.types.is_string_view(table.column(n).type)
                     or pa.types.is_string(table.column(n).type) else table.column(n)
                     for n in table.column_names})


def _merge_runs(run_paths: list[Path], rows: int, total: int) -> Iterator:
    """Tables of teacher rows [k*rows, (k+1)*rows) from runs each sorted by teacher row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    readers = [pa.ipc.open_stream(pa.OSFile(str(p))) for p in run_paths]  # read, not mapped
    buffers = [[] for _ in readers]  # pending record batches per run
    exhausted = [False] * len(readers)
    try:
        for lo in range(0, total, rows):
            hi = lo + rows
            pieces = []
            for k, reader in enumerate(readers):
                while True:
                    if not buffers[k] and not exhausted[k]:
                        try:
                            buffers[k].append(reader.read_next_batch())
                        except StopIteration:
                            exhausted[k] = True
                    if not buffers[k]:
                        break
                    batch = buffers[k][0]
                    r = batch.column(ROW).to_numpy()
                    cut = int(np.searchsorted(r, hi))
                    if cut:
                        pieces.append(batch.slice(0, cut))
                    if cut < batch.num_rows:
                        buffers[k][0] = batch.slice(cut)
                        break
                    buffers[k].pop(0)
            table = pa.Table.from_batches(pieces) if pieces else None
            if table is None or table.num_rows != min(rows, total - lo):
                raise KdlensError("internal error: reordered pairs lost rows; please report it")
            table = table.take(pc.sort_indices(table.column(ROW)))
            yield table.drop_columns([ROW])
    finally:
        for reader in readers:
            reader.close()


def _aligned_batches(t_side: _Side, s_side: _Side, rows: int) -> Iterator:
    """Scored pair tables of ``rows`` rows, reading both files side by side (same key order)."""
    t_iter = _rebatch(_iter_batches(t_side.path, t_side.columns, rows), rows)
    s_iter = _rebatch(_iter_batches(s_side.path, s_side.columns, rows), rows)
    for t, s in zip(t_iter, s_iter):
        if not (t.column("task").equals(s.column("task")) and t.column("id").equals(s.column("id"))):
            raise KdlensError("teacher and student keys went out of step while streaming; "
                              "the files changed during the run?")
        yield score_pairs(t, s, t_side.gold)


def score_files(teacher: str | os.PathLike, student: str | os.PathLike, out: str | os.PathLike,
                *, batch_rows: int = DEFAULT_BATCH, pairs_format: str = "parquet",
                progress: bool = True) -> dict:
    """Score ``student`` against ``teacher`` generations; write results into folder ``out``.

    Returns {"summary": polars.DataFrame, "markdown": str, "paths": {...}, "aligned": bool}.
    """
    if pairs_format not in ("parquet", "csv"):
        raise KdlensError(f"pairs format must be parquet or csv, got {pairs_format!r}")
    if batch_rows < 1:
        raise KdlensError("batch size must be a positive number of rows")
    t_side = _inspect(Path(teacher), "teacher")
    s_side = _inspect(Path(student), "student")
    with_gold = t_side.gold is not None
    if with_gold:  # gold rides with the teacher rows; the student's copy is not needed
        s_side.columns = ["task", "id", "output"]
    from kdlens.io import output_set

    out_dir = Path(out)
    # the folder is replaced whole; `demo/` (the inputs of --demo) is kept in it
    with output_set(out_dir, names=OUTPUT_NAMES, carry=("demo",), what="kdlens fidelity output") as stage:
        result = _score_into(t_side, s_side, stage, batch_rows, pairs_format, progress, with_gold)
    result["paths"] = {k: out_dir / Path(v).name for k, v in result["paths"].items()}
    return result


def _score_into(t_side: _Side, s_side: _Side, out_dir: Path, batch_rows: int, pairs_format: str,
                progress: bool, with_gold: bool) -> dict:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from kdlens.io import atomic_path, write_table_atomic, write_text_atomic

    pairs_path = out_dir / f"pairs.{pairs_format}"
    totals: dict[str, PairTotals] = {}
    with tempfile.TemporaryDirectory(prefix=".kdlens-fidelity-", dir=out_dir) as tmp:
        total, aligned = _check_keys(t_side, s_side, Path(tmp), batch_rows)
        if aligned:
            batches = _aligned_batches(t_side, s_side, batch_rows)
        else:
            batches = _reordered_batches(t_side, s_side, Path(tmp), batch_rows, total)
        bar = tqdm(total=total, unit="pair", disable=not progress, desc="fidelity")
        writer = None
        with atomic_path(pairs_path) as tmp_pairs:
            try:
                for table in batches:
                    accumulate(table, totals, with_gold)
                    if writer is None:
                        writer = (pq.ParquetWriter(tmp_pairs, table.schema) if pairs_format == "parquet"
                                  else pacsv.CSVWriter(tmp_pairs, table.schema))
                    if pairs_format == "parquet":  # one row group per batch: the writer buffers a
                        writer.write_table(table, row_group_size=table.num_rows)  # group in memory
                    else:
                        writer.write_table(table)
                    bar.update(table.num_rows)
            finally:
                if writer is not None:
                    writer.close()
                bar.close()
            if writer is None:
                raise KdlensError("the generation files have no rows to score")
    table = summary(totals, with_gold)
    md = summary_markdown(table)
    paths = {
        "pairs": pairs_path,
        "summary_parquet": write_table_atomic(table, out_dir / "summary.parquet"),
        "summary_csv": write_table_atomic(table, out_dir / "summary.csv"),
        "summary_md": write_text_atomic(out_dir / "summary.md", md),
    }
    return {"summary": table, "markdown": md, "paths": paths, "aligned": aligned}
