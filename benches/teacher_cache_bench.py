"""Benchmark: KD training from a teacher cache vs a live teacher (CPU), cache size and build throughput.

A tiny-s1 student learns from a tiny-teacher whose logits are ``--vocab`` wide (the synthetic tokenizer
has a few hundred tokens; the extra rows are never targets, like Qwen's padded vocabulary), so the loss
and the cache really work on V columns. Rows to benches/results/teacher_cache.csv via benches/_record.py:

- ``kind=step``: ONE process holds three trainers on the same data and seed (live teacher, cache with
  k = ``--k``, cache with k = V), warms each up, then times ``--rounds`` interleaved rounds of ``--steps``
  optimizer steps, rotating the order each round: median/min/max seconds per step, and the KD loss of
  step 1 (the same for live and k = V; the top-k cache is the sparse-teacher loss, tail="rest").
- ``kind=memory``: each of the three in its own process, after importing torch/transformers/kdlens
  (``base_rss_mb``): ``setup_rss_mb`` (resident after building the trainer: models, data, cache index;
  the live run loads the teacher), ``setup_peak_mb`` / ``steps_peak_mb`` (the largest RSS over the base
  while setting up / during the timed steps, sampled every millisecond: the live run holds the teacher's
  weights and activations, a cache run the cached rows of its batch), ``step_rss_mb`` (what the steps
  add over the resident set before them) and ``teacher_weights_mb`` (the live teacher's parameters).
- ``kind=cache_size``: bytes per token of a bf16 cache (ids int32 + logits bf16 + lse fp32 + the token)
  for each k of ``--size-ks``, from the shard files.
- ``kind=cache_build``: tokens/s of ``kdlens teacher-cache`` (k = ``--k``, batch 8) on this machine.
Every row carries the 1-minute load average before and after.

One command (about 10 minutes on 2 busy cores):
    OMP_WAIT_POLICY=PASSIVE python benches/teacher_cache_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "python"))

KINDS = ("live", "cache_k", "cache_v")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _load1() -> float:
    return round(os.getloadavg()[0], 2)


def setup(work: Path, vocab: int, records: int) -> dict:
    """Task (``records`` training records), teacher and student folders of logit width ``vocab``."""
    from kdlens.data.synthetic import make_task, write_task
    from kdlens.models import load_tokenizer, make_tiny_model

    if not (work / "teacher").exists():
        task = make_task(0, records, 0)
        write_task(work / "task", task, vocab_size=512)
        tok = load_tokenizer(work / "task" / "tokenizer")
        for name, role, seed in (("tiny-teacher", "teacher", 1), ("tiny-s1", "student", 2)):
            model = make_tiny_model(name, vocab_size=max(vocab, len(tok)), seed=seed)
            model.config.eos_token_id, model.config.pad_token_id = tok.eos_token_id, tok.pad_token_id
            model.save_pretrained(work / role)
            tok.save_pretrained(work / role)
    return dict(data=str(work / "task" / "train.json"), tokenizer=str(work / "task" / "tokenizer"))


def build(work: Path, k: int, max_length: int, name: str, dtype: str = "bfloat16"):
    from kdlens.train.teacher_cache import TeacherCacheConfig, build_cache

    return build_cache(TeacherCacheConfig(
        out_dir=str(work / name), data=str(work / "task" / "train.json"), teacher=str(work / "teacher"),
        tokenizer=str(work / "task" / "tokenizer"), k=k, temperatures=(1.0,), logits_dtype=dtype,
        max_length=max_length, batch_size=8, progress=False))


def trainer(work: Path, kind: str, args):
    from kdlens.train import TrainConfig, Trainer

    kw = dict(data=str(work / "task" / "train.json"), tokenizer=str(work / "task" / "tokenizer"),
              student=str(work / "student"), lora=False, mode="kd", objective="forward_kl", temperature=1.0,
              micro_batch_size=args.batch, grad_accum=1, max_length=args.max_length, val_size=8,
              progress=False, loss_implementation="chunked", seed=3)
    if kind == "live":
        kw["teacher"] = str(work / "teacher")
    else:
        kw["teacher_cache"] = str(work / ("cache_k" if kind == "cache_k" else "cache_v"))
    return Trainer(TrainConfig(out_dir=str(work / f"run-{kind}-{os.getpid()}"), **kw))


def steps(tr, first: int, n: int) -> tuple[float, float]:
    t0, kd = time.perf_counter(), None
    for step in range(first, first + n):
        stats = tr.compute_step(step)
        tr.optimizer.step()
        tr.optimizer.zero_grad(set_to_none=True)
        kd = stats["kd"] if kd is None else kd
    return (time.perf_counter() - t0) / n, kd


def interleaved(args) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    trainers = {k: trainer(work, k, args) for k in KINDS}
    first_kd = {}
    for k, tr in trainers.items():
        _, first_kd[k] = steps(tr, 1, args.warmup)
    times: dict = {k: [] for k in KINDS}
    first = args.warmup + 1
    for r in range(args.rounds):
        order = KINDS[r % 3:] + KINDS[:r % 3]
        for k in order:
            times[k].append(steps(trainers[k], first, args.steps)[0])
        first += args.steps
    return [{"teacher_source": k, "step_s": round(statistics.median(t), 4), "step_s_min": round(min(t), 4),
             "step_s_max": round(max(t), 4), "kd_loss_step1": round(first_kd[k], 6), "rounds": args.rounds}
            for k, t in times.items()]


class RssSampler:
    """The largest VmRSS seen by a thread that reads it every millisecond (ru_maxrss is the lifetime
    high-water mark, set by whatever peaked first, e.g. loading the models)."""

    def __init__(self):
        import threading

        self.peak, self._stop = _rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def memory_one(args) -> dict:
    import torch

    import kdlens.losses.chunked  # noqa: F401  (imports first: the baseline holds the libraries, not the run)
    import kdlens.train.loop  # noqa: F401

    torch.set_num_threads(1)
    base = _rss_mb()
    with RssSampler() as during_setup:
        tr = trainer(Path(args.work), args.kind, args)
    setup = _rss_mb()
    steps(tr, 1, 1)  # first-touch allocations of the optimizer state
    before = _rss_mb()
    with RssSampler() as during_steps:
        steps(tr, 2, args.steps)
    teacher = 0.0 if tr.teacher is None else sum(p.numel() * p.element_size() for p in tr.teacher.parameters())
    return {"base_rss_mb": round(base, 1), "setup_rss_mb": round(setup - base, 1),
            "setup_peak_mb": round(during_setup.peak - base, 1), "steps_peak_mb": round(during_steps.peak - base, 1),
            "step_rss_mb": round(max(0.0, during_steps.peak - before), 1),
            "teacher_weights_mb": round(teacher / 2**20, 1)}


def child(args, *extra: str):
    cmd = [sys.executable, __file__, f"--work={args.work}", f"--steps={args.steps}", f"--warmup={args.warmup}",
           f"--rounds={args.rounds}", f"--batch={args.batch}", f"--vocab={args.vocab}", f"--k={args.k}",
           f"--max-length={args.max_length}", *extra]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("ROW ")]
    if out.returncode != 0 or not line:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"benchmark child {extra} failed")
    return json.loads(line[0][4:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=32000, help="logit width of teacher and student")
    p.add_argument("--k", type=int, default=64, help="top-k of the sparse cache")
    p.add_argument("--records", type=int, default=24, help="training records (the k = V cache holds them all)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per timed round / memory run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--size-ks", default="16,64,256", help="k values of the cache-size rows")
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--internal", choices=("interleaved", "memory"), help=argparse.SUPPRESS)
    p.add_argument("--kind", choices=KINDS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.internal == "interleaved":
        print("ROW " + json.dumps(interleaved(args)))
        return
    if args.internal == "memory":
        print("ROW " + json.dumps(memory_one(args)))
        return
    from _record import record

    work = Path(tempfile.mkdtemp(prefix="kdlens-cache-bench-"))
    args.work = str(work)
    setup(work, args.vocab, args.records)
    common = {"bench": "teacher_cache", "student": "tiny-s1", "teacher": "tiny-teacher", "vocab": args.vocab,
              "batch": args.batch, "max_length": args.max_length, "threads": 1}
    rows = []
    l0 = _load1()
    built = build(work, args.k, args.max_length, "cache_k")
    rows.append({**common, "kind": "cache_build", "k": args.k, "tokens": built.tokens,
                 "tokens_per_s": round(built.tokens_per_s, 1), "bytes_per_token": round(built.bytes / built.tokens, 1),
                 "load1_start": l0, "load1_end": _load1()})
    build(work, args.vocab, args.max_length, "cache_v", "float32")  # k = V, exact: the same loss as live
    for k in [int(x) for x in args.size_ks.split(",") if x]:
        r = build(work, k, args.max_length, f"size-{k}")
        rows.append({**common, "kind": "cache_size", "k": k, "tokens": r.tokens,
                     "bytes_per_token": round(r.bytes / r.tokens, 1)})
    l0 = _load1()
    for r in child(args, "--internal=interleaved"):
        k = {"live": None, "cache_k": args.k, "cache_v": args.vocab}[r["teacher_source"]]
        rows.append({**common, "kind": "step", "k": k, "steps": args.steps, **r, "load1_start": l0,
                     "load1_end": _load1()})
    for kind in KINDS:
        l0 = _load1()
        mem = child(args, "--internal=memory", f"--kind={kind}")
        k = {"live": None, "cache_k": args.k, "cache_v": args.vocab}[kind]
        rows.append({**common, "kind": "memory", "teacher_source": kind, "k": k, "steps": args.steps, **mem,
                     "load1_start": l0, "load1_end": _load1()})
    record("teacher_cache", rows)
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
