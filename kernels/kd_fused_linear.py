"""Fused linear KD: hidden states + lm_head weights of student and teacher -> loss, dX, dW; never an N x V tensor.

For each chunk of ``c`` rows (c sized by a byte budget, at most N; 1024 at shape A on a GPU):
    Z_s = X_s[c] @ W_s[:V]^T, Z_t = X_t[c] @ W_t[:V]^T      GEMMs with fp32 output (fp32 accumulation)
    losses[c], G[c] = rows_fn(Z_s, Z_t, ...)                 element-wise: the Triton row kernel
                                                             (kd_logits.kd_rows) writes G over Z_s in place,
                                                             or into a slot of a half-precision ring on CUDA
    every ``ring_chunks`` chunks (and at the end), over the ring's rows r:
        dX[r] = G[r] @ W_s[:V]                               fp32 accumulation, stored in X's dtype
        dW   += G[r]^T @ X_s[r]                              fp32 accumulator [V_s, H_s]; K = ring rows, so
                                                             the fp32 read-modify-write of dW happens
                                                             N / (ring_chunks * c) times, not N / c
With a sparse (top-k cached) teacher there is no teacher GEMM (``teacher_hidden``/``teacher_weight`` None;
the row function reads the cache): three GEMMs per chunk. Four GEMMs per chunk otherwise, gradient formed in the forward pass (the teacher is never recomputed), two [c, V]
fp32 workspaces reused by every chunk, per-row losses summed on the device (no host sync). The GEMM
operands are cast once per call to ``compute_dtype`` (e.g. bf16 for fp32 master weights under bf16
training: plain fp32 GEMMs run about 10x slower on a GPU). dW is returned in the student weight's dtype:
the fp32 accumulator itself for fp32 weights, else converted once at the end of the forward in row
slices and freed; rows beyond the shared vocabulary are zero. No gradient buffer and no gradient pass
when neither dX nor dW is needed.
The loop takes the element-wise step as a callable so the torch.compile'd chunked path
(kdlens.losses.chunked) runs the very same loop with a torch element-wise function. This module imports
only torch at top level; Triton is imported when the default row function is used.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import torch

_HALF = (torch.float16, torch.bfloat16)
GRADIENT_RING_CHUNKS = 2  # half-precision gradient chunks per dX / dW GEMM (halves dW's fp32 read-modify-writes)


def gemm_f32(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (fp32) = a @ b with fp32 accumulation: cuBLAS bf16/fp16 -> fp32 on CUDA, fp32 GEMM otherwise."""
    if a.is_cuda and a.dtype in _HALF and b.dtype == a.dtype:
        return torch.mm(a, b, out_dtype=torch.float32, out=out)
    return torch.mm(a.float(), b.float(), out=out)


