"""The GPU-only Python branch of the fused-linear loop, forced through the CPU (Triton interpreter), and
the bf16 GEMM operands of bf16 training.

On CUDA with half-precision operands the row kernel writes the gradient into a ring of bf16 chunks and
one dX / dW GEMM serves ``GRADIENT_RING_CHUNKS`` chunks; the dW accumulator stays fp32 and is converted
once to the weight's dtype at the end of the forward. ``uses_half_gradient`` decides that branch; the
tests force it on the CPU and compare with the float64 reference on the same bf16 values (tolerance:
1e-2 x max|grad|, as bf16 stores the gradient: one bf16 ulp is 0.4%).
Run: python -m pytest tests/losses/test_half_gradient_branch.py -q
"""

import pytest
import torch

import kdlens.kernels.kd_fused_linear as fl
from kdlens.losses import kd_loss


def _inputs(seed, n=70, h=24, v=203, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(n, h, generator=g).to(dtype)
    x_t = torch.randn(n, h + 8, generator=g).to(dtype)
    w_s = (torch.randn(v + 9, h, generator=g) * 3 / h**0.5).to(dtype)  # student vocab 9 wider
    w_t = (torch.randn(v, h + 8, generator=g) * 3 / (h + 8) ** 0.5).to(dtype)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[::5] = -100
    return x_s, w_s, x_t, w_t, labels


def _loss_and_grads(impl, x_s, w_s, x_t, w_t, **kw):
    x = x_s.detach().clone().requires_grad_()
    w = w_s.detach().clone().requires_grad_()
    loss = kd_loss(student_hidden=x, student_weight=w, teacher_hidden=x_t, teacher_weight=w_t,
                   implementation=impl, **kw)
    loss.backward()
    return loss.detach().double(), x.grad, w.grad


@pytest.mark.parametrize("impl", ["triton", "chunked"])
@pytest.mark.parametrize("objective", ["forward_kl", "reverse_kl", "jsd"])
def test_forced_half_ring_branch_matches_the_reference(impl, objective, monkeypatch):
    monkeypatch.setattr(fl, "uses_half_gradient", lambda x: x.dtype in (torch.float16, torch.bfloat16))
    flushes = []
    real_mm = torch.mm

    x_s, w_s, x_t, w_t, labels = _inputs(1)
    kw = dict(objective=objective, temperature=2.0, scale_by_t2=True, noise_sigma=1.0, noise_seed=9,
              ce_weight=0.25, labels=labels, beta=0.3)
    # Triton: 20-row chunks (12 B per element): 70 rows = 4 chunks, a ring of 2 -> flushes of 40 + 30 rows;
    # chunked (24 B per element): 10-row chunks -> 7 chunks -> flushes of 20, 20, 20, 10 rows
    chunk_bytes = 20 * 203 * 12
    with monkeypatch.context() as m:
        def spy_mm(a, b, **k):
            if a.dtype == torch.bfloat16 and b.shape[0] == 203 and b.shape[1] == 24:  # dX = G @ W_s
                flushes.append(a.shape[0])
            return real_mm(a, b, **k)
        m.setattr(torch, "mm", spy_mm)
        got = _loss_and_grads(impl, x_s, w_s, x_t, w_t, chunk_bytes=chunk_bytes, compile=False, **kw)
    want = _loss_and_grads("reference", *(t.double() for t in (x_s, w_s, x_t, w_t)), **kw)
    assert flushes == ([40, 30] if impl == "triton" else [20, 20, 20, 10])
    assert got[1].dtype == torch.bfloat16 and got[2].dtype == torch.bfloat16
    assert abs(got[0].item() - want[0].item()) <= 1e-5 * abs(want[0].item())
    for g, r in zip(got[1:], want[1:]):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g.double(), r, rtol=0, atol=1e-2 * r.abs().max().item())
    assert (got[2][203:] == 0).all()  # student rows beyond the shared vocabulary


