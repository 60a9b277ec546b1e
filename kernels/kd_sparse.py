"""Row kernel of the sparse-teacher KD loss (kdlens.losses.sparse_kd_loss): per row, the full student logits
[V] against the teacher's k cached ids, logits and full-vocabulary log-sum-exp; loss, gradient and token stats.

Math (one row; kdlens.losses.sparse documents the loss): a = z_s / T, b = (z_t + sigma eps[row, id]) / T at
the k ids S. Buckets: the ids (renormalize), or the ids plus a rest bucket (tail="rest" and k < V: HAS_REST).
Student bucket log-probabilities lq: renormalize log_softmax(a_S); rest (a_v - lse(a)) at the ids and
lse(a over the uncached columns) - lse(a). Teacher lp: renormalize log_softmax(b); rest b - L and
log_tail - L with log_tail = lse_T + log(1 - min(1, sum_S exp(z_t / T - lse_T))), L = log(sum_S e^b +
e^log_tail). Terms per bucket (0 log 0 = 0), h = q dD/dq and g = h / q (dense kd_logits.py conventions):
    forward_kl  term p (lp - lq)          h = -p                    g = -exp(lp - lq)
    reverse_kl  term q (lq - lp)          h = term                  g = lq - lp
    jsd(beta)   beta p (lp - lm) + h      h = (1-beta) q (lq - lm)  g = (1-beta)(lq - lm)
Gradient with c = sum over buckets of h: cached column v: kd_scale (h_v - q_v c); uncached column v:
kd_scale q_v (g_rest - c) with HAS_REST, else 0; plus w ce_coef (softmax(z_s) - onehot(label)).
Passes: (0) gather z_s at the ids, then overwrite them with -inf in the row (a private workspace), so that
(1) one online pass over the row gives the tail's max, sum-exp, sum e^(a-m) (a-m) (the entropy) and argmax,
combined with the k gathered values (held in one block of next_power_of_2(k) lanes: callers keep k <=
kdlens.losses.sparse.MAX_SPARSE_K) into the full row's statistics without a 1 - sum cancellation;
(2) the gradient pass writes every column (cached ones get 0 from their -inf), then (3) the cached
columns' gradients are scattered over them. fp32 arithmetic, tl.constexpr variants, no host sync.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kdlens.kernels.kd_logits import pick_block_v
from kdlens.objectives import KERNEL_IDS

FORWARD_KL: tl.constexpr = tl.constexpr(KERNEL_IDS["forward_kl"])
REVERSE_KL: tl.constexpr = tl.constexpr(KERNEL_IDS["reverse_kl"])
SPARSE_KERNEL_OBJECTIVES = ("forward_kl", "reverse_kl", "jsd")


@triton.jit
def _bucket_terms(lq, lp, mix, log_mix, log_1m_mix, OBJECTIVE: tl.constexpr):
    """(term, h, q, g) per bucket from log-probabilities (element-wise, any shape)."""
    p = tl.exp(lp)
    q = tl.exp(lq)
    if OBJECTIVE == FORWARD_KL:
        term = tl.where(p > 0.0, p * (lp - lq), 0.0)
        h = -p
        g = -tl.exp(lp - lq)
    elif OBJECTIVE == REVERSE_KL:
        term = tl.where(q > 0.0, q * (lq - lp), 0.0)
        h = term
        g = lq - lp
    else:  # jsd(beta), m = beta p + (1 - beta) q
        x1 = lp + log_mix
        x2 = lq + log_1m_mix
        mx = tl.maximum(x1, x2)
        lm = mx + tl.log(tl.exp(x1 - mx) + tl.exp(x2 - mx))
        h = (1.0 - mix) * tl.where(q > 0.0, q * (lq - lm), 0.0)
        term = mix * tl.where(p > 0.0, p * (lp - lm), 0.0) + h
        g = (1.0 - mix) * (lq - lm)
    return term, h, q, g


@triton.jit(do_not_specialize=["seed", "row_offset"])
def kd_sparse_rows_kernel(
    s_ptr, s_stride, grad_ptr, grad_stride, ids_ptr, ids_stride, zt_ptr, zt_stride, lse_ptr,
    weight_ptr, label_ptr, loss_ptr, stats_ptr,
    V, K, inv_t, kd_coef, ce_coef, mix, log_mix, log_1m_mix, sigma, seed, row_offset,
    OBJECTIVE: tl.constexpr, HAS_REST: tl.constexpr, HAS_NOISE: tl.constexpr, HAS_CE: tl.constexpr,
    WRITE_GRAD: tl.constexpr, STATS: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One program per row; the student row s_ptr[row] is a private workspace (its cached columns are
    overwritten with -inf); grad_ptr may alias it."""
    local = tl.program_id(0).to(tl.int64)
    row = local + row_offset
    s_row = s_ptr + local * s_stride
    g_row = grad_ptr + local * grad_stride
    w = tl.load(weight_ptr + local).to(tl.float32)
    if w == 0.0:
        if WRITE_GRAD:
            for start in range(0, V, BLOCK_V):
                cols = start + tl.arange(0, BLOCK_V)
                tl.store(g_row + cols, tl.zeros([BLOCK_V], tl.float32).to(grad_ptr.dtype.element_ty),
                         mask=cols < V)
        tl.store(loss_ptr + local, 0.0)
        if STATS:
            tl.store(stats_ptr + local * 3 + tl.arange(0, 4), tl.zeros([4], tl.float32), mask=tl.arange(0, 4) < 3)
    else:
        neg_inf = float("-inf")
        kc = tl.arange(0, BLOCK_K)
        kmask = kc < K
        ids = tl.load(ids_ptr + local * ids_stride + kc, mask=kmask, other=0).to(tl.int64)
        zt = tl.load(zt_ptr + local * zt_stride + kc, mask=kmask, other=neg_inf).to(tl.float32)
        if HAS_NOISE:
            eps = tl.randn(seed, (row << 32) | ids)
            b = tl.where(kmask, (zt + sigma * eps) * inv_t, neg_inf)
        else:
            b = zt * inv_t
        z_ids = tl.load(s_row + ids, mask=kmask, other=neg_inf).to(tl.float32)
        a_ids = z_ids * inv_t
        label = 0
        z_label = 0.0
        if HAS_CE:
            label = tl.load(label_ptr + local).to(tl.int64)
            label_ok = (label >= 0) & (label < V)
            z_label = tl.load(s_row + label, mask=label_ok, other=0.0).to(tl.float32)
        tl.debug_barrier()
        tl.store(s_row + ids, tl.full([BLOCK_K], neg_inf, tl.float32).to(s_ptr.dtype.element_ty), mask=kmask)
        tl.debug_barrier()

        # pass 1: the uncached columns: max / sum-exp / entropy sum of a (and raw z_s for CE), argmax
        m_t = -1.0e30
        s_t = 0.0
        u_t = 0.0  # sum e^(a - m_t) (a - m_t)
        arg_t = tl.full([], 0, tl.int64)
        m_z = -1.0e30
        s_z = 0.0
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            mask = cols < V
            z = tl.load(s_row + cols, mask=mask, other=neg_inf).to(tl.float32)
            a = z * inv_t
            blk_max = tl.max(a, 0)
            if STATS:
                blk_arg = tl.argmax(a, 0).to(tl.int64) + start
                arg_t = tl.where(blk_max > m_t, blk_arg, arg_t)
            new_t = tl.maximum(m_t, blk_max)
            e = tl.where(a > neg_inf, tl.exp(a - new_t), 0.0)
            scale = tl.exp(m_t - new_t)
            if STATS:
                u_t = scale * (u_t + (m_t - new_t) * s_t) + tl.sum(tl.where(e > 0.0, e * (a - new_t), 0.0), 0)
            s_t = s_t * scale + tl.sum(e, 0)
            m_t = new_t
            if HAS_CE:
                new_z = tl.maximum(m_z, tl.max(z, 0))
                s_z = s_z * tl.exp(m_z - new_z) + tl.sum(tl.where(z > neg_inf, tl.exp(z - new_z), 0.0), 0)
                m_z = new_z

        # the full row = tail + cached columns, relative to one max
        m_ids = tl.max(a_ids, 0)
        m_full = tl.maximum(m_t, m_ids)
        e_ids = tl.where(kmask, tl.exp(a_ids - m_full), 0.0)
        s_full = s_t * tl.exp(m_t - m_full) + tl.sum(e_ids, 0)
        log_s_full = tl.log(s_full)
        # teacher
        m_b = tl.max(b, 0)
        s_b = tl.sum(tl.where(kmask, tl.exp(b - m_b), 0.0), 0)
        if HAS_REST:
            lse_t = tl.load(lse_ptr + local).to(tl.float32)
            cached = tl.sum(tl.where(kmask, tl.exp(zt * inv_t - lse_t), 0.0), 0)
            log_tail = lse_t + tl.log(1.0 - tl.minimum(cached, 1.0))
            norm = m_b + tl.log(s_b + tl.exp(log_tail - m_b))
            lp = b - norm
            lp_rest = log_tail - norm
            lq = (a_ids - m_full) - log_s_full
            lq_rest = (tl.log(s_t) + (m_t - m_full)) - log_s_full
            t_rest, h_rest, q_rest, g_rest = _bucket_terms(lq_rest, lp_rest, mix, log_mix, log_1m_mix, OBJECTIVE)
        else:
            # renormalised over the ids (with k = V: the full-vocabulary probabilities, as tail="rest")
            lp = (b - m_b) - tl.log(s_b)
            lq = (a_ids - m_ids) - tl.log(tl.sum(tl.where(kmask, tl.exp(a_ids - m_ids), 0.0), 0))
            t_rest = 0.0
            h_rest = 0.0
            g_rest = 0.0
        lp = tl.where(kmask, lp, neg_inf)
        lq = tl.where(kmask, lq, neg_inf)
        term, h, q, g = _bucket_terms(lq, lp, mix, log_mix, log_1m_mix, OBJECTIVE)
        term = tl.where(kmask, term, 0.0)
        h = tl.where(kmask, h, 0.0)
        q = tl.where(kmask, q, 0.0)
        kd = tl.sum(term, 0) + t_rest
        c = tl.sum(h, 0) + h_rest
        lse_z = 0.0
        if HAS_CE:
            m_zf = tl.maximum(m_z, tl.max(z_ids, 0))
            s_zf = s_z * tl.exp(m_z - m_zf) + tl.sum(tl.where(kmask, tl.exp(z_ids - m_zf), 0.0), 0)
            lse_z = m_zf + tl.log(s_zf)

        if STATS:
            p = tl.exp(lp)
            h_t = -tl.sum(tl.where(p > 0.0, p * lp, 0.0), 0)
            if HAS_REST:
                p_rest = tl.exp(lp_rest)
                h_t -= tl.where(p_rest > 0.0, p_rest * lp_rest, 0.0)
            # student entropy log s - E[a - m] over the full row (relative to m_full)
            u_full = tl.exp(m_t - m_full) * (u_t + (m_t - m_full) * s_t) + tl.sum(
                tl.where(e_ids > 0.0, e_ids * (a_ids - m_full), 0.0), 0)
            h_s = log_s_full - u_full / s_full
            i_b = tl.argmax(b, 0)
            t_arg = tl.sum(tl.where(kc == i_b, ids, 0), 0)
            i_a = tl.argmax(a_ids, 0)
            s_arg_ids = tl.sum(tl.where(kc == i_a, ids, 0), 0)
            s_arg = tl.where((m_ids > m_t) | ((m_ids == m_t) & (s_arg_ids < arg_t)), s_arg_ids, arg_t)
            agree = tl.where(s_arg == t_arg, 1.0, 0.0)
            tl.store(stats_ptr + local * 3, agree)
            tl.store(stats_ptr + local * 3 + 1, h_t)
            tl.store(stats_ptr + local * 3 + 2, h_s)

        if WRITE_GRAD:
            kd_scale = w * kd_coef * inv_t
            # pass 2: every column (cached ones read -inf: q = 0), then pass 3 overwrites the cached columns
            for start in range(0, V, BLOCK_V):
                cols = start + tl.arange(0, BLOCK_V)
                mask = cols < V
                z = tl.load(s_row + cols, mask=mask, other=neg_inf).to(tl.float32)
                grad = tl.zeros([BLOCK_V], tl.float32)
                if HAS_REST:
                    q_v = tl.exp((z * inv_t - m_full) - log_s_full)
                    grad = kd_scale * q_v * (g_rest - c)
                if HAS_CE:
                    soft = tl.exp(z - lse_z)
                    onehot = tl.where(cols.to(tl.int64) == label, 1.0, 0.0)
                    grad += w * ce_coef * (soft - onehot)
                tl.store(g_row + cols, grad.to(grad_ptr.dtype.element_ty), mask=mask)
            tl.debug_barrier()
            g_ids = kd_scale * (h - q * c)
            if HAS_CE:
                soft_ids = tl.exp(z_ids - lse_z)
                g_ids += w * ce_coef * (soft_ids - tl.where(ids == label, 1.0, 0.0))
            tl.store(g_row + ids, g_ids.to(grad_ptr.dtype.element_ty), mask=kmask)

        loss = kd_coef * kd
        if HAS_CE:
            loss += ce_coef * (lse_z - z_label)
        tl.store(loss_ptr + local, w * loss)


