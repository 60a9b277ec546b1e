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
from kdlens.losses.noise import philox_randn, philox_randn_at
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
    with_stats: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Weighted per-row losses [c], dLoss/dz_s [c, V] (fp32) and (with_stats) the token stats [c, 3]
    (agree, teacher entropy, student entropy; kdlens.losses.stats) for one chunk; ``mix`` is the
    objective's mixture weight (JSD's beta, the skew objectives' alpha), ``objective_id`` its kernel id.

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
    stats = None
    if with_stats:  # before the in-place updates of q below
        agree = (z_s.argmax(-1) == z_t.argmax(-1)).float()
        h_t = -(p * torch.where(p > 0, lp, 0.0)).sum(-1)
        h_s = -(q * torch.where(q > 0, lq, 0.0)).sum(-1)
        stats = torch.stack([agree, h_t, h_s], dim=-1)
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
    return weight * row_loss, grad, stats


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
    key = (kw["objective_id"], kw["write_grad"], kw["with_stats"], labels is not None, noise is not None,
           z_s.dtype, z_t.dtype, z_s.shape[1], z_s.device.type)
    fn = _COMPILED.get(key)
    if fn is None:
        fn = _COMPILED[key] = torch.compile(chunk_loss_and_grad, dynamic=False)
    for t in (z_s, z_t, weight, labels, noise):
        if t is not None:
            torch._dynamo.maybe_mark_dynamic(t, 0)
    return fn(z_s, z_t, weight, labels, noise, **kw)


def _elementwise(compile: bool):
    return _compiled_chunk_loss_and_grad if compile else chunk_loss_and_grad


