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

from kdlens.errors import KdlensError

from kdlens.kernels.kd_fused_linear import chunk_rows_for, linear_kd_chunks
from kdlens.losses.noise import philox_randn
from kdlens.losses.options import KDOptions
from kdlens.objectives import KERNEL_IDS

_FKL, _RKL, _JSD, _TVD, _SKEW_FKL, _SKEW_RKL = (
    KERNEL_IDS[n] for n in ("forward_kl", "reverse_kl", "jsd", "tvd", "skew_forward_kl", "skew_reverse_kl"))


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
    mix: float,
    write_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weighted per-row losses [c] and dLoss/dz_s [c, V] (fp32) for one chunk; ``mix`` is the objective's
    mixture weight (JSD's beta, the skew objectives' alpha), ``objective_id`` its kernel id.

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
    # CE needs log_softmax(z_s) at T = 1: at inv_t == 1 that is lq (never updated in place below)
    log_soft = None
    if ce_coef != 0.0:
        log_soft = lq if inv_t == 1.0 else torch.log_softmax(z_s, dim=-1)
    # a teacher probability of 0 (logit -inf) contributes 0 to p * log(p / .), never 0 * -inf = NaN:
    # the objectives with such terms read lp clamped to the lowest finite float (p = 0 there already),
    # in place, so eager mode pays one pass and no temporary
    lp_safe = lp.clamp_min_(torch.finfo(lp.dtype).min) if objective_id in (_FKL, _JSD, _SKEW_FKL) else lp
    scale = (weight * (kd_coef * inv_t)).unsqueeze(-1)
    grad = None
    if objective_id == _FKL:  # forward KL(p || q): sum p (lp - lq); d/dz_s = (q - p) / T
        row_loss = kd_coef * (lp_safe - lq).mul_(p).sum(-1)
        if write_grad:
            grad = q.sub_(p).mul_(scale)
    elif objective_id == _RKL:  # reverse KL(q || p): h = q (lq - lp), c = sum h; d/dz_s = (h - q c) / T
        h = (lq - lp).mul_(q)
        c = h.sum(-1, keepdim=True)
        row_loss = kd_coef * c.squeeze(-1)
        if write_grad:
            grad = h.sub_(q.mul_(c)).mul_(scale)
    else:
        if objective_id in (_JSD, _SKEW_FKL):  # jsd(beta) / skew forward KL(alpha): m = mix p + (1 - mix) q
            lm = torch.logaddexp(lp + math.log(mix), lq + math.log1p(-mix))
            if objective_id == _JSD:
                term = mix * p * (lp_safe - lm) + (1.0 - mix) * q * (lq - lm)
                h = (1.0 - mix) * q * (lq - lm)
            else:
                term = p * (lp_safe - lm)
                h = -(1.0 - mix) * torch.exp(lq + lp - lm)
        elif objective_id == _TVD:
            term = 0.5 * (q - p).abs()
            h = 0.5 * q * torch.sign(q - p)
        elif objective_id == _SKEW_RKL:  # skew reverse KL(alpha): m = mix q + (1 - mix) p
            lm = torch.logaddexp(lq + math.log(mix), lp + math.log1p(-mix))
            term = q * (lq - lm)
            h = term - mix * torch.exp(2.0 * lq - lm)
        else:  # symmetric KL
            term = (p - q) * (lp - lq)
            h = q * (lq - lp) - p
        row_loss = kd_coef * term.sum(-1)
        if write_grad:
            c = h.sum(-1, keepdim=True)
            grad = (h - q * c).mul_(scale)
    if log_soft is not None:
        # labels are validated by kd_loss (in [0, V) or ignore_index); ignored rows have weight 0
        safe = labels.clamp(0, z_s.shape[1] - 1).unsqueeze(-1)
        row_loss = row_loss - ce_coef * log_soft.gather(-1, safe).squeeze(-1)
        if write_grad:
            ce_scale = (weight * ce_coef).unsqueeze(-1)
            grad = grad + ce_scale * log_soft.exp()
            grad = grad.scatter_add(-1, safe, -ce_scale)  # - onehot(label), without a [c, V] one-hot
    return weight * row_loss, grad


def chunk_noise(opts: KDOptions, row_start: int, n_rows: int, vocab: int, device) -> torch.Tensor | None:
    """sigma * eps for global rows noise_row_offset + row_start + [0, n_rows), or None without noise."""
    if not opts.has_noise:
        return None
    rows = torch.arange(n_rows, device=device) + (opts.noise_row_offset + row_start)
    return opts.noise_sigma * philox_randn(int(opts.noise_seed), rows, vocab)


_COMPILED: dict = {}


