"""Realistic reasoning-style teacher/student pairs (about 90 tokens per text) for the benchmarks.

Uses kdlens.demo's deterministic generator with two problems per text.

    python benches/gen_pairs.py 100000 /tmp/pairs.parquet    # columns task, id, gold, teacher_output, student_output
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make(n: int, seed: int = 0) -> dict[str, list]:
    from kdlens.demo import make_pairs

    return make_pairs(n, seed, problems_per_text=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import polars as pl

    pl.DataFrame(make(args.n, args.seed)).write_parquet(args.out)


if __name__ == "__main__":
    main()
