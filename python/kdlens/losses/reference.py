"""The plain-PyTorch KD losses on full logits: the specification every fast path is tested against.

Notation (per position, vocabulary of width V, temperature T):
    q = softmax(z_s / T)   student,   p = softmax(z_t' / T)   teacher,   z_t' = z_t + sigma * eps
    (noise is added to the teacher logits BEFORE the temperature, eps from kdlens.losses.noise).

Argument order is fixed once: every objective is called ``objective(student_logits, teacher_logits)``,
shapes ``[..., V]`` each (same V), and returns the per-position divergence ``[...]`` (no reduction):

    forward_kl(s, t)            KL(p || q) = sum_v p (log p - log q)                  (paper's "SeqKD")
    reverse_kl(s, t)            KL(q || p) = sum_v q (log q - log p)                  (paper's "RevKD")
    jsd(s, t, beta)             beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q
                                (TRL / Liger / GKD convention; beta in (0, 1); jsd/beta -> KL(p||q) as
                                beta -> 0 and jsd/(1-beta) -> KL(q||p) as beta -> 1; at beta = 0.5 it
                                is the paper's GKD term, m computed in log space with logsumexp)
    tvd(s, t)                   0.5 sum_v |p - q|
    skew_forward_kl(s, t, a)    KL(p || a p + (1 - a) q)      (DistiLLM skew KL, a in (0, 1))
    skew_reverse_kl(s, t, a)    KL(q || a q + (1 - a) p)      (DistiLLM skew reverse KL)
    symmetric_kl(s, t)          KL(p || q) + KL(q || p)       (Jeffreys divergence)

``reference_kd_loss`` assembles the full loss exactly as kdlens.losses.kd_loss documents it:
    per position n:  l_n = kd_coef * D(z_s,n / T, z_t',n / T) + ce_weight * CE(z_s,n, label_n)
    kd_coef = (1 - ce_weight) * (T^2 if scale_by_t2 else 1)
then masks (labels == ignore_index, attention_mask == 0) and reduces:
    "paper_sequence_mean": mean over each sequence's valid positions, then mean over the B sequences
                           (a sequence with no valid position contributes 0)
    "token_mean":          sum over valid positions / number of valid positions (0 if none)
    "sum":                 sum over valid positions
    "normalizer":          sum over valid positions / normalizer (an externally supplied count)
Vocabularies of different width are cut to the shared prefix (the paper's rule).
It computes in float64 for float64 inputs and in float32 otherwise; gradients come from autograd.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlens.errors import KdlensError
from kdlens.losses.noise import philox_randn, philox_randn_at
from kdlens.losses.options import KDOptions
from kdlens.losses.stats import dense_row_stats, entropy, token_stats


def _log_probs(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    if student_logits.shape != teacher_logits.shape:
        raise KdlensError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "must have the same shape (cut the vocabulary to the shared prefix first)"
        )
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    return log_q, log_p


def _p_log(log_p: torch.Tensor, log_x: torch.Tensor) -> torch.Tensor:
    """p * (log p - log x) elementwise, 0 where p = 0 (a teacher logit of -inf), as scipy's rel_entr."""
    p = log_p.exp()
    return p * (torch.where(p > 0, log_p, torch.zeros_like(log_p)) - log_x)


def forward_kl(student_logits, teacher_logits, temperature: float = 1.0) -> torch.Tensor:
    """KL(p_teacher || q_student) per position: sum_v p (log p - log q). Shapes [..., V] -> [...]."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return _p_log(log_p, log_q).sum(-1)


def reverse_kl(student_logits, teacher_logits, temperature: float = 1.0) -> torch.Tensor:
    """KL(q_student || p_teacher) per position: sum_v q (log q - log p). Shapes [..., V] -> [...]."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def jsd(student_logits, teacher_logits, beta: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """Generalized JSD: beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q, beta in (0, 1)."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    b = torch.tensor(beta, dtype=log_q.dtype, device=log_q.device)
    log_m = torch.logsumexp(torch.stack([log_p + torch.log(b), log_q + torch.log1p(-b)]), dim=0)
    kl_p_m = _p_log(log_p, log_m).sum(-1)
    kl_q_m = (log_q.exp() * (log_q - log_m)).sum(-1)
    return beta * kl_p_m + (1.0 - beta) * kl_q_m


