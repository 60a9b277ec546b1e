"""Benchmark: tokens/s and peak memory of one KD training step (tiny Qwen2 teacher -> student, CPU).

Compares the student forward eager vs torch.compile'd, and the KD loss through kdlens.losses'
chunked hidden-state path vs the naive full-logits path (``loss_implementation="logits"``). Each
configuration runs in its own subprocess so that its peak RSS (ru_maxrss) is its own. Rows go to
benches/results/train_step.csv via benches/_record.py.

Re-run on a quiet machine (one command):
    OMP_WAIT_POLICY=PASSIVE python benches/train_step.py --steps 20 --vocab 4096

GPU (not run here; no GPU on the CPU machines): the same script with ``--device cuda`` times the
Triton loss (``auto``) against ``logits``; peak memory then comes from torch.cuda.max_memory_allocated.
For the 0.5B-scale KD step described in issue 4, pass --student/--teacher folders of Qwen2 configs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "python"))


def one(args) -> dict:
    import torch

    from kdlens.data.synthetic import make_task, write_task
    from kdlens.models import load_tokenizer, make_tiny_model
    from kdlens.train import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="kdlens-bench-"))
    write_task(work / "task", make_task(0, 400, 10), vocab_size=args.vocab)
    tok = load_tokenizer(work / "task" / "tokenizer")
    make_tiny_model(args.teacher, tok, seed=1).save_pretrained(work / "teacher")
    tok.save_pretrained(work / "teacher")
    cfg = TrainConfig(out_dir=str(work / "run"), data=str(work / "task" / "train.json"),
                      tokenizer=str(work / "task" / "tokenizer"), student=f"tiny:{args.student}", lora=False,
                      mode="kd", teacher=str(work / "teacher"), objective="forward_kl", temperature=2.0,
                      micro_batch_size=args.batch, grad_accum=1, max_length=128, val_size=8,
                      compile=args.compile, loss_implementation=args.loss, device=args.device, progress=False)
    trainer = Trainer(cfg)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for step in range(1, args.warmup + 1):  # compile + allocator warm-up
        trainer.compute_step(step)
        trainer.optimizer.zero_grad(set_to_none=True)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tokens, t0 = 0, time.perf_counter()
    for step in range(args.warmup + 1, args.warmup + args.steps + 1):
        stats = trainer.compute_step(step)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        tokens += stats["tokens"]
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"bench": "kd_train_step", "student": args.student, "teacher": args.teacher, "vocab": args.vocab,
            "batch": args.batch, "compile": args.compile, "loss": args.loss, "threads": args.threads,
            "steps": args.steps, "tokens_per_s": round(tokens / dt, 1), "s_per_step": round(dt / args.steps, 4),
            "peak_mb": round(peak, 1), "rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--student", default="tiny-s1")
    p.add_argument("--teacher", default="tiny-teacher")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", action="store_true", help="(internal) run one configuration and print JSON")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--loss", default="chunked")
    args = p.parse_args()
    if args.one:
        print("ROW " + json.dumps(one(args)))
        return
    from _record import record

    loss_fast = "auto" if args.device.startswith("cuda") else "chunked"
    rows = []
    for compile_ in (False, True):
        for loss in (loss_fast, "logits"):
            cmd = [sys.executable, __file__, "--one", "--loss", loss, *(["--compile"] if compile_ else []),
                   *[f"--{k}={v}" for k, v in (("steps", args.steps), ("warmup", args.warmup), ("batch", args.batch),
                                                ("vocab", args.vocab), ("student", args.student),
                                                ("teacher", args.teacher), ("threads", args.threads),
                                                ("device", args.device))]]
            env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("ROW ")]
            if out.returncode != 0 or not line:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"configuration compile={compile_} loss={loss} failed")
            rows.append(json.loads(line[0][4:]))
    record("train_step", rows, device=None if not args.device.startswith("cuda") else None)


if __name__ == "__main__":
    main()
