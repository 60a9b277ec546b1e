"""BLEU bootstrap: one native `resample_scores` call against a Python loop of per-resample calls.

    python benches/bleu_bootstrap_bench.py [--segments 2000] [--resamples 1000] [--threads 1]

All three providers score the same statistics on the same resample-index matrix (numpy's
default_rng(12345).choice, as sacreBLEU draws it):
  * native_one_call: `_native.resample_scores(stats, idxs)`;
  * python_loop: numpy sums per resample, then `_native.score_from_row` per resample (the loop
    kdlens.metrics' bootstrap ran before);
  * sacrebleu: `sacrebleu.significance._bootstrap_resample` (float32 sums, its own formula).
Rows go to benches/results/bleu_bootstrap.csv with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402

from kdlens import _native  # noqa: E402

WORDS = "the a cat dog sat on mat ran far away from home 3 4 . , ; big small red".split()


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=2000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    hyps = [" ".join(rng.choice(WORDS, size=rng.integers(5, 40))) for _ in range(args.segments)]
    refs = [" ".join(rng.choice(WORDS, size=rng.integers(5, 40))) for _ in range(args.segments)]
    stats = _native.bleu_stats(hyps, [refs])
    n, b = len(stats), args.resamples
    idxs = np.random.default_rng(12345).choice(n, size=(b, n), replace=True)

    def native_one_call():
        return _native.resample_scores(stats, idxs, num_threads=args.threads)

    def python_loop():
        out = np.empty(b)
        per_chunk = max(1, 4_000_000 // n)
        for a in range(0, b, per_chunk):
            for j, row in enumerate(stats[idxs[a:a + per_chunk]].sum(axis=1)):
                out[a + j] = _native.score_from_row([int(x) for x in row])[0]
        return out

    t_native, s_native = _best(native_one_call, args.repeat)
    t_loop, s_loop = _best(python_loop, args.repeat)
    rows = [
        {"bench": "bleu_bootstrap", "provider": "native_one_call", "segments": n, "resamples": b,
         "threads": args.threads, "seconds": round(t_native, 4)},
        {"bench": "bleu_bootstrap", "provider": "python_loop", "segments": n, "resamples": b,
         "threads": 1, "seconds": round(t_loop, 4),
         "max_abs_diff_vs_native": float(np.max(np.abs(np.asarray(s_loop) - s_native)))},
    ]
    try:
        import sacrebleu
        from sacrebleu.significance import _bootstrap_resample

        os.environ["SACREBLEU_SEED"] = "12345"
        metric = sacrebleu.BLEU()
        t_sb, (_, sb) = _best(lambda: _bootstrap_resample(stats.tolist(), metric, b), 1)
        rows.append({"bench": "bleu_bootstrap", "provider": "sacrebleu", "segments": n, "resamples": b,
                     "threads": 1, "seconds": round(t_sb, 4),
                     "max_abs_diff_vs_native": float(np.max(np.abs(np.array([s.score for s in sb]) - s_native)))})
    except ImportError:
        pass
    load = os.getloadavg()[0]
    for r in rows:
        r["x_vs_native"] = round(r["seconds"] / t_native, 2)
        r["load_1m"] = round(load, 2)
    record("bleu_bootstrap", rows)


if __name__ == "__main__":
    main()
