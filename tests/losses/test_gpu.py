"""GPU correctness of the KD losses (marked ``gpu``: skipped without CUDA; benches/gpu/run_gpu.sh runs them
first and times nothing unless they pass).

- The fused Triton path at the real vocabulary width (V = 151936, H = 4096, N = 1024, bf16 inputs, the
  timed kernel variant with 16-byte aligned rows) against a float64 reference on the same bf16 values:
  loss, dX and dW, with noise and CE and without.
- Every objective, with and without noise and CE, Triton fused-linear and Triton logits-level against the
  float64 reference (fp32, awkward shape V = 32003); one compiled chunked case.
- bf16 compute for fp32 master weights (the training path) against the reference with rounded operands.
- The sparse-teacher loss (top-64 cache, both tails, forward/reverse KL and JSD, noise and CE) fused at the
  real vocabulary width against the float64 reference, with its token stats; k = V against the dense loss.
Tolerances as in the CPU tests: loss rtol 1e-4 (bf16 operands: the GEMMs accumulate in fp32 over 4096
terms), gradients 1e-2 x max|grad| where they are stored in bf16, 5e-5 x max|grad| in fp32, except TVD:
its gradient 0.5 q sign(q - p) jumps where q = p, and among 32003 columns some have |q - p| within fp32
rounding, where fp32 and float64 legitimately take different signs; one such flip moves a gradient entry
by q_v, up to the largest q of the row (H200 runs: 5.6e-4 and 1.6e-3 x max|grad|, every other objective
within 5e-5). TVD's gradients get the bf16 tolerance, 1e-2 x max|grad|; its loss keeps rtol 1e-4.
Run on a GPU machine: python -m pytest -m gpu tests/losses/test_gpu.py -q
"""

import pytest
import torch

from kdlens.losses import OBJECTIVES, kd_loss, sparse_kd_loss

pytestmark = pytest.mark.gpu


