"""``kdlens fidelity`` on N pairs: wall time and peak RSS of the CLI process.

Writes N realistic teacher/student pairs (benches/gen_pairs.py, in chunks so the generator's own
memory stays small) as two Parquet files, then runs the CLI in a child process and reads its peak
RSS (ru_maxrss of the child). Re-run at full size on a quiet machine with:

    python benches/fidelity_cli_bench.py --pairs 10000000

Rows go to benches/results/fidelity_cli.csv.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402
from gen_pairs import make  # noqa: E402


def write_inputs(folder: Path, n: int, shuffle_student: bool, chunk: int = 200_000):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t_path, s_path = folder / "teacher.parquet", folder / "student.parquet"
    tw = sw = None
    for start in range(0, n, chunk):
        c = make(min(chunk, n - start), seed=start)
        ids = [f"{start + i}" for i in range(len(c["task"]))]
        t = pa.table({"task": c["task"], "id": ids, "output": c["teacher_output"], "gold": c["gold"]})
        s = pa.table({"task": c["task"], "id": ids, "output": c["student_output"]})
        if shuffle_student:
            import numpy as np

            s = s.take(np.random.default_rng(start).permutation(len(ids)))
        tw = tw or pq.ParquetWriter(t_path, t.schema)
        sw = sw or pq.ParquetWriter(s_path, s.schema)
        tw.write_table(t)
        sw.write_table(s)
    tw.close()
    sw.close()
    return t_path, s_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10_000_000)
    ap.add_argument("--batch-rows", type=int, default=50_000)
    ap.add_argument("--shuffled", action="store_true", help="student rows in another order")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        t_path, s_path = write_inputs(tmp, args.pairs, args.shuffled)
        cmd = [sys.executable, "-m", "kdlens.cli", "fidelity", str(t_path), str(s_path), "-o",
               str(tmp / "out"), "--batch-rows", str(args.batch_rows), "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(proc.stderr)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    record("fidelity_cli", [{"pairs": args.pairs, "batch_rows": args.batch_rows,
                             "student_order": "shuffled" if args.shuffled else "aligned",
                             "wall_s": round(wall, 2), "pairs_per_s": round(args.pairs / wall),
                             "peak_rss_mb": round(peak_mb, 1)}])


if __name__ == "__main__":
    main()