def _compiled_chunk_loss_and_grad(z_s, z_t, weight, labels, noise, **kw):
    """``chunk_loss_and_grad`` compiled once for every row count.

    The number of rows of a chunk is ``min(budget rows, N)`` and N (valid positions of a batch) changes
    from step to step, so a shape-specialised graph recompiled at every new N (and fell back to eager
    after torch._dynamo's recompile limit): the compiled KD step ran 5x slower than eager. The row
    dimension is marked dynamic instead; the vocabulary dimension stays static, so inductor still
    vectorises the inner loop over V with a known trip count. A chunk of 1 row gets its own (second)
    graph, as torch specialises sizes 0 and 1.

    One compiled function per variant (objective, gradient or not, CE or not, noise or not, dtypes, vocab):
    a single function shared by every variant would pass dynamo's recompile limit (8) and silently fall
    back to eager; this way each function holds at most its two row-count graphs."""
    key = (kw["objective_id"], kw["write_grad"], labels is not None, noise is not None, z_s.dtype, z_t.dtype,
           z_s.shape[1], z_s.device.type)
    fn = _COMPILED.get(key)
    if fn is None:
        fn = _COMPILED[key] = torch.compile(chunk_loss_and_grad, dynamic=False)
    for t in (z_s, z_t, weight, labels, noise):
        if t is not None:
            torch._dynamo.maybe_mark_dynamic(t, 0)
    return fn(z_s, z_t, weight, labels, noise, **kw)


def _elementwise(compile: bool):
    return _compiled_chunk_loss_and_grad if compile else chunk_loss_and_grad


def _kwargs(opts: KDOptions, write_grad: bool) -> dict:
    return dict(
        objective_id=opts.objective_id,
        inv_t=1.0 / opts.temperature,
        kd_coef=opts.kd_coef,
        ce_coef=opts.ce_weight,
        mix=opts.mix,
        write_grad=write_grad,
    )


def save_precomputed_grads(ctx, d_x, d_w) -> None:
    """Keep the gradients a fused-linear forward formed (those that were asked for) for backward.

    They are held on ``ctx`` rather than through save_for_backward, so that backward can hand them over
    and scale them in place without a second [V, H] copy; a second backward through the same graph
    (retain_graph=True) is therefore refused with a clear error instead of double-scaling."""
    ctx.kd_grads = (d_x, d_w)


def precomputed_grads(ctx, grad_loss):
    """(d_x, d_w) of :func:`save_precomputed_grads` times the incoming scalar gradient (in place: the
    tensors belong to this backward alone)."""
    grads = getattr(ctx, "kd_grads", None)
    if grads is None:
        raise KdlensError(
            "kd_loss's fused/chunked gradient was already used: backward through the same KD loss twice "
            "(retain_graph=True) is not supported; recompute the loss instead"
        )
    ctx.kd_grads = None
    return tuple(None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in grads)


def _bytes_per_element(x: torch.Tensor, compile: bool) -> int:
    """Workspace bytes per [c, V] element that size a chunk: eager torch keeps about 6 live fp32 [c, V]
    tensors; inductor fuses them into about 3 (the logits, the gradient and one temporary)."""
    return 12 if (compile and x.is_cuda) else 24


class ChunkedLinearKD(torch.autograd.Function):
    """loss = KD over hidden states and lm_head weights, chunked; backward returns dX and dW formed in forward."""

    @staticmethod
    def forward(ctx, x_s, w_s, x_t, w_t, row_weight, labels, opts: KDOptions, chunk_bytes: int, compile: bool,
                compute_dtype, dw_in_weight_dtype: bool):
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        fn = _elementwise(compile)
        kw = _kwargs(opts, need_dx or need_dw)

        def rows_fn(z_s, z_t, weight, labels_c, row_offset, grad_buf):
            noise = chunk_noise(opts, row_offset - opts.noise_row_offset, z_s.shape[0], z_s.shape[1], z_s.device)
            return fn(z_s, z_t, weight, labels_c, noise, **kw)

        vocab = min(w_s.shape[0], w_t.shape[0])
        rows = chunk_rows_for(x_s.shape[0], vocab, chunk_bytes, bytes_per_element=_bytes_per_element(x_s, compile))
        loss, d_x, d_w = linear_kd_chunks(
            x_s, w_s, x_t, w_t, row_weight, labels, rows_fn, chunk_rows=rows,
            row_offset=opts.noise_row_offset, need_dx=need_dx, need_dw=need_dw, pad_last_chunk=compile,
            compute_dtype=compute_dtype, dw_in_weight_dtype=dw_in_weight_dtype,
        )
        save_precomputed_grads(ctx, d_x, d_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        return (*precomputed_grads(ctx, grad_loss), None, None, None, None, None, None, None, None, None)


class ChunkedLogitsKD(torch.autograd.Function):
    """loss = KD over given logits [N, V_s], [N, V_t], chunk by chunk; gradient w.r.t. the student logits only."""

    @staticmethod
    def forward(ctx, z_s, z_t, row_weight, labels, opts: KDOptions, chunk_bytes: int, compile: bool):
        need_grad = ctx.needs_input_grad[0]
        n = z_s.shape[0]
        vocab = min(z_s.shape[1], z_t.shape[1])
        fn = _elementwise(compile)
        kw = _kwargs(opts, need_grad)
        rows = chunk_rows_for(n, vocab, chunk_bytes, bytes_per_element=_bytes_per_element(z_s, compile))
        grad = torch.empty_like(z_s) if need_grad else None
        if grad is not None and vocab < z_s.shape[1]:
            grad[:, vocab:] = 0
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
