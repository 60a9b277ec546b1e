"""Teacher-student fidelity over generation files: per-pair BLEU and agreement, per-task summary.

``score_files(teacher, student, out)`` reads two generation tables (Parquet, JSONL or CSV with
columns task, id, output and optionally gold or answer), joins them on (task, id) and streams
through them in batches, so memory stays bounded whatever the row count:

1. a key pass reads only (task, id) of both files and checks them (duplicates, unmatched ids);
2. if both files list the keys in the same order they are streamed side by side; otherwise each
   is first rewritten sorted by (task, id) into a temporary Parquet file (Polars, streaming);
3. each batch is scored in Rust (sentence BLEU of the student against the teacher, sacreBLEU
   13a/exp/effective order; answers with the task's rule) and appended to the per-pair table.

Outputs in ``out`` (a folder), each written atomically: ``pairs.parquet`` (or .csv),
``summary.parquet``, ``summary.csv``, ``summary.md``. Tests: tests/metrics/test_fidelity_cli.py.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from kdlens.errors import KdlensError

KEY = ("task", "id")
GOLD_NAMES = ("gold", "answer")
DEFAULT_BATCH = 50_000


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
            for _, line in zip(range(100), f):
                if line.strip():
                    for k in json.loads(line):
                        if k not in names:
                            names.append(k)
        return names
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise KdlensError(f"{path}: could not be read as {kind}: {exc}") from exc


def _iter_batches(path: Path, columns: list[str], rows: int) -> Iterator:
    """pyarrow Tables of the given columns, task/id/gold cast to string, in file order."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    kind = _kind(path)
    try:
        if kind == "parquet":
            reader = pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns)
        elif kind == "csv":
            types = {c: pa.large_string() for c in columns}
            reader = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=columns, strings_can_be_null=False))
        else:
            reader = pajson.open_json(path, read_options=pajson.ReadOptions(block_size=1 << 24))
        for batch in reader:
            table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
            if kind == "jsonl":
                missing = [c for c in columns if c not in table.column_names]
                if missing:
                    raise KdlensError(f"{path}: some rows lack column(s) {missing}")
                table = table.select(columns)
            yield _normalise(table, path)
    except KdlensError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise KdlensError(f"{path}: could not be read: {exc}") from exc


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
        raise KdlensError(f"{label} file {path}: no such file")
    names = _schema_names(path)
    missing = [c for c in ("task", "id", "output") if c not in names]
    if missing:
        raise KdlensError(f"{label} file {path} lacks column(s) {', '.join(missing)} "
                          f"(it has: {', '.join(names) or 'none'}); generations need task, id, output")
    gold = next((g for g in GOLD_NAMES if g in names), None)
    cols = ["task", "id", "output"] + ([gold] if gold else [])
    return _Side(path, gold, cols)


def _keys(side: _Side, label: str, rows: int):
    import polars as pl

    parts = [pl.from_arrow(t) for t in _iter_batches(side.path, ["task", "id"], rows)]
    keys = pl.concat(parts) if parts else pl.DataFrame({"task": [], "id": []},
                                                       schema={"task": pl.String, "id": pl.String})
    nulls = keys.with_row_index("row").filter(pl.col("task").is_null() | pl.col("id").is_null())
    if len(nulls):
        raise KdlensError(f"{label} file {side.path}: null task or id at row(s) "
                          f"{nulls['row'].head(5).to_list()}")
    dup = keys.with_row_index("row").filter(pl.struct("task", "id").is_duplicated())
    if len(dup):
        shown = [f"({r['task']}, {r['id']}) at row {r['row']}" for r in dup.head(5).iter_rows(named=True)]
        raise KdlensError(f"{label} file {side.path}: {len(dup)} rows share a (task, id) key, e.g. "
                          f"{'; '.join(shown)}; each key must appear once")
    return keys


def _check_match(t_keys, s_keys) -> bool:
    """Raise naming unmatched keys; True when both files list the keys in the same order."""
    only_t = t_keys.join(s_keys, on=list(KEY), how="anti")
    only_s = s_keys.join(t_keys, on=list(KEY), how="anti")
    if len(only_t) or len(only_s):
        def show(df):
            return ", ".join(f"({a}, {b})" for a, b in df.head(5).iter_rows())
        msg = []
        if len(only_t):
            msg.append(f"{len(only_t)} teacher key(s) have no student row, e.g. {show(only_t)}")
        if len(only_s):
            msg.append(f"{len(only_s)} student key(s) have no teacher row, e.g. {show(only_s)}")
        raise KdlensError("teacher and student do not cover the same (task, id) keys: "
                          + "; ".join(msg) + ". Score matching files, or filter them first.")
    return t_keys.equals(s_keys)