def tvd(student_logits, teacher_logits, temperature: float = 1.0) -> torch.Tensor:
    """Total variation distance 0.5 sum_v |p - q| per position. Shapes [..., V] -> [...]."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def skew_forward_kl(student_logits, teacher_logits, alpha: float = 0.1, temperature: float = 1.0) -> torch.Tensor:
    """Skewed forward KL: KL(p || alpha p + (1 - alpha) q) per position (DistiLLM), alpha in (0, 1)."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    a = torch.tensor(alpha, dtype=log_q.dtype, device=log_q.device)
    log_m = torch.logsumexp(torch.stack([log_p + torch.log(a), log_q + torch.log1p(-a)]), dim=0)
    return _p_log(log_p, log_m).sum(-1)


def skew_reverse_kl(student_logits, teacher_logits, alpha: float = 0.1, temperature: float = 1.0) -> torch.Tensor:
    """Skewed reverse KL: KL(q || alpha q + (1 - alpha) p) per position (DistiLLM), alpha in (0, 1)."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    a = torch.tensor(alpha, dtype=log_q.dtype, device=log_q.device)
    log_m = torch.logsumexp(torch.stack([log_q + torch.log(a), log_p + torch.log1p(-a)]), dim=0)
    return (log_q.exp() * (log_q - log_m)).sum(-1)


def symmetric_kl(student_logits, teacher_logits, temperature: float = 1.0) -> torch.Tensor:
    """Jeffreys divergence KL(p || q) + KL(q || p) per position. Shapes [..., V] -> [...]."""
    return forward_kl(student_logits, teacher_logits, temperature) + reverse_kl(
        student_logits, teacher_logits, temperature
    )


def divergence(student_logits, teacher_logits, options: KDOptions) -> torch.Tensor:
    """The per-position divergence named by ``options.objective`` (temperature applied, no noise)."""
    t = options.temperature
    name = options.objective
    if name == "forward_kl":
        return forward_kl(student_logits, teacher_logits, t)
    if name == "reverse_kl":
        return reverse_kl(student_logits, teacher_logits, t)
    if name == "jsd":
        return jsd(student_logits, teacher_logits, options.beta, t)
    if name == "tvd":
        return tvd(student_logits, teacher_logits, t)
    if name == "skew_forward_kl":
        return skew_forward_kl(student_logits, teacher_logits, options.alpha, t)
    if name == "skew_reverse_kl":
        return skew_reverse_kl(student_logits, teacher_logits, options.alpha, t)
    if name == "symmetric_kl":
        return symmetric_kl(student_logits, teacher_logits, t)
    raise KdlensError(f"unknown objective {name!r}")


def noisy_teacher_logits(teacher_logits: torch.Tensor, options: KDOptions) -> torch.Tensor:
    """z_t + sigma * eps with eps[n, v] = tl.randn(seed, ((row_offset + n) << 32) | v), rows flattened."""
    if not options.has_noise:
        return teacher_logits
    vocab = teacher_logits.shape[-1]
    n_rows = teacher_logits.numel() // vocab
    rows = torch.arange(n_rows, device=teacher_logits.device) + options.noise_row_offset
    eps = philox_randn(options.noise_seed, rows, vocab).reshape(teacher_logits.shape)
    return teacher_logits + options.noise_sigma * eps.to(teacher_logits.dtype)


def _reduce(per_position: torch.Tensor, valid: torch.Tensor, reduction: str, normalizer) -> torch.Tensor:
    masked = torch.where(valid, per_position, torch.zeros_like(per_position))
    if reduction == "sum":
        return masked.sum()
    if reduction == "token_mean":
        return masked.sum() / valid.sum().clamp_min(1).to(masked.dtype)
    if reduction == "normalizer":
        if normalizer is None:
            raise KdlensError("reduction='normalizer' needs normalizer=<count of valid tokens>")
        norm = torch.as_tensor(normalizer, device=masked.device).to(masked.dtype)
        return masked.sum() / norm.clamp_min(1)
    if reduction == "paper_sequence_mean":
        seq_masked = masked if masked.dim() >= 2 else masked.reshape(1, -1)
        seq_valid = valid if valid.dim() >= 2 else valid.reshape(1, -1)
        seq_masked = seq_masked.reshape(seq_masked.shape[0], -1)
        seq_valid = seq_valid.reshape(seq_valid.shape[0], -1)
        per_seq = seq_masked.sum(1) / seq_valid.sum(1).clamp_min(1).to(masked.dtype)
        return per_seq.mean()
    raise KdlensError(f"unknown reduction {reduction!r}")


def _valid_positions(z_s: torch.Tensor, labels, attention_mask, options: KDOptions) -> torch.Tensor:
    """Positions that count, shaped like the logits' leading dims: label != ignore_index, attention != 0."""
    valid = torch.ones(z_s.shape[:-1], dtype=torch.bool, device=z_s.device)
    if labels is not None:
        valid = valid & (labels != options.ignore_index)
    if attention_mask is not None:
        valid = valid & (attention_mask != 0)
    return valid


