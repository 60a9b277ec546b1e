"""torch.autograd.Function wrappers over the Triton KD kernels (kdlens.kernels): logits-level and fused linear.

Both form the gradient in the forward pass (the kernels write it while computing the loss) and only scale
it by the incoming scalar gradient in backward. No .item() anywhere: the wrappers work inside
torch.compile and CUDA graphs. Triton is imported on first use, so importing kdlens.losses never needs it.
"""

from __future__ import annotations

import torch

from kdlens.losses.chunked import precomputed_grads, save_precomputed_grads
from kdlens.losses.options import KDOptions


def _kernel_args(opts: KDOptions) -> dict:
    """The kernel arguments shared by the dense and the sparse row kernels."""
    return dict(
        objective_id=opts.objective_id,
        temperature=opts.temperature,
        kd_coef=opts.kd_coef,
        ce_coef=opts.ce_weight,
        mix=opts.mix,
        noise_sigma=opts.noise_sigma,
        noise_seed=int(opts.noise_seed),
    )


class TritonLogitsKD(torch.autograd.Function):
    """KD loss on given 2-D logits [N, V_s], [N, V_t] (unit column stride) with the Triton row kernel."""

    @staticmethod
    def forward(ctx, z_s, z_t, row_weight, labels, opts: KDOptions, row_stats=None):
        from kdlens.kernels.kd_logits import kd_rows

        vocab = min(z_s.shape[1], z_t.shape[1])
        grad = None
        if ctx.needs_input_grad[0]:
            grad = torch.empty_like(z_s)
            if vocab < z_s.shape[1]:
                grad[:, vocab:] = 0
        losses = kd_rows(
            z_s, z_t, row_weight, vocab=vocab, labels=labels, row_offset=opts.noise_row_offset,
            grad_out=grad, stats_out=row_stats, **_kernel_args(opts),
        )
        ctx.save_for_backward(*([grad] if grad is not None else []))
        return losses.sum()

    @staticmethod
    def backward(ctx, grad_loss):
        grad = ctx.saved_tensors[0] * grad_loss.to(ctx.saved_tensors[0].dtype) if ctx.saved_tensors else None
        return grad, None, None, None, None, None


class TritonFusedLinearKD(torch.autograd.Function):
    """KD loss on hidden states + lm_head weights: torch GEMMs per chunk + the Triton row kernel in place.

    Not traceable by torch.compile: torch 2.11's fake-tensor decomposition of ``addmm(out_dtype=)`` is
    broken, so the forward is excluded from dynamo (``torch._dynamo.disable``); compiled models call it
    as an opaque op (one graph break)."""

    @staticmethod
    @torch._dynamo.disable
    def forward(ctx, x_s, w_s, x_t, w_t, row_weight, labels, opts: KDOptions, chunk_bytes: int, compute_dtype,
                dw_in_weight_dtype: bool, row_stats=None):
        from kdlens.kernels.kd_fused_linear import fused_chunk_rows, linear_kd_chunks, triton_rows_fn

        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        vocab = min(w_s.shape[0], w_t.shape[0])
        rows = fused_chunk_rows(x_s.shape[0], vocab, chunk_bytes)
        loss, d_x, d_w = linear_kd_chunks(
            x_s, w_s, x_t, w_t, row_weight, labels, triton_rows_fn(**_kernel_args(opts), with_stats=row_stats is not None),
            chunk_rows=rows, row_offset=opts.noise_row_offset, need_dx=need_dx, need_dw=need_dw,
            compute_dtype=compute_dtype, dw_in_weight_dtype=dw_in_weight_dtype, row_stats=row_stats,
        )
        save_precomputed_grads(ctx, d_x, d_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        return (*precomputed_grads(ctx, grad_loss), None, None, None, None, None, None, None, None, None)


def _sparse_rows_fn(teacher, opts: KDOptions, with_stats: bool):
    """The fused loop's element-wise step for a sparse teacher: the Triton sparse row kernel on the chunk's
    student-logit workspace (gradient into ``grad_buf`` when given)."""
    from kdlens.kernels.kd_sparse import kd_sparse_rows

    def rows_fn(z_s, z_t, weight, labels, row_offset, grad_buf):
        start = row_offset - opts.noise_row_offset
        part = teacher.padded_rows(start, z_s.shape[0])
        stats = torch.empty(z_s.shape[0], 3, dtype=torch.float32, device=z_s.device) if with_stats else None
        losses = kd_sparse_rows(
            z_s, part.ids, part.logits, part.lse, weight, rest=teacher.has_rest, labels=labels,
            row_offset=row_offset, grad_out=grad_buf, stats_out=stats, **_kernel_args(opts))
        return losses, grad_buf, stats

    return rows_fn


class TritonSparseLogitsKD(torch.autograd.Function):
    """Sparse-teacher KD on given student logits [N, V] with the Triton sparse row kernel (it works on a
    copy of the logits, which becomes the gradient)."""

    @staticmethod
    def forward(ctx, z_s, teacher, row_weight, labels, opts: KDOptions, row_stats=None):
        work = z_s.detach().clone(memory_format=torch.contiguous_format)
        need_grad = ctx.needs_input_grad[0]
        losses, _, stats = _sparse_rows_fn(teacher, opts, row_stats is not None)(
            work, None, row_weight, labels, opts.noise_row_offset, work if need_grad else None)
        if row_stats is not None:
            row_stats.copy_(stats)
        ctx.save_for_backward(*([work] if need_grad else []))
        return losses.sum()

    @staticmethod
    def backward(ctx, grad_loss):
        grad = ctx.saved_tensors[0] * grad_loss.to(ctx.saved_tensors[0].dtype) if ctx.saved_tensors else None
        return grad, None, None, None, None, None


class TritonSparseLinearKD(torch.autograd.Function):
    """Sparse-teacher KD on hidden states + the student lm_head: the fused chunk loop with 3 GEMMs per chunk
    (student logits, dX, dW; no teacher GEMM) and the Triton sparse row kernel in place."""

    @staticmethod
    @torch._dynamo.disable
    def forward(ctx, x_s, w_s, teacher, row_weight, labels, opts: KDOptions, chunk_bytes: int, compute_dtype,
                dw_in_weight_dtype: bool, row_stats=None):
        from kdlens.kernels.kd_fused_linear import fused_chunk_rows, linear_kd_chunks

        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        rows = fused_chunk_rows(x_s.shape[0], w_s.shape[0], chunk_bytes)
        loss, d_x, d_w = linear_kd_chunks(
            x_s, w_s, None, None, row_weight, labels, _sparse_rows_fn(teacher, opts, row_stats is not None),
            chunk_rows=rows, row_offset=opts.noise_row_offset, need_dx=need_dx, need_dw=need_dw,
            compute_dtype=compute_dtype, dw_in_weight_dtype=dw_in_weight_dtype, row_stats=row_stats,
        )
        save_precomputed_grads(ctx, d_x, d_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        return (*precomputed_grads(ctx, grad_loss), None, None, None, None, None, None, None, None)
