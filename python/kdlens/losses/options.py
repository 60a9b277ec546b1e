"""Validated KD-loss options shared by every implementation, and the per-row weights that encode masks and reductions.

Every fast path (chunked, Triton) computes ``loss = sum_n row_weight[n] * (kd_coef * KD_n + ce_coef * CE_n)``:
the mask (labels == ignore_index, attention mask == 0) and the reduction ("paper_sequence_mean",
"token_mean", "sum", "normalizer") are folded into ``row_weight`` with tensor ops only (no host sync),
so the gradient can be formed in the forward pass. The reference computes the reductions directly,
which is what the tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kdlens.errors import KdlensError
from kdlens.objectives import KERNEL_IDS, OBJECTIVES as OBJECTIVE_ROWS

# Objective name -> integer id used as a tl.constexpr in the Triton kernel (from kdlens.objectives).
OBJECTIVES = KERNEL_IDS
REDUCTIONS = ("paper_sequence_mean", "token_mean", "sum", "normalizer")
IMPLEMENTATIONS = ("reference", "chunked", "triton", "auto")


@dataclass(frozen=True)
class KDOptions:
    """The scalar options of a KD loss, validated once (see kdlens.losses.dispatch.kd_loss for meanings)."""

    objective: str = "forward_kl"
    temperature: float = 1.0
    scale_by_t2: bool = False
    beta: float = 0.5
    alpha: float = 0.1
    noise_sigma: float = 0.0
    noise_seed: int = 0
    noise_row_offset: int = 0
    ce_weight: float = 0.0
    ignore_index: int = -100
    reduction: str = "token_mean"

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise KdlensError(
                f"unknown KD objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}"
            )
        if self.reduction not in REDUCTIONS:
            raise KdlensError(f"unknown reduction {self.reduction!r}; choose one of {', '.join(REDUCTIONS)}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise KdlensError(f"temperature must be a positive finite number, got {self.temperature}")
        if not 0.0 < self.beta < 1.0:
            raise KdlensError(
                f"jsd beta must be strictly between 0 and 1, got {self.beta}; "
                "use objective='forward_kl' (beta -> 0 limit of jsd/beta) or 'reverse_kl' (beta -> 1)"
            )
        if not 0.0 < self.alpha < 1.0:
            raise KdlensError(f"skew alpha must be strictly between 0 and 1, got {self.alpha}")
        if not (self.noise_sigma >= 0 and math.isfinite(self.noise_sigma)):
            raise KdlensError(f"noise_sigma must be >= 0, got {self.noise_sigma}")
        if not 0 <= int(self.noise_seed) < 2**31:
            raise KdlensError(f"noise_seed must be an integer in [0, 2**31), got {self.noise_seed}")
        if not 0 <= int(self.noise_row_offset) < 2**31:
            raise KdlensError(f"noise_row_offset must be in [0, 2**31), got {self.noise_row_offset}")
        if not 0.0 <= self.ce_weight <= 1.0:
            raise KdlensError(f"ce_weight must be in [0, 1], got {self.ce_weight}")

    @property
    def objective_id(self) -> int:
        return OBJECTIVES[self.objective]

    @property
    def mix(self) -> float:
        """The objective's mixture weight, as the objective table names it: JSD's ``beta``, the skew
        objectives' ``alpha`` ("mix"); 0.5 (unused) for the others."""
        parameter = OBJECTIVE_ROWS[self.objective].extra_parameter
        return self.beta if parameter == "beta" else self.alpha if parameter == "mix" else 0.5

    @property
    def kd_coef(self) -> float:
        """Factor on the KD term: (1 - ce_weight), times T^2 when scale_by_t2."""
        t2 = self.temperature**2 if self.scale_by_t2 else 1.0
        return (1.0 - self.ce_weight) * t2

    @property
    def has_ce(self) -> bool:
        return self.ce_weight > 0.0

    @property
    def has_noise(self) -> bool:
        return self.noise_sigma > 0.0


def valid_mask(
    batch_shape: tuple[int, ...],
    labels: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    ignore_index: int,
    device: torch.device,
) -> torch.Tensor:
    """Boolean mask of positions that count, shaped ``batch_shape``: label != ignore_index and attention != 0."""
    valid = torch.ones(batch_shape, dtype=torch.bool, device=device)
    if labels is not None:
        if tuple(labels.shape) != tuple(batch_shape):
            raise KdlensError(f"labels shape {tuple(labels.shape)} does not match the token shape {batch_shape}")
        valid = valid & (labels.to(device) != ignore_index)
    if attention_mask is not None:
        if tuple(attention_mask.shape) != tuple(batch_shape):
            raise KdlensError(
                f"attention_mask shape {tuple(attention_mask.shape)} does not match the token shape {batch_shape}"
            )
        valid = valid & (attention_mask.to(device) != 0)
    return valid


def row_weights(
    valid: torch.Tensor, reduction: str, normalizer: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Float32 weights, one per position (flattened), such that loss = sum(weight * row_loss).

    ``valid`` is [B, S] for "paper_sequence_mean" (or [N], read as one sequence) and any shape otherwise.
    Empty sequences and an all-masked batch give weight 0 everywhere (loss 0, no NaN).
    """
    v = valid.to(torch.float32)
    if reduction == "sum":
        w = v
    elif reduction == "token_mean":
        w = v / v.sum().clamp_min(1.0)
    elif reduction == "paper_sequence_mean":
        seq = v if v.dim() >= 2 else v.reshape(1, -1)
        seq = seq.reshape(seq.shape[0], -1)
        per_seq = seq.sum(dim=1, keepdim=True).clamp_min(1.0)
        w = (seq / per_seq) / seq.shape[0]
    elif reduction == "normalizer":
        if normalizer is None:
            raise KdlensError(
                "reduction='normalizer' needs normalizer=<count of valid tokens in the whole accumulated batch>"
            )
        norm = torch.as_tensor(normalizer, dtype=torch.float32, device=v.device)
        w = v / norm.clamp_min(1.0)
    else:  # validated earlier
        raise KdlensError(f"unknown reduction {reduction!r}")
    return w.reshape(-1).contiguous()
