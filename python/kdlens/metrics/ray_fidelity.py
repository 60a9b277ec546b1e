"""``kdlens fidelity --backend ray``: score generations spread over a Ray cluster with Ray Data.

:func:`score_ray(teacher, student, out)` takes each side as a Ray Dataset, or a Parquet file, folder
or glob of shards (columns task, id, output, optionally gold or answer on the teacher side), and:

1. checks the keys in the engine: both sides' (task, id) keys are joined (full outer, keys only) and
   the join counts rows without a partner; a side with more rows than matched pairs repeats a key.
   The errors are the single-machine CLI's (kdlens.metrics.stream);
2. joins the texts on (task, id) with a Ray Data hash join and scores each joined batch with
   ``map_batches`` through :func:`kdlens.metrics.pairs.score_pairs`, the one teacher-student scorer
   (the Rust metrics release the GIL; their rayon pool is sized to the CPUs the worker was given);
3. writes the per-pair table as sharded Parquet (``OUT/pairs/*.parquet``, in no particular row
   order), then reads back only the sufficient statistics of each shard and sums them on the driver:
   BLEU n-gram counts, pair and agreement counts, and the sentence-BLEU sum kept exact
   (:func:`kdlens.metrics.pairs.exact_sum`). Corpus BLEU comes from the summed counts, never from an
   average of shard scores, so ``summary.parquet``, ``summary.csv`` and ``summary.md`` are byte for
   byte those of ``kdlens fidelity`` on the same pairs.

The output folder is written as one set (kdlens.io.output_set). On a multi-node cluster the inputs
and ``out`` must be on a filesystem every node sees at the same path (or give a Ray Dataset).
Tests: tests/ray/test_ray_fidelity.py (a local cluster, ``ray.init(num_cpus=2)``).
"""

from __future__ import annotations

import glob
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from kdlens.errors import KdlensError
from kdlens.metrics.ray_cluster import connect, require_ray
from kdlens.metrics.pairs import STAT_NAMES, PairTotals, score_pairs, summary, summary_markdown
from kdlens.metrics.stream import GOLD_NAMES, KEY, MAX_TEXT_BYTES, OUTPUT_NAMES

PAIRS_DIR = "pairs"
RAY_OUTPUT_NAMES = OUTPUT_NAMES + (PAIRS_DIR,)
STUDENT_OUTPUT = "output_student"
PARTITION_BYTES = 64 << 20  # text bytes (both sides) per join partition, as in kdlens.metrics.stream


# ------------------------------------------------------------------------------------------------
# inputs


def _shards(spec: str | os.PathLike | list, label: str) -> list[str]:
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    files: list[str] = []
    for item in items:
        text = os.fspath(item)
        if os.path.isdir(text):
            found = sorted(glob.glob(os.path.join(text, "**", "*.parquet"), recursive=True))
        elif glob.has_magic(text):
            found = sorted(glob.glob(text, recursive=True))
        else:
            found = [text] if os.path.isfile(text) else []
        if not found:
            raise KdlensError(f"{label}: no Parquet files at {text!r}; give a .parquet file, a folder of "
                              "them or a glob such as 'gens/teacher-*.parquet'")
        bad = [f for f in found if not f.endswith(".parquet")]
        if bad:
            raise KdlensError(f"{label}: {bad[0]} is not a .parquet file; the ray backend reads Parquet "
                              "shards (convert JSONL/CSV, or use the local backend)")
        files += [os.path.abspath(f) for f in found]
    return files


class _Side:
    def __init__(self, label: str, source):
        ray = require_ray()
        self.label = label
        self.bytes = 0
        if isinstance(source, ray.data.Dataset):
            self.files = None
            names = list(source.schema().names)
            self.ds = source
        else:
            import pyarrow.parquet as pq

            self.files = _shards(source, label)
            names = list(pq.read_schema(self.files[0]).names)
            for f in self.files:
                meta = pq.ParquetFile(f).metadata
                self.bytes += sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
            self.ds = None
        missing = [c for c in ("task", "id", "output") if c not in names]
        if missing:
            where = self.files[0] if self.files else "the dataset"
            raise KdlensError(f"{label} {where} lacks column(s) {', '.join(missing)} (it has: "
                              f"{', '.join(names) or 'none'}); generations need task, id, output")
        self.gold = next((g for g in GOLD_NAMES if g in names), None)
        self.columns = ["task", "id", "output"] + ([self.gold] if self.gold else [])
        if self.ds is None:
            self.ds = ray.data.read_parquet(self.files).select_columns(self.columns)
        self.source = source

    def rows(self) -> int:
        """The side's row count (from the Parquet footers for files)."""
        if self.files is None:
            return self.ds.count()
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)


