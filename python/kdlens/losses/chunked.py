"""The torch.compile'd chunked KD loss: plain PyTorch on row chunks, gradient formed in the forward pass.

``chunk_loss_and_grad`` is the element-wise step for a [c, V] chunk of student and teacher logits: the
same closed-form per-row losses and gradients as the Triton kernel (kernels/kd_logits.py documents the
math), written with torch ops so inductor fuses them. Two drivers use it:
- ``ChunkedLinearKD``: hidden states + lm_head weights (the chunk loop of kdlens.kernels.kd_fused_linear,
  4 GEMMs per chunk, no N x V tensor), the default off-GPU path;
- ``ChunkedLogitsKD``: given logits [N, V], processed chunk by chunk (only the N x V gradient, which the
  caller needs anyway, is allocated).
Runs on CPU and GPU; ``compile=False`` runs the same code eagerly (tests use both).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlens.kernels.kd_fused_linear import chunk_rows_for, linear_kd_chunks
from kdlens.losses.noise import philox_randn
from kdlens.losses.options import KDOptions


def chunk_loss_and_grad(
    z_s: torch.Tensor,
    z_t: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor | None,
    noise: torch.Tensor | None,
    *,
    objective_id: int,
    inv_t: float,
    kd_coef: float,
    ce_coef: float,
    beta: float,
    write_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weighted per-row losses [c] and dLoss/dz_s [c, V] (fp32) for one chunk; ``beta`` carries alpha for skews.

    ``noise`` is sigma * eps for the chunk's rows (from ``chunk_noise``) or None; it is generated outside
    this function because inductor takes minutes to compile the 10 Philox rounds."""
    z_s = z_s.float()
    z_t = z_t.float()
    if noise is not None:
        z_t = z_t + noise
    # Eager mode runs each line as one pass over [c, V] memory, so this body avoids passes and
    # temporaries: no scaling at T = 1, in-place updates of its own temporaries (never of the inputs),
    # and the closed form of the forward-KL gradient (h - q c = q - p, as sum p = 1).
    lq = torch.log_softmax(z_s * inv_t if inv_t != 1.0 else z_s, dim=-1)
    lp = torch.log_softmax(z_t * inv_t if inv_t != 1.0 else z_t, dim=-1)
    q = lq.exp()
    p = lp.exp()
    scale = (weight * (kd_coef * inv_t)).unsqueeze(-1)
    grad = None
    if objective_id == 0:  # forward KL(p || q): sum p (lp - lq); d/dz_s = (q - p) / T
        row_loss = kd_coef * (lp - lq).mul_(p).sum(-1)
        if write_grad:
            grad = q.sub_(p).mul_(scale)
    elif objective_id == 1:  # reverse KL(q || p): h = q (lq - lp), c = sum h; d/dz_s = (h - q c) / T
        h = (lq - lp).mul_(q)
        c = h.sum(-1, keepdim=True)
        row_loss = kd_coef * c.squeeze(-1)
        if write_grad:
            grad = h.sub_(q.mul_(c)).mul_(scale)
    else:
        if objective_id in (2, 4):  # jsd(beta) / skew forward KL(alpha): m = beta p + (1 - beta) q
            lm = torch.logaddexp(lp + math.log(beta), lq + math.log1p(-beta))
            if objective_id == 2:
                term = beta * p * (lp - lm) + (1.0 - beta) * q * (lq - lm)
                h = (1.0 - beta) * q * (lq - lm)
            else:
                term = p * (lp - lm)
                h = -(1.0 - beta) * torch.exp(lq + lp - lm)
        elif objective_id == 3:
            term = 0.5 * (q - p).abs()
            h = 0.5 * q * torch.sign(q - p)
        elif objective_id == 5:  # skew reverse KL(alpha): m = alpha q + (1 - alpha) p
            lm = torch.logaddexp(lq + math.log(beta), lp + math.log1p(-beta))
            term = q * (lq - lm)
            h = term - beta * torch.exp(2.0 * lq - lm)
        else:
            term = (p - q) * (lp - lq)
            h = q * (lq - lp) - p
        row_loss = kd_coef * term.sum(-1)
        if write_grad:
            c = h.sum(-1, keepdim=True)
            grad = (h - q * c).mul_(scale)
    if ce_coef != 0.0:
        log_soft = torch.log_softmax(z_s, dim=-1)
        safe = labels.clamp_min(0)
        row_loss = row_loss - ce_coef * log_soft.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        if write_grad:
            onehot = F.one_hot(safe, z_s.shape[1]).to(torch.float32)
            grad = grad + (weight * ce_coef).unsqueeze(-1) * (log_soft.exp() - onehot)
    return weight * row_loss, grad


def chunk_noise(opts: KDOptions, row_start: int, n_rows: int, vocab: int, device) -> torch.Tensor | None:
    """sigma * eps for global rows noise_row_offset + row_start + [0, n_rows), or None without noise."""
    if not opts.has_noise:
        return None
    rows = torch.arange(n_rows, device=device) + (opts.noise_row_offset + row_start)
    return opts.noise_sigma * philox_randn(int(opts.noise_seed), rows, vocab)


_COMPILED = None


