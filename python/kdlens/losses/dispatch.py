"""``kd_loss``: the one entry point to kdlens's KD losses; validates inputs and picks the implementation.

Implementations (all the same function, tested against each other):
    "reference"  plain PyTorch on full logits (kdlens.losses.reference): the spec
    "chunked"    torch.compile'd row chunks, gradient formed in forward (kdlens.losses.chunked)
    "triton"     fused Triton kernels (kdlens.kernels via kdlens.losses.autograd)
    "auto"       "triton" when the inputs are on CUDA, "chunked" otherwise
"""

from __future__ import annotations

import torch

from kdlens.errors import KdlensError
from kdlens.losses.options import IMPLEMENTATIONS, KDOptions, row_weights, valid_mask
from kdlens.losses.stats import TokenStats, token_stats

DEFAULT_CHUNK_BYTES_CPU = 128 * 2**20
# 1024-row chunks at V = 151936 on CUDA: two fp32 [c, V] logit workspaces + a ring of two bf16 gradient chunks
DEFAULT_CHUNK_BYTES_CUDA = 1792 * 2**20
# dw_accumulation="weight_dtype" is the memory-lean mode: 768-row chunks at V = 151936 (1.3 GiB of workspace)
DEFAULT_CHUNK_BYTES_CUDA_LEAN = 1536 * 2**20
DW_ACCUMULATIONS = ("fp32", "weight_dtype")


