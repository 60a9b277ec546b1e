"""Every objective x implementation against the plain-PyTorch reference (loss and gradients, fp32 and bf16).

The grid T x sigma x beta x objective x implementation is sampled, not crossed: every value of every axis
is covered (T in {0.5, 1, 2, 5}, sigma in {0, 1, 5}, beta in {0.1, 0.5, 0.9}, all objectives, all
implementations), with awkward shapes (V = 301, not a multiple of any block; H = 13), masks, CE mix, vocab
mismatch and large logits. The reference runs in float64 on the same (rounded) inputs.
Tolerances: fp32 inputs rtol 2e-5 on the loss, 5e-5 x max|grad| on gradients (fp32 cancellation in h - q c); bf16 inputs rtol 2e-3 and
1e-2 x max|grad| (gradients are stored in bf16: one bf16 ulp is 0.4%).
Triton runs through TRITON_INTERPRET=1 on CPU (tests/conftest.py). Run: python -m pytest tests/losses -q
"""

import itertools
import zlib

import pytest
import torch

from kdlens.losses import OBJECTIVES, kd_loss

TEMPERATURES = [0.5, 1.0, 2.0, 5.0]
SIGMAS = [0.0, 1.0, 5.0]
BETAS = [0.1, 0.5, 0.9]
IMPLS = ["chunked", "triton"]
FORMS = ["logits", "hidden"]

B, S, H, V = 2, 3, 13, 301


def _inputs(seed, dtype, scale=3.0, v_student=V, v_teacher=V):
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(B, S, H, generator=g, dtype=torch.float64)
    x_t = torch.randn(B, S, H + 4, generator=g, dtype=torch.float64)
    w_s = torch.randn(v_student, H, generator=g, dtype=torch.float64) * scale / H**0.5
    w_t = torch.randn(v_teacher, H + 4, generator=g, dtype=torch.float64) * scale / (H + 4) ** 0.5
    labels = torch.randint(0, min(v_student, v_teacher), (B, S), generator=g)
    labels[0, 1] = -100  # a masked position
    attention = torch.ones(B, S, dtype=torch.long)
    attention[1, 2] = 0  # a padded position
    # round once to the test dtype; the reference sees the same rounded values in float64
    return [t.to(dtype) for t in (x_s, w_s, x_t, w_t)], labels, attention


def _run(form, impl, inputs, kw, compile=False, chunk_bytes=None):
    """(loss, grad wrt the student input that the form differentiates) for one implementation."""
    x_s, w_s, x_t, w_t = inputs
    if impl == "reference":
        x_s, w_s, x_t, w_t = (t.to(torch.float64) for t in inputs)
    if form == "logits":
        z_s = (x_s.to(torch.float64) @ w_s.to(torch.float64).t()).to(x_s.dtype).detach().requires_grad_()
        z_t = (x_t.to(torch.float64) @ w_t.to(torch.float64).t()).to(x_t.dtype)
        loss = kd_loss(z_s, z_t, implementation=impl, compile=compile, chunk_bytes=chunk_bytes, **kw)
        loss.backward()
        return loss.detach().double(), [z_s.grad.double()]
    x = x_s.detach().requires_grad_()
    w = w_s.detach().requires_grad_()
    loss = kd_loss(student_hidden=x, student_weight=w, teacher_hidden=x_t, teacher_weight=w_t,
                   implementation=impl, compile=compile, chunk_bytes=chunk_bytes, **kw)
    loss.backward()
    return loss.detach().double(), [x.grad.double(), w.grad.double()]


def _reference(form, inputs, kw):
    """The reference on float64 copies of the rounded inputs (logits formed in float64)."""
    dtype = inputs[0].dtype
    x_s, w_s, x_t, w_t = (t.to(torch.float64) for t in inputs)
    if form == "logits":  # the same logits the implementation sees (rounded to the input dtype)
        z_s = (x_s @ w_s.t()).to(dtype).to(torch.float64).requires_grad_()
        loss = kd_loss(z_s, (x_t @ w_t.t()).to(dtype).to(torch.float64), implementation="reference", **kw)
        loss.backward()
        return loss.detach(), [z_s.grad]
    return _run("hidden", "reference", (x_s, w_s, x_t, w_t), kw)


