"""Sentence and corpus BLEU throughput: kdlens vs sacrebleu, bleuscore, fast-bleu, nltk.

Realistic pairs (benches/gen_pairs.py, ~90 tokens per text). Records pairs/s per provider, the
disagreement rate with sacrebleu (|diff| > 1e-9 on the 0-100 scale), kdlens thread scaling (1 vs
all cores) and corpus BLEU time and extra peak memory. Competitors are measured on a sample
(they are slow); kdlens on all pairs. Re-run on a quiet machine with:

    pip install -e ".[bench]" && python benches/bleu_bench.py --pairs 100000 --sample 5000

Rows go to benches/results/bleu.csv.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402
from gen_pairs import make  # noqa: E402


def _timed(fn, repeat=1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _competitors(hyps, refs):
    """(name, fn -> np.ndarray of 0-100 scores) for the installed competitors."""
    out = []
    import sacrebleu

    metric = sacrebleu.BLEU(effective_order=True)
    out.append(("sacrebleu", lambda: np.array([metric.sentence_score(h, [r]).score for h, r in zip(hyps, refs)])))
    try:
        import bleuscore

        def run_bleuscore():
            return np.array([100 * bleuscore.compute(predictions=[h], references=[[r]], max_order=4,
                                                     smooth=True)["bleu"] for h, r in zip(hyps, refs)])
        out.append(("bleuscore", run_bleuscore))
    except ImportError:
        print("bleuscore not installed: skipped", file=sys.stderr)
    try:
        from fast_bleu import BLEU as FastBLEU

        tok = sacrebleu.BLEU()._preprocess_segment

        def run_fast_bleu():
            scores = []
            for h, r in zip(hyps, refs):
                b = FastBLEU([tok(r).split()], {"bleu": (0.25,) * 4})
                scores.append(100 * b.get_score([tok(h).split()])["bleu"][0])
            return np.array(scores)
        out.append(("fast-bleu", run_fast_bleu))
    except ImportError:
        print("fast-bleu not installed: skipped", file=sys.stderr)
    try:
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

        tok = sacrebleu.BLEU()._preprocess_segment
        sm = SmoothingFunction().method3

        def run_nltk():
            return np.array([100 * sentence_bleu([tok(r).split()], tok(h).split(), smoothing_function=sm)
                             for h, r in zip(hyps, refs)])
        out.append(("nltk", run_nltk))
    except ImportError:
        print("nltk not installed: skipped", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=5_000, help="pairs for the (slow) competitors")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from kdlens import metrics

    data = make(args.pairs)
    hyps, refs = data["student_output"], data["teacher_output"]
    cores = os.cpu_count() or 1
    rows = []
    shape = {"pairs": args.pairs, "tokens_per_text": round(float(np.mean(
        metrics.bleu_statistics(refs[:2000], refs[:2000]).hyp_len)), 1)}

    # kdlens sentence BLEU over all pairs, 1 thread and all cores
    per_threads = {}
    for threads in sorted({1, cores}):
        t, scores = _timed(lambda: metrics.sentence_bleu(hyps, refs, num_threads=threads), args.repeat)
        per_threads[threads] = args.pairs / t
        rows.append({**shape, "bench": "sentence_bleu", "provider": "kdlens", "threads": threads,
                     "n": args.pairs, "seconds": round(t, 4), "pairs_per_s": round(args.pairs / t)})
    scaling = per_threads[cores] / per_threads[1]

    # competitors on a sample, single process; disagreement vs sacrebleu
    sample = min(args.sample, args.pairs)
    hs, rs = hyps[:sample], refs[:sample]
    ours = metrics.sentence_bleu(hs, rs)
    sacre_rate = None
    results = {}
    for name, fn in _competitors(hs, rs):
        t, scores = _timed(fn)
        results[name] = scores
        rate = sample / t
        if name == "sacrebleu":
            sacre_rate = rate
        rows.append({**shape, "bench": "sentence_bleu", "provider": name, "threads": 1, "n": sample,
                     "seconds": round(t, 4), "pairs_per_s": round(rate)})
    sacre = results["sacrebleu"]
    for r in rows:
        prov = r["provider"]
        scores = ours if prov == "kdlens" else results.get(prov)
        if scores is not None:
            r["disagree_vs_sacrebleu"] = float(np.mean(np.abs(scores - sacre) > 1e-9))
        if sacre_rate:
            r["x_sacrebleu"] = round(r["pairs_per_s"] / sacre_rate, 1)
        if prov == "kdlens" and r["threads"] == cores:
            r["scaling_1_to_all"] = round(scaling, 2)

    # corpus BLEU: kdlens on all pairs (time and extra peak RSS), sacrebleu on the sample
    import sacrebleu

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t, score = _timed(lambda: metrics.corpus_bleu(hyps, refs), args.repeat)
    extra_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    rows.append({**shape, "bench": "corpus_bleu", "provider": "kdlens", "threads": cores,
                 "n": args.pairs, "seconds": round(t, 4), "pairs_per_s": round(args.pairs / t),
                 "extra_peak_rss_mb": round(extra_mb, 1)})
    ts, sc = _timed(lambda: sacrebleu.corpus_bleu(hs, [rs]))
    ours_sample = metrics.corpus_bleu(hs, rs)
    rows.append({**shape, "bench": "corpus_bleu", "provider": "sacrebleu", "threads": 1, "n": sample,
                 "seconds": round(ts, 4), "pairs_per_s": round(sample / ts),
                 "disagree_vs_sacrebleu": float(abs(ours_sample.score - sc.score) > 1e-9)})
    rows[-2]["x_sacrebleu"] = round((args.pairs / t) / (sample / ts), 1)
    record("bleu", rows)


if __name__ == "__main__":
    main()
