"""``sparse_kd_loss``: KD from a top-k cached teacher (ids, logits, full-vocabulary log-sum-exp); no teacher GEMM.

Implementations (the same function, tested against each other): "reference" (plain PyTorch on full student
logits, kdlens.losses.reference), "chunked" (torch row chunks, gradient formed in forward,
kdlens.losses.chunked), "triton" (the sparse row kernel, kernels/kd_sparse.py, in the fused-linear chunk
loop), "auto" (triton on CUDA, chunked otherwise).
"""

from __future__ import annotations

import math

import torch

from kdlens.errors import KdlensError
from kdlens.losses.dispatch import DEFAULT_CHUNK_BYTES_CPU, DEFAULT_CHUNK_BYTES_CUDA, DEFAULT_CHUNK_BYTES_CUDA_LEAN
from kdlens.losses.dispatch import DW_ACCUMULATIONS, _round_to, check_labels
from kdlens.losses.options import IMPLEMENTATIONS, KDOptions, row_weights, valid_mask
from kdlens.losses.reference import SPARSE_OBJECTIVES, TAILS
from kdlens.losses.stats import TokenStats, token_stats

# The Triton kernel holds a row's k cached entries in one block of next_power_of_2(k) lanes: at 16384 that
# is 32 values per thread and tensor with 16 warps. Larger k (e.g. k = V, a test configuration) runs chunked.
MAX_SPARSE_K = 16384


