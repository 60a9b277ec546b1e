"""KD losses between teacher and student next-token distributions: reference, chunked (torch.compile), Triton.

Public API: ``kd_loss`` (one entry point, see its docstring for every formula and option), ``sparse_kd_loss``
(KD from a top-k cached teacher, formulas in its docstring), ``TokenStats`` (``return_stats=True`` of
both: token-level agreement and entropies, kdlens.losses.stats), the individual
objectives in ``kdlens.losses.reference`` (forward_kl, reverse_kl, jsd, tvd, skew_forward_kl,
skew_reverse_kl, symmetric_kl), ``philox_randn`` (the teacher-noise stream, Triton's tl.randn in torch)
and the names of the objectives, reductions and implementations.
Tests: ``python -m pytest tests/losses -q``.
"""

from kdlens.losses.dispatch import kd_loss
from kdlens.losses.noise import philox_randn
from kdlens.losses.options import IMPLEMENTATIONS, OBJECTIVES, REDUCTIONS, KDOptions
from kdlens.losses.reference import SPARSE_OBJECTIVES, TAILS
from kdlens.losses.sparse import sparse_kd_loss
from kdlens.losses.stats import TokenStats

__all__ = ["kd_loss", "sparse_kd_loss", "TokenStats", "philox_randn", "KDOptions", "OBJECTIVES", "REDUCTIONS",
           "IMPLEMENTATIONS", "SPARSE_OBJECTIVES", "TAILS"]