def _plus_ce(per_position: torch.Tensor, z_s: torch.Tensor, valid: torch.Tensor, labels,
             options: KDOptions) -> torch.Tensor:
    """``per_position`` plus ce_weight * CE(z_s, label) at T = 1 (masked labels read as 0, then weighted out)."""
    if not options.has_ce:
        return per_position
    if labels is None:
        raise KdlensError("ce_weight > 0 needs labels (the hard targets of the cross-entropy term)")
    safe_labels = torch.where(valid, labels, torch.zeros_like(labels))
    ce = F.cross_entropy(z_s.reshape(-1, z_s.shape[-1]), safe_labels.reshape(-1), reduction="none")
    return per_position + options.ce_weight * ce.reshape(valid.shape)


def reference_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    options: KDOptions,
    labels: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    normalizer=None,
) -> torch.Tensor:
    """The full KD loss on logits ``[..., V_s]`` and ``[..., V_t]`` (see the module docstring). Scalar."""
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    compute = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    z_s = student_logits[..., :vocab].to(compute)
    z_t = noisy_teacher_logits(teacher_logits[..., :vocab].to(compute), options)
    valid = _valid_positions(z_s, labels, attention_mask, options)
    per_position = options.kd_coef * divergence(z_s, z_t, options)
    return _reduce(_plus_ce(per_position, z_s, valid, labels, options), valid, options.reduction, normalizer)


# ---------------------------------------------------------------------------------------------------------
# Sparse (top-k cached) teacher: the spec of kdlens.losses.sparse_kd_loss (formulas in its docstring).

SPARSE_OBJECTIVES = ("forward_kl", "reverse_kl", "jsd")
TAILS = ("renormalize", "rest")


def sparse_noisy_logits(teacher_ids: torch.Tensor, teacher_topk_logits: torch.Tensor,
                        options: KDOptions) -> torch.Tensor:
    """The cached logits plus sigma * eps[n, id] (eps keyed on the row and the vocabulary id, so equal to
    the dense noise at those columns); float32/64 [..., k]. The uncached tail gets no noise."""
    z = teacher_topk_logits
    if not options.has_noise:
        return z
    k = teacher_ids.shape[-1]
    ids = teacher_ids.reshape(-1, k).to(torch.int64)
    rows = torch.arange(ids.shape[0], device=ids.device) + options.noise_row_offset
    eps = philox_randn_at(options.noise_seed, rows, ids).reshape(teacher_ids.shape)
    return z + options.noise_sigma * eps.to(z.dtype)


def sparse_teacher_log_probs(teacher_ids, teacher_topk_logits, teacher_lse_t, options: KDOptions, tail: str,
                             vocab: int):
    """(lp over the cached ids [..., k], lp of the rest bucket [...] or None) at temperature T.

    renormalize: lp = log_softmax over the k ids of b = z'/T (z' the noisy cached logits);
    rest:        R = max(0, 1 - sum_k exp(z/T - lse_T)) the clean tail mass (0 when k >= V),
                 L = log(sum_k exp(b) + exp(lse_T) R), lp = b - L, lp_rest = lse_T + log R - L
    """
    compute = teacher_topk_logits.dtype
    inv_t = 1.0 / options.temperature
    b = sparse_noisy_logits(teacher_ids, teacher_topk_logits, options) * inv_t
    if tail == "renormalize":
        return torch.log_softmax(b, dim=-1), None
    lse_t = teacher_lse_t.to(compute)
    if teacher_ids.shape[-1] >= vocab:
        log_tail = torch.full_like(lse_t, float("-inf"))
    else:
        cached_mass = torch.exp(teacher_topk_logits * inv_t - lse_t.unsqueeze(-1)).sum(-1)
        log_tail = lse_t + torch.log1p(-cached_mass.clamp(max=1.0))
    norm = torch.logaddexp(torch.logsumexp(b, dim=-1), log_tail)
    return b - norm.unsqueeze(-1), (log_tail - norm)