def _prepare(table, label: str, columns: list[str], rename: dict):
    """One input batch as the scorer reads it: large_string columns, keys and texts checked."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from kdlens.metrics.stream import _normalise

    table = _normalise(table.select(columns), Path(label))
    null = pc.or_(table.column("task").is_null(), table.column("id").is_null())
    if pc.any(null).as_py():
        raise KdlensError(f"{label}: null task or id in {pc.sum(null).as_py()} row(s); every row needs both")
    out = table.column("output")
    if out.null_count:
        i = pc.indices_nonzero(out.is_null())[0].as_py()
        raise KdlensError(f"{label} output is null for key(s) [({table.column('task')[i].as_py()}, "
                          f"{table.column('id')[i].as_py()})]; every row needs text")
    for name in table.column_names:
        try:
            table.column(name).validate(full=True)
        except pa.ArrowInvalid:
            raise KdlensError(f"{label}: column {name!r} is not valid UTF-8 text; fix the encoding "
                              "(save it as UTF-8)") from None
    if table.num_rows:
        sizes = pc.binary_length(out)
        longest = pc.max(sizes).as_py()
        if longest > MAX_TEXT_BYTES:
            i = pc.index(sizes, longest).as_py()
            raise KdlensError(
                f"{label} (task {table.column('task')[i].as_py()}, id {table.column('id')[i].as_py()}): the "
                f"output is {longest:,} bytes, over the {MAX_TEXT_BYTES:,}-byte limit per text; truncate "
                "runaway generations or drop the row")
    return table.rename_columns([rename.get(n, n) for n in table.column_names])


# ------------------------------------------------------------------------------------------------
# the per-batch steps (run on the cluster's workers)

_RAYON_SIZED = False


def _size_rayon_pool() -> None:
    """Size the Rust metrics' rayon pool to the CPUs Ray gave this worker (before its first use)."""
    global _RAYON_SIZED
    if _RAYON_SIZED:
        return
    _RAYON_SIZED = True
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:  # not in a Ray worker
        return
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, int(cpus))))


def _score_batch(table, gold: str | None, with_gold: bool, pairs_dir: str):
    """One batch of the outer join: score the matched rows, write them as one ``pairs`` shard and
    return the batch's per-task sufficient statistics (:func:`_batch_totals`) plus one row (task
    null) that counts the rows without a partner, with up to 5 example keys of each side."""
    import hashlib

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from kdlens.io import atomic_path

    _size_rayon_pool()
    no_student = table.column(STUDENT_OUTPUT).is_null()
    no_teacher = table.column("output").is_null()
    matched = table.filter(pc.invert(pc.or_(no_student, no_teacher)))
    parts = []
    if matched.num_rows:
        t = matched.select(["task", "id", "output"] + ([gold] if gold else []))
        s = matched.select(["task", "id", STUDENT_OUTPUT]).rename_columns(["task", "id", "output"])
        scored = score_pairs(t, s, gold)
        # named by its keys, so a batch Ray recomputes after a lost worker overwrites its own shard
        keys = sorted(zip(scored.column("task").to_pylist(), scored.column("id").to_pylist()))
        digest = hashlib.sha1(repr(keys).encode()).hexdigest()[:20]
        with atomic_path(Path(pairs_dir) / f"part-{digest}.parquet") as tmp:
            pq.write_table(scored, tmp, row_group_size=scored.num_rows)
        parts.append(_batch_totals(scored, with_gold))

    def examples(mask):
        picked = table.filter(mask).slice(0, 5)
        return "; ".join(f"({a}, {b})" for a, b in zip(picked.column("task").to_pylist(),
                                                         picked.column("id").to_pylist()))

    missing = {"teacher_only": pc.sum(no_student).as_py() or 0,
               "student_only": pc.sum(no_teacher).as_py() or 0,
               "teacher_only_examples": examples(no_student), "student_only_examples": examples(no_teacher)}
    empty = _batch_totals(None, with_gold)
    row = pa.table({n: pa.array([None if n == "task" else (
        "0" if n == "bleu_num" else "1" if n == "bleu_den" else False if n == "has_rule" else 0)],
        type=empty.schema.field(n).type) for n in empty.column_names})
    parts.append(row)
    out = pa.concat_tables(parts)
    n = out.num_rows
    return out.append_column("teacher_only", pa.array([missing["teacher_only"]] * n, pa.int64())) \
        .append_column("student_only", pa.array([missing["student_only"]] * n, pa.int64())) \
        .append_column("teacher_only_examples", pa.array([missing["teacher_only_examples"]] * n,
                                                         pa.large_string())) \
        .append_column("student_only_examples", pa.array([missing["student_only_examples"]] * n,
                                                         pa.large_string()))


