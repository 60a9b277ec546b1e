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
    def forward(ctx, z_s, z_t, row_weight, labels, opts: KDOptions):
        from kdlens.kernels.kd_logits import kd_rows

        vocab = min(z_s.shape[1], z_t.shape[1])
        grad = None
        if ctx.needs_input_grad[0]:
            grad = torch.empty_like(z_s)
            if vocab < z_s.shape[1]:
                grad[:, vocab:] = 0
        losses = kd_rows(
            z_s, z_t, row_weight, vocab=vocab, labels=labels, row_offset=opts.noise_row_offset,
            grad_out=grad, **_kernel_args(opts),
        )
        ctx.save_for_backward(*([grad] if grad is not None else []))
        return losses.sum()

    @staticmethod
    def backward(ctx, grad_loss):
        grad = ctx.saved_tensors[0] * grad_loss.to(ctx.saved_tensors[0].dtype) if ctx.saved_tensors else None
        return grad, None, None, None, None




class TritonFusedLinearKD(torch.autograd.Function):
    """KD loss on hidden states + lm_head weights: torch GEMMs per chunk + the Triton row kernel in place.

    Not traceable by torch.compile: torch 2.11's fake-tensor decomposition of ``addmm(out_dtype=)`` is
    broken, so the forward is excluded from dynamo (``torch._dynamo.disable``); compiled models call it
    as an opaque op (one graph break)."""

    @staticmethod
    @torch._dynamo.disable
    def forward(ctx, x_s, w_s, x_t, w_t, row_weight, labels, opts: KDOptions, chunk_bytes: int, compute_dtype,
                dw_in_weight_dtype: bool):
        from kdlens.kernels.kd_fused_linear import fused_chunk_rows, linear_kd_chunks, triton_rows_fn

        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        vocab = min(w_s.shape[0], w_t.shape[0])
        rows = fused_chunk_rows(x_s.shape[0], vocab, chunk_bytes)
        loss, d_x, d_w = linear_kd_chunks(
            x_s, w_s, x_t, w_t, row_weight, labels, triton_rows_fn(**_kernel_args(opts)),
            chunk_rows=rows, row_offset=opts.noise_row_offset, need_dx=need_dx, need_dw=need_dw,
            compute_dtype=compute_dtype, dw_in_weight_dtype=dw_in_weight_dtype,
        )
        save_precomputed_grads(ctx, d_x, d_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        return (*precomputed_grads(ctx, grad_loss), None, None, None, None, None, None, None, None)