def _compiled_chunk_loss_and_grad(z_s, z_t, weight, labels, noise, **kw):
    """``chunk_loss_and_grad`` compiled once for every row count.

    The number of rows of a chunk is ``min(budget rows, N)`` and N (valid positions of a batch) changes
    from step to step, so a shape-specialised graph recompiled at every new N (and fell back to eager
    after torch._dynamo's recompile limit): the compiled KD step ran 5x slower than eager. The row
    dimension is marked dynamic instead; the vocabulary dimension stays static, so inductor still
    vectorises the inner loop over V with a known trip count. A chunk of 1 row gets its own (second)
    graph, as torch specialises sizes 0 and 1."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(chunk_loss_and_grad, dynamic=False)
    for t in (z_s, z_t, weight, labels, noise):
        if t is not None:
            torch._dynamo.maybe_mark_dynamic(t, 0)
    return _COMPILED(z_s, z_t, weight, labels, noise, **kw)


def _elementwise(compile: bool):
    return _compiled_chunk_loss_and_grad if compile else chunk_loss_and_grad


def _kwargs(opts: KDOptions, write_grad: bool) -> dict:
    return dict(
        objective_id=opts.objective_id,
        inv_t=1.0 / opts.temperature,
        kd_coef=opts.kd_coef,
        ce_coef=opts.ce_weight,
        beta=opts.beta if opts.objective == "jsd" else opts.alpha,
        write_grad=write_grad,
    )


def save_precomputed_grads(ctx, d_x, d_w, weight) -> None:
    """Keep the gradients a fused-linear forward formed (those that were asked for) for backward."""
    ctx.save_for_backward(*(t for t in (d_x, d_w) if t is not None))
    ctx.has = (d_x is not None, d_w is not None)
    ctx.w_shape, ctx.w_dtype = weight.shape, weight.dtype


def precomputed_grads(ctx, grad_loss):
    """(d_x, d_w) of :func:`save_precomputed_grads` times the incoming gradient; d_w covers the
    student's whole vocabulary (columns beyond the shared prefix get zero) in the weight's dtype."""
    saved = list(ctx.saved_tensors)
    d_x = d_w = None
    if ctx.has[0]:
        d_x = saved.pop(0) * grad_loss
    if ctx.has[1]:
        d_w_shared = saved.pop(0).mul_(grad_loss)  # fp32 [V, H]: scale in place, no second copy
        if tuple(d_w_shared.shape) == tuple(ctx.w_shape) and d_w_shared.dtype == ctx.w_dtype:
            d_w = d_w_shared
        else:
            d_w = torch.zeros(ctx.w_shape, dtype=ctx.w_dtype, device=d_w_shared.device)
            d_w[: d_w_shared.shape[0]] = d_w_shared.to(ctx.w_dtype)
    return d_x, d_w


class ChunkedLinearKD(torch.autograd.Function):
    """loss = KD over hidden states and lm_head weights, chunked; backward returns dX and dW formed in forward."""

    @staticmethod
    def forward(ctx, x_s, w_s, x_t, w_t, row_weight, labels, opts: KDOptions, chunk_bytes: int, compile: bool):
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        fn = _elementwise(compile)
        kw = _kwargs(opts, need_dx or need_dw)

        def rows_fn(z_s, z_t, weight, labels_c, row_offset, grad_buf):
            noise = chunk_noise(opts, row_offset - opts.noise_row_offset, z_s.shape[0], z_s.shape[1], z_s.device)
            return fn(z_s, z_t, weight, labels_c, noise, **kw)

        vocab = min(w_s.shape[0], w_t.shape[0])
        # the torch path keeps about 6 live fp32 [c, V] tensors when eager, fewer when compiled
        rows = chunk_rows_for(x_s.shape[0], vocab, chunk_bytes, bytes_per_element=24)
        loss, d_x, d_w = linear_kd_chunks(
            x_s, w_s, x_t, w_t, row_weight, labels, rows_fn, chunk_rows=rows,
            row_offset=opts.noise_row_offset, need_dx=need_dx, need_dw=need_dw, pad_last_chunk=compile,
        )
        save_precomputed_grads(ctx, d_x, d_w, w_s)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        return (*precomputed_grads(ctx, grad_loss), None, None, None, None, None, None, None)


class ChunkedLogitsKD(torch.autograd.Function):
    """loss = KD over given logits [N, V_s], [N, V_t], chunk by chunk; gradient w.r.t. the student logits only."""

    @staticmethod
    def forward(ctx, z_s, z_t, row_weight, labels, opts: KDOptions, chunk_bytes: int, compile: bool):
        need_grad = ctx.needs_input_grad[0]
        n = z_s.shape[0]
        vocab = min(z_s.shape[1], z_t.shape[1])
        fn = _elementwise(compile)
        kw = _kwargs(opts, need_grad)
        rows = chunk_rows_for(n, vocab, chunk_bytes, bytes_per_element=24)
        grad = torch.zeros_like(z_s) if need_grad else None
        loss = torch.zeros((), dtype=torch.float32, device=z_s.device)
        for start in range(0, n, rows):
            end = min(start + rows, n)
            s_c, t_c = z_s[start:end, :vocab], z_t[start:end, :vocab]
            w_c = row_weight[start:end]
            l_c = labels[start:end] if labels is not None else None
            if compile and end - start < rows:  # one compiled shape: pad the tail chunk with weight-0 rows
                pad = rows - (end - start)
                s_c = F.pad(s_c, (0, 0, 0, pad))
                t_c = F.pad(t_c, (0, 0, 0, pad))
                w_c = F.pad(w_c, (0, pad))
                l_c = F.pad(l_c, (0, pad)) if l_c is not None else None
            noise = chunk_noise(opts, start, s_c.shape[0], vocab, z_s.device)
            losses, g = fn(s_c, t_c, w_c, l_c, noise, **kw)
            loss += losses.sum()
            if need_grad:
                grad[start:end, :vocab] = g[: end - start].to(grad.dtype)
        ctx.save_for_backward(*([grad] if need_grad else []))
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad = ctx.saved_tensors[0] * grad_loss.to(ctx.saved_tensors[0].dtype) if ctx.saved_tensors else None
        return grad, None, None, None, None, None, None
