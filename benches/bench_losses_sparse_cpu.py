"""CPU benchmark: the KD loss from a top-k teacher cache (sparse_kd_loss) against the same loss from a live
teacher's hidden states and lm_head (kd_loss), forward + backward through the student lm_head.

Providers (each in a fresh subprocess so memory peaks do not mix; chunked path, torch.compile'd, as
``implementation="auto"`` runs it on a CPU):
  dense_chunked       kd_loss(student_hidden, student_weight, teacher_hidden, teacher_weight): 4 GEMMs per chunk
  sparse_chunked_k64  sparse_kd_loss from a top-64 cache (tail="rest"): 3 GEMMs per chunk, no teacher GEMM
  sparse_chunked_kV   the same with k = V (the check: its loss equals dense_chunked's)
The cache (ids, logits, fp32 lse at T) is built from the same teacher inputs before timing. JSD(beta=0.5),
T = 2, token mean. Measures the median wall time of --repeats fwd+bwd after warm-up (compile excluded) and
the peak extra resident memory during them (VmHWM - VmRSS after ``echo 5 > /proc/self/clear_refs``). The
teacher's inputs (hidden states, lm_head) are held by every provider here, so the memory difference is
the loss's own (the teacher model's weights and activations, which a cache also removes, are not counted).
Rows go to benches/results/losses_sparse_cpu.csv with the ratios to dense_chunked.
    OMP_WAIT_POLICY=PASSIVE python benches/bench_losses_sparse_cpu.py --threads 1
Smoke run: python benches/bench_losses_sparse_cpu.py --n 128 --vocab 2000 --repeats 2
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

PROVIDERS = ("dense_chunked", "sparse_chunked_k64", "sparse_chunked_kV")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(args) -> dict:
    import torch

    from kdlens.losses import kd_loss, sparse_kd_loss

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x_s = torch.randn(args.n, args.hidden, generator=g).requires_grad_()
    w_s = (torch.randn(args.vocab, args.hidden, generator=g) / args.hidden**0.5).requires_grad_()
    x_t = torch.randn(args.n, args.hidden, generator=g)
    w_t = torch.randn(args.vocab, args.hidden, generator=g) * 2 / args.hidden**0.5
    kw = dict(objective="jsd", beta=0.5, temperature=2.0, implementation="chunked", compile=True)
    if args.provider == "dense_chunked":
        def step():
            return kd_loss(student_hidden=x_s, student_weight=w_s, teacher_hidden=x_t, teacher_weight=w_t, **kw)
    else:
        k = args.k if args.provider.endswith("k64") else args.vocab
        with torch.no_grad():
            z = x_t @ w_t.t()
            vals, ids = z.topk(k, dim=-1)
            cache = dict(teacher_ids=ids.to(torch.int32), teacher_topk_logits=vals.to(torch.bfloat16 if
                         args.provider.endswith("k64") else torch.float32),
                         teacher_lse=torch.logsumexp(z / 2.0, dim=-1, keepdim=True), teacher_temperatures=(2.0,))
            del z, vals, ids

        def step():
            return sparse_kd_loss(student_hidden=x_s, student_weight=w_s, **cache, tail="rest", **kw)

    def fwd_bwd():
        x_s.grad = w_s.grad = None
        loss = step()
        loss.backward()
        return float(loss)

    loss = fwd_bwd()  # compile
    fwd_bwd()
    x_s.grad = w_s.grad = None
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fwd_bwd()
        times.append((time.perf_counter() - t0) * 1e3)
    peak = _status_kib("VmHWM") - base
    return {"loss": round(loss, 6), "median_ms": round(statistics.median(times), 2),
            "min_ms": round(min(times), 2), "peak_extra_mib": round(peak / 1024, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--provider", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.provider:
        print(json.dumps(_child(args)))
        return
    import _record

    rows = []
    for provider in PROVIDERS:
        cmd = [sys.executable, __file__, "--provider", provider] + [
            f"--{k}={getattr(args, k)}" for k in ("n", "hidden", "vocab", "k", "repeats", "threads")]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if out.returncode != 0:
            raise SystemExit(f"{provider} failed:\n{out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"bench": "kd_sparse_vs_dense_fwd_bwd", "provider": provider, "n": args.n,
                     "hidden": args.hidden, "vocab": args.vocab,
                     "k": args.k if provider.endswith("k64") else (args.vocab if "sparse" in provider else ""),
                     "threads": args.threads, "repeats": args.repeats, "load_avg_1m": os.getloadavg()[0], **result})
    dense = rows[0]
    for r in rows:
        r["time_vs_dense"] = round(r["median_ms"] / dense["median_ms"], 3)
        r["peak_vs_dense"] = round(r["peak_extra_mib"] / max(dense["peak_extra_mib"], 1e-9), 3)
        print(json.dumps(r))
    _record.record("losses_sparse_cpu", rows)


if __name__ == "__main__":
    main()
