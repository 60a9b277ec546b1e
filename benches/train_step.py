"""Benchmark: tokens/s and peak memory of one KD training step (tiny Qwen2 teacher -> student, CPU).

Compares the training step eager vs torch.compile'd (student forward+backward, teacher forward and
the loss's element-wise step), and the KD loss through kdlens.losses' chunked hidden-state path vs
the naive full-logits path (``loss_implementation="logits"``). Student and teacher are built with a
logit width of ``--vocab`` (the synthetic tokenizer itself has a few hundred tokens; the extra rows
are never targets, like Qwen's padded vocabulary), so the loss really works on V columns.

Two measurements, rows to benches/results/train_step.csv via benches/_record.py:
- ``kind=throughput``: ONE process holds the four configurations (eager/compiled x chunked/logits),
  warms each up (compiles), then times ``--rounds`` interleaved rounds of ``--steps`` optimizer
  steps on the same batches, rotating the order each round; the row has the median, min and max
  tokens/s over rounds. Interleaving makes A/B fair on a machine whose load changes.
- ``kind=memory``: each loss path (eager) in its own process at ``--vocab`` and ``--memory-vocab``;
  ``step_rss_mb`` = peak RSS during the steps minus RSS before them (what the step itself adds).
Every row carries the 1-minute load average before and after (``load1_start``/``load1_end``).

Re-run on a quiet machine (one command):
    OMP_WAIT_POLICY=PASSIVE python benches/train_step.py --steps 20 --vocab 4096

GPU (not run yet: no GPU was lent to this task): ``--device cuda`` times the Triton loss (``auto``)
against ``logits`` under bf16 autocast; memory rows then hold torch.cuda.max_memory_allocated. The
0.5B-scale KD step of issue 4 (random weights, Qwen2.5-0.5B student shapes, Qwen2.5-1.5B teacher
shapes, their 151936-wide logits; the interleaved part holds four student+teacher pairs, ~60 GB):
    python benches/train_step.py --device cuda --student qwen0.5b --teacher qwen1.5b --vocab 151936 \
        --batch 4 --steps 10 --memory-vocab 0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "python"))

CONFIGS = [(False, "chunked"), (False, "logits"), (True, "chunked"), (True, "logits")]

# Qwen2.5 shapes for the GPU rows (random weights; --vocab sets the logit width)
QWEN_SHAPES = {
    "qwen0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                     intermediate_size=4864),
    "qwen1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                     intermediate_size=8960),
}


def _model(name: str, width: int, tok, seed: int):
    """A random-init causal LM: a kdlens.models.TINY_CONFIGS name or a QWEN_SHAPES name."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from kdlens.models import make_tiny_model

    if name not in QWEN_SHAPES:
        model = make_tiny_model(name, vocab_size=width, seed=seed)
    else:
        config = Qwen2Config(vocab_size=width, max_position_embeddings=2048, tie_word_embeddings=True,
                             bos_token_id=None, **QWEN_SHAPES[name])
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.config.eos_token_id, model.config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    return model