def _repeated(table):
    """The rows of a (task, id, count()) batch whose key occurs more than once."""
    import pyarrow.compute as pc

    return table.filter(pc.greater(table.column("count()"), 1))


def _batch_totals(table, with_gold: bool):
    """The per-task sufficient statistics of one batch of scored pairs, as one row per task (the
    sentence-BLEU sum exact, as numerator and denominator strings)."""
    import pyarrow as pa

    from kdlens.metrics.pairs import accumulate

    totals: dict[str, PairTotals] = {}
    if table is not None:
        accumulate(table, totals, with_gold)
    rows = {"task": [], "pairs": [], "bleu_num": [], "bleu_den": [], "agree": [], "has_rule": [],
            "teacher_correct": [], "student_correct": [], **{n: [] for n in STAT_NAMES}}
    for task, tt in totals.items():
        rows["task"].append(task)
        rows["pairs"].append(tt.pairs)
        rows["bleu_num"].append(str(tt.bleu_sum.numerator))
        rows["bleu_den"].append(str(tt.bleu_sum.denominator))
        rows["agree"].append(tt.agree)
        rows["has_rule"].append(tt.has_rule)
        rows["teacher_correct"].append(tt.teacher_correct)
        rows["student_correct"].append(tt.student_correct)
        for n, v in zip(STAT_NAMES, tt.stats):
            rows[n].append(int(v))
    types = {"task": pa.large_string(), "bleu_num": pa.large_string(), "bleu_den": pa.large_string(),
             "has_rule": pa.bool_()}
    return pa.table({k: pa.array(v, type=types.get(k, pa.int64())) for k, v in rows.items()})


def _merge_totals(rows: list[dict]) -> dict[str, PairTotals]:
    totals: dict[str, PairTotals] = {}
    for r in rows:
        if r["task"] is None:  # a batch's count of rows without a partner
            continue
        part = PairTotals(pairs=r["pairs"], stats=np.array([r[n] for n in STAT_NAMES], dtype=np.int64),
                          bleu_sum=Fraction(int(r["bleu_num"]), int(r["bleu_den"])), agree=r["agree"],
                          has_rule=r["has_rule"], teacher_correct=r["teacher_correct"],
                          student_correct=r["student_correct"])
        totals.setdefault(r["task"], PairTotals()).add(part)
    return totals


# ------------------------------------------------------------------------------------------------
# driver