def sparse_student_log_probs(student_logits, teacher_ids, temperature: float, tail: str):
    """(lq at the cached ids [..., k], lq of the rest bucket [...] or None): renormalize: log_softmax of
    z_s/T over the k ids; rest: log_softmax over the full vocabulary at the ids, and the log of the
    student's mass on the uncached ids (None when the ids cover the whole vocabulary)."""
    a = student_logits / temperature
    ids = teacher_ids.to(torch.int64)
    a_ids = a.gather(-1, ids)
    if tail == "renormalize":
        return torch.log_softmax(a_ids, dim=-1), None
    lse = torch.logsumexp(a, dim=-1, keepdim=True)
    if ids.shape[-1] >= a.shape[-1]:
        return a_ids - lse, None
    tail_logits = a.scatter(-1, ids, float("-inf"))
    return a_ids - lse, (torch.logsumexp(tail_logits, dim=-1) - lse.squeeze(-1))


def bucket_divergence(log_q: torch.Tensor, log_p: torch.Tensor, options: KDOptions) -> torch.Tensor:
    """The objective over the last dimension of bucket log-probabilities (0 log 0 = 0 on both sides)."""
    p, q = log_p.exp(), log_q.exp()
    zero = torch.zeros((), dtype=p.dtype, device=p.device)

    def rel(x, log_x, log_y):  # sum x (log x - log y), 0 where x = 0
        return torch.where(x > 0, x * (log_x - log_y), zero).sum(-1)

    if options.objective == "forward_kl":
        return rel(p, log_p, log_q)
    if options.objective == "reverse_kl":
        return rel(q, log_q, log_p)
    if options.objective == "jsd":
        beta = options.beta
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
        return beta * rel(p, log_p, log_m) + (1.0 - beta) * rel(q, log_q, log_m)
    raise KdlensError(f"the sparse-teacher loss supports {', '.join(SPARSE_OBJECTIVES)}, not {options.objective!r}")


def reference_sparse_kd_loss(student_logits, teacher_ids, teacher_topk_logits, teacher_lse_t, options: KDOptions,
                             tail: str, labels=None, attention_mask=None, normalizer=None, return_stats=False):
    """The sparse-teacher KD loss on full student logits [..., V] (plain autograd); see sparse_kd_loss."""
    compute = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    z_s = student_logits.to(compute)
    vocab = z_s.shape[-1]
    with torch.no_grad():
        lp, lp_rest = sparse_teacher_log_probs(teacher_ids, teacher_topk_logits.to(compute),
                                               None if teacher_lse_t is None else teacher_lse_t.to(compute),
                                               options, tail, vocab)
    lq, lq_rest = sparse_student_log_probs(z_s, teacher_ids, options.temperature, tail)
    if lp_rest is not None and lq_rest is not None:
        lp = torch.cat([lp, lp_rest.unsqueeze(-1)], dim=-1)
        lq = torch.cat([lq, lq_rest.unsqueeze(-1)], dim=-1)
    valid = _valid_positions(z_s, labels, attention_mask, options)
    per_position = options.kd_coef * bucket_divergence(lq, lp, options)
    loss = _reduce(_plus_ce(per_position, z_s, valid, labels, options), valid, options.reduction, normalizer)
    if not return_stats:
        return loss
    with torch.no_grad():
        b = sparse_noisy_logits(teacher_ids, teacher_topk_logits.to(compute), options)
        teacher_argmax = teacher_ids.to(torch.int64).gather(-1, b.argmax(-1, keepdim=True)).squeeze(-1)
        agree = (z_s.argmax(-1) == teacher_argmax).to(compute)
        h_s = entropy(torch.log_softmax(z_s / options.temperature, dim=-1))
        row_stats = torch.stack([agree, entropy(lp), h_s], dim=-1).reshape(-1, 3)
    return loss, token_stats(row_stats, valid)


def reference_dense_token_stats(student_logits, teacher_logits, options: KDOptions, labels=None,
                                attention_mask=None):
    """TokenStats of the dense loss (kdlens.losses.stats): on the shared vocabulary, noisy teacher."""
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    compute = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        z_s = student_logits[..., :vocab].to(compute)
        z_t = noisy_teacher_logits(teacher_logits[..., :vocab].to(compute), options)
        valid = _valid_positions(z_s, labels, attention_mask, options)
        rows = dense_row_stats(z_s.reshape(-1, vocab), z_t.reshape(-1, vocab), 1.0 / options.temperature)
    return token_stats(rows, valid)