def sparse_kd_loss(
    student_logits: torch.Tensor | None = None,
    *,
    student_hidden: torch.Tensor | None = None,
    student_weight: torch.Tensor | None = None,
    teacher_ids: torch.Tensor,
    teacher_topk_logits: torch.Tensor,
    teacher_lse: torch.Tensor | None = None,
    teacher_temperatures: tuple[float, ...] | list[float] | None = None,
    teacher_vocab_size: int | None = None,
    tail: str = "rest",
    objective: str = "forward_kl",
    temperature: float = 1.0,
    scale_by_t2: bool = False,
    beta: float = 0.5,
    noise_sigma: float = 0.0,
    noise_seed: int = 0,
    noise_row_offset: int = 0,
    ce_weight: float = 0.0,
    labels: torch.Tensor | None = None,
    ignore_index: int = -100,
    attention_mask: torch.Tensor | None = None,
    reduction: str = "token_mean",
    normalizer: torch.Tensor | float | None = None,
    implementation: str = "auto",
    chunk_bytes: int | None = None,
    compile: bool = True,
    compute_dtype: torch.dtype | None = None,
    dw_accumulation: str = "fp32",
    check_ids: bool = True,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, TokenStats]:
    """KD loss against a sparse teacher: its top-k ids and logits and its full-vocabulary log-sum-exp.

    Student, one of two forms (positions not shifted, as in ``kd_loss``): ``student_logits`` [..., V] or
    ``student_hidden`` [..., H] + ``student_weight`` (lm_head) [V, H]; the hidden form never holds the
    N x V logits (chunked/triton). Teacher, per position: ``teacher_ids`` [..., k] (int32/int64, distinct,
    in [0, V)), ``teacher_topk_logits`` [..., k] (raw logits at T = 1, any float dtype), ``teacher_lse``
    [..., n_T] (float32: logsumexp over the FULL vocabulary of z_t / T_i for each cached temperature
    ``teacher_temperatures`` = (T_1, ..., T_nT)). ``teacher_vocab_size`` (optional): the vocabulary the
    cache was made with; it must equal V.

    Let a = z_s / T (full student row), z' = z + noise_sigma * eps the cached logits with noise (eps[n, v] =
    tl.randn(noise_seed, ((noise_row_offset + n) << 32) | v) at the cached ids v, the same numbers the dense
    kd_loss adds at those columns), b = z' / T over the k ids S. Buckets and probabilities:
      tail="renormalize": buckets = S. p = softmax_S(b), q = softmax_S(a_S) (both renormalised over S;
        teacher_lse is not read, so any temperature works). The student's uncached logits get no KD
        gradient.
      tail="rest": buckets = S + one "rest" bucket (the uncached ids, present when k < V).
        The cached tail mass R = max(0, 1 - sum_S exp(z_v / T - lse_T)) (clean logits; lse_T the cached
        log-sum-exp at this T, which must be one of teacher_temperatures), L = log(sum_S exp(b_v) +
        exp(lse_T) R), p_v = exp(b_v - L), p_rest = exp(lse_T) R / exp(L); without noise L = lse_T.
        Noise touches the cached logits only: the tail keeps its unnormalised mass exp(lse_T) R, as its
        logits are unknown. q_v = softmax(a)_v over the full vocabulary, q_rest = sum_{v not in S} q_v
        (computed as a log-sum-exp over the uncached columns, no 1 - sum cancellation); the gradient
        reaches every student logit (tail logits through q_rest).
    Objective D over the buckets (0 log 0 = 0): "forward_kl" KL(p||q), "reverse_kl" KL(q||p), "jsd"
      beta KL(p||m) + (1-beta) KL(q||m), m = beta p + (1-beta) q. With k = V both tails equal the dense
      kd_loss (tested to 1e-5). Reverse KL with tail="rest" is +inf where the cache says the tail mass is 0
      (R clamped at 0, e.g. rounding of bf16 cached logits) but the student's is not; JSD is always finite.
    Per position: l = kd_coef * D + ce_weight * CE(z_s, label), kd_coef = (1 - ce_weight) * (T^2 if
      scale_by_t2); CE on the raw full student logits. Masks (labels == ignore_index, attention_mask == 0),
      reductions ("paper_sequence_mean", "token_mean", "sum", "normalizer"), ``implementation``,
      ``chunk_bytes``, ``compile``, ``compute_dtype`` and ``dw_accumulation`` as in ``kd_loss``.
    ``check_ids``: verify ids lie in [0, V) and are distinct per row (one host sync; skipped while
      torch.compile traces or a CUDA graph is captured).
    ``return_stats=True`` returns (loss, TokenStats) (kdlens.losses.stats: valid tokens, student argmax ==
      teacher argmax, sums of teacher and student entropy at T; the teacher entropy is over the buckets
      above, so with tail="rest" it counts the tail as one outcome), computed in the loss pass.
    """
    if implementation not in IMPLEMENTATIONS:
        raise KdlensError(f"unknown implementation {implementation!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    if tail not in TAILS:
        raise KdlensError(f"unknown tail {tail!r}; choose 'renormalize' (over the top-k) or 'rest' (a tail bucket)")
    if objective not in SPARSE_OBJECTIVES:
        raise KdlensError(f"the sparse-teacher loss supports objective {', '.join(SPARSE_OBJECTIVES)}; "
                          f"got {objective!r}")
    opts = KDOptions(
        objective=objective, temperature=float(temperature), scale_by_t2=bool(scale_by_t2), beta=float(beta),
        noise_sigma=float(noise_sigma), noise_seed=int(noise_seed), noise_row_offset=int(noise_row_offset),
        ce_weight=float(ce_weight), ignore_index=int(ignore_index), reduction=reduction,
    )
    named = (("student_logits", student_logits), ("student_hidden", student_hidden),
             ("student_weight", student_weight), ("teacher_ids", teacher_ids),
             ("teacher_topk_logits", teacher_topk_logits), ("teacher_lse", teacher_lse), ("labels", labels),
             ("attention_mask", attention_mask))
    for name, t in named:
        if t is not None and not isinstance(t, torch.Tensor):
            raise KdlensError(f"{name} must be a torch.Tensor, got {type(t).__module__}.{type(t).__name__} "
                              "(convert with torch.as_tensor)")
    if student_logits is not None and (student_hidden is not None or student_weight is not None):
        raise KdlensError("give either student_logits, or student_hidden and student_weight (not both)")
    if student_logits is not None:
        lead, vocab, device = tuple(student_logits.shape[:-1]), student_logits.shape[-1], student_logits.device
    else:
        if student_hidden is None or student_weight is None:
            raise KdlensError("give student_logits, or both student_hidden and student_weight (lm_head [V, H])")
        if student_weight.dim() != 2 or student_weight.shape[1] != student_hidden.shape[-1]:
            raise KdlensError(f"student_weight {tuple(student_weight.shape)} must be the lm_head [V, H] of hidden "
                              f"size H = {student_hidden.shape[-1]}")
        lead, vocab, device = tuple(student_hidden.shape[:-1]), student_weight.shape[0], student_hidden.device
    if vocab == 0:
        raise KdlensError("the student vocabulary is empty")
    if teacher_vocab_size is not None and int(teacher_vocab_size) != vocab:
        raise KdlensError(f"vocabulary mismatch: the teacher cache was made with {int(teacher_vocab_size)} "
                          f"vocabulary entries, the student has {vocab}; use a cache of a teacher with the "
                          "student's tokenizer and vocabulary")
    if teacher_ids.dtype not in (torch.int32, torch.int64):
        raise KdlensError(f"teacher_ids must be int32 or int64, got {teacher_ids.dtype}")
    if not teacher_topk_logits.dtype.is_floating_point:
        raise KdlensError(f"teacher_topk_logits must be a float tensor, got {teacher_topk_logits.dtype}")
    if teacher_ids.dim() < 1 or tuple(teacher_ids.shape[:-1]) != lead or teacher_ids.shape[-1] == 0:
        raise KdlensError(f"teacher_ids {tuple(teacher_ids.shape)} must be [..., k] (k >= 1) over the student's "
                          f"positions {lead}")
    if tuple(teacher_topk_logits.shape) != tuple(teacher_ids.shape):
        raise KdlensError(f"teacher_topk_logits {tuple(teacher_topk_logits.shape)} must have the shape of "
                          f"teacher_ids {tuple(teacher_ids.shape)}")
    k = teacher_ids.shape[-1]
    if k > vocab:
        raise KdlensError(f"the cache holds k = {k} ids per position but the vocabulary has only {vocab}")
    lse_t = None  # only the rest bucket reads the log-sum-exp: renormalize works at any temperature
    if tail == "rest":
        lse_t = _select_lse(teacher_lse, teacher_temperatures, opts.temperature, lead)
    if opts.has_ce and labels is None:
        raise KdlensError("ce_weight > 0 needs labels (the hard targets of the cross-entropy term)")
    if labels is not None:
        if tuple(labels.shape) != lead:
            raise KdlensError(f"labels shape {tuple(labels.shape)} does not match the positions {lead}")
        check_labels(labels, vocab, int(ignore_index))
    if attention_mask is not None and tuple(attention_mask.shape) != lead:
        raise KdlensError(f"attention_mask shape {tuple(attention_mask.shape)} does not match the positions {lead}")
    if reduction == "normalizer" and normalizer is None:
        raise KdlensError("reduction='normalizer' needs normalizer=<count of valid tokens in the accumulated batch>")
    if dw_accumulation not in DW_ACCUMULATIONS:
        raise KdlensError(f"dw_accumulation must be one of {', '.join(DW_ACCUMULATIONS)}, got {dw_accumulation!r}")
    if check_ids:
        check_teacher_ids(teacher_ids, vocab)

    impl = implementation
    if impl == "auto":
        impl = "triton" if device.type == "cuda" and k <= MAX_SPARSE_K else "chunked"
    if impl == "triton" and k > MAX_SPARSE_K:
        raise KdlensError(f"implementation='triton' takes at most k = {MAX_SPARSE_K} cached ids per position, "
                          f"got k = {k}; use implementation='chunked' (or 'auto')")
    ids = teacher_ids.to(device)
    zt = teacher_topk_logits.detach().to(device)
    if impl == "reference":
        from kdlens.losses.reference import reference_sparse_kd_loss

        z_s = student_logits
        if z_s is None:
            compute = torch.float64 if student_hidden.dtype == torch.float64 else torch.float32
            z_s = (_round_to(student_hidden, compute_dtype).to(compute)
                   @ _round_to(student_weight, compute_dtype).to(compute).t())
        return reference_sparse_kd_loss(z_s, ids, zt, lse_t, opts, tail, labels, attention_mask, normalizer,
                                        return_stats=return_stats)

    valid = valid_mask(lead, labels, attention_mask, opts.ignore_index, device)
    weight = row_weights(valid, reduction, normalizer)
    flat_labels = labels.reshape(-1).to(device=device, dtype=torch.int64) if opts.has_ce else None
    lean = dw_accumulation == "weight_dtype"
    if chunk_bytes is None:
        chunk_bytes = (DEFAULT_CHUNK_BYTES_CPU if device.type != "cuda"
                       else DEFAULT_CHUNK_BYTES_CUDA_LEAN if lean else DEFAULT_CHUNK_BYTES_CUDA)
    teacher = SparseTeacher(
        ids=ids.reshape(-1, k).to(torch.int64).contiguous(),
        logits=zt.reshape(-1, k).contiguous(),
        lse=(lse_t.reshape(-1).to(device=device, dtype=torch.float32).contiguous() if lse_t is not None
             else torch.zeros(weight.shape[0], dtype=torch.float32, device=device)),
        tail=tail,
        vocab=vocab,
    )
    row_stats = torch.zeros(weight.shape[0], 3, dtype=torch.float32, device=device) if return_stats else None
    if not torch.is_grad_enabled():
        student_logits, student_hidden, student_weight = (
            None if t is None else t.detach() for t in (student_logits, student_hidden, student_weight))
    from kdlens.losses.chunked import ChunkedSparseLinearKD, ChunkedSparseLogitsKD

    if student_logits is not None:
        z_s = student_logits.reshape(-1, vocab)
        if impl == "triton":
            from kdlens.losses.autograd import TritonSparseLogitsKD

            z_s = z_s if z_s.stride(-1) == 1 else z_s.contiguous()
            loss = TritonSparseLogitsKD.apply(z_s, teacher, weight, flat_labels, opts, row_stats)
        else:
            loss = ChunkedSparseLogitsKD.apply(z_s, teacher, weight, flat_labels, opts, int(chunk_bytes),
                                               bool(compile), row_stats)
    else:
        x_s = student_hidden.reshape(-1, student_hidden.shape[-1])
        if impl == "triton":
            from kdlens.losses.autograd import TritonSparseLinearKD

            loss = TritonSparseLinearKD.apply(x_s, student_weight, teacher, weight, flat_labels, opts,
                                              int(chunk_bytes), compute_dtype, lean, row_stats)
        else:
            loss = ChunkedSparseLinearKD.apply(x_s, student_weight, teacher, weight, flat_labels, opts,
                                               int(chunk_bytes), bool(compile), compute_dtype, lean, row_stats)
    if not return_stats:
        return loss
    return loss, token_stats(row_stats, valid)


class SparseTeacher:
    """The sparse teacher of one loss call, flattened to rows: ids [N, k] int64, logits [N, k] (as cached),
    lse [N] fp32 at the loss's temperature (zeros when tail="renormalize" and none was given), the tail
    rule and the student's vocabulary size."""

    def __init__(self, ids: torch.Tensor, logits: torch.Tensor, lse: torch.Tensor, tail: str, vocab: int):
        self.ids, self.logits, self.lse, self.tail, self.vocab = ids, logits, lse, tail, vocab

    @property
    def has_rest(self) -> bool:
        """A rest bucket exists: tail="rest" and the ids do not cover the whole vocabulary (k < V)."""
        return self.tail == "rest" and self.ids.shape[1] < self.vocab

    def padded_rows(self, start: int, n_rows: int) -> "SparseTeacher":
        """Rows [start, start + n_rows); rows past the end are padding (ids 0..k-1, logits and lse 0)."""
        end = min(start + n_rows, self.ids.shape[0])
        part = SparseTeacher(self.ids[start:end], self.logits[start:end], self.lse[start:end], self.tail,
                             self.vocab)
        pad = n_rows - (end - start)
        if pad > 0:
            k = self.ids.shape[1]
            part.ids = torch.cat([part.ids, torch.arange(k, device=part.ids.device).expand(pad, k)])
            part.logits = torch.cat([part.logits, part.logits.new_zeros(pad, k)])
            part.lse = torch.cat([part.lse, part.lse.new_zeros(pad)])
        return part


def _select_lse(teacher_lse, teacher_temperatures, temperature: float, lead: tuple) -> torch.Tensor:
    """teacher_lse[..., i] for the cached temperature T_i == temperature, else a KdlensError."""
    if teacher_lse is None or teacher_temperatures is None:
        raise KdlensError("tail='rest' needs teacher_lse and teacher_temperatures (the cached full-vocabulary "
                          "log-sum-exp); use tail='renormalize' for a cache without them")
    temps = [float(t) for t in teacher_temperatures]
    if teacher_lse.dim() != len(lead) + 1 or tuple(teacher_lse.shape[:-1]) != lead \
            or teacher_lse.shape[-1] != len(temps):
        raise KdlensError(f"teacher_lse {tuple(teacher_lse.shape)} must be [..., n_T] over the positions {lead} "
                          f"with n_T = {len(temps)} (one per cached temperature)")
    if not teacher_lse.dtype.is_floating_point:
        raise KdlensError(f"teacher_lse must be a float tensor, got {teacher_lse.dtype}")
    for i, t in enumerate(temps):
        if math.isclose(t, temperature, rel_tol=1e-6, abs_tol=0.0):
            return teacher_lse[..., i].detach()
    raise KdlensError(f"temperature {temperature} is not in the teacher cache (cached temperatures: "
                      f"{', '.join(f'{t:g}' for t in temps)}); rebuild the cache with it or train at a cached one")


# check_teacher_ids marks ids in a [rows, vocab] int32 table up to this many entries (64 MB), else sorts
_MARK_ELEMENTS = 1 << 24


def check_teacher_ids(teacher_ids: torch.Tensor, vocab: int) -> None:
    """Raise a KdlensError unless every id is in [0, vocab) and the ids of each position are distinct (one
    host sync; skipped while torch.compile traces or a CUDA graph is captured)."""
    if teacher_ids.numel() == 0 or torch.compiler.is_compiling():
        return
    if teacher_ids.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    bad = (teacher_ids < 0) | (teacher_ids >= vocab)
    if bool(bad.any()):
        raise KdlensError(f"teacher ids must be in [0, {vocab}) (the student's vocabulary); found "
                          f"{int(teacher_ids[bad][0])} ({int(bad.sum())} ids out of range): the cache belongs "
                          "to another vocabulary")
    ids = teacher_ids.reshape(-1, teacher_ids.shape[-1])
    if ids.shape[-1] > 1:
        if ids.shape[0] * vocab <= _MARK_ELEMENTS:  # mark each row's ids in a [rows, vocab] table: O(rows k)
            marks = torch.zeros(ids.shape[0], vocab, dtype=torch.int32, device=ids.device)
            marks.scatter_(1, ids.long(), 1)
            repeated = bool((marks.sum(dim=-1) != ids.shape[-1]).any())
        else:  # a large vocabulary: sort each row (O(rows k log k), no [rows, vocab] table)
            srt = ids.sort(dim=-1).values
            repeated = bool((srt[:, 1:] == srt[:, :-1]).any())
        if repeated:
            raise KdlensError("teacher ids repeat within a position; the top-k ids of a position must be distinct")
