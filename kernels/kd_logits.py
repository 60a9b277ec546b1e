"""Row-wise fused KD divergences on given logits (Triton): per-row losses and the student gradient, no N x V temporary.

Math (one row, vocab width V, a = z_s / T, b = (z_t + sigma * eps) / T, eps = tl.randn(seed, (row << 32) | v)):
    lq = a - lse(a), lp = b - lse(b), q = exp(lq), p = exp(lp)
    KD  = sum_v l_v with the objective's term l_v (see kdlens.losses.reference for the formulas)
    dKD/da_v = h_v - q_v * c,  c = sum_v h_v, where h_v = q_v * dKD/dq_v (written without dividing by q):
        forward_kl       h = -p                                  (c = -1, so grad = q - p)
        reverse_kl       h = q (lq - lp)
        jsd(beta)        h = (1 - beta) q (lq - lm),  lm = log(beta p + (1 - beta) q)
        tvd              h = 0.5 q sign(q - p)
        skew_forward_kl  h = -(1 - alpha) q p / m,    m = alpha p + (1 - alpha) q
        skew_reverse_kl  h = q (lq - lm) - alpha q^2 / m,  m = alpha q + (1 - alpha) p
        symmetric_kl     h = -p + q (lq - lp)
    CE (raw logits z_s, label y): lse(z_s) - z_s[y];  dCE/dz_s = softmax(z_s) - onehot(y)
    row loss  = w_row * (kd_coef * KD + ce_coef * CE)
    row grad  = w_row * (kd_coef / T * (h - q c) + ce_coef * (softmax(z_s) - onehot(y)))
Passes over the row: (1) online max / log-sum-exp of a, b (and z_s for CE); with noise, pass 1 also writes
b = (z_t + sigma * eps) / T into the teacher workspace ``tw_ptr`` (may alias the teacher logits when they
are a private fp32 buffer), so Philox runs once per element and passes 2-3 read b back; (2) loss and c
(skipped for forward_kl, whose c is -1); (3) gradient, written to ``grad_ptr`` (may alias the student
logits: each row is read before it is overwritten, by the same program), only when WRITE_GRAD. Rows with
weight 0 only get a zero gradient. A teacher probability of 0 (logit -inf, e.g. a masked vocabulary entry)
contributes 0 to p log(p / .) terms, never NaN. The CE label is loaded only when it lies in [0, V)
(callers validate labels; the mask keeps a bad one from reading out of bounds).
fp32 arithmetic throughout (every load is upcast at once: bf16 arithmetic is wrong in the interpreter),
int64 row offsets, objective variants as tl.constexpr, no host synchronisation.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from kdlens.objectives import KERNEL_IDS  # the one objective table

# the OBJECTIVE constexpr takes these ids (kdlens.objectives.OBJECTIVE_TABLE)
FORWARD_KL: tl.constexpr = tl.constexpr(KERNEL_IDS["forward_kl"])
REVERSE_KL: tl.constexpr = tl.constexpr(KERNEL_IDS["reverse_kl"])
JSD: tl.constexpr = tl.constexpr(KERNEL_IDS["jsd"])
TVD: tl.constexpr = tl.constexpr(KERNEL_IDS["tvd"])
SKEW_FORWARD_KL: tl.constexpr = tl.constexpr(KERNEL_IDS["skew_forward_kl"])
SKEW_REVERSE_KL: tl.constexpr = tl.constexpr(KERNEL_IDS["skew_reverse_kl"])
SYMMETRIC_KL: tl.constexpr = tl.constexpr(KERNEL_IDS["symmetric_kl"])


@triton.jit
def _load_scaled(s_row, t_row, tw_row, cols, mask, inv_t, sigma, seed, row,
                 HAS_NOISE: tl.constexpr, FIRST_PASS: tl.constexpr):
    """Student z_s (raw), a = z_s / T and b = (z_t + sigma eps) / T for one block; -inf outside the row.

    With noise, the first pass draws eps and stores b into the teacher workspace; later passes load b."""
    z_s = tl.load(s_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
    if HAS_NOISE and not FIRST_PASS:
        b = tl.load(tw_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
    else:
        z_t = tl.load(t_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
        if HAS_NOISE:
            eps = tl.randn(seed, (row << 32) | cols.to(tl.int64))
            b = (z_t + sigma * eps) * inv_t
            tl.store(tw_row + cols, b, mask=mask)
        else:
            b = z_t * inv_t
    return z_s, z_s * inv_t, b


@triton.jit
def _terms(a, b, m_a, log_s_a, m_b, log_s_b, mask, mix, log_mix, log_1m_mix, OBJECTIVE: tl.constexpr):
    """Per-element loss term l and h = q * dKD/dq for one block (0 outside the row); also q.

    lq = (a - max) - log(sum): never form lse = max + log(sum), whose rounding at |max| ~ 100 (ulp 1e-5)
    would skew every probability of the row."""
    lq = (a - m_a) - log_s_a
    lp = (b - m_b) - log_s_b
    q = tl.exp(lq)
    p = tl.exp(lp)
    lp_safe = tl.where(p > 0.0, lp, 0.0)  # p = 0 (teacher logit -inf) contributes 0 to p * log(p / .)
    if OBJECTIVE == FORWARD_KL:  # forward KL(p || q)
        term = p * (lp_safe - lq)
        h = -p
    elif OBJECTIVE == REVERSE_KL:  # reverse KL(q || p)
        term = q * (lq - lp)
        h = term
    elif OBJECTIVE == JSD:  # JSD(beta), m = beta p + (1 - beta) q, mix = beta
        x1 = lp + log_mix
        x2 = lq + log_1m_mix
        mx = tl.maximum(x1, x2)
        lm = mx + tl.log(tl.exp(x1 - mx) + tl.exp(x2 - mx))
        term = mix * p * (lp_safe - lm) + (1.0 - mix) * q * (lq - lm)
        h = (1.0 - mix) * q * (lq - lm)
    elif OBJECTIVE == TVD:  # TVD
        d = q - p
        term = 0.5 * tl.abs(d)
        sgn = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))
        h = 0.5 * q * sgn
    elif OBJECTIVE == SKEW_FORWARD_KL:  # skew forward KL: m = alpha p + (1 - alpha) q (mix = alpha)
        x1 = lp + log_mix
        x2 = lq + log_1m_mix
        mx = tl.maximum(x1, x2)
        lm = mx + tl.log(tl.exp(x1 - mx) + tl.exp(x2 - mx))
        term = p * (lp_safe - lm)
        h = -(1.0 - mix) * tl.exp(lq + lp - lm)
    elif OBJECTIVE == SKEW_REVERSE_KL:  # skew reverse KL: m = alpha q + (1 - alpha) p (mix = alpha)
        x1 = lq + log_mix
        x2 = lp + log_1m_mix
        mx = tl.maximum(x1, x2)
        lm = mx + tl.log(tl.exp(x1 - mx) + tl.exp(x2 - mx))
        term = q * (lq - lm)
        h = term - mix * tl.exp(2.0 * lq - lm)
    else:  # symmetric KL(p || q) + KL(q || p)
        term = (p - q) * (lp - lq)
        h = q * (lq - lp) - p
    term = tl.where(mask, term, 0.0)
    h = tl.where(mask, h, 0.0)
    q = tl.where(mask, q, 0.0)
    return term, h, q


@triton.jit(do_not_specialize=["seed", "row_offset"])
def kd_rows_kernel(
    s_ptr, s_stride, t_ptr, t_stride, tw_ptr, tw_stride, grad_ptr, grad_stride,
    weight_ptr, label_ptr, loss_ptr, stats_ptr,
    V, inv_t, kd_coef, ce_coef, mix, log_mix, log_1m_mix, sigma, seed, row_offset,
    OBJECTIVE: tl.constexpr, HAS_NOISE: tl.constexpr, HAS_CE: tl.constexpr, WRITE_GRAD: tl.constexpr,
    STATS: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """One program per row: weighted row loss into loss_ptr[row]; gradient w.r.t. z_s into grad_ptr; with
    STATS, (argmax z_s == argmax b, teacher entropy, student entropy) into stats_ptr[row, 0:3]: the
    argmaxes are tracked in pass 1, the entropies summed in the last pass over the row."""
    local = tl.program_id(0).to(tl.int64)
    row = local + row_offset  # global row: the noise key
    s_row = s_ptr + local * s_stride
    t_row = t_ptr + local * t_stride
    tw_row = tw_ptr + local * tw_stride
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
        # pass 1: online max / sum-exp for a, b and (CE) raw z_s
        m_a = -1.0e30
        s_a = 0.0
        m_b = -1.0e30
        s_b = 0.0
        m_z = -1.0e30
        s_z = 0.0
        arg_a = tl.full([], 0, tl.int64)
        arg_b = tl.full([], 0, tl.int64)
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            mask = cols < V
            z_s, a, b = _load_scaled(s_row, t_row, tw_row, cols, mask, inv_t, sigma, seed, row, HAS_NOISE, True)
            if STATS:  # first index of the row maximum (a block's argmax replaces only a strictly larger max)
                arg_a = tl.where(tl.max(a, 0) > m_a, tl.argmax(a, 0).to(tl.int64) + start, arg_a)
                arg_b = tl.where(tl.max(b, 0) > m_b, tl.argmax(b, 0).to(tl.int64) + start, arg_b)
            new_a = tl.maximum(m_a, tl.max(a, 0))
            s_a = s_a * tl.exp(m_a - new_a) + tl.sum(tl.where(mask, tl.exp(a - new_a), 0.0), 0)
            m_a = new_a
            new_b = tl.maximum(m_b, tl.max(b, 0))
            s_b = s_b * tl.exp(m_b - new_b) + tl.sum(tl.where(mask, tl.exp(b - new_b), 0.0), 0)
            m_b = new_b
            if HAS_CE:
                new_z = tl.maximum(m_z, tl.max(z_s, 0))
                s_z = s_z * tl.exp(m_z - new_z) + tl.sum(tl.where(mask, tl.exp(z_s - new_z), 0.0), 0)
                m_z = new_z
        log_s_a = tl.log(s_a)
        log_s_b = tl.log(s_b)
        log_s_z = tl.log(s_z)

        # pass 2: loss and c = sum h (forward KL knows c = -1 and takes its loss in pass 3)
        kd = 0.0
        c = -1.0
        ent_t = 0.0
        ent_s = 0.0
        if OBJECTIVE != FORWARD_KL:
            c = 0.0
            for start in range(0, V, BLOCK_V):
                cols = start + tl.arange(0, BLOCK_V)
                mask = cols < V
                z_s, a, b = _load_scaled(s_row, t_row, tw_row, cols, mask, inv_t, sigma, seed, row, HAS_NOISE,
                                         False)
                term, h, q = _terms(a, b, m_a, log_s_a, m_b, log_s_b, mask, mix, log_mix, log_1m_mix, OBJECTIVE)
                kd += tl.sum(term, 0)
                c += tl.sum(h, 0)
                if STATS and not WRITE_GRAD:  # no pass 3: the entropies are summed here
                    e_t, e_s = _entropy_terms(a, b, m_a, log_s_a, m_b, log_s_b, mask)
                    ent_t += e_t
                    ent_s += e_s

        # pass 3: gradient (and forward KL's loss)
        label = 0
        z_label = 0.0
        if HAS_CE:  # read z_s[label] before pass 3 may overwrite the row in place
            label = tl.load(label_ptr + local).to(tl.int64)
            label_ok = (label >= 0) & (label < V)
            z_label = tl.load(s_row + label, mask=label_ok, other=0.0).to(tl.float32)
        if WRITE_GRAD or OBJECTIVE == FORWARD_KL:
            kd_scale = w * kd_coef * inv_t
            for start in range(0, V, BLOCK_V):
                cols = start + tl.arange(0, BLOCK_V)
                mask = cols < V
                z_s, a, b = _load_scaled(s_row, t_row, tw_row, cols, mask, inv_t, sigma, seed, row, HAS_NOISE,
                                         False)
                term, h, q = _terms(a, b, m_a, log_s_a, m_b, log_s_b, mask, mix, log_mix, log_1m_mix, OBJECTIVE)
                if OBJECTIVE == FORWARD_KL:
                    kd += tl.sum(term, 0)
                if STATS:
                    e_t, e_s = _entropy_terms(a, b, m_a, log_s_a, m_b, log_s_b, mask)
                    ent_t += e_t
                    ent_s += e_s
                if WRITE_GRAD:
                    grad = kd_scale * (h - q * c)
                    if HAS_CE:
                        soft = tl.exp((z_s - m_z) - log_s_z)
                        onehot = tl.where(cols.to(tl.int64) == label, 1.0, 0.0)
                        grad += w * ce_coef * (soft - onehot)
                    tl.store(g_row + cols, grad.to(grad_ptr.dtype.element_ty), mask=mask)
        loss = kd_coef * kd
        if HAS_CE:
            loss += ce_coef * ((m_z - z_label) + log_s_z)
        tl.store(loss_ptr + local, w * loss)
        if STATS:
            tl.store(stats_ptr + local * 3, tl.where(arg_a == arg_b, 1.0, 0.0))
            tl.store(stats_ptr + local * 3 + 1, ent_t)
            tl.store(stats_ptr + local * 3 + 2, ent_s)


@triton.jit
def _entropy_terms(a, b, m_a, log_s_a, m_b, log_s_b, mask):
    """(-sum p lp, -sum q lq) over one block, 0 log 0 = 0."""
    lq = (a - m_a) - log_s_a
    lp = (b - m_b) - log_s_b
    q = tl.exp(lq)
    p = tl.exp(lp)
    e_t = -tl.sum(tl.where(mask & (p > 0.0), p * lp, 0.0), 0)
    e_s = -tl.sum(tl.where(mask & (q > 0.0), q * lq, 0.0), 0)
    return e_t, e_s


def interpreting() -> bool:
    """True when Triton runs through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def pick_block_v(vocab: int) -> tuple[int, int]:
    """(BLOCK_V, num_warps) for a row of ``vocab`` columns: big blocks under the interpreter (fewer Python
    steps), 4096-wide blocks with 16 warps on a GPU (8 fp32 values of each of z_s, z_t per thread).
    ``KDLENS_ROW_KERNEL=BLOCK_V,NUM_WARPS`` overrides the GPU choice (benches/gpu/row_kernel_sweep.py)."""
    if interpreting():
        return min(triton.next_power_of_2(vocab), 16384), 1
    override = os.environ.get("KDLENS_ROW_KERNEL")
    if override:
        block, warps = (int(v) for v in override.split(","))
        return min(block, triton.next_power_of_2(vocab)), warps
    block = min(triton.next_power_of_2(vocab), 4096)
    return block, 16 if block >= 4096 else 8


