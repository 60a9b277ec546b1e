"""GPU benchmark of kdlens's fused KD loss against Liger-Kernel, eager torch and our own cuBLAS ceiling.

Forward+backward of JSD(beta=0.5), T=1, token mean, bf16, H=4096, V=151936 (the Qwen2.5 vocabulary).
Shape A (N=8192) is timed first, then N=1024, then N=32768 while the time budget lasts. Providers:
  triton_fused            kd_loss(implementation="triton"): 4 GEMMs per chunk + the Triton row kernel
  triton_fused_sigma1     the same with teacher noise sigma=1 (target: at most 5% slower)
  triton_fused_bf16dw     dw_accumulation="weight_dtype": dW summed in bf16, 768-row chunks (memory-lean)
  liger_fljsd             liger-kernel's LigerFusedLinearJSD (version recorded; bf16 dW accumulation)
  liger_fljsd_fp32acc     the same with accum_dtype=torch.float32
  cublas_chunked_ceiling  the fused path's exact chunk loop and GEMM sequence with no element-wise work
  naive_torch             full logits + the reference loss, eager autograd
  chunked_compiled        kd_loss(implementation="chunked") (torch.compile'd element-wise step)
  triton_sparse_k64       sparse_kd_loss(implementation="triton"), JSD(0.5) from a top-64 teacher cache,
                          tail="rest": 3 GEMMs per chunk (no teacher GEMM) + the sparse row kernel
                          (target: at most 0.8x triton_fused's time; ``vs_triton_fused`` is the ratio)
  triton_sparse_k64_renorm  the same with tail="renormalize"
  chunked_sparse_k64      sparse_kd_loss(implementation="chunked"), tail="rest"
The sparse providers' cache (top-64 ids and logits of the teacher's bf16 logits, fp32 log-sum-exp at T = 1)
is built once per N from the same teacher inputs, outside the timings.
Inputs are drawn on the GPU once per N and shared by every provider. Memory: the baseline is taken after
the previous step's gradients are freed; ``peak_extra_gib`` is the step's peak above it and
``peak_extra_minus_bf16_dw_gib`` subtracts the bf16 dW that every provider must return (target: <= 1.5).
Each provider's loss is recorded, so the shape-A runs cross-check each other. ``--profile`` adds a row of
per-stage CUDA-event timings of the fused path (KDLENS_PROFILE=1). Rows are appended to
<out>/losses_gpu.csv (benches/_record.py format) as they come; correctness is checked beforehand by
tests/losses/test_gpu.py (run_gpu.sh), whose verdict is passed in with --correctness and stored in every row.
On a CPU, ``--smoke`` runs the same code at toy sizes (Triton through TRITON_INTERPRET=1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches"))
sys.path.insert(0, str(ROOT / "python"))

import _record  # noqa: E402

import kdlens.kernels.kd_fused_linear as fused_linear  # noqa: E402
from kdlens.losses import kd_loss, sparse_kd_loss  # noqa: E402

START = time.monotonic()


def liger_class():
    """(LigerFusedLinearJSD, version) or (None, reason)."""
    try:
        from importlib.metadata import version

        from liger_kernel.transformers import LigerFusedLinearJSD

        return LigerFusedLinearJSD, version("liger-kernel")
    except Exception as exc:  # noqa: BLE001 - the reason goes into the rows
        return None, f"{type(exc).__name__}: {exc}"[:200]


SPARSE_K = 64
_CACHE: dict = {}


def teacher_cache(x_t: torch.Tensor, w_t: torch.Tensor, k: int = SPARSE_K, rows: int = 1024) -> dict:
    """The top-k teacher cache of (x_t, w_t) as kdlens teacher-cache stores it (bf16 logits as computed
    in the teacher's dtype, int32 ids, fp32 lse at T = 1), built chunk by chunk once per input."""
    key = (x_t.data_ptr(), w_t.data_ptr(), x_t.shape[0], k)
    if key not in _CACHE:
        _CACHE.clear()
        ids, vals, lse = [], [], []
        with torch.no_grad():
            for start in range(0, x_t.shape[0], rows):
                z = x_t[start:start + rows] @ w_t.t()
                v, i = z.topk(k, dim=-1)
                ids.append(i.to(torch.int32))
                vals.append(v)
                lse.append(torch.logsumexp(z.float(), dim=-1, keepdim=True))
        _CACHE[key] = dict(teacher_ids=torch.cat(ids), teacher_topk_logits=torch.cat(vals),
                           teacher_lse=torch.cat(lse), teacher_temperatures=(1.0,))
    return _CACHE[key]


def providers(smoke: bool) -> dict:
    def fused(sigma, dw_accumulation="fp32"):
        def run(x_s, w_s, x_t, w_t, labels):
            return kd_loss(student_hidden=x_s, student_weight=w_s, teacher_hidden=x_t, teacher_weight=w_t,
                           objective="jsd", beta=0.5, labels=labels, noise_sigma=sigma, noise_seed=7,
                           implementation="triton", dw_accumulation=dw_accumulation)
        return run

    def ceiling(x_s, w_s, x_t, w_t, labels):
        """The fused path's own chunk loop and GEMMs (chunk size, ring, dW conversion), element-wise step empty."""
        from kdlens.losses.dispatch import DEFAULT_CHUNK_BYTES_CUDA

        def rows_fn(z_s, z_t, weight, labels_c, row_offset, grad_buf):
            return weight, grad_buf, None

        vocab = min(w_s.shape[0], w_t.shape[0])
        rows = fused_linear.fused_chunk_rows(x_s.shape[0], vocab, DEFAULT_CHUNK_BYTES_CUDA)
        weight = torch.ones(x_s.shape[0], device=x_s.device)
        with torch.no_grad():
            loss, d_x, d_w = fused_linear.linear_kd_chunks(x_s, w_s, x_t, w_t, weight, None, rows_fn, chunk_rows=rows)
        x_s.grad, w_s.grad = d_x, d_w
        return None

    def naive(x_s, w_s, x_t, w_t, labels):
        z_s = x_s @ w_s.t()
        with torch.no_grad():
            z_t = x_t @ w_t.t()
        return kd_loss(z_s.float(), z_t.float(), objective="jsd", beta=0.5, labels=labels, implementation="reference")

    def chunked(x_s, w_s, x_t, w_t, labels):
        return kd_loss(student_hidden=x_s, student_weight=w_s, teacher_hidden=x_t, teacher_weight=w_t,
                       objective="jsd", beta=0.5, labels=labels, implementation="chunked", compile=not smoke)

    def sparse(impl, tail):
        def run(x_s, w_s, x_t, w_t, labels):
            return sparse_kd_loss(student_hidden=x_s, student_weight=w_s, **teacher_cache(x_t, w_t), tail=tail,
                                  objective="jsd", beta=0.5, labels=labels, implementation=impl,
                                  compile=not smoke)
        return run

    # the sparse rows right after triton_fused: their target is a ratio to it, within the time budget
    out = {"triton_fused": fused(0.0), "triton_sparse_k64": sparse("triton", "rest"),
           "triton_sparse_k64_renorm": sparse("triton", "renormalize"), "triton_fused_sigma1": fused(1.0),
           "triton_fused_bf16dw": fused(0.0, "weight_dtype")}
    cls, _ = liger_class()
    if cls is not None and torch.cuda.is_available():
        for name, acc in (("liger_fljsd", None), ("liger_fljsd_fp32acc", torch.float32)):
            module = cls(jsd_beta=0.5, ignore_index=-100, temperature=1.0, accum_dtype=acc)
            out[name] = (lambda m: lambda x_s, w_s, x_t, w_t, labels: m(x_s, w_s, x_t, w_t, labels))(module)
    out.update({"cublas_chunked_ceiling": ceiling, "naive_torch": naive, "chunked_compiled": chunked,
                "chunked_sparse_k64": sparse("chunked", "rest")})
    return out


def timed_ms(fn, repeats: int, cuda: bool) -> list[float]:
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def bench_size(n, hidden, vocab, repeats, deadline, only, cuda, smoke, common, out, profile) -> None:
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    g = torch.Generator(device=device).manual_seed(n)
    x_s = torch.randn(n, hidden, generator=g, device=device, dtype=dtype).requires_grad_()
    x_t = torch.randn(n, hidden, generator=g, device=device, dtype=dtype)
    w_s = (torch.randn(vocab, hidden, generator=g, device=device) / hidden**0.5).to(dtype).requires_grad_()
    w_t = (torch.randn(vocab, hidden, generator=g, device=device) / hidden**0.5).to(dtype)
    labels = torch.randint(0, vocab, (n,), generator=g, device=device)
    labels[::13] = -100
    bf16_dw_gib = vocab * hidden * 2 / 2**30
    dense_ms = None  # triton_fused's median at this N, for the sparse rows' ratio
    for name, fn in providers(smoke).items():
        if only and name not in only:
            continue
        row = {"bench": "kd_jsd_fwd_bwd", "provider": name, "n": n, "hidden": hidden, "vocab": vocab,
               "dtype": str(dtype).replace("torch.", ""), "repeats": repeats, **common}
        if time.monotonic() > deadline:
            row["status"] = "skipped: time budget"
            _record.record("losses_gpu", [row])
            continue

        def free_grads():
            x_s.grad = None
            w_s.grad = None

        def step():
            free_grads()
            loss = fn(x_s, w_s, x_t, w_t, labels)
            if loss is not None:
                loss.backward()
            return loss

        try:
            loss = step()  # warm-up: compiles, autotunes
            step()
            row["loss"] = round(float(loss.detach()), 6) if loss is not None else ""
            free_grads()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                step()
                torch.cuda.synchronize()
                peak = (torch.cuda.max_memory_allocated() - base) / 2**30
                row["peak_extra_gib"] = round(peak, 3)
                row["peak_extra_minus_bf16_dw_gib"] = round(peak - bf16_dw_gib, 3)
            times = timed_ms(step, repeats, cuda)
            row["median_ms"] = round(statistics.median(times), 3)
            row["min_ms"] = round(min(times), 3)
            gemms = 3 if "sparse" in name else 4
            row["gemms"] = gemms
            row["effective_tflops"] = round(gemms * 2 * n * hidden * vocab / (row["median_ms"] * 1e-3) / 1e12, 1)
            if name == "triton_fused":
                dense_ms = row["median_ms"]
            if "sparse" in name:
                row["k"] = SPARSE_K
                if dense_ms:
                    row["vs_triton_fused"] = round(row["median_ms"] / dense_ms, 3)
            row["status"] = "ok"
            if profile and name == "triton_fused" and cuda:
                os.environ["KDLENS_PROFILE"] = "1"
                step()
                os.environ.pop("KDLENS_PROFILE")
                row["stage_ms"] = json.dumps({k: round(v, 3) for k, v in fused_linear.STAGE_MS.items()})
        except torch.OutOfMemoryError:
            row["status"] = "oom"
        except Exception as exc:  # noqa: BLE001 - one provider failing must not lose the others' rows
            row["status"] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
            traceback.print_exc()
        free_grads()
        if cuda:
            torch.cuda.empty_cache()
        _record.record("losses_gpu", [row])
        with open(out / "rows.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for losses_gpu.csv and rows.jsonl")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=200.0, help="providers that would start later are skipped")
    p.add_argument("--sizes", default="8192,1024,32768")
    p.add_argument("--only", default="", help="comma-separated providers (default: all)")
    p.add_argument("--correctness", default="not run", help="verdict of tests/losses/test_gpu.py (PASS/FAIL)")
    p.add_argument("--profile", action="store_true", help="per-stage CUDA-event timers of the fused path")
    p.add_argument("--smoke", action="store_true", help="toy sizes on any device (CPU: Triton interpreter)")
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _record.RESULTS = out
    hidden, vocab = (32, 500) if args.smoke else (4096, 151936)
    sizes = [64, 16] if args.smoke else [int(s) for s in args.sizes.split(",")]
    repeats = 2 if args.smoke else args.repeats
    _, liger_version = liger_class()
    common = {"correctness": args.correctness, "liger": liger_version}
    print(json.dumps(common), flush=True)
    only = {s for s in args.only.split(",") if s}
    for i, n in enumerate(sizes):
        # shape A gets every provider; the other sizes only the comparisons their targets name
        size_only = only or (set() if i == 0 else {"triton_fused", "triton_fused_bf16dw", "naive_torch", "liger_fljsd",
                                                   "triton_sparse_k64"})
        bench_size(n, hidden, vocab, repeats, START + args.budget_s, size_only, cuda, args.smoke, common, out,
                   args.profile and i == 0)
    print(f"done in {time.monotonic() - START:.0f} s", flush=True)


if __name__ == "__main__":
    main()
