"""``kdlens fidelity`` on N pairs: wall time and peak RSS of the CLI process, at growing N.

Writes N realistic teacher/student pairs as two Parquet files and runs the CLI in a child process,
reading that child's own peak RSS (os.wait4). The texts come from a pool of --unique-texts
generated pairs (benches/gen_pairs.py) repeated with distinct (task, id) keys, so that writing 10M
rows takes seconds; scoring cost does not depend on repetition (every pair is scored on its own).
With --shuffled the student file lists its rows in another order (a permutation within each
written chunk), which takes the hash-partition reorder path. Several sizes in one call show how
peak RSS grows (it should stay flat). Re-run on a quiet machine with:

    python benches/fidelity_cli_bench.py --pairs 100000 1000000 10000000
    python benches/fidelity_cli_bench.py --pairs 100000 1000000 --shuffled

Rows go to benches/results/fidelity_cli.csv (with the 1-minute load average at the start).

``--engine`` picks what runs in the child on the same inputs (column ``engine``):
- ``kdlens`` (default): ``kdlens fidelity`` end to end (key checks, join, scoring, writing);
- ``polars-join``: the join alone with Polars streaming, ``scan_parquet`` x2 -> ``join(on=(task,
  id), maintain_order="left")`` -> ``sink_parquet`` (no scoring), to compare its peak RSS with the
  hand-written hash-partition join's bound;
- ``raw``: the scoring floor: both files read whole into memory, then only ``sentence_bleu`` +
  ``agreement_per_item`` on those columns (pairs/s over the scoring calls alone).

    python benches/fidelity_cli_bench.py --pairs 200000 --engine raw
    python benches/fidelity_cli_bench.py --pairs 1000000 --shuffled --engine polars-join
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402
from gen_pairs import make  # noqa: E402

CHUNK = 200_000


def write_inputs(folder: Path, n: int, shuffle_student: bool, unique: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = make(min(unique, n), seed=0)
    size = len(pool["task"])
    pool_t = pa.table({"task": pool["task"], "output": pool["teacher_output"], "gold": pool["gold"]})
    pool_s = pa.table({"task": pool["task"], "output": pool["student_output"]})
    t_path, s_path = folder / "teacher.parquet", folder / "student.parquet"
    tw = sw = None
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(start + CHUNK, n))
        take = pa.array(rows % size)
        ids = pa.array(rows.astype(str))
        t = pool_t.take(take)
        t = pa.table({"task": t["task"], "id": ids, "output": t["output"], "gold": t["gold"]})
        s = pool_s.take(take)
        s = pa.table({"task": s["task"], "id": ids, "output": s["output"]})
        if shuffle_student:
            s = s.take(pa.array(np.random.default_rng(start).permutation(len(rows))))
        tw = tw or pq.ParquetWriter(t_path, t.schema)
        sw = sw or pq.ParquetWriter(s_path, s.schema)
        tw.write_table(t)
        sw.write_table(s)
    tw.close()
    sw.close()
    return t_path, s_path


def run_cli(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB of the child, stderr)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        err.seek(0)
        text = err.read()
    if proc.returncode:
        raise SystemExit(f"{cmd[1:3]} failed ({proc.returncode}):\n{text}")
    return wall, usage.ru_maxrss / 1024, text


POLARS_JOIN = """
import sys, polars as pl
t, s, out = sys.argv[1:4]
key = ["task", "id"]
(pl.scan_parquet(t).join(pl.scan_parquet(s), on=key, how="inner", suffix="_student",
                         maintain_order="left")
 .sink_parquet(out))
"""

RAW_SCORING = """
import sys, time, pyarrow.parquet as pq
from kdlens.metrics import agreement_per_item, sentence_bleu
t, s = pq.read_table(sys.argv[1]), pq.read_table(sys.argv[2])
t0 = time.perf_counter()
sentence_bleu(s.column("output"), t.column("output"))
agreement_per_item(t.column("output"), s.column("output"), "gsm8k")  # demo pairs: number-rule tasks
print(f"SCORING_S {time.perf_counter() - t0}", file=sys.stderr)
"""


def child_command(engine: str, t_path: Path, s_path: Path, out: Path, batch_rows: int) -> list[str]:
    if engine == "kdlens":
        return [sys.executable, "-m", "kdlens.cli", "fidelity", str(t_path), str(s_path), "-o",
                str(out), "--batch-rows", str(batch_rows), "--no-progress"]
    if engine == "polars-join":
        out.mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-c", POLARS_JOIN, str(t_path), str(s_path), str(out / "joined.parquet")]
    return [sys.executable, "-c", RAW_SCORING, str(t_path), str(s_path)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--batch-rows", type=int, default=50_000)
    ap.add_argument("--unique-texts", type=int, default=20_000, help="distinct generated pairs")
    ap.add_argument("--shuffled", action="store_true", help="student rows in another order")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--engine", choices=("kdlens", "polars-join", "raw"), default="kdlens")
    ap.add_argument("--write-only", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_only:  # child process: write the inputs and exit
        write_inputs(Path(args.write_only), args.pairs[0], args.shuffled, args.unique_texts)
        return
    for n in args.pairs:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            tmp = Path(tmp)
            # inputs are written by a child process so that this process stays small: a forked
            # child's peak RSS can include pages it shares with a large parent
            subprocess.run([sys.executable, __file__, "--pairs", str(n), "--unique-texts",
                            str(args.unique_texts), "--write-only", str(tmp)]
                           + (["--shuffled"] if args.shuffled else []), check=True)
            t_path, s_path = tmp / "teacher.parquet", tmp / "student.parquet"
            load = os.getloadavg()[0]
            cmd = child_command(args.engine, t_path, s_path, tmp / "out", args.batch_rows)
            wall, peak_mb, err = run_cli(cmd)
            if args.engine == "raw":  # pairs/s of the scoring calls alone, not of reading the files
                wall = float(err.split("SCORING_S")[1].split()[0])
            input_mb = (t_path.stat().st_size + s_path.stat().st_size) / 2**20
        record("fidelity_cli", [{"engine": args.engine, "pairs": n, "batch_rows": args.batch_rows,
                                 "student_order": "shuffled" if args.shuffled else "aligned",
                                 "wall_s": round(wall, 2), "pairs_per_s": round(n / wall),
                                 "peak_rss_mb": round(peak_mb, 1), "unique_texts": args.unique_texts,
                                 "input_parquet_mb": round(input_mb, 1), "load_1m": round(load, 2)}])


if __name__ == "__main__":
    main()