def _rss_mb() -> float:
    """Current resident set size (MB) from /proc (ru_maxrss is the peak, not the current value)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(args, vocab: int) -> tuple[Path, dict]:
    """Task, tokenizer, student and teacher folders (logit width ``vocab``); returns the TrainConfig kwargs."""
    from kdlens.data.synthetic import make_task, write_task
    from kdlens.models import load_tokenizer

    work = Path(tempfile.mkdtemp(prefix="kdlens-bench-"))
    write_task(work / "task", make_task(0, 400, 10), vocab_size=512)
    tok = load_tokenizer(work / "task" / "tokenizer")
    width = max(vocab, len(tok))
    for name, role, seed in ((args.teacher, "teacher", 1), (args.student, "student", 2)):
        model = _model(name, width, tok, seed)
        model.save_pretrained(work / role)
        tok.save_pretrained(work / role)
    kw = dict(data=str(work / "task" / "train.json"), tokenizer=str(work / "task" / "tokenizer"),
              student=str(work / "student"), lora=False, mode="kd", teacher=str(work / "teacher"),
              objective="forward_kl", temperature=2.0, micro_batch_size=args.batch, grad_accum=1,
              max_length=128, val_size=8, device=args.device, progress=False)
    return work, kw


def _trainer(work: Path, kw: dict, compile_: bool, loss: str):
    from kdlens.train import TrainConfig, Trainer

    out = work / f"run-{int(compile_)}-{loss}"
    return Trainer(TrainConfig(out_dir=str(out), compile=compile_, loss_implementation=loss, **kw))


def _steps(trainer, first: int, n: int, sync) -> tuple[int, float]:
    tokens, t0 = 0, time.perf_counter()
    for step in range(first, first + n):
        stats = trainer.compute_step(step)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        tokens += stats["tokens"]
    sync()
    return tokens, time.perf_counter() - t0


def interleaved(args) -> list[dict]:
    import torch

    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    work, kw = _setup(args, args.vocab)
    configs = CONFIGS if not args.device.startswith("cuda") else [(c, "auto" if impl == "chunked" else impl)
                                                                  for c, impl in CONFIGS]
    trainers = {c: _trainer(work, kw, *c) for c in configs}
    for c, tr in trainers.items():  # compile + allocator warm-up on the measured batches' shapes
        _steps(tr, 1, args.warmup, sync)
    rates: dict = {c: [] for c in configs}
    first = args.warmup + 1
    for r in range(args.rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for c in order:
            tokens, dt = _steps(trainers[c], first, args.steps, sync)
            rates[c].append(tokens / dt)
        first += args.steps
    rows = []
    for (compile_, loss), rs in rates.items():
        rows.append({"compile": compile_, "loss": loss, "tokens_per_s": round(statistics.median(rs), 1),
                     "tokens_per_s_min": round(min(rs), 1), "tokens_per_s_max": round(max(rs), 1),
                     "rounds": args.rounds})
    return rows


def memory_one(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    work, kw = _setup(args, args.vocab)
    trainer = _trainer(work, kw, False, args.loss)
    _steps(trainer, 1, 1, sync)  # first-touch allocations of the optimizer state
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _steps(trainer, 2, args.steps, sync)
    if args.device.startswith("cuda"):
        return {"step_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_rss_mb": round(peak - before, 1) if peak > peak_before else 0.0, "peak_rss_mb": round(peak, 1)}


def _load1() -> float:
    return round(os.getloadavg()[0], 2)


def _child(args, *extra: str) -> dict | list:
    # the extra arguments come last, so they override the common ones (argparse keeps the last value)
    cmd = [sys.executable, __file__,
           *[f"--{k}={v}" for k, v in (("steps", args.steps), ("warmup", args.warmup), ("rounds", args.rounds),
                                        ("batch", args.batch), ("vocab", args.vocab), ("student", args.student),
                                        ("teacher", args.teacher), ("threads", args.threads),
                                        ("device", args.device))], *extra]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("ROW ")]
    if out.returncode != 0 or not line:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"benchmark child {extra} failed")
    return json.loads(line[0][4:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="optimizer steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=512, help="logit width of student and teacher")
    p.add_argument("--memory-vocab", type=int, default=32000, help="second width of the memory rows (0: none)")
    p.add_argument("--student", default="tiny-s1")
    p.add_argument("--teacher", default="tiny-teacher")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--internal", choices=("interleaved", "memory"), help=argparse.SUPPRESS)
    p.add_argument("--loss", default="chunked", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.internal == "interleaved":
        print("ROW " + json.dumps(interleaved(args)))
        return
    if args.internal == "memory":
        print("ROW " + json.dumps(memory_one(args)))
        return
    from _record import record

    common = {"bench": "kd_train_step", "student": args.student, "teacher": args.teacher, "batch": args.batch,
              "threads": args.threads, "steps": args.steps}
    rows = []
    load0 = _load1()
    for r in _child(args, "--internal=interleaved"):
        rows.append({**common, "kind": "throughput", "vocab": args.vocab, **r})
    load1 = _load1()
    for row in rows:
        row.update(load1_start=load0, load1_end=load1)
    fast = "auto" if args.device.startswith("cuda") else "chunked"
    for vocab in [v for v in (args.vocab, args.memory_vocab) if v]:
        for loss in (fast, "logits"):
            l0 = _load1()
            steps = args.steps if vocab == args.vocab else min(args.steps, 3)  # the wide one is slow
            mem = _child(args, "--internal=memory", f"--loss={loss}", f"--vocab={vocab}", f"--steps={steps}")
            rows.append({**common, "kind": "memory", "vocab": vocab, "compile": False, "loss": loss, **mem,
                         "steps": steps, "load1_start": l0, "load1_end": _load1()})
    record("train_step", rows)


if __name__ == "__main__":
    main()
