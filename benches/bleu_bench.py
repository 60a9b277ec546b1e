"""Sentence and corpus BLEU throughput: kdlens vs sacrebleu, bleuscore, fast-bleu, nltk.

Realistic pairs (benches/gen_pairs.py, ~90 tokens per text). Records pairs/s per provider, the
disagreement rate with sacrebleu (share of pairs with |diff| > 1e-9, and > 0.01, on the 0-100
scale), kdlens thread scaling (1 vs all cores, measured interleaved), speed ratios against
sacrebleu's single-process rate and bleuscore's best (1 or all processes), corpus BLEU time and
extra peak memory, the 1-minute load average at each row, and a note with each competitor's
settings. Competitors are measured on a sample (they are slow); kdlens on all pairs. Re-run on a
quiet machine with:

    pip install -e ".[bench]" && python benches/bleu_bench.py --pairs 200000 --sample 5000

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


FAST_BLEU_BATCH = 1000  # references per fast-bleu scorer in its batch (reference-set) mode


def _bleuscore_chunk(pairs):
    import bleuscore

    # smooth=False + closest reference length: sacrebleu's sentence BLEU whenever every n-gram order
    # has a match (bleuscore's smooth=True is add-1 on every order, a different metric); pairs with
    # a zero-match order differ (sacrebleu's exp smoothing has no bleuscore equivalent)
    return [100 * bleuscore.compute(predictions=[h], references=[[r]], max_order=4, smooth=False,
                                    ref_len_method="sacrebleu")["bleu"] for h, r in pairs]


def _competitors(hyps, refs, cores):
    """(name, fn -> np.ndarray of 0-100 scores, processes, note) for the installed competitors.

    Every competitor gets the same 13a-tokenised text as sacrebleu where it takes tokens
    (tokenising with sacrebleu's Python tokenizer is included in its time, as kdlens's own
    tokenisation is in kdlens's time).
    """
    out = []
    import sacrebleu

    metric = sacrebleu.BLEU(effective_order=True)
    out.append(("sacrebleu", lambda: np.array([metric.sentence_score(h, [r]).score
                                               for h, r in zip(hyps, refs)]), 1,
                "BLEU(effective_order=True).sentence_score: 13a, exp smoothing"))
    try:
        import bleuscore  # noqa: F401

        note = ("compute(predictions=[h], references=[[r]], smooth=False, ref_len_method='sacrebleu') "
                "per pair; differs from sacrebleu only on pairs with an n-gram order without match")
        out.append(("bleuscore", lambda: np.array(_bleuscore_chunk(list(zip(hyps, refs)))), 1, note))
        if cores > 1:
            def run_bleuscore_pool():
                from multiprocessing import get_context

                pairs = list(zip(hyps, refs))
                step = -(-len(pairs) // (cores * 4))
                with get_context("fork").Pool(cores) as pool:
                    parts = pool.map(_bleuscore_chunk, [pairs[i:i + step] for i in range(0, len(pairs), step)])
                return np.array([x for p in parts for x in p])
            out.append(("bleuscore", run_bleuscore_pool, cores, note + f"; {cores} processes (pool start included)"))
    except ImportError:
        print("bleuscore not installed: skipped", file=sys.stderr)
    tok = sacrebleu.BLEU()._preprocess_segment
    try:
        from fast_bleu import BLEU as FastBLEU

        def run_fast_bleu_pairs():
            scores = []
            for h, r in zip(hyps, refs):
                b = FastBLEU([tok(r).split()], {"bleu": (0.25,) * 4}, smoothing_func=1)
                scores.append(100 * b.get_score([tok(h).split()])["bleu"][0])
            return np.array(scores)

        def run_fast_bleu_batch():
            scores = []
            for i in range(0, len(hyps), FAST_BLEU_BATCH):
                b = FastBLEU([tok(r).split() for r in refs[i:i + FAST_BLEU_BATCH]], {"bleu": (0.25,) * 4},
                             smoothing_func=1)
                scores.extend(b.get_score([tok(h).split() for h in hyps[i:i + FAST_BLEU_BATCH]])["bleu"])
            return 100 * np.array(scores)
        out.append(("fast-bleu", run_fast_bleu_pairs, 1,
                    "one BLEU([ref]) scorer per pair (the only paired use of its API); sacrebleu tokens; "
                    "smoothing_func=1 (NLTK method1, = sacrebleu floor 0.1, not exp): differs on pairs "
                    "with an n-gram order without match"))
        out.append(("fast-bleu-batch", run_fast_bleu_batch, 1,
                    f"one scorer per batch of {FAST_BLEU_BATCH} references as its API intends (its own "
                    "threads): scores each hypothesis against ALL references of the batch, so it is "
                    "not paired sentence BLEU and disagrees by design"))
    except ImportError:
        print("fast-bleu not installed: skipped", file=sys.stderr)
    try:
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

        sm = SmoothingFunction().method3  # NIST geometric sequence smoothing = sacrebleu exp

        def run_nltk():
            return np.array([100 * sentence_bleu([tok(r).split()], tok(h).split(), smoothing_function=sm)
                             for h, r in zip(hyps, refs)])
        out.append(("nltk", run_nltk, 1,
                    "sentence_bleu on sacrebleu tokens, smoothing method3 (= exp); no effective order, "
                    "Fraction arithmetic: differs on texts under 4 tokens and in the last float bits"))
    except ImportError:
        print("nltk not installed: skipped", file=sys.stderr)
    return out


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> int:
    """Reset the peak RSS (Linux: VmHWM via clear_refs) and return the current RSS in kB, so that
    a later peak measures only what follows; elsewhere the process's peak so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss_kb() -> int:
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _corpus_extra_rss_mb(hyps, refs) -> float:
    """Peak RSS that corpus_bleu adds, measured in a fresh process that holds only the texts."""
    import subprocess
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    child = (
        "import sys, json; sys.path.insert(0, sys.argv[2]); import bleu_bench as b; "
        "import pyarrow.parquet as pq; from kdlens import metrics; "
        "t = pq.read_table(sys.argv[1]); h = t['h'].to_pylist(); r = t['r'].to_pylist(); del t; "
        "metrics.corpus_bleu(h[:10], r[:10]); base = b._reset_peak_rss(); "
        "metrics.corpus_bleu(h, r); print(json.dumps((b._peak_rss_kb() - base) / 1024))"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.parquet"
        pq.write_table(pa.table({"h": hyps, "r": refs}), path)
        out = subprocess.run([sys.executable, "-c", child, str(path), str(Path(__file__).parent)],
                             capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


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

    def load():
        return {"load_1m": round(os.getloadavg()[0], 2)}

    # kdlens sentence BLEU over all pairs, 1 thread and all cores, interleaved so that the (shared)
    # machine's load hits both alike; best of `repeat`
    thread_counts = sorted({1, cores})
    best = {n: float("inf") for n in thread_counts}
    metrics.sentence_bleu(hyps[:1000], refs[:1000])  # warm-up (thread pools)
    for _ in range(args.repeat):
        for threads in thread_counts:
            t, _ = _timed(lambda: metrics.sentence_bleu(hyps, refs, num_threads=threads))
            best[threads] = min(best[threads], t)
    for threads in thread_counts:
        t = best[threads]
        rows.append({**shape, "bench": "sentence_bleu", "provider": "kdlens", "threads": threads,
                     "processes": 1, "n": args.pairs, "seconds": round(t, 4),
                     "pairs_per_s": round(args.pairs / t), **load(),
                     "note": f"metrics.sentence_bleu(num_threads={threads}), best of {args.repeat}"})
    scaling = best[1] / best[cores]

    # competitors on a sample; disagreement vs sacrebleu
    sample = min(args.sample, args.pairs)
    hs, rs = hyps[:sample], refs[:sample]
    ours = metrics.sentence_bleu(hs, rs)
    sacre_rate = None
    results = {}
    for name, fn, procs, note in _competitors(hs, rs, cores):
        t, scores = _timed(fn)
        results[(name, procs)] = scores
        rate = sample / t
        if name == "sacrebleu":
            sacre_rate = rate
        rows.append({**shape, "bench": "sentence_bleu", "provider": name, "threads": 1, "processes": procs,
                     "n": sample, "seconds": round(t, 4), "pairs_per_s": round(rate), **load(), "note": note})
    sacre = results[("sacrebleu", 1)]
    bleuscore_best = max((r["pairs_per_s"] for r in rows if r["provider"] == "bleuscore"), default=None)
    for r in rows:
        prov = r["provider"]
        scores = ours if prov == "kdlens" else results.get((prov, r["processes"]))
        if scores is not None:
            diff = np.abs(scores - sacre)
            r["disagree_vs_sacrebleu"] = float(np.mean(diff > 1e-9))
            r["disagree_over_0.01"] = float(np.mean(diff > 0.01))
        if sacre_rate:
            r["x_sacrebleu"] = round(r["pairs_per_s"] / sacre_rate, 1)
        if prov == "kdlens" and bleuscore_best:
            r["x_bleuscore_best"] = round(r["pairs_per_s"] / bleuscore_best, 1)
        if prov == "kdlens" and r["threads"] == cores:
            r["scaling_1_to_all"] = round(scaling, 2)

    # corpus BLEU: kdlens on all pairs (time and extra peak RSS), sacrebleu on the sample
    import sacrebleu

    t, score = _timed(lambda: metrics.corpus_bleu(hyps, refs), args.repeat)
    extra_mb = _corpus_extra_rss_mb(hyps, refs)
    rows.append({**shape, "bench": "corpus_bleu", "provider": "kdlens", "threads": cores, "processes": 1,
                 "n": args.pairs, "seconds": round(t, 4), "pairs_per_s": round(args.pairs / t),
                 "extra_peak_rss_mb": round(extra_mb, 1), **load(),
                 "note": "metrics.corpus_bleu; extra peak RSS: a fresh process holding the texts as lists, peak reset before the call"})
    ts, sc = _timed(lambda: sacrebleu.corpus_bleu(hs, [rs]))
    ours_sample = metrics.corpus_bleu(hs, rs)
    rows.append({**shape, "bench": "corpus_bleu", "provider": "sacrebleu", "threads": 1, "processes": 1,
                 "n": sample, "seconds": round(ts, 4), "pairs_per_s": round(sample / ts),
                 "disagree_vs_sacrebleu": float(abs(ours_sample.score - sc.score) > 1e-9), **load(),
                 "note": "sacrebleu.corpus_bleu"})
    rows[-2]["x_sacrebleu"] = round((args.pairs / t) / (sample / ts), 1)
    record("bleu", rows)


if __name__ == "__main__":
    main()