def _sorted_copy(side: _Side, tmpdir: Path, name: str) -> _Side:
    import polars as pl

    kind = _kind(side.path)
    string = {c: pl.String for c in side.columns if c != "output"}
    if kind == "parquet":
        lf = pl.scan_parquet(side.path)
    elif kind == "csv":
        lf = pl.scan_csv(side.path, schema_overrides=string)
    else:
        lf = pl.scan_ndjson(side.path)
    lf = lf.select(side.columns).with_columns([pl.col(c).cast(pl.String) for c in string])
    out = tmpdir / f"{name}.parquet"
    lf.sort(list(KEY)).sink_parquet(out)
    return _Side(out, side.gold, side.columns)


# ------------------------------------------------------------------------------------------------
# scoring


@dataclass
class _TaskTotals:
    pairs: int = 0
    stats: np.ndarray = field(default_factory=lambda: np.zeros(10, dtype=np.int64))
    bleu_sum: float = 0.0
    agree: int = 0
    has_rule: bool = True
    teacher_correct: int = 0
    student_correct: int = 0


def _score_batch(t, s, totals: dict[str, _TaskTotals], with_gold: bool):
    import pyarrow as pa

    from kdlens import metrics
    from kdlens.answers import TASK_RULES, canonical_task

    for side, label in ((t, "teacher"), (s, "student")):
        out = side.column("output")
        if out.null_count:
            import pyarrow.compute as pc

            bad = pc.indices_nonzero(out.is_null()).to_pylist()[:5]
            keys = [(side.column("task")[i].as_py(), side.column("id")[i].as_py()) for i in bad]
            raise KdlensError(f"{label} output is null for key(s) {keys}; every row needs text")
    t_out, s_out = t.column("output"), s.column("output")
    stats = metrics.bleu_statistics(s_out, t_out)
    bleu = stats.sentence_scores()
    n = t.num_rows
    tasks = t.column("task").to_numpy(zero_copy_only=False).astype(str)
    agree = np.zeros(n, dtype=bool)
    has_answer_rule = np.zeros(n, dtype=bool)
    t_ans = np.full(n, None, dtype=object)
    s_ans = np.full(n, None, dtype=object)
    t_ok = np.zeros(n, dtype=bool)
    s_ok = np.zeros(n, dtype=bool)
    gold = t.column(t.column_names[3]) if with_gold else None
    from kdlens import answers

    for task in np.unique(tasks):
        idx = np.flatnonzero(tasks == task)
        rule = TASK_RULES.get(canonical_task(task))
        tot = totals.setdefault(task, _TaskTotals())
        tot.pairs += len(idx)
        tot.stats += stats.stats[idx].sum(axis=0)
        tot.bleu_sum += float(bleu[idx].sum())
        if rule is None:
            tot.has_rule = False
            continue
        sel = pa.array(idx)
        tt, ss = t_out.take(sel), s_out.take(sel)
        a = metrics.agreement_per_item(tt, ss, rule)
        agree[idx] = a
        has_answer_rule[idx] = True
        tot.agree += int(a.sum())
        t_ans[idx] = answers.extract_answers(tt, rule)
        s_ans[idx] = answers.extract_answers(ss, rule)
        if with_gold:
            g = gold.take(sel)
            if g.null_count:
                raise KdlensError(f"gold answer is null for task {task}; fill it or drop the column")
            tc, sc = metrics.is_correct(tt, g, rule), metrics.is_correct(ss, g, rule)
            t_ok[idx], s_ok[idx] = tc, sc
            tot.teacher_correct += int(tc.sum())
            tot.student_correct += int(sc.sum())
    names = ["hyp_len", "ref_len", "correct_1", "correct_2", "correct_3", "correct_4",
             "total_1", "total_2", "total_3", "total_4"]
    cols = {"task": t.column("task"), "id": t.column("id"), "bleu": pa.array(bleu)}
    cols.update({f"bleu_{k}": pa.array(stats.stats[:, j].astype(np.int32)) for j, k in enumerate(names)})
    mask = ~has_answer_rule
    cols["teacher_answer"] = pa.array(t_ans, type=pa.large_string(), from_pandas=False)
    cols["student_answer"] = pa.array(s_ans, type=pa.large_string(), from_pandas=False)
    cols["agree"] = pa.array(agree, mask=mask)
    if with_gold:
        cols["gold"] = gold
        cols["teacher_correct"] = pa.array(t_ok, mask=mask)
        cols["student_correct"] = pa.array(s_ok, mask=mask)
    return pa.table(cols)


def _summary(totals: dict[str, _TaskTotals], with_gold: bool):
    import polars as pl

    from kdlens.metrics import BLEUStatistics

    rows = []
    items = sorted(totals.items())
    overall = _TaskTotals()
    for _, tt in items:
        overall.pairs += tt.pairs
        overall.stats += tt.stats
        overall.bleu_sum += tt.bleu_sum
        overall.agree += tt.agree
        overall.has_rule &= tt.has_rule
        overall.teacher_correct += tt.teacher_correct
        overall.student_correct += tt.student_correct
    for task, tt in items + [("ALL", overall)]:
        corpus = BLEUStatistics(tt.stats[None, :], nrefs=1, tokenize="13a", lowercase=False,
                                max_ngram_order=4).corpus_score()
        row = {"task": task, "pairs": tt.pairs, "corpus_bleu": corpus.score,
               "mean_sentence_bleu": tt.bleu_sum / tt.pairs if tt.pairs else float("nan"),
               "agreement": 100.0 * tt.agree / tt.pairs if tt.has_rule and tt.pairs else None}
        if with_gold:
            row["teacher_accuracy"] = 100.0 * tt.teacher_correct / tt.pairs if tt.has_rule else None
            row["student_accuracy"] = 100.0 * tt.student_correct / tt.pairs if tt.has_rule else None
        rows.append(row)
    return pl.DataFrame(rows)