def addmm_f32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``acc`` (fp32) += a @ b with fp32 accumulation, in place."""
    if a.is_cuda and a.dtype in _HALF and b.dtype == a.dtype:
        return torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    return acc.addmm_(a.float(), b.float())


def chunk_rows_for(n_rows: int, vocab: int, chunk_bytes: int, bytes_per_element: int = 10, align: int = 1) -> int:
    """Rows per chunk so the [c, V] workspaces take about ``chunk_bytes`` (two fp32 logit buffers plus a
    half-precision gradient buffer = 10 bytes per element by default); rounded down to a multiple of
    ``align`` when that leaves at least ``align`` rows (GEMM tile alignment); at least 1, at most n_rows."""
    rows = max(1, int(chunk_bytes) // max(1, vocab * bytes_per_element))
    if rows >= align:
        rows -= rows % align
    return max(1, min(rows, n_rows))


CHUNK_ALIGN_ROWS = 128  # fused-path chunks are rounded to GEMM tiles (1024 rows at V = 151936 by default)


def fused_chunk_rows(n_rows: int, vocab: int, chunk_bytes: int) -> int:
    """Rows per chunk of the Triton fused path: two fp32 logit workspaces plus the ring of
    ``GRADIENT_RING_CHUNKS`` half-precision gradient chunks within ``chunk_bytes``, tile-aligned."""
    return chunk_rows_for(n_rows, vocab, chunk_bytes, bytes_per_element=8 + 2 * GRADIENT_RING_CHUNKS,
                          align=CHUNK_ALIGN_ROWS)


RowsFn = Callable[..., "tuple[torch.Tensor, torch.Tensor | None]"]


def triton_rows_fn(objective_id, temperature, kd_coef, ce_coef, mix, noise_sigma, noise_seed,
                   with_stats: bool = False) -> RowsFn:
    """The element-wise step backed by the Triton row kernel (gradient written into ``grad_buf`` when it
    is given; the teacher workspace ``z_t`` is private, so the noisy teacher logits overwrite it)."""
    from kdlens.kernels.kd_logits import kd_rows

    def rows_fn(z_s, z_t, weight, labels, row_offset, grad_buf):
        stats = torch.empty(z_s.shape[0], 3, dtype=torch.float32, device=z_s.device) if with_stats else None
        losses = kd_rows(
            z_s, z_t, weight, vocab=z_s.shape[1], objective_id=objective_id, temperature=temperature,
            kd_coef=kd_coef, ce_coef=ce_coef, labels=labels, mix=mix, noise_sigma=noise_sigma,
            noise_seed=noise_seed, row_offset=row_offset, grad_out=grad_buf, teacher_workspace=z_t,
            stats_out=stats,
        )
        return losses, grad_buf, stats

    return rows_fn


STAGE_MS: dict[str, float] = {}  # KDLENS_PROFILE=1: CUDA-event milliseconds per stage of the last call


class _StageTimer:
    """CUDA-event timers around the loop's stages, on only with KDLENS_PROFILE=1 on CUDA (the totals are
    read with one synchronisation at the end of the call, into ``STAGE_MS``)."""

    def __init__(self, device: torch.device):
        self.events: list | None = (
            [] if os.environ.get("KDLENS_PROFILE") == "1" and device.type == "cuda" else None)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if self.events is None:
            yield
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self.events.append((stage, start, end))

    def publish(self) -> None:
        if self.events is None:
            return
        torch.cuda.synchronize()
        STAGE_MS.clear()
        for stage, start, end in self.events:
            STAGE_MS[stage] = STAGE_MS.get(stage, 0.0) + start.elapsed_time(end)


def uses_half_gradient(x: torch.Tensor) -> bool:
    """True where the gradient goes to a half-precision ring (CUDA half operands); elsewhere it is
    written over the fp32 student-logit workspace. (A test forces the ring branch on the CPU.)"""
    return x.is_cuda and x.dtype in _HALF


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


def linear_kd_chunks(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    row_weight: torch.Tensor,
    labels: torch.Tensor | None,
    rows_fn: RowsFn,
    *,
    chunk_rows: int,
    row_offset: int = 0,
    need_dx: bool = True,
    need_dw: bool = True,
    pad_last_chunk: bool = False,
    compute_dtype: torch.dtype | None = None,
    ring_chunks: int = GRADIENT_RING_CHUNKS,
    dw_in_weight_dtype: bool = False,
    row_stats: torch.Tensor | None = None,
):
    """Run the chunk loop. Returns (loss fp32 scalar, dX or None [N, H_s] in X's dtype, dW or None
    [V_s, H_s] in W_s's dtype, zero beyond the shared vocabulary V). ``row_weight`` [N] fp32 folds masks
    and the reduction; ``labels`` [N] int64 or None. ``pad_last_chunk`` always hands ``rows_fn`` full
    [chunk_rows, V] buffers (stale rows get weight 0) so a torch.compile'd rows_fn sees a single shape.
    ``compute_dtype`` is the GEMM operand dtype (None: the inputs' own); ``ring_chunks`` chunks of
    half-precision gradient share one dX and one dW GEMM (CUDA half operands only).
    ``dw_in_weight_dtype`` accumulates dW directly in the weight's dtype (each dW GEMM still sums in fp32,
    then adds into the bf16 result: one rounding per GEMM) instead of an fp32 accumulator: the bf16
    dW's memory only, as Liger-Kernel does by default.
    ``rows_fn(z_s, z_t, weight, labels, row_offset, grad_buf)`` returns (weighted row losses, gradient or
    None, per-row token stats [rows, 3] or None); the stats rows are copied into ``row_stats`` [N, 3]
    when it is given. ``teacher_hidden`` and ``teacher_weight`` None: no teacher GEMM (a sparse teacher,
    which ``rows_fn`` reads itself; it gets ``z_t`` None), the vocabulary is the student's."""
    n, h_s = student_hidden.shape
    sparse = teacher_weight is None
    vocab = student_weight.shape[0] if sparse else min(student_weight.shape[0], teacher_weight.shape[0])
    device = student_hidden.device
    x_s = _cast(student_hidden, compute_dtype)
    x_t = None if sparse else _cast(teacher_hidden, compute_dtype)
    w_s = _cast(student_weight[:vocab], compute_dtype)
    w_t = None if sparse else _cast(teacher_weight[:vocab], compute_dtype)
    on_gpu_half = uses_half_gradient(x_s)
    if not on_gpu_half and not x_s.is_cuda and x_s.dtype != torch.float32:
        x_s, w_s = x_s.float(), w_s.float()  # CPU: upcast once
        if not sparse:
            x_t, w_t = x_t.float(), w_t.float()
    need_grad = need_dx or need_dw
    c = max(1, min(chunk_rows, n))
    ring = min(max(1, int(ring_chunks)), -(-n // c)) if (on_gpu_half and need_grad) else 1
    z_s = torch.empty(c, vocab, dtype=torch.float32, device=device)
    z_t = None if sparse else torch.empty(c, vocab, dtype=torch.float32, device=device)
    ring_buf = None
    if need_grad and on_gpu_half:
        ring_buf = torch.empty(ring * c, vocab, dtype=x_s.dtype, device=device)
    w_pad = torch.zeros(c, dtype=torch.float32, device=device)
    l_pad = torch.zeros(c, dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float32, device=device)
    d_x = torch.empty_like(student_hidden) if need_dx else None
    d_w = None
    dw_dtype = student_weight.dtype if dw_in_weight_dtype else torch.float32
    if need_dw:
        d_w = torch.empty(student_weight.shape[0], h_s, dtype=dw_dtype, device=device)
        d_w[vocab:].zero_()
    dw_started = False
    w_s_t = w_s.t()
    w_t_t = None if sparse else w_t.t()
    timer = _StageTimer(device)

    def flush(first: int, last: int, g: torch.Tensor) -> None:
        """dX and dW of rows [first, last) from their gradient ``g`` [last - first, V]."""
        nonlocal dw_started
        if g.dtype != x_s.dtype:
            g = g.to(x_s.dtype)
        if need_dx:
            with timer("dx_gemm"):
                if d_x.dtype == g.dtype:
                    torch.mm(g, w_s, out=d_x[first:last])
                elif d_x.dtype == torch.float32:
                    gemm_f32(g, w_s, d_x[first:last])
                else:
                    d_x[first:last] = torch.mm(g, w_s).to(d_x.dtype)
        if need_dw:
            with timer("dw_gemm"):
                if dw_dtype != torch.float32:  # accumulate in the weight's own (half) dtype
                    x_c = x_s[first:last] if x_s.dtype == dw_dtype else x_s[first:last].to(dw_dtype)
                    g_w = g if g.dtype == dw_dtype else g.to(dw_dtype)
                    if dw_started:
                        d_w[:vocab].addmm_(g_w.t(), x_c)
                    else:
                        torch.mm(g_w.t(), x_c, out=d_w[:vocab])
                elif dw_started:
                    addmm_f32_(d_w[:vocab], g.t(), x_s[first:last])
                else:
                    gemm_f32(g.t(), x_s[first:last], d_w[:vocab])
                dw_started = True

    ring_start = 0
    for start in range(0, n, c):
        end = min(start + c, n)
        rows = end - start
        padded = pad_last_chunk and rows < c
        m = c if padded else rows
        with timer("student_gemm"):
            gemm_f32(x_s[start:end], w_s_t, z_s[:rows])
        if not sparse:
            with timer("teacher_gemm"):
                gemm_f32(x_t[start:end], w_t_t, z_t[:rows])
        if padded:
            w_pad.zero_()
            w_pad[:rows] = row_weight[start:end]
            weight_c = w_pad
            if labels is not None:
                l_pad.zero_()
                l_pad[:rows] = labels[start:end]
            labels_c = l_pad if labels is not None else None
        else:
            weight_c = row_weight[start:end]
            labels_c = labels[start:end] if labels is not None else None
        if not need_grad:
            grad_buf = None
        elif ring_buf is not None:
            grad_buf = ring_buf[start - ring_start:start - ring_start + m]
        else:
            grad_buf = z_s[:m]
        with timer("row_kernel"):
            losses, grad, stats = rows_fn(z_s[:m], None if sparse else z_t[:m], weight_c, labels_c,
                                          row_offset + start, grad_buf)
        loss += losses[:rows].sum()
        if row_stats is not None:
            row_stats[start:end] = stats[:rows]
        if not need_grad:
            continue
        if ring_buf is None:
            flush(start, end, grad[:rows])
            continue
        if grad.data_ptr() != grad_buf.data_ptr():  # a torch rows_fn returns its own tensor
            grad_buf[:rows].copy_(grad[:rows])
        if end - ring_start >= ring_buf.shape[0] or end == n:
            flush(ring_start, end, ring_buf[: end - ring_start])
            ring_start = end
    grad_buf = grad = losses = stats = None
    del z_s, z_t, ring_buf  # free the workspaces before dW's conversion
    if d_w is not None and not dw_started:  # no rows at all
        d_w.zero_()
    if d_w is not None and d_w.dtype != student_weight.dtype:
        with timer("dw_convert"):
            d_w = _convert_rows(d_w, student_weight.dtype)
    timer.publish()
    return loss, d_x, d_w


def _convert_rows(acc: torch.Tensor, dtype: torch.dtype, rows_per_slice: int = 8192) -> torch.Tensor:
    """``acc`` converted to ``dtype`` slice by slice (no full-size temporary besides the result)."""
    out = torch.empty(acc.shape, dtype=dtype, device=acc.device)
    for i in range(0, acc.shape[0], rows_per_slice):
        out[i:i + rows_per_slice].copy_(acc[i:i + rows_per_slice])
    return out