@pytest.mark.parametrize("impl", ["triton", "chunked"])
def test_dw_accumulated_in_the_weight_dtype_matches_the_reference(impl, monkeypatch):
    """dw_accumulation="weight_dtype": dW summed over the ring flushes directly in bf16."""
    monkeypatch.setattr(fl, "uses_half_gradient", lambda x: x.dtype in (torch.float16, torch.bfloat16))
    x_s, w_s, x_t, w_t, labels = _inputs(4)
    kw = dict(objective="jsd", labels=labels, noise_sigma=1.0, noise_seed=2, chunk_bytes=20 * 203 * 12,
              compile=False)
    lean = _loss_and_grads(impl, x_s, w_s, x_t, w_t, dw_accumulation="weight_dtype", **kw)
    exact = _loss_and_grads(impl, x_s, w_s, x_t, w_t, **kw)
    kw.pop("chunk_bytes"), kw.pop("compile")
    want = _loss_and_grads("reference", *(t.double() for t in (x_s, w_s, x_t, w_t)), **kw)
    assert lean[2].dtype == torch.bfloat16
    assert lean[0].item() == exact[0].item() and torch.equal(lean[1], exact[1])  # only dW's sum differs
    assert (lean[2][203:] == 0).all()
    for g in (lean[2], exact[2]):
        torch.testing.assert_close(g.double(), want[2], rtol=0, atol=1e-2 * want[2].abs().max().item())


def test_unknown_dw_accumulation_is_a_clear_error():
    from kdlens.errors import KdlensError

    with pytest.raises(KdlensError, match="dw_accumulation must be one of fp32, weight_dtype"):
        kd_loss(torch.randn(2, 5), torch.randn(2, 5), dw_accumulation="bf16")


@pytest.mark.parametrize("impl", ["triton", "chunked"])
def test_compute_dtype_rounds_the_gemm_operands_and_keeps_fp32_gradients(impl):
    x_s, w_s, x_t, w_t, labels = _inputs(2, dtype=torch.float32)
    kw = dict(objective="reverse_kl", temperature=1.0, labels=labels, ce_weight=0.1)
    got = _loss_and_grads(impl, x_s, w_s, x_t, w_t, compute_dtype=torch.bfloat16, compile=False, **kw)
    want = _loss_and_grads("reference", x_s.double(), w_s.double(), x_t.double(), w_t.double(),
                           compute_dtype=torch.bfloat16, **kw)
    plain = _loss_and_grads("reference", x_s.double(), w_s.double(), x_t.double(), w_t.double(), **kw)
    assert got[1].dtype == torch.float32 and got[2].dtype == torch.float32
    assert abs(got[0].item() - want[0].item()) <= 1e-5 * abs(want[0].item())
    for g, r in zip(got[1:], want[1:]):
        torch.testing.assert_close(g.double(), r, rtol=0, atol=2e-5 * r.abs().max().item())
    # the operands really were rounded: the bf16 result differs from the fp32 one by far more than fp32 noise
    assert abs(want[0].item() - plain[0].item()) > 1e-4 * abs(plain[0].item())


def _bf16_exact(t: torch.Tensor) -> bool:
    return bool((t.float() == t.to(torch.bfloat16).float()).all())


@pytest.mark.parametrize("bf16,expected", [("on", True), ("off", False)])
def test_training_kd_term_hands_bf16_operands_to_the_gemm_when_bf16_is_on(bf16, expected, monkeypatch, tmp_path):
    """On CUDA the operands arrive as bf16 tensors; the CPU path upcasts them once after the cast, so
    here the check is on their values: bf16-representable exactly when bf16 is on."""
    from kdlens.train.config import TrainConfig
    from kdlens.train.step import kd_term

    seen = []
    real = fl.gemm_f32

    def spy(a, b, out):
        seen.append((_bf16_exact(a), _bf16_exact(b)))
        return real(a, b, out)

    monkeypatch.setattr(fl, "gemm_f32", spy)
    cfg = TrainConfig(out_dir=str(tmp_path), data="x.json", student="tiny:tiny-s1", mode="kd", teacher="t",
                      objective="forward_kl", bf16=bf16, loss_implementation="chunked", compile=False)
    g = torch.Generator().manual_seed(3)
    s_h = torch.randn(2, 5, 16, generator=g, requires_grad=True)
    s_w = torch.randn(50, 16, generator=g, requires_grad=True)
    t_h, t_w = torch.randn(2, 5, 16, generator=g), torch.randn(50, 16, generator=g)
    loss = kd_term(cfg, s_h, s_w, t_h, t_w, torch.ones(2, 5, dtype=torch.long), reduction="token_mean",
                   normalizer=None, noise_seed=0)
    loss.backward()
    assert len(seen) >= 2 and seen[:2] == [(expected, expected)] * 2  # the chunk's two logit GEMMs
    assert s_w.grad.dtype == torch.float32
