"""GPU check and benchmark of kdlens's KD losses against naive torch, Liger-Kernel and a cuBLAS GEMM ceiling.

Part 1 (correctness, on the GPU): every objective, Triton logits-level, Triton fused linear and chunked vs
the reference (fp32, awkward shape, noise, CE, masks); bf16 inputs with logit std ~30 vs an fp32-GEMM /
fp64-softmax reference (target: max relative gradient error <= 1%); Liger's JSD loss value vs ours.
Part 2 (speed and memory): forward+backward of JSD(beta=0.5), T=1, token mean, bf16, H=4096, V=151936,
N in {1024, 8192 (shape A), 32768}; median of --repeats runs timed with CUDA events; peak memory above the
inputs (torch.cuda.max_memory_allocated). Providers: naive_torch (full logits, autograd), chunked_compiled,
triton_logits (torch GEMMs to full logits + the Triton row kernel), triton_fused_linear, liger_fused_linear_jsd
(if liger-kernel is importable), cublas_4gemm (the 4 GEMMs alone: the practical ceiling).
Everything goes to <out>/losses_gpu.csv (rows in benches/_record.py's format) and <out>/correctness.json.
A deadline (--budget-s) skips what would not fit. Run through benches/gpu/run_gpu.sh on the GPU machine;
on a CPU, ``--smoke`` runs both parts at toy sizes (Triton through TRITON_INTERPRET=1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches"))
sys.path.insert(0, str(ROOT / "python"))

from kdlens.losses import OBJECTIVES, kd_loss  # noqa: E402

START = time.monotonic()


def _elapsed() -> float:
    return time.monotonic() - START


def _ref_grads(x_s, w_s, x_t, w_t, kw):
    """fp32 GEMM (on the given-precision inputs upcast), fp64 softmax: the accuracy reference."""
    xs = x_s.detach().float().requires_grad_()
    ws = w_s.detach().float().requires_grad_()
    z_s = (xs @ ws.t()).double()
    z_t = (x_t.float() @ w_t.float().t()).double()
    loss = kd_loss(z_s, z_t, implementation="reference", **kw)
    loss.backward()
    return loss.detach(), xs.grad, ws.grad


def _run_impl(impl, x_s, w_s, x_t, w_t, kw, **extra):
    xs = x_s.detach().clone().requires_grad_()
    ws = w_s.detach().clone().requires_grad_()
    loss = kd_loss(student_hidden=xs, student_weight=ws, teacher_hidden=x_t, teacher_weight=w_t,
                   implementation=impl, **kw, **extra)
    loss.backward()
    return loss.detach(), xs.grad, ws.grad


def _rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def correctness(device, smoke: bool) -> dict:
    out = {"fp32": [], "bf16": [], "liger": None}
    g = torch.Generator(device="cpu").manual_seed(0)
    n, h, v = (37, 24, 1001) if smoke else (301, 256, 32003)
    mk = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    x_s, x_t = mk(n, h), mk(n, h + 8)
    w_s, w_t = mk(v + 64, h) * 3 / h**0.5, mk(v, h + 8) * 3 / (h + 8) ** 0.5
    labels = torch.randint(0, v, (n,), generator=g).to(device)
    labels[::7] = -100
    impls = ["chunked", "triton"]
    for objective in OBJECTIVES:
        kw = dict(objective=objective, temperature=2.0, scale_by_t2=True, noise_sigma=1.0, noise_seed=3,
                  ce_weight=0.2, labels=labels, beta=0.3, alpha=0.2)
        ref = _ref_grads(x_s, w_s, x_t, w_t, kw)
        for impl in impls:
            got = _run_impl(impl, x_s, w_s, x_t, w_t, kw, compile=not smoke)
            out["fp32"].append({"objective": objective, "impl": impl, "loss_rel_err": _rel_err(got[0], ref[0]),
                                "dx_rel_err": _rel_err(got[1], ref[1]), "dw_rel_err": _rel_err(got[2], ref[2])})
        # logits-level Triton kernel
        z_s = (x_s @ w_s[:v].t()).requires_grad_()
        loss = kd_loss(z_s, x_t @ w_t.t(), implementation="triton", **kw)
        loss.backward()
        zr = (x_s @ w_s[:v].t()).double().requires_grad_()
        lr = kd_loss(zr, (x_t @ w_t.t()).double(), implementation="reference", **kw)
        lr.backward()
        out["fp32"].append({"objective": objective, "impl": "triton_logits", "loss_rel_err": _rel_err(loss, lr),
                            "dz_rel_err": _rel_err(z_s.grad, zr.grad)})
    # bf16, logit std ~30, T in {0.25, 1, 10}, sigma in {0, 5}
    x_s16, x_t16 = x_s.bfloat16(), x_t.bfloat16()
    w_s16, w_t16 = (w_s * 10).bfloat16(), (w_t * 10).bfloat16()
    for objective in ("forward_kl", "reverse_kl", "jsd"):
        for t, sigma in ((0.25, 0.0), (1.0, 5.0), (10.0, 0.0)):
            kw = dict(objective=objective, temperature=t, noise_sigma=sigma, labels=labels)
            ref = _ref_grads(x_s16, w_s16, x_t16, w_t16, kw)
            got = _run_impl("triton", x_s16, w_s16, x_t16, w_t16, kw)
            out["bf16"].append({"objective": objective, "T": t, "sigma": sigma,
                                "finite": bool(torch.isfinite(got[0]) and torch.isfinite(got[1]).all()
                                               and torch.isfinite(got[2]).all()),
                                "loss_rel_err": _rel_err(got[0], ref[0]), "dx_rel_err": _rel_err(got[1], ref[1]),
                                "dw_rel_err": _rel_err(got[2], ref[2])})
    liger = _liger()
    if liger is not None and device.type == "cuda":
        jsd = liger(jsd_beta=0.5, ignore_index=-100, temperature=1.0)
        theirs = jsd(x_s.bfloat16(), w_s[:v].bfloat16(), x_t.bfloat16(), w_t.bfloat16(), labels)
        ours = kd_loss(student_hidden=x_s.bfloat16(), student_weight=w_s[:v].bfloat16(),
                       teacher_hidden=x_t.bfloat16(), teacher_weight=w_t.bfloat16(), objective="jsd", beta=0.5,
                       labels=labels, implementation="triton")
        out["liger"] = {"liger_loss": float(theirs), "kdlens_loss": float(ours)}
    return out


def _liger():
    try:
        from liger_kernel.transformers import LigerFusedLinearJSD

        return LigerFusedLinearJSD
    except Exception:
        return None


def _providers(device, smoke):
    def naive(x_s, w_s, x_t, w_t, labels):
        z_s = (x_s @ w_s.t()).float()
        with torch.no_grad():
            z_t = (x_t @ w_t.t()).float()
        return kd_loss(z_s, z_t, objective="jsd", beta=0.5, labels=labels, implementation="reference")

    def chunked(x_s, w_s, x_t, w_t, labels):
        return kd_loss(student_hidden=x_s, student_weight=w_s, teacher_hidden=x_t, teacher_weight=w_t,
                       objective="jsd", beta=0.5, labels=labels, implementation="chunked", compile=not smoke)

    def triton_logits(x_s, w_s, x_t, w_t, labels):
        z_s = x_s @ w_s.t()
        with torch.no_grad():
            z_t = x_t @ w_t.t()
        return kd_loss(z_s, z_t, objective="jsd", beta=0.5, labels=labels, implementation="triton")

    def triton_fused(x_s, w_s, x_t, w_t, labels):
        return kd_loss(student_hidden=x_s, student_weight=w_s, teacher_hidden=x_t, teacher_weight=w_t,
                       objective="jsd", beta=0.5, labels=labels, implementation="triton")

    providers = {"naive_torch": naive, "chunked_compiled": chunked, "triton_logits": triton_logits,
                 "triton_fused_linear": triton_fused}
    liger_cls = _liger()
    if liger_cls is not None and device.type == "cuda":
        liger = liger_cls(jsd_beta=0.5, ignore_index=-100, temperature=1.0)
        providers["liger_fused_linear_jsd"] = lambda x_s, w_s, x_t, w_t, labels: liger(x_s, w_s, x_t, w_t, labels)
    return providers


def _time(fn, repeats, device):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
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
    return statistics.median(times)


def bench(device, sizes, hidden, vocab, repeats, budget_s, smoke) -> list[dict]:
    rows = []
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for n in sizes:
        g = torch.Generator(device="cpu").manual_seed(1)
        x_s = (torch.randn(n, hidden, generator=g)).to(device, dtype).requires_grad_()
        x_t = (torch.randn(n, hidden, generator=g)).to(device, dtype)
        w_s = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).to(device, dtype).requires_grad_()
        w_t = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).to(device, dtype)
        labels = torch.randint(0, vocab, (n,), generator=g).to(device)
        d_w_bytes = vocab * hidden * 4
        providers = dict(_providers(device, smoke))

        def gemms():
            z = x_s.detach() @ w_s.detach().t()
            zt = x_t @ w_t.t()
            _ = z @ w_s.detach()
            _ = zt.t() @ x_s.detach()

        providers["cublas_4gemm"] = gemms
        for name, fn in providers.items():
            if _elapsed() > budget_s:
                rows.append({"n": n, "provider": name, "status": "skipped: time budget"})
                continue

            def step():
                x_s.grad = None
                w_s.grad = None
                out = fn(x_s, w_s, x_t, w_t, labels) if name != "cublas_4gemm" else fn()
                if out is not None:
                    out.backward()

            row = {"bench": "kd_jsd_fwd_bwd", "provider": name, "n": n, "hidden": hidden, "vocab": vocab,
                   "dtype": str(dtype).replace("torch.", ""), "repeats": repeats}
            try:
                step()  # warm-up (compiles)
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                row["median_ms"] = round(_time(step, repeats, device), 3)
                if device.type == "cuda":
                    row["peak_extra_gib"] = round((torch.cuda.max_memory_allocated() - base) / 2**30, 3)
                    row["peak_extra_minus_dw_gib"] = round((torch.cuda.max_memory_allocated() - base - d_w_bytes)
                                                           / 2**30, 3)
                    flops = 4 * 2 * n * hidden * vocab
                    row["effective_tflops"] = round(flops / (row["median_ms"] * 1e-3) / 1e12, 1)
                row["status"] = "ok"
            except torch.OutOfMemoryError:
                row["status"] = "oom"
            except Exception as exc:  # a provider failing must not lose the others' numbers
                row["status"] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
                traceback.print_exc()
            x_s.grad = None
            w_s.grad = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(row, flush=True)
            rows.append(row)
        x_s = x_t = w_s = w_t = None  # free this size's tensors before the next size's
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for losses_gpu.csv and correctness.json")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--budget-s", type=float, default=420.0, help="skip benchmarks that start after this")
    p.add_argument("--sizes", default="8192,1024,32768")
    p.add_argument("--smoke", action="store_true", help="toy sizes on any device (CPU: Triton interpreter)")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hidden, vocab = (32, 500) if args.smoke else (4096, 151936)
    sizes = [8, 16] if args.smoke else [int(s) for s in args.sizes.split(",")]
    repeats = 2 if args.smoke else args.repeats
    try:
        result = correctness(device, args.smoke)
    except Exception:
        result = {"error": traceback.format_exc()}
    result["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result["seconds"] = round(_elapsed(), 1)
    (out / "correctness.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result)[:4000], flush=True)
    rows = bench(device, sizes, hidden, vocab, repeats, args.budget_s, args.smoke)
    import _record

    _record.RESULTS = out
    _record.record("losses_gpu", rows)
    print(f"done in {_elapsed():.0f} s", flush=True)


if __name__ == "__main__":
    main()
