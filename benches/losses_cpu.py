"""CPU benchmark of the KD loss, forward + backward including both lm_head matmuls: chunked compiled vs naive eager.

Providers (each in a fresh subprocess so peaks do not mix):
  naive_eager       kd_loss(implementation="reference") on the hidden form: full [N, V] fp32 logits for student
                    and teacher, autograd through log_softmax (what a plain training loop does)
  chunked_compiled  kd_loss(implementation="chunked") with torch.compile'd element-wise step
  chunked_eager     the same chunk loop without torch.compile
Measures the median wall time of --repeats fwd+bwd after warm-up (compile excluded) and the peak extra
resident memory during them: VmHWM - VmRSS after the Linux peak reset (``echo 5 > /proc/self/clear_refs``).
Rows go to benches/results/losses_cpu.csv with the ratios to naive. Target (kernels.md): peak <= 0.25x and
time <= 0.8x of naive at N=2048, H=512, V=32000.

Re-run on a quiet machine (one core, as in shared/design/environment.md):
    OMP_WAIT_POLICY=PASSIVE python benches/losses_cpu.py --threads 1
Smoke run: python benches/losses_cpu.py --n 256 --vocab 4000 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROVIDERS = {
    "naive_eager": dict(implementation="reference"),
    "chunked_compiled": dict(implementation="chunked", compile=True),
    "chunked_eager": dict(implementation="chunked", compile=False),
}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(args) -> dict:
    import torch

    from kdlens.losses import kd_loss

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x_s = torch.randn(args.n, args.hidden, generator=g)
    w_s = (torch.randn(args.vocab, args.hidden, generator=g) / args.hidden**0.5).requires_grad_()
    x_t = torch.randn(args.n, args.hidden, generator=g)
    w_t = torch.randn(args.vocab, args.hidden, generator=g) / args.hidden**0.5
    x_s.requires_grad_()
    kw = dict(PROVIDERS[args.provider], objective=args.objective, temperature=2.0)
    if args.chunk_mib:
        kw["chunk_bytes"] = args.chunk_mib * 2**20

    def step():
        x_s.grad = None
        w_s.grad = None
        loss = kd_loss(student_hidden=x_s, student_weight=w_s, teacher_hidden=x_t, teacher_weight=w_t, **kw)
        loss.backward()
        return loss

    for _ in range(args.warmup):
        loss = step()
    import gc

    gc.collect()
    base = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    peak = _status_kib("VmHWM")
    return {"loss": float(loss), "time_s": statistics.median(times), "peak_extra_mb": (peak - base) / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--objective", default="forward_kl")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--chunk-mib", type=int, default=0, help="chunk workspace budget (0 = kdlens default)")
    p.add_argument("--providers", default=",".join(PROVIDERS))
    p.add_argument("--provider", help=argparse.SUPPRESS)
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    if args.provider:
        print(json.dumps(_child(args)))
        return
    # a fixed mmap threshold makes glibc return every large freed block to the OS, so RSS peaks are honest
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE",
           "MALLOC_MMAP_THRESHOLD_": "131072",
           "TORCHINDUCTOR_CACHE_DIR": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "/tmp/kdlens-inductor-cache")}
    results = {}
    for provider in args.providers.split(","):
        cmd = [sys.executable, __file__, "--provider", provider] + [
            a for a in sys.argv[1:] if not a.startswith("--providers") and a != "--no-record"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{provider} failed:\n{out.stderr[-3000:]}")
        results[provider] = json.loads(out.stdout.strip().splitlines()[-1])
    naive = results.get("naive_eager")
    rows = []
    for provider, r in results.items():
        row = {"bench": "kd_loss_fwd_bwd", "provider": provider, "objective": args.objective, "n": args.n,
               "hidden": args.hidden, "vocab": args.vocab, "threads": args.threads, "repeats": args.repeats,
               "time_s": round(r["time_s"], 4), "peak_extra_mb": round(r["peak_extra_mb"], 1),
               "loss": round(r["loss"], 6)}
        if naive:
            row["time_vs_naive"] = round(r["time_s"] / naive["time_s"], 3)
            row["peak_vs_naive"] = round(r["peak_extra_mb"] / max(naive["peak_extra_mb"], 1e-9), 3)
        rows.append(row)
    if args.no_record:
        for row in rows:
            print(row)
    else:
        from _record import record

        record("losses_cpu", rows)


if __name__ == "__main__":
    main()