def _unwrap(exc: BaseException) -> KdlensError | None:
    """The KdlensError a Ray task raised, found in the exception Ray Data re-raised, if any."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KdlensError):
            return KdlensError(str(e).splitlines()[0] if "\n" in str(e) else str(e))
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    text = str(exc)
    marker = "KdlensError: "
    if marker in text:  # a RayTaskError whose cause could not be rebuilt here
        return KdlensError(text.split(marker, 1)[1].splitlines()[0])
    return None


def _missing_error(rows: list[dict]) -> KdlensError | None:
    """The CLI's error for keys without a partner, from the batches' counts (None if there are none)."""
    counts = [r for r in rows if r["task"] is None]
    missing = {"teacher": sum(c["teacher_only"] for c in counts),
               "student": sum(c["student_only"] for c in counts)}
    if not (missing["teacher"] or missing["student"]):
        return None
    msg = []
    for label, other in (("teacher", "student"), ("student", "teacher")):
        if missing[label]:
            shown = [c[f"{label}_only_examples"] for c in counts if c[f"{label}_only_examples"]]
            examples = "; ".join(shown).split("; ")[:5]
            msg.append(f"{missing[label]} {label} key(s) have no {other} row, e.g. {', '.join(examples)}")
    return KdlensError("teacher and student do not cover the same (task, id) keys: "
                       + "; ".join(msg) + ". Score matching files, or filter them first.")


def _repeat_error(side: _Side, ds) -> KdlensError:
    dup = ds.groupby(list(KEY)).count().map_batches(_repeated, batch_format="pyarrow").limit(5).take_all()
    examples = ", ".join(f"({r['task']}, {r['id']})" for r in dup)
    return KdlensError(f"{side.label}: some rows share a (task, id) key, e.g. {examples}; each key must "
                       "appear once")


def score_ray(teacher, student, out: str | os.PathLike, *, batch_rows: int = 50_000,
              partitions: int | None = None, address: str | None = None, progress: bool = True) -> dict:
    """Score ``student`` against ``teacher`` on a Ray cluster; write ``pairs/`` shards and the summary
    into folder ``out``. ``teacher``/``student``: Ray Datasets, or Parquet files, folders or globs.

    Returns {"summary": polars.DataFrame, "markdown": str, "paths": {...}, "pairs": int}.
    """
    if batch_rows < 1:
        raise KdlensError("batch size must be a positive number of rows")
    if partitions is not None and partitions < 1:
        raise KdlensError("--partitions must be >= 1")
    ray = require_ray()
    started = connect(address)
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.print_on_execution_start = False
        try:
            return _score(teacher, student, Path(out), batch_rows, partitions)
        except KdlensError:
            raise
        except Exception as exc:
            found = _unwrap(exc)
            if found is None:
                raise
            raise found from None
    finally:
        if started:
            ray.shutdown()


def _score(teacher, student, out: Path, batch_rows: int, partitions: int | None) -> dict:
    import ray

    from kdlens.io import output_set, write_table_atomic, write_text_atomic

    t = _Side("teacher", teacher)
    s = _Side("student", student)
    with_gold = t.gold is not None
    t_ds = t.ds.map_batches(_prepare, batch_format="pyarrow", fn_kwargs={
        "label": "teacher", "columns": t.columns, "rename": {}})
    s_ds = s.ds.map_batches(_prepare, batch_format="pyarrow", fn_kwargs={
        "label": "student", "columns": ["task", "id", "output"], "rename": {"output": STUDENT_OUTPUT}})
    if partitions is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        partitions = max(cpus, -(-(t.bytes + s.bytes) // PARTITION_BYTES))
    counts = {"teacher": t.rows(), "student": s.rows()}
    if not counts["teacher"] and not counts["student"]:
        raise KdlensError("the generation files have no rows to score")
    with output_set(out, names=RAY_OUTPUT_NAMES, what="kdlens fidelity output") as stage:
        pairs_dir = stage / PAIRS_DIR
        pairs_dir.mkdir()
        # one pass: a full outer hash join on (task, id), then scoring; rows without a partner are
        # counted by the scoring step, so a bad input costs no extra pass
        joined = t_ds.join(s_ds, join_type="full_outer", num_partitions=partitions, on=KEY)
        rows = joined.map_batches(_score_batch, batch_format="pyarrow", batch_size=batch_rows, fn_kwargs={
            "gold": t.gold, "with_gold": with_gold, "pairs_dir": str(pairs_dir)}).take_all()
        error = _missing_error(rows)
        if error is not None:
            raise error
        totals = _merge_totals(rows)
        pairs = sum(tt.pairs for tt in totals.values())
        for side, ds in ((t, t_ds), (s, s_ds)):  # every key has a partner: a side with more rows
            if counts[side.label] != pairs:       # than pairs repeats a key
                raise _repeat_error(side, ds)
        import pyarrow.parquet as pq

        written = sum(pq.ParquetFile(f).metadata.num_rows for f in pairs_dir.glob("*.parquet"))
        if written != pairs:
            raise KdlensError(f"internal error: {pairs} pairs scored but {written} written; please report it")
        table = summary(totals, with_gold)
        md = summary_markdown(table)
        write_table_atomic(table, stage / "summary.parquet")
        write_table_atomic(table, stage / "summary.csv")
        write_text_atomic(stage / "summary.md", md)
    paths = {"pairs": out / PAIRS_DIR, "summary_parquet": out / "summary.parquet",
             "summary_csv": out / "summary.csv", "summary_md": out / "summary.md"}
    return {"summary": table, "markdown": md, "paths": paths, "pairs": pairs}