def kd_loss(
    student_logits: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    *,
    student_hidden: torch.Tensor | None = None,
    student_weight: torch.Tensor | None = None,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    objective: str = "forward_kl",
    temperature: float = 1.0,
    scale_by_t2: bool = False,
    beta: float = 0.5,
    alpha: float = 0.1,
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
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, TokenStats]:
    """Knowledge-distillation loss between student and teacher next-token distributions (scalar, with autograd).

    Inputs, one of two forms (positions are NOT shifted: row n of student and teacher is the same token):
      logits form: ``student_logits`` [B, S, V_s] or [N, V_s], ``teacher_logits`` [..., V_t] (same leading dims)
      hidden form: ``student_hidden`` [B, S, H_s] or [N, H_s], ``student_weight`` (lm_head) [V_s, H_s],
                   ``teacher_hidden`` [..., H_t], ``teacher_weight`` [V_t, H_t] (no biases); the logits are
                   formed chunk by chunk and never held for all rows (chunked/triton).
    V_s != V_t: both are cut to the shared prefix min(V_s, V_t) (the paper's rule); the student's extra
    columns get zero gradient. The teacher never receives a gradient (except in "reference", plain autograd).

    Per position (q = softmax(z_s/T) student, p = softmax(z_t'/T) teacher, z_t' = z_t + noise_sigma * eps):
      l = kd_coef * D(q, p) + ce_weight * CE(z_s, label),   kd_coef = (1 - ce_weight) * (T^2 if scale_by_t2)
    objective D (argument order fixed: objective(student, teacher)):
      "forward_kl" KL(p||q) | "reverse_kl" KL(q||p) | "jsd" beta KL(p||m) + (1-beta) KL(q||m),
      m = beta p + (1-beta) q, beta in (0,1) | "tvd" 0.5 sum|p-q| | "skew_forward_kl" KL(p || alpha p +
      (1-alpha) q) | "skew_reverse_kl" KL(q || alpha q + (1-alpha) p) | "symmetric_kl" KL(p||q) + KL(q||p).
    Noise: eps[n, v] = tl.randn(noise_seed, ((noise_row_offset + n) << 32) | v) (Philox), n the flattened
      row; identical in all implementations and for any chunking. Pass a fresh seed per step.
    CE is on the raw student logits (T = 1) over the shared vocabulary; it needs ``labels`` ([B, S] / [N]).
    Mask: positions with labels == ignore_index (when labels are given) or attention_mask == 0 (when given)
      contribute nothing. Reductions over valid positions: "paper_sequence_mean" (mean per sequence, then
      mean over the B sequences; needs [B, S] labels/mask or [B, S, .] inputs; an empty sequence counts 0),
      "token_mean", "sum", "normalizer" (sum / ``normalizer``, e.g. the valid tokens of the whole
      accumulated batch as a tensor: no host sync). An all-masked batch gives 0, not NaN.
    The paper's settings: SeqKD = forward_kl, RevKD = reverse_kl, both reduction="paper_sequence_mean",
      scale_by_t2=True, masked by attention_mask; GKD = jsd, beta=0.5, temperature=1, labels with -100,
      reduction="token_mean".
    ``implementation``: "reference" | "chunked" | "triton" | "auto" (triton on CUDA, chunked otherwise).
    ``chunk_bytes``: workspace budget per chunk (default 1.75 GiB on CUDA, i.e. 1024 rows at V = 151936;
      128 MiB on CPU).
    ``compile``: torch.compile the chunked path's element-wise step (False runs the same code eagerly).
    ``compute_dtype``: dtype of the lm_head GEMM operands in the hidden form (e.g. torch.bfloat16 when
      training fp32 master weights under bf16 autocast; None keeps the inputs' dtype). Products always
      accumulate in fp32, and dX / dW come back in the inputs' own dtypes (dW accumulated in fp32).
    ``dw_accumulation`` (hidden form, chunked/triton): "fp32" sums the lm_head gradient over chunks in an
      fp32 [V, H] buffer (exact; for bf16 weights it costs the bf16 dW plus 2 bytes per element more);
      "weight_dtype" adds each chunk group's fp32-accumulated product into dW in the weight's own dtype
      (bf16 weights: one rounding per dW GEMM, 6 of them at N = 8192 with the default 768-row chunks;
      the bf16 dW's memory only, and a 1.5 GiB default workspace), like Liger-Kernel's default.
    Labels must lie in [0, V) (V the shared vocabulary) or equal ignore_index; anything else is an error
      (one host sync; skipped while torch.compile traces or a CUDA graph is captured).
    A teacher logit of -inf (probability 0, e.g. a masked vocabulary entry) gives finite losses and
    gradients wherever the divergence is finite (forward KL, JSD, TVD, skew forward KL).
    ``return_stats=True`` returns (loss, TokenStats) (kdlens.losses.stats): over the valid positions, the
      count, the positions where argmax z_s == argmax z_t' (shared vocabulary, noisy teacher), and the sums
      of teacher and student entropy at temperature T; computed in the loss pass by every implementation.
    """
    if implementation not in IMPLEMENTATIONS:
        raise KdlensError(f"unknown implementation {implementation!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    opts = KDOptions(
        objective=objective, temperature=float(temperature), scale_by_t2=bool(scale_by_t2), beta=float(beta),
        alpha=float(alpha), noise_sigma=float(noise_sigma), noise_seed=int(noise_seed),
        noise_row_offset=int(noise_row_offset), ce_weight=float(ce_weight), ignore_index=int(ignore_index),
        reduction=reduction,
    )
    named = (("student_logits", student_logits), ("teacher_logits", teacher_logits),
             ("student_hidden", student_hidden), ("student_weight", student_weight),
             ("teacher_hidden", teacher_hidden), ("teacher_weight", teacher_weight), ("labels", labels),
             ("attention_mask", attention_mask))
    for name, t in named:
        if t is not None and not isinstance(t, torch.Tensor):
            raise KdlensError(f"{name} must be a torch.Tensor, got {type(t).__module__}.{type(t).__name__} "
                              "(convert with torch.as_tensor)")
    logits_form = student_logits is not None or teacher_logits is not None
    hidden_form = any(t is not None for t in (student_hidden, student_weight, teacher_hidden, teacher_weight))
    if logits_form == hidden_form:
        raise KdlensError(
            "give either student_logits and teacher_logits, or student_hidden, student_weight, teacher_hidden "
            "and teacher_weight (not both, not neither)"
        )
    if logits_form:
        if student_logits is None or teacher_logits is None:
            raise KdlensError("the logits form needs both student_logits and teacher_logits")
        lead_s, lead_t = tuple(student_logits.shape[:-1]), tuple(teacher_logits.shape[:-1])
        device = student_logits.device
    else:
        missing = [n for n, t in (("student_hidden", student_hidden), ("student_weight", student_weight),
                                  ("teacher_hidden", teacher_hidden), ("teacher_weight", teacher_weight)) if t is None]
        if missing:
            raise KdlensError(f"the hidden form also needs {', '.join(missing)}")
        lead_s, lead_t = tuple(student_hidden.shape[:-1]), tuple(teacher_hidden.shape[:-1])
        device = student_hidden.device
        if student_weight.dim() != 2 or teacher_weight.dim() != 2:
            raise KdlensError("student_weight and teacher_weight must be 2-D lm_head weights [V, H]")
        if student_weight.shape[1] != student_hidden.shape[-1] or teacher_weight.shape[1] != teacher_hidden.shape[-1]:
            raise KdlensError(
                f"hidden sizes do not match the lm_head weights: student {student_hidden.shape[-1]} vs "
                f"{student_weight.shape[1]}, teacher {teacher_hidden.shape[-1]} vs {teacher_weight.shape[1]}"
            )
    vocab_sizes = ((student_logits.shape[-1], teacher_logits.shape[-1]) if logits_form
                   else (student_weight.shape[0], teacher_weight.shape[0]))
    if min(vocab_sizes) == 0:
        raise KdlensError(f"the vocabulary is empty (student {vocab_sizes[0]}, teacher {vocab_sizes[1]} columns)")
    if lead_s != lead_t:
        raise KdlensError(f"student and teacher cover different positions: {lead_s} vs {lead_t}")
    if opts.has_ce and labels is None:
        raise KdlensError("ce_weight > 0 needs labels (the hard targets of the cross-entropy term)")
    batch_shape = lead_s
    if labels is not None and tuple(labels.shape) != batch_shape:
        raise KdlensError(f"labels shape {tuple(labels.shape)} does not match the positions {batch_shape}")
    if attention_mask is not None and tuple(attention_mask.shape) != batch_shape:
        raise KdlensError(f"attention_mask shape {tuple(attention_mask.shape)} does not match the positions {batch_shape}")
    if dw_accumulation not in DW_ACCUMULATIONS:
        raise KdlensError(f"dw_accumulation must be one of {', '.join(DW_ACCUMULATIONS)}, got {dw_accumulation!r}")
    if compute_dtype is not None and compute_dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        raise KdlensError(
            f"compute_dtype must be a floating dtype (torch.bfloat16, float16, float32), got {compute_dtype}")
    if labels is not None:
        if logits_form:
            shared_vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
        else:
            shared_vocab = min(student_weight.shape[0], teacher_weight.shape[0])
        check_labels(labels, shared_vocab, int(ignore_index))
    if reduction == "normalizer" and normalizer is None:
        raise KdlensError("reduction='normalizer' needs normalizer=<count of valid tokens in the accumulated batch>")

    impl = implementation
    if impl == "auto":
        impl = "triton" if device.type == "cuda" else "chunked"

    if impl == "reference":
        from kdlens.losses.reference import reference_kd_loss

        if hidden_form:
            compute = torch.float64 if student_hidden.dtype == torch.float64 else torch.float32
            rnd = (lambda t: _round_to(t, compute_dtype).to(compute))  # noqa: E731
            student_logits = rnd(student_hidden) @ rnd(student_weight).t()
            with torch.no_grad():
                teacher_logits = rnd(teacher_hidden) @ rnd(teacher_weight).t()
        loss = reference_kd_loss(student_logits, teacher_logits, opts, labels, attention_mask, normalizer)
        if not return_stats:
            return loss
        from kdlens.losses.reference import reference_dense_token_stats

        return loss, reference_dense_token_stats(student_logits, teacher_logits, opts, labels, attention_mask)

    valid = valid_mask(batch_shape, labels, attention_mask, opts.ignore_index, device)
    weight = row_weights(valid, reduction, normalizer)
    flat_labels = labels.reshape(-1).to(device=device, dtype=torch.int64) if opts.has_ce else None
    lean = dw_accumulation == "weight_dtype"
    if chunk_bytes is None:
        if device.type != "cuda":
            chunk_bytes = DEFAULT_CHUNK_BYTES_CPU
        else:
            chunk_bytes = DEFAULT_CHUNK_BYTES_CUDA_LEAN if lean else DEFAULT_CHUNK_BYTES_CUDA

    if not torch.is_grad_enabled():  # needs_input_grad ignores grad mode: detach, so no gradient is formed
        student_logits, student_hidden, student_weight = (
            None if t is None else t.detach() for t in (student_logits, student_hidden, student_weight))
    row_stats = torch.zeros(weight.shape[0], 3, dtype=torch.float32, device=device) if return_stats else None
    if logits_form:
        z_s = student_logits.reshape(-1, student_logits.shape[-1])
        z_t = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1])
        if impl == "triton":
            from kdlens.losses.autograd import TritonLogitsKD

            z_s = z_s if z_s.stride(-1) == 1 else z_s.contiguous()
            z_t = z_t if z_t.stride(-1) == 1 else z_t.contiguous()
            loss = TritonLogitsKD.apply(z_s, z_t, weight, flat_labels, opts, row_stats)
        else:
            from kdlens.losses.chunked import ChunkedLogitsKD

            loss = ChunkedLogitsKD.apply(z_s, z_t, weight, flat_labels, opts, int(chunk_bytes), bool(compile),
                                         row_stats)
    else:
        x_s = student_hidden.reshape(-1, student_hidden.shape[-1])
        x_t = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])
        w_t = teacher_weight.detach()
        if impl == "triton":
            from kdlens.losses.autograd import TritonFusedLinearKD

            loss = TritonFusedLinearKD.apply(x_s, student_weight, x_t, w_t, weight, flat_labels, opts,
                                             int(chunk_bytes), compute_dtype, lean, row_stats)
        else:
            from kdlens.losses.chunked import ChunkedLinearKD

            loss = ChunkedLinearKD.apply(x_s, student_weight, x_t, w_t, weight, flat_labels, opts, int(chunk_bytes),
                                         bool(compile), compute_dtype, lean, row_stats)
    if not return_stats:
        return loss
    return loss, token_stats(row_stats, valid)


def _round_to(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``t`` rounded to ``dtype`` in value, kept in its own dtype, with an identity gradient (the GEMM
    operands of ``compute_dtype`` as the reference sees them)."""
    if dtype is None or dtype == t.dtype:
        return t
    return t + (t.detach().to(dtype).to(t.dtype) - t.detach())


def check_labels(labels: torch.Tensor, vocab: int, ignore_index: int) -> None:
    """Raise a KdlensError unless every label is ignore_index or in [0, vocab) (one host sync; skipped while
    torch.compile traces or a CUDA graph is being captured, where a sync is not allowed)."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise KdlensError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.numel() == 0 or torch.compiler.is_compiling():
        return
    if labels.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        first = labels[bad][0].item()
        raise KdlensError(
            f"labels must be in [0, {vocab}) (the shared vocabulary) or ignore_index={ignore_index}; "
            f"found {first} ({int(bad.sum())} bad labels)"
        )