def kd_rows(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    row_weight: torch.Tensor,
    *,
    vocab: int,
    objective_id: int,
    temperature: float,
    kd_coef: float,
    ce_coef: float = 0.0,
    labels: torch.Tensor | None = None,
    mix: float = 0.5,
    noise_sigma: float = 0.0,
    noise_seed: int = 0,
    row_offset: int = 0,
    grad_out: torch.Tensor | None = None,
    teacher_workspace: torch.Tensor | None = None,
    stats_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the row kernel on 2-D logits ``[n, >= vocab]`` (unit column stride): returns fp32 ``[n]``
    weighted row losses; writes the student gradient into ``grad_out`` (``[n, >= vocab]``, any float
    dtype, may be ``student_logits`` itself) when given, and skips the gradient pass otherwise.
    ``mix`` is the objective's mixture weight: JSD's beta, the skew objectives' alpha. With noise, the noisy scaled teacher logits are written
    once into ``teacher_workspace`` (fp32 ``[n, >= vocab]``; may be ``teacher_logits`` when that is a
    private fp32 buffer; a temporary is allocated when None). ``stats_out`` (fp32 ``[n, 3]``): the rows'
    token stats (agree, teacher entropy, student entropy; kdlens.losses.stats) when given."""
    import math

    n = student_logits.shape[0]
    assert student_logits.stride(-1) == 1 and teacher_logits.stride(-1) == 1
    losses = torch.empty(n, dtype=torch.float32, device=student_logits.device)
    if n == 0:
        return losses
    write_grad = grad_out is not None
    grad = grad_out if write_grad else student_logits
    if write_grad:
        assert grad.stride(-1) == 1
    has_noise = noise_sigma > 0.0
    workspace = teacher_logits
    if has_noise:
        workspace = teacher_workspace
        if workspace is None:
            workspace = torch.empty(n, vocab, dtype=torch.float32, device=teacher_logits.device)
        assert workspace.dtype == torch.float32 and workspace.stride(-1) == 1
    has_ce = ce_coef != 0.0
    label_arg = labels if has_ce else row_weight
    block, warps = pick_block_v(vocab)
    kd_rows_kernel[(n,)](
        student_logits, student_logits.stride(0), teacher_logits, teacher_logits.stride(0),
        workspace, workspace.stride(0), grad, grad.stride(0), row_weight, label_arg, losses,
        stats_out if stats_out is not None else losses,
        vocab, 1.0 / temperature, kd_coef, ce_coef, mix, math.log(mix), math.log1p(-mix),
        noise_sigma, noise_seed, row_offset,
        OBJECTIVE=objective_id, HAS_NOISE=has_noise, HAS_CE=has_ce, WRITE_GRAD=write_grad,
        STATS=stats_out is not None, BLOCK_V=block, num_warps=warps,
    )
    return losses