def _markdown(frame, sentence_sig: str, corpus_sig: str) -> str:
    cols = frame.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in frame.iter_rows():
        cells = [f"{v:.2f}" if isinstance(v, float) else ("n/a" if v is None else str(v)) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Sentence BLEU (student vs teacher as reference): `{sentence_sig}`",
              f"Corpus BLEU: `{corpus_sig}`",
              "Agreement and accuracy in %, answers extracted with the paper's rules (kdlens.answers)."]
    return "\n".join(lines) + "\n"


def score_files(teacher: str | os.PathLike, student: str | os.PathLike, out: str | os.PathLike,
                *, batch_rows: int = DEFAULT_BATCH, pairs_format: str = "parquet",
                progress: bool = True) -> dict:
    """Score ``student`` against ``teacher`` generations; write results into folder ``out``.

    Returns {"summary": polars.DataFrame, "markdown": str, "paths": {...}}.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from kdlens.io import atomic_path, write_table_atomic, write_text_atomic
    from kdlens.metrics import bleu_signature

    if pairs_format not in ("parquet", "csv"):
        raise KdlensError(f"pairs format must be parquet or csv, got {pairs_format!r}")
    if batch_rows < 1:
        raise KdlensError("batch size must be a positive number of rows")
    t_side = _inspect(Path(teacher), "teacher")
    s_side = _inspect(Path(student), "student")
    with_gold = t_side.gold is not None
    if with_gold:  # gold rides with the teacher rows; the student's copy is not needed
        s_side.columns = ["task", "id", "output"]
    t_keys = _keys(t_side, "teacher", batch_rows)
    s_keys = _keys(s_side, "student", batch_rows)
    aligned = _check_match(t_keys, s_keys)
    total = len(t_keys)
    del t_keys, s_keys
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise KdlensError(f"output {out_dir} exists and is not a folder; -o names a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs_path = out_dir / f"pairs.{pairs_format}"
    totals: dict[str, _TaskTotals] = {}
    with tempfile.TemporaryDirectory(prefix=".kdlens-fidelity-", dir=out_dir) as tmp:
        if not aligned:
            t_side = _sorted_copy(t_side, Path(tmp), "teacher")
            s_side = _sorted_copy(s_side, Path(tmp), "student")
        t_iter = _rebatch(_iter_batches(t_side.path, t_side.columns, batch_rows), batch_rows)
        s_iter = _rebatch(_iter_batches(s_side.path, s_side.columns, batch_rows), batch_rows)
        bar = tqdm(total=total, unit="pair", disable=not progress, desc="fidelity")
        writer = None
        with atomic_path(pairs_path) as tmp_pairs:
            try:
                for t, s in zip(t_iter, s_iter):
                    if not (t.column("task").equals(s.column("task")) and t.column("id").equals(s.column("id"))):
                        raise KdlensError("teacher and student keys went out of step while streaming; "
                                          "the files changed during the run?")
                    table = _score_batch(t, s, totals, with_gold)
                    if writer is None:
                        writer = (pq.ParquetWriter(tmp_pairs, table.schema) if pairs_format == "parquet"
                                  else pacsv.CSVWriter(tmp_pairs, table.schema))
                    writer.write_table(table)
                    bar.update(t.num_rows)
            finally:
                if writer is not None:
                    writer.close()
                bar.close()
            if writer is None:
                raise KdlensError("the generation files have no rows to score")
    summary = _summary(totals, with_gold)
    sentence_sig = bleu_signature(1, "13a", False, "exp", None, True)
    corpus_sig = bleu_signature(1, "13a", False, "exp", None, False)
    summary = summary.with_columns(
        __import__("polars").lit(corpus_sig).alias("corpus_bleu_signature"),
        __import__("polars").lit(sentence_sig).alias("sentence_bleu_signature"))
    shown = summary.drop("corpus_bleu_signature", "sentence_bleu_signature")
    md = _markdown(shown, sentence_sig, corpus_sig)
    paths = {
        "pairs": pairs_path,
        "summary_parquet": write_table_atomic(summary, out_dir / "summary.parquet"),
        "summary_csv": write_table_atomic(summary, out_dir / "summary.csv"),
        "summary_md": write_text_atomic(out_dir / "summary.md", md),
    }
    return {"summary": summary, "markdown": md, "paths": paths, "aligned": aligned}