def kd_sparse_rows(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_lse: torch.Tensor,
    row_weight: torch.Tensor,
    *,
    objective_id: int,
    rest: bool,
    temperature: float,
    kd_coef: float,
    ce_coef: float = 0.0,
    labels: torch.Tensor | None = None,
    mix: float = 0.5,
    noise_sigma: float = 0.0,
    noise_seed: int = 0,
    row_offset: int = 0,
    grad_out: torch.Tensor | None = None,
    stats_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the sparse row kernel on a private student-logit workspace ``[n, V]`` (unit column stride; its
    cached columns are overwritten), ids ``[n, k]`` int64, cached logits ``[n, k]``, lse ``[n]`` fp32 at T.
    Returns fp32 ``[n]`` weighted row losses; writes the gradient into ``grad_out`` (may be the workspace)
    and the token stats into ``stats_out`` ``[n, 3]`` fp32 when given. ``rest``: tail="rest" and k < V."""
    n, vocab = student_logits.shape
    k = teacher_ids.shape[1]
    assert student_logits.stride(-1) == 1 and teacher_ids.stride(-1) == 1 and teacher_logits.stride(-1) == 1
    losses = torch.empty(n, dtype=torch.float32, device=student_logits.device)
    if n == 0:
        return losses
    write_grad = grad_out is not None
    grad = grad_out if write_grad else student_logits
    stats = stats_out if stats_out is not None else losses
    has_ce = ce_coef != 0.0
    block_v, warps = pick_block_v(vocab)
    kd_sparse_rows_kernel[(n,)](
        student_logits, student_logits.stride(0), grad, grad.stride(0), teacher_ids, teacher_ids.stride(0),
        teacher_logits, teacher_logits.stride(0), teacher_lse, row_weight, labels if has_ce else row_weight,
        losses, stats,
        vocab, k, 1.0 / temperature, kd_coef, ce_coef, mix, math.log(mix), math.log1p(-mix), noise_sigma,
        noise_seed, row_offset,
        OBJECTIVE=objective_id, HAS_REST=bool(rest), HAS_NOISE=noise_sigma > 0.0, HAS_CE=has_ce,
        WRITE_GRAD=write_grad, STATS=stats_out is not None, BLOCK_V=block_v,
        BLOCK_K=max(16, triton.next_power_of_2(k)), num_warps=warps,
    )
    return losses
