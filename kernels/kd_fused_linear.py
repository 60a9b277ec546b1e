"""Fused linear KD: hidden states + lm_head weights of student and teacher -> loss, dX, dW; never an N x V tensor.

For each chunk of ``c`` rows (c sized by a byte budget, at most N):
    Z_s = X_s[c] @ W_s[:V]^T, Z_t = X_t[c] @ W_t[:V]^T      GEMMs with fp32 output (fp32 accumulation)
    losses[c], G[c] = rows_fn(Z_s, Z_t, ...)                 element-wise: the Triton row kernel
                                                             (kd_logits.kd_rows) writes G over Z_s in place,
                                                             or a bf16 buffer on CUDA half inputs
    dX[c] = G @ W_s[:V]                                      fp32 accumulation, stored in X's dtype
    dW   += G^T @ X_s[c]                                     fp32 accumulator [V, H_s] across chunks
Four GEMMs per chunk, gradient formed in the forward pass (the teacher is never recomputed), two [c, V]
fp32 workspaces reused by every chunk, per-row losses summed on the device (no host sync).
The loop takes the element-wise step as a callable so the torch.compile'd chunked path
(kdlens.losses.chunked) runs the very same loop with a torch element-wise function. This module imports
only torch at top level; Triton is imported when the default row function is used.
"""

from __future__ import annotations

from typing import Callable

import torch

_HALF = (torch.float16, torch.bfloat16)


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


def chunk_rows_for(n_rows: int, vocab: int, chunk_bytes: int, bytes_per_element: int = 10) -> int:
    """Rows per chunk so the [c, V] workspaces take about ``chunk_bytes`` (two fp32 logit buffers plus a
    half-precision gradient buffer = 10 bytes per element by default); at least 1, at most n_rows."""
    rows = max(1, int(chunk_bytes) // max(1, vocab * bytes_per_element))
    return max(1, min(rows, n_rows))


RowsFn = Callable[..., "tuple[torch.Tensor, torch.Tensor]"]


def triton_rows_fn(objective_id, temperature, kd_coef, ce_coef, beta, noise_sigma, noise_seed) -> RowsFn:
    """The element-wise step backed by the Triton row kernel (gradient written into ``grad_buf``)."""
    from kdlens.kernels.kd_logits import kd_rows

    def rows_fn(z_s, z_t, weight, labels, row_offset, grad_buf):
        losses = kd_rows(
            z_s, z_t, weight, vocab=z_s.shape[1], objective_id=objective_id, temperature=temperature,
            kd_coef=kd_coef, ce_coef=ce_coef, labels=labels, beta=beta, noise_sigma=noise_sigma,
            noise_seed=noise_seed, row_offset=row_offset, grad_out=grad_buf,
        )
        return losses, grad_buf

    return rows_fn


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
):
    """Run the chunk loop. Returns (loss fp32 scalar, dX or None [N, H_s] in X's dtype, dW or None fp32
    [V, H_s] with V = the shared vocabulary). ``row_weight`` [N] fp32 folds masks and the reduction;
    ``labels`` [N] int64 or None. ``pad_last_chunk`` always hands ``rows_fn`` full [chunk_rows, V] buffers
    (stale rows get weight 0) so a torch.compile'd rows_fn sees a single shape."""
    n, h_s = student_hidden.shape
    vocab = min(student_weight.shape[0], teacher_weight.shape[0])
    w_s = student_weight[:vocab]
    w_t = teacher_weight[:vocab]
    device = student_hidden.device
    on_gpu_half = student_hidden.is_cuda and student_hidden.dtype in _HALF
    if not student_hidden.is_cuda and student_hidden.dtype != torch.float32:
        w_s = w_s.float()  # CPU: upcast once, not once per chunk
        w_t = w_t.float()
    c = max(1, min(chunk_rows, n))
    z_s = torch.empty(c, vocab, dtype=torch.float32, device=device)
    z_t = torch.empty(c, vocab, dtype=torch.float32, device=device)
    grad_buf = torch.empty(c, vocab, dtype=student_hidden.dtype, device=device) if on_gpu_half else z_s
    w_pad = torch.zeros(c, dtype=torch.float32, device=device)
    l_pad = torch.zeros(c, dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float32, device=device)
    d_x = torch.empty_like(student_hidden) if need_dx else None
    d_w = torch.zeros(vocab, h_s, dtype=torch.float32, device=device) if need_dw else None
    w_s_t = w_s.t()
    w_t_t = w_t.t()
    for start in range(0, n, c):
        end = min(start + c, n)
        rows = end - start
        x_c = student_hidden[start:end]
        padded = pad_last_chunk and rows < c
        m = c if padded else rows
        gemm_f32(x_c, w_s_t, z_s[:rows])
        gemm_f32(teacher_hidden[start:end], w_t_t, z_t[:rows])
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
        losses, grad = rows_fn(z_s[:m], z_t[:m], weight_c, labels_c, row_offset + start, grad_buf[:m])
        loss += losses[:rows].sum()
        if need_dx or need_dw:
            g = grad[:rows]
            if g.dtype != student_hidden.dtype and student_hidden.is_cuda:
                g = g.to(student_hidden.dtype)
            if need_dx:
                if student_hidden.is_cuda or g.dtype == student_hidden.dtype:
                    torch.mm(g, w_s.to(g.dtype), out=d_x[start:end])
                else:
                    d_x[start:end] = torch.mm(g, w_s.to(g.dtype)).to(student_hidden.dtype)
            if need_dw:
                addmm_f32_(d_w, g.t(), x_c if g.dtype == x_c.dtype else x_c.to(g.dtype))
    return loss, d_x, d_w
