"""KD losses between teacher and student next-token distributions: reference, chunked (torch.compile), Triton.

Public API: ``kd_loss`` (one entry point, see its docstring for every formula and option), the individual
objectives in ``kdlens.losses.reference`` (forward_kl, reverse_kl, jsd, tvd, skew_forward_kl,
skew_reverse_kl, symmetric_kl), ``philox_randn`` (the teacher-noise stream, Triton's tl.randn in torch)
and the names of the objectives, reductions and implementations.
Tests: ``python -m pytest tests/losses -q``.
"""

from kdlens.losses.dispatch import kd_loss
from kdlens.losses.noise import philox_randn
from kdlens.losses.options import IMPLEMENTATIONS, OBJECTIVES, REDUCTIONS, KDOptions

__all__ = ["kd_loss", "philox_randn", "KDOptions", "OBJECTIVES", "REDUCTIONS", "IMPLEMENTATIONS"]