def _kwargs(opts: KDOptions, write_grad: bool, with_stats: bool = False) -> dict:
    return dict(
        objective_id=opts.objective_id,
        inv_t=1.0 / opts.temperature,
        kd_coef=opts.kd_coef,
        ce_coef=opts.ce_weight,
        mix=opts.mix,
        write_grad=write_grad,
        with_stats=with_stats,
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
                compute_dtype, dw_in_weight_dtype: bool, row_stats=None):
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        fn = _elementwise(compile)
        kw = _kwargs(opts, need_dx or need_dw, row_stats is not None)

        def rows_fn(z_s, z_t, weight, labels_c, row_offset, grad_buf):
            noise = chunk_noise(opts, row_offset - opts.noise_row_offset, z_s.shape[0], z_s.shape[1], z_s.device)
            return fn(z_s, z_t, weight, labels_c, noise, **kw)

        vocab = min(w_s.shape[0], w_t.shape[0])
        rows = chunk_rows_for(x_s.shape[0], vocab, chunk_bytes, bytes_per_element=_bytes_per_element(x_s, compile))
        loss, d_x, d_w = linear_kd_chunks(
            x_s, w_s, x_t, w_t, row_weight, labels, rows_fn, chunk_rows=rows,
            row_offset=opts.noise_row_offset, need_dx=need_dx, need_dw=need_dw, pad_last_chunk=compile,
            compute_dtype=compute_dtype, dw_in_weight_dtype=dw_in_weight_dtype, row_stats=row_stats,
        )
        save_precomputed_grads(ctx, d_x, d_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        return (*precomputed_grads(ctx, grad_loss), None, None, None, None, None, None, None, None, None, None)


class ChunkedLogitsKD(torch.autograd.Function):
    """loss = KD over given logits [N, V_s], [N, V_t], chunk by chunk; gradient w.r.t. the student logits only."""

    @staticmethod
    def forward(ctx, z_s, z_t, row_weight, labels, opts: KDOptions, chunk_bytes: int, compile: bool,
                row_stats=None):
        need_grad = ctx.needs_input_grad[0]
        n = z_s.shape[0]
        vocab = min(z_s.shape[1], z_t.shape[1])
        fn = _elementwise(compile)
        kw = _kwargs(opts, need_grad, row_stats is not None)
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
            losses, g, stats = fn(s_c, t_c, w_c, l_c, noise, **kw)
            loss += losses.sum()
            if row_stats is not None:
                row_stats[start:end] = stats[: end - start]
            if need_grad:
                grad[start:end, :vocab] = g[: end - start].to(grad.dtype)
        ctx.save_for_backward(*([grad] if need_grad else []))
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad = ctx.saved_tensors[0] * grad_loss.to(ctx.saved_tensors[0].dtype) if ctx.saved_tensors else None
        return grad, None, None, None, None, None, None, None


# ---------------------------------------------------------------------------------------------------------
# Sparse (top-k cached) teacher: kdlens.losses.sparse.sparse_kd_loss documents the formulas.

def sparse_chunk_loss_and_grad(
    z_s: torch.Tensor,
    ids: torch.Tensor,
    z_t: torch.Tensor,
    lse_t: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor | None,
    noise: torch.Tensor | None,
    *,
    objective_id: int,
    inv_t: float,
    kd_coef: float,
    ce_coef: float,
    mix: float,
    rest: bool,
    write_grad: bool,
    with_stats: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Weighted per-row losses [c], dLoss/dz_s [c, V] (fp32) and (with_stats) token stats [c, 3] for a chunk
    of full student logits ``z_s`` [c, V] against the cached ``ids`` [c, k] (int64, distinct), logits
    ``z_t`` [c, k] and log-sum-exp ``lse_t`` [c] at T. ``rest``: a rest bucket (tail="rest" and k < V).

    Closed-form gradient over buckets j (q_j the student's bucket masses, h_j = q_j dD/dq_j as in the dense
    kernels, c = sum_j h_j): a cached column v gets h_v - q_v c; with the rest bucket, an uncached column v
    gets q_v (h_rest / q_rest - c) (h_rest / q_rest in log space: no division); renormalize: the uncached
    columns get no KD gradient and q_v is renormalised over the ids."""
    z_s = z_s.float()
    z_t = z_t.float()  # the clean cached logits (the tail mass R is defined on them)
    a = z_s * inv_t if inv_t != 1.0 else z_s
    lse_a = torch.logsumexp(a, dim=-1, keepdim=True)
    a_ids = a.gather(-1, ids)
    b = (z_t + noise if noise is not None else z_t) * inv_t
    neg_inf = float("-inf")
    if rest:
        lq = a_ids - lse_a
        lq_rest = torch.logsumexp(a.scatter(-1, ids, neg_inf), dim=-1, keepdim=True) - lse_a
        cached_mass = torch.exp(z_t * inv_t - lse_t.unsqueeze(-1)).sum(-1)
        log_tail = (lse_t + torch.log1p(-cached_mass.clamp(max=1.0))).unsqueeze(-1)
        norm = torch.logaddexp(torch.logsumexp(b, dim=-1, keepdim=True), log_tail)
        lp = torch.cat([b - norm, log_tail - norm], dim=-1)
        lq = torch.cat([lq, lq_rest], dim=-1)
    else:
        lq = torch.log_softmax(a_ids, dim=-1)
        lp = torch.log_softmax(b, dim=-1)
    q = lq.exp()
    p = lp.exp()
    p_pos, q_pos = p > 0, q > 0
    if objective_id == _FKL:
        term = torch.where(p_pos, p * (lp - lq), 0.0)
        h = -p
    elif objective_id == _RKL:
        term = torch.where(q_pos, q * (lq - lp), 0.0)
        h = term
    else:  # jsd(beta), m = beta p + (1 - beta) q
        lm = torch.logaddexp(lp + math.log(mix), lq + math.log1p(-mix))
        h = (1.0 - mix) * torch.where(q_pos, q * (lq - lm), 0.0)
        term = mix * torch.where(p_pos, p * (lp - lm), 0.0) + h
    row_loss = kd_coef * term.sum(-1)
    stats = None
    if with_stats:
        teacher_argmax = ids.gather(-1, b.argmax(-1, keepdim=True)).squeeze(-1)
        agree = (z_s.argmax(-1) == teacher_argmax).float()
        h_t = -torch.where(p_pos, p * lp, 0.0).sum(-1)
        lq_full = a - lse_a
        h_s = -torch.where(lq_full > neg_inf, lq_full.exp() * lq_full, 0.0).sum(-1)
        stats = torch.stack([agree, h_t, h_s], dim=-1)
    log_soft = None
    if ce_coef != 0.0:
        log_soft = (a - lse_a) if inv_t == 1.0 else torch.log_softmax(z_s, dim=-1)
        safe = labels.clamp(0, z_s.shape[1] - 1).unsqueeze(-1)
        row_loss = row_loss - ce_coef * log_soft.gather(-1, safe).squeeze(-1)
    grad = None
    if write_grad:
        scale = (weight * (kd_coef * inv_t)).unsqueeze(-1)
        c = h.sum(-1, keepdim=True)
        k = ids.shape[1]
        if rest:
            if objective_id == _FKL:  # h_rest / q_rest = -p_rest / q_rest
                g_rest = -torch.exp(lp[:, k:] - lq[:, k:])
            elif objective_id == _RKL:
                g_rest = lq[:, k:] - lp[:, k:]
            else:
                g_rest = (1.0 - mix) * (lq[:, k:] - lm[:, k:])
            grad = torch.exp(a - lse_a) * (g_rest - c)
            grad = grad.scatter(-1, ids, h[:, :k] - q[:, :k] * c) * scale
        else:
            grad = torch.zeros_like(z_s).scatter(-1, ids, (h - q * c) * scale)
        if log_soft is not None:
            ce_scale = (weight * ce_coef).unsqueeze(-1)
            grad = grad + ce_scale * log_soft.exp()
            grad = grad.scatter_add(-1, safe, -ce_scale)
    return weight * row_loss, grad, stats


def sparse_chunk_noise(opts: KDOptions, row_start: int, ids: torch.Tensor) -> torch.Tensor | None:
    """sigma * eps at the cached ids of global rows noise_row_offset + row_start + [0, len(ids)), or None."""
    if not opts.has_noise:
        return None
    rows = torch.arange(ids.shape[0], device=ids.device) + (opts.noise_row_offset + row_start)
    return opts.noise_sigma * philox_randn_at(int(opts.noise_seed), rows, ids)


def _compiled_sparse(z_s, ids, z_t, lse_t, weight, labels, noise, **kw):
    """``sparse_chunk_loss_and_grad`` compiled once per variant, the row dimension dynamic (see
    ``_compiled_chunk_loss_and_grad``)."""
    key = ("sparse", kw["objective_id"], kw["rest"], kw["write_grad"], kw["with_stats"], labels is not None,
           noise is not None, z_t.dtype, z_s.shape[1], ids.shape[1], z_s.device.type)
    fn = _COMPILED.get(key)
    if fn is None:
        fn = _COMPILED[key] = torch.compile(sparse_chunk_loss_and_grad, dynamic=False)
    for t in (z_s, ids, z_t, lse_t, weight, labels, noise):
        if t is not None:
            torch._dynamo.maybe_mark_dynamic(t, 0)
    return fn(z_s, ids, z_t, lse_t, weight, labels, noise, **kw)


def sparse_rows_fn(teacher, opts: KDOptions, write_grad: bool, with_stats: bool, compile: bool):
    """The chunk step of the sparse loss for linear_kd_chunks / the logits loop: reads the teacher rows of
    the chunk (padded with weight-0 rows to the chunk's size) and runs the torch element-wise step."""
    fn = _compiled_sparse if compile else sparse_chunk_loss_and_grad
    kw = _kwargs(opts, write_grad, with_stats)
    kw["rest"] = teacher.has_rest

    def rows_fn(z_s, z_t, weight, labels, row_offset, grad_buf):
        start = row_offset - opts.noise_row_offset
        part = teacher.padded_rows(start, z_s.shape[0])
        noise = sparse_chunk_noise(opts, start, part.ids)
        return fn(z_s, part.ids, part.logits, part.lse, weight, labels, noise, **kw)

    return rows_fn


def _sparse_bytes_per_element(x: torch.Tensor, compile: bool) -> int:
    """Workspace bytes per [c, V] element of the sparse step: its scatters (the -inf-masked tail, the
    cached columns' gradient) are not fused by inductor, so it keeps about two fp32 [c, V] temporaries
    more than the dense step (CPU, N = 1024, V = 32000: 127 MiB peak at the dense step's 24 B vs 104 MiB
    for the dense loss; benches/bench_losses_sparse_cpu.py)."""
    return _bytes_per_element(x, compile) + 8


class ChunkedSparseLinearKD(torch.autograd.Function):
    """Sparse-teacher KD over hidden states and the student lm_head, chunked: 3 GEMMs per chunk (student
    logits, dX, dW), no teacher GEMM; backward returns dX and dW formed in forward."""

    @staticmethod
    def forward(ctx, x_s, w_s, teacher, row_weight, labels, opts: KDOptions, chunk_bytes: int, compile: bool,
                compute_dtype, dw_in_weight_dtype: bool, row_stats=None):
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        rows_fn = sparse_rows_fn(teacher, opts, need_dx or need_dw, row_stats is not None, compile)
        rows = chunk_rows_for(x_s.shape[0], w_s.shape[0], chunk_bytes,
                              bytes_per_element=_sparse_bytes_per_element(x_s, compile))
        loss, d_x, d_w = linear_kd_chunks(
            x_s, w_s, None, None, row_weight, labels, rows_fn, chunk_rows=rows, row_offset=opts.noise_row_offset,
            need_dx=need_dx, need_dw=need_dw, pad_last_chunk=compile, compute_dtype=compute_dtype,
            dw_in_weight_dtype=dw_in_weight_dtype, row_stats=row_stats,
        )
        save_precomputed_grads(ctx, d_x, d_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        return (*precomputed_grads(ctx, grad_loss), None, None, None, None, None, None, None, None, None)


class ChunkedSparseLogitsKD(torch.autograd.Function):
    """Sparse-teacher KD over given student logits [N, V], chunk by chunk; gradient w.r.t. the logits."""

    @staticmethod
    def forward(ctx, z_s, teacher, row_weight, labels, opts: KDOptions, chunk_bytes: int, compile: bool,
                row_stats=None):
        need_grad = ctx.needs_input_grad[0]
        n, vocab = z_s.shape
        rows_fn = sparse_rows_fn(teacher, opts, need_grad, row_stats is not None, compile)
        rows = chunk_rows_for(n, vocab, chunk_bytes, bytes_per_element=_sparse_bytes_per_element(z_s, compile))
        grad = torch.empty_like(z_s) if need_grad else None
        loss = torch.zeros((), dtype=torch.float32, device=z_s.device)
        for start in range(0, n, rows):
            end = min(start + rows, n)
            s_c, w_c = z_s[start:end], row_weight[start:end]
            l_c = labels[start:end] if labels is not None else None
            if compile and end - start < rows:  # one compiled shape: pad the tail chunk with weight-0 rows
                pad = rows - (end - start)
                s_c, w_c = F.pad(s_c, (0, 0, 0, pad)), F.pad(w_c, (0, pad))
                l_c = F.pad(l_c, (0, pad)) if l_c is not None else None
            losses, g, stats = rows_fn(s_c, None, w_c, l_c, opts.noise_row_offset + start, None)
            loss += losses[: end - start].sum()
            if row_stats is not None:
                row_stats[start:end] = stats[: end - start]
            if need_grad:
                grad[start:end] = g[: end - start].to(grad.dtype)
        ctx.save_for_backward(*([grad] if need_grad else []))
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad = ctx.saved_tensors[0] * grad_loss.to(ctx.saved_tensors[0].dtype) if ctx.saved_tensors else None
        return grad, None, None, None, None, None, None, None