def _draw(n, h, v, dtype, seed, *, v_student=None, h_t=None, scale=3.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    h_t = h_t or h
    x_s = torch.randn(n, h, generator=g, device="cuda").to(dtype)
    x_t = torch.randn(n, h_t, generator=g, device="cuda").to(dtype)
    w_s = (torch.randn(v_student or v, h, generator=g, device="cuda") * scale / h**0.5).to(dtype)
    w_t = (torch.randn(v, h_t, generator=g, device="cuda") * scale / h_t**0.5).to(dtype)
    labels = torch.randint(0, v, (n,), generator=g, device="cuda")
    labels[::7] = -100
    return x_s, w_s, x_t, w_t, labels


def _run(impl, x_s, w_s, x_t, w_t, **kw):
    x = x_s.detach().clone().requires_grad_()
    w = w_s.detach().clone().requires_grad_()
    loss = kd_loss(student_hidden=x, student_weight=w, teacher_hidden=x_t, teacher_weight=w_t, implementation=impl,
                   **kw)
    loss.backward()
    return loss.detach().double(), x.grad, w.grad


def _check(got, want, grad_tol):
    assert torch.isfinite(got[0]) and abs(got[0].item() - want[0].item()) <= 1e-4 * abs(want[0].item()) + 1e-7
    for g, r in zip(got[1:], want[1:]):
        assert torch.isfinite(g).all()
        err = (g.double() - r).abs().max().item()
        assert err <= grad_tol * r.abs().max().item() + 1e-12, (err, r.abs().max().item())


@pytest.mark.parametrize("objective,sigma,ce", [("jsd", 0.0, 0.0), ("jsd", 1.0, 0.2), ("reverse_kl", 0.0, 0.0),
                                                ("forward_kl", 1.0, 0.0)])
def test_fused_at_the_real_vocabulary_width_against_float64(objective, sigma, ce):
    x_s, w_s, x_t, w_t, labels = _draw(1024, 4096, 151936, torch.bfloat16, seed=0)
    kw = dict(objective=objective, noise_sigma=sigma, noise_seed=11, ce_weight=ce, labels=labels, temperature=1.0)
    got = _run("triton", x_s, w_s, x_t, w_t, **kw)
    want = _run("reference", *(t.double() for t in (x_s, w_s, x_t, w_t)), **kw)
    _check(got, want, 1e-2)


def test_fused_with_dw_in_bf16_at_the_real_vocabulary_width():
    x_s, w_s, x_t, w_t, labels = _draw(4096, 4096, 151936, torch.bfloat16, seed=6)
    kw = dict(objective="jsd", labels=labels)
    got = _run("triton", x_s, w_s, x_t, w_t, dw_accumulation="weight_dtype", **kw)
    want = _run("reference", *(t.double() for t in (x_s, w_s, x_t, w_t)), **kw)
    _check(got, want, 1e-2)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("extras", [False, True], ids=["plain", "noise+ce"])
def test_every_objective_fused_and_logits_against_float64(objective, extras):
    x_s, w_s, x_t, w_t, labels = _draw(301, 256, 32003, torch.float32, seed=1, v_student=32067, h_t=264)
    kw = dict(objective=objective, temperature=2.0, scale_by_t2=True, labels=labels, beta=0.3, alpha=0.2)
    if extras:
        kw.update(noise_sigma=1.0, noise_seed=3, ce_weight=0.2)
    tol = 1e-2 if objective == "tvd" else 5e-5
    want = _run("reference", *(t.double() for t in (x_s, w_s, x_t, w_t)), **kw)
    _check(_run("triton", x_s, w_s, x_t, w_t, **kw), want, tol)
    z_s = (x_s @ w_s[:32003].t()).requires_grad_()
    loss = kd_loss(z_s, x_t @ w_t.t(), implementation="triton", **kw)
    loss.backward()
    z_r = (x_s.double() @ w_s[:32003].double().t()).requires_grad_()
    ref = kd_loss(z_r, x_t.double() @ w_t.double().t(), implementation="reference", **kw)
    ref.backward()
    _check((loss.detach().double(), z_s.grad), (ref.detach(), z_r.grad), tol)


def test_compiled_chunked_jsd_on_the_gpu():
    x_s, w_s, x_t, w_t, labels = _draw(301, 256, 32003, torch.float32, seed=2)
    kw = dict(objective="jsd", labels=labels, ce_weight=0.1, noise_sigma=1.0, noise_seed=4)
    want = _run("reference", *(t.double() for t in (x_s, w_s, x_t, w_t)), **kw)
    _check(_run("chunked", x_s, w_s, x_t, w_t, compile=True, **kw), want, 5e-5)


def test_bf16_compute_for_fp32_master_weights():
    x_s, w_s, x_t, w_t, labels = _draw(512, 1024, 32000, torch.float32, seed=5)
    kw = dict(objective="reverse_kl", labels=labels, compute_dtype=torch.bfloat16)
    got = _run("triton", x_s, w_s, x_t, w_t, **kw)
    want = _run("reference", *(t.double() for t in (x_s, w_s, x_t, w_t)), **kw)
    assert got[2].dtype == torch.float32
    _check(got, want, 1e-2)


def _sparse_cache(x_t, w_t, k, temperatures=(1.0, 2.0)):
    with torch.no_grad():
        z = x_t @ w_t.t()
        vals, ids = z.topk(k, dim=-1)
        lse = torch.stack([torch.logsumexp(z.double() / t, dim=-1) for t in temperatures], dim=-1).float()
    return dict(teacher_ids=ids.to(torch.int32), teacher_topk_logits=vals, teacher_lse=lse,
                teacher_temperatures=temperatures)


def _run_sparse(impl, x_s, w_s, cache, **kw):
    x = x_s.detach().clone().requires_grad_()
    w = w_s.detach().clone().requires_grad_()
    loss, stats = sparse_kd_loss(student_hidden=x, student_weight=w, **cache, implementation=impl,
                                 return_stats=True, **kw)
    loss.backward()
    return (loss.detach().double(), x.grad, w.grad), torch.stack(stats._tensors()).double()


@pytest.mark.parametrize("objective,tail,sigma,ce", [("jsd", "rest", 0.0, 0.0), ("forward_kl", "rest", 1.0, 0.2),
                                                     ("reverse_kl", "renormalize", 0.0, 0.0),
                                                     ("jsd", "renormalize", 1.0, 0.1)])
def test_sparse_fused_at_the_real_vocabulary_width_against_float64(objective, tail, sigma, ce):
    x_s, w_s, x_t, w_t, labels = _draw(1024, 4096, 151936, torch.bfloat16, seed=7)
    cache = _sparse_cache(x_t, w_t, 64)
    kw = dict(objective=objective, tail=tail, noise_sigma=sigma, noise_seed=5, ce_weight=ce, labels=labels,
              temperature=2.0)
    got, got_stats = _run_sparse("triton", x_s, w_s, cache, **kw)
    want, want_stats = _run_sparse("reference", x_s.double(), w_s.double(), cache, **kw)
    _check(got, want, 1e-2)
    # agreement: an argmax may flip where a row's top two student logits lie within fp32 GEMM rounding
    assert got_stats[0] == want_stats[0] and abs(got_stats[1] - want_stats[1]) <= 1
    assert torch.allclose(got_stats[2:], want_stats[2:], rtol=1e-4)


def test_sparse_with_k_equal_v_is_the_dense_loss_on_the_gpu():
    x_s, w_s, x_t, w_t, labels = _draw(64, 256, 4099, torch.float32, seed=8)
    cache = _sparse_cache(x_t, w_t, 4099, temperatures=(1.0,))
    kw = dict(objective="jsd", labels=labels, ce_weight=0.2, noise_sigma=1.0, noise_seed=2)
    dense = _run("triton", x_s, w_s, x_t, w_t, **kw)
    for impl in ("triton", "chunked"):
        got, _ = _run_sparse(impl, x_s, w_s, cache, tail="rest", **kw)
        _check(got, dense, 5e-5)
