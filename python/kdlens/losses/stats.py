"""Token-level statistics that every KD loss implementation gives alongside the loss (``return_stats=True``).

Per valid position n (label != ignore_index and attention != 0, the positions the loss counts):
    agree_n           1 if argmax_v z_s[n, v] == the teacher's argmax, else 0 (ties: the lowest id)
    teacher_entropy_n -sum_j p_j log p_j over the teacher distribution the loss compares against
    student_entropy_n -sum_v q_v log q_v over the student's full (shared) vocabulary, q = softmax(z_s / T)
both entropies at the loss's temperature T, in nats; the teacher is the noisy one when noise_sigma > 0.
For a sparse (top-k cached) teacher the "teacher distribution the loss compares against" is:
    tail="renormalize": the top-k probabilities renormalised over the k cached ids;
    tail="rest":        the k cached probabilities plus one "rest" bucket holding the tail mass (a lower
                        bound on the full-vocabulary entropy: the tail is counted as a single outcome);
with k = V both are the full-vocabulary entropy, as for a dense teacher. The teacher's argmax is the
cached id with the largest (noisy) cached logit.
The implementations compute the per-row values inside the loss pass (the kernels hold each row's max and
log-sum-exp) into an [N, 3] buffer; ``token_stats`` sums it over the valid rows (one small reduction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenStats:
    """Sums over the valid positions of one loss call (0-dim float32 tensors on the loss's device; no
    host sync until you read them). Add two with ``+`` to accumulate over micro-batches."""

    valid_tokens: torch.Tensor
    agree_tokens: torch.Tensor
    teacher_entropy_sum: torch.Tensor
    student_entropy_sum: torch.Tensor

    def __add__(self, other: "TokenStats") -> "TokenStats":
        return TokenStats(*(a + b for a, b in zip(self._tensors(), other._tensors())))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.valid_tokens, self.agree_tokens, self.teacher_entropy_sum, self.student_entropy_sum)

    def means(self) -> dict[str, float]:
        """{"token_agreement", "teacher_entropy", "student_entropy"} as floats (means over the valid
        tokens; 0.0 when there are none). One host sync."""
        valid, agree, h_t, h_s = (float(t) for t in torch.stack(self._tensors()).double().cpu())
        denom = max(valid, 1.0)
        return {"token_agreement": agree / denom, "teacher_entropy": h_t / denom, "student_entropy": h_s / denom}


def token_stats(row_stats: torch.Tensor, valid: torch.Tensor) -> TokenStats:
    """TokenStats from per-row ``row_stats`` [N, 3] (agree, teacher entropy, student entropy) and the
    valid mask (any shape with N elements). Invalid rows may hold anything (they are zeroed here)."""
    v = valid.reshape(-1).to(device=row_stats.device)
    sums = torch.where(v.unsqueeze(-1), row_stats.float(), torch.zeros((), device=row_stats.device)).sum(0)
    return TokenStats(v.sum().to(torch.float32), sums[0], sums[1], sums[2])


def dense_row_stats(z_s: torch.Tensor, z_t: torch.Tensor, inv_t: float) -> torch.Tensor:
    """[rows, 3] (agree, H_teacher, H_student) for full student and (noisy) teacher logits [rows, V]."""
    lq = torch.log_softmax(z_s.float() * inv_t, dim=-1)
    lp = torch.log_softmax(z_t.float() * inv_t, dim=-1)
    agree = (z_s.argmax(-1) == z_t.argmax(-1)).float()
    return torch.stack([agree, entropy(lp), entropy(lq)], dim=-1)


def entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """-sum p log p over the last dimension, with 0 log 0 = 0 (log-probabilities of -inf)."""
    p = log_probs.exp()
    return -torch.where(p > 0, p * log_probs, torch.zeros((), dtype=p.dtype, device=p.device)).sum(-1)