def _assert_close(got, want, bf16):
    loss, grads = got
    ref_loss, ref_grads = want
    rtol = 2e-3 if bf16 else 2e-5
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=rtol * 1e-2)
    for g, r in zip(grads, ref_grads):
        assert torch.isfinite(g).all()
        scale = r.abs().max().item() + 1e-30
        torch.testing.assert_close(g, r, rtol=0, atol=(1e-2 if bf16 else 5e-5) * scale + 1e-9)


def _grid():
    """Sampled cases: (objective, impl, form, T, sigma, beta, dtype); each axis value appears."""
    cases = []
    combos = list(itertools.product(OBJECTIVES, IMPLS, FORMS))
    for i, (obj, impl, form) in enumerate(combos):
        t = TEMPERATURES[i % 4]
        sigma = SIGMAS[(i // 2) % 3]
        beta = BETAS[(i // 4) % 3]
        dtype = torch.bfloat16 if i % 5 == 0 else torch.float32
        cases.append(pytest.param(obj, impl, form, t, sigma, beta, dtype,
                                  id=f"{obj}-{impl}-{form}-T{t}-s{sigma}-b{beta}-{str(dtype)[6:]}"))
    return cases


@pytest.mark.parametrize("objective,impl,form,temperature,sigma,beta,dtype", _grid())
def test_matches_reference(objective, impl, form, temperature, sigma, beta, dtype):
    # a seed that is the same in every process (str hashes are salted per process: PYTHONHASHSEED)
    inputs, labels, attention = _inputs(seed=zlib.crc32(f"{objective}/{impl}/{form}".encode()) % 1000, dtype=dtype)
    kw = dict(objective=objective, temperature=temperature, noise_sigma=sigma, noise_seed=5, beta=beta, alpha=beta,
              labels=labels, attention_mask=attention, reduction="paper_sequence_mean", scale_by_t2=True)
    _assert_close(_run(form, impl, inputs, kw, chunk_bytes=V * 24 * 4), _reference(form, inputs, kw),
                  dtype == torch.bfloat16)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", ["token_mean", "sum", "normalizer"])
def test_reductions_and_ce_mix(impl, reduction):
    inputs, labels, attention = _inputs(seed=3, dtype=torch.float32)
    kw = dict(objective="jsd", beta=0.5, ce_weight=0.3, labels=labels, attention_mask=attention,
              reduction=reduction, normalizer=torch.tensor(17.0) if reduction == "normalizer" else None,
              temperature=2.0)
    _assert_close(_run("hidden", impl, inputs, kw), _reference("hidden", inputs, kw), False)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("form", FORMS)
def test_vocab_mismatch_cuts_to_shared_prefix(impl, form):
    inputs, labels, _ = _inputs(seed=4, dtype=torch.float32, v_student=307, v_teacher=301)
    kw = dict(objective="reverse_kl", labels=labels, temperature=1.0)
    got = _run(form, impl, inputs, kw)
    _assert_close(got, _reference(form, inputs, kw), False)
    # the student's extra columns / lm_head rows get exactly zero gradient
    extra = got[1][0][..., 301:] if form == "logits" else got[1][1][301:]
    assert extra.abs().max().item() == 0.0
    # and the cut is what an explicit slice computes
    x_s, w_s, x_t, w_t = (t.double() for t in inputs)
    sliced = kd_loss(x_s @ w_s[:301].t(), x_t @ w_t.t(), implementation="reference", **kw)
    torch.testing.assert_close(got[0], sliced, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
@pytest.mark.parametrize("objective", ["forward_kl", "jsd", "tvd"])
def test_fully_masked_rows_and_all_masked_batch(impl, objective):
    inputs, labels, _ = _inputs(seed=5, dtype=torch.float32)
    labels = labels.clone()
    labels[1] = -100  # a fully masked sequence
    for reduction in ("paper_sequence_mean", "token_mean"):
        kw = dict(objective=objective, labels=labels, reduction=reduction, ce_weight=0.5, noise_sigma=1.0)
        loss, grads = _run("hidden", impl, inputs, kw)
        ref_loss, ref_grads = _reference("hidden", inputs, kw)
        torch.testing.assert_close(loss, ref_loss, rtol=2e-5, atol=1e-7)
        assert grads[0][1].abs().max().item() == 0.0  # masked rows: no gradient
    all_masked = torch.full_like(labels, -100)
    for reduction in ("paper_sequence_mean", "token_mean", "sum"):
        loss, grads = _run("hidden", impl, inputs, dict(objective=objective, labels=all_masked, reduction=reduction))
        assert loss.item() == 0.0
        assert all(torch.isfinite(g).all() and g.abs().max().item() == 0.0 for g in grads)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_large_logits(impl, objective):
    # |z| ~ 100: weights scaled so the logits' std is about 60
    inputs, labels, _ = _inputs(seed=6, dtype=torch.float32, scale=60.0)
    kw = dict(objective=objective, temperature=0.5 if objective in ("tvd", "jsd") else 1.0, labels=labels)
    got = _run("logits", impl, inputs, kw)
    want = _reference("logits", inputs, kw)
    loss, grads = got
    assert torch.isfinite(loss) and torch.isfinite(grads[0]).all()
    torch.testing.assert_close(loss, want[0], rtol=1e-4, atol=1e-5)
    # near one-hot distributions: the exact gradient can be ~1e-16, so the bound is absolute (fp32 on q, p <= 1)
    torch.testing.assert_close(grads[0], want[1][0], rtol=0, atol=2e-5)


def test_compiled_chunked_matches_reference_with_padding_noise_and_ce():
    # 6 rows in chunks of 4: the tail chunk is padded to one compiled shape
    inputs, labels, attention = _inputs(seed=7, dtype=torch.float32)
    kw = dict(objective="jsd", beta=0.9, temperature=2.0, noise_sigma=1.0, noise_seed=1, ce_weight=0.25,
              labels=labels, attention_mask=attention, reduction="paper_sequence_mean", scale_by_t2=True)
    got = _run("hidden", "chunked", inputs, kw, compile=True, chunk_bytes=V * 24 * 4)
    _assert_close(got, _reference("hidden", inputs, kw), False)


def test_auto_picks_chunked_on_cpu_and_matches():
    inputs, labels, _ = _inputs(seed=8, dtype=torch.float32)
    kw = dict(objective="symmetric_kl", labels=labels)
    auto = _run("hidden", "auto", inputs, kw)
    _assert_close(auto, _reference("hidden", inputs, kw), False)


@pytest.mark.parametrize("form", FORMS)
def test_compiled_chunked_compiles_once_for_every_row_count(form):
    """A batch's number of positions changes every step; the compiled element-wise step must not
    recompile for each (it did, and fell back to eager after torch's recompile limit: 5x slower)."""
    import torch._dynamo

    kw = dict(objective="forward_kl", temperature=2.0, scale_by_t2=True, reduction="token_mean")

    def inputs(b, s, seed):
        g = torch.Generator().manual_seed(seed)
        x_s, x_t = torch.randn(b, s, H, generator=g), torch.randn(b, s, H + 4, generator=g)
        w_s = torch.randn(V, H, generator=g) * 3 / H**0.5
        w_t = torch.randn(V, H + 4, generator=g) * 3 / (H + 4) ** 0.5
        return [x_s, w_s, x_t, w_t]

    first = inputs(2, 3, 0)
    _assert_close(_run(form, "chunked", first, kw, compile=True), _reference(form, first, kw), False)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for b, s in ((3, 5), (4, 7), (2, 2)):  # 15, 28 and 4 rows: one chunk each, three new row counts
            x = inputs(b, s, b * s)
            _assert_close(_run(form, "chunked", x, kw, compile=True), _reference(form, x, kw), False)
