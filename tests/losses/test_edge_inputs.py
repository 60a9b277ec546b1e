"""Inputs at the edges of kd_loss, identical in every implementation.

- Teacher logits of -inf (a masked or padded vocabulary): probability 0, so forward KL, JSD, TVD and skew
  forward KL stay finite, in value and gradient; the value equals scipy's rel_entr-based divergences on
  the probabilities, and every implementation matches the reference.
- Labels outside [0, V) (V the shared vocabulary) that are not ignore_index are a clear error, the same in
  every implementation (the Triton kernel would otherwise read out of bounds).
- Under no_grad the fast paths skip the gradient pass entirely; a second backward through the same loss
  is refused (the gradient formed in forward is handed over, not copied); the incoming gradient scales.
Run: python -m pytest tests/losses/test_edge_inputs.py -q
"""

import numpy as np
import pytest
import scipy.special
import torch

from kdlens.errors import KdlensError
from kdlens.losses import kd_loss

IMPLS = ["reference", "chunked", "triton"]
FINITE_OBJECTIVES = ["forward_kl", "jsd", "tvd", "skew_forward_kl"]


def _masked_logits(seed=0, n=6, v=97, masked_cols=(0, 5, 50, 96)):
    g = torch.Generator().manual_seed(seed)
    z_s = torch.randn(n, v, generator=g, dtype=torch.float64) * 2
    z_t = torch.randn(n, v, generator=g, dtype=torch.float64) * 2
    z_t[:, list(masked_cols)] = float("-inf")
    z_t[1, 7] = float("-inf")  # one more, in one row only
    return z_s, z_t


def _scipy_divergence(objective, z_s, z_t, beta=0.5, alpha=0.1):
    q = scipy.special.softmax(z_s.numpy(), axis=-1)
    p = scipy.special.softmax(z_t.numpy(), axis=-1)
    rel = scipy.special.rel_entr
    if objective == "forward_kl":
        d = rel(p, q).sum(-1)
    elif objective == "jsd":
        m = beta * p + (1 - beta) * q
        d = beta * rel(p, m).sum(-1) + (1 - beta) * rel(q, m).sum(-1)
    elif objective == "tvd":
        d = 0.5 * np.abs(p - q).sum(-1)
    else:
        d = rel(p, alpha * p + (1 - alpha) * q).sum(-1)
    return float(d.mean())


@pytest.mark.parametrize("objective", FINITE_OBJECTIVES)
def test_minus_inf_teacher_logits_give_finite_losses_equal_to_scipy(objective):
    z_s, z_t = _masked_logits()
    want = _scipy_divergence(objective, z_s, z_t)
    ref = kd_loss(z_s, z_t, objective=objective, implementation="reference")
    assert abs(ref.item() - want) < 1e-10
    z_ref = z_s.clone().requires_grad_()
    kd_loss(z_ref, z_t, objective=objective, implementation="reference").backward()
    assert torch.isfinite(z_ref.grad).all()
    for impl in ("chunked", "triton"):
        z = z_s.float().clone().requires_grad_()
        loss = kd_loss(z, z_t.float(), objective=objective, implementation=impl, compile=False)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all(), impl
        assert abs(loss.item() - want) < 1e-5 * max(1.0, abs(want)), impl
        torch.testing.assert_close(z.grad.double(), z_ref.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("impl", ["chunked", "triton"])
def test_minus_inf_teacher_columns_in_the_hidden_form_with_noise_and_ce(impl):
    """A teacher lm_head row that produces -inf is not possible, so mask through the logits form with
    noise (-inf + noise stays -inf) and CE on top; compare with the reference."""
    z_s, z_t = _masked_logits(seed=1)
    labels = torch.tensor([3, 4, -100, 10, 60, 90])
    kw = dict(objective="jsd", temperature=2.0, noise_sigma=1.0, noise_seed=5, ce_weight=0.3, labels=labels)
    z_ref = z_s.clone().requires_grad_()
    ref = kd_loss(z_ref, z_t, implementation="reference", **kw)
    ref.backward()
    z = z_s.float().clone().requires_grad_()
    loss = kd_loss(z, z_t.float(), implementation=impl, compile=False, **kw)
    loss.backward()
    assert torch.isfinite(ref) and abs(loss.item() - ref.item()) < 1e-5 * abs(ref.item())
    torch.testing.assert_close(z.grad.double(), z_ref.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("form", ["logits", "hidden"])
@pytest.mark.parametrize("bad", [-3, 40, 45])
def test_labels_outside_the_shared_vocabulary_are_a_clear_error(impl, form, bad):
    """V_s = 45, V_t = 40: the shared vocabulary is 40, so 40 and 45 are out, and -3 is not ignore_index."""
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([[1, 2, -100, bad]])
    kw = dict(labels=labels, ce_weight=0.5, implementation=impl, compile=False)
    if form == "logits":
        args = dict(student_logits=torch.randn(1, 4, 45, generator=g),
                    teacher_logits=torch.randn(1, 4, 40, generator=g))
    else:
        args = dict(student_hidden=torch.randn(1, 4, 8, generator=g), student_weight=torch.randn(45, 8, generator=g),
                    teacher_hidden=torch.randn(1, 4, 8, generator=g), teacher_weight=torch.randn(40, 8, generator=g))
    with pytest.raises(KdlensError, match=r"labels must be in \[0, 40\) .* found " + str(bad)):
        kd_loss(**args, **kw)
    # the same labels without CE still define the mask: still validated
    kw["ce_weight"] = 0.0
    with pytest.raises(KdlensError, match="labels must be in"):
        kd_loss(**args, **kw)


def test_float_labels_are_a_clear_error():
    with pytest.raises(KdlensError, match="integer tensor"):
        kd_loss(torch.randn(3, 5), torch.randn(3, 5), labels=torch.tensor([1.0, 2.0, 3.0]), ce_weight=0.5)


@pytest.mark.parametrize("impl", ["chunked", "triton"])
def test_no_grad_skips_the_gradient_pass(impl, monkeypatch):
    import kdlens.kernels.kd_fused_linear as fl
    from kdlens.kernels import kd_logits

    seen = []
    real_rows, real_chunks = kd_logits.kd_rows, fl.linear_kd_chunks

    def spy_rows(*a, **k):
        seen.append(("grad_out", k.get("grad_out") is not None))
        return real_rows(*a, **k)

    def spy_chunks(*a, **k):
        seen.append(("need", k["need_dx"] or k["need_dw"]))
        return real_chunks(*a, **k)

    monkeypatch.setattr(kd_logits, "kd_rows", spy_rows)
    monkeypatch.setattr(fl, "linear_kd_chunks", spy_chunks)
    import kdlens.losses.chunked as ch
    monkeypatch.setattr(ch, "linear_kd_chunks", spy_chunks)
    g = torch.Generator().manual_seed(3)
    x_s, w_s = torch.randn(10, 8, generator=g), torch.randn(33, 8, generator=g, requires_grad=True)
    x_t, w_t = torch.randn(10, 8, generator=g), torch.randn(33, 8, generator=g)
    with torch.no_grad():
        got = kd_loss(student_hidden=x_s, student_weight=w_s, teacher_hidden=x_t, teacher_weight=w_t,
                      objective="reverse_kl", implementation=impl, compile=False)
    want = kd_loss(student_hidden=x_s, student_weight=w_s.detach(), teacher_hidden=x_t, teacher_weight=w_t,
                   objective="reverse_kl", implementation="reference")
    assert abs(got.item() - want.item()) < 1e-5
    assert ("need", False) in seen
    assert ("grad_out", True) not in seen


@pytest.mark.parametrize("impl", ["chunked", "triton"])
def test_incoming_gradient_scales_and_a_second_backward_is_refused(impl):
    g = torch.Generator().manual_seed(4)
    x_s = torch.randn(12, 8, generator=g, dtype=torch.float64)
    w_s = torch.randn(29, 8, generator=g, dtype=torch.float64)
    x_t, w_t = torch.randn(12, 8, generator=g), torch.randn(29, 8, generator=g)
    grads = []
    for i, factor in enumerate((1.0, 3.5)):
        x = x_s.float().clone().requires_grad_()
        w = w_s.float().clone().requires_grad_()
        loss = kd_loss(student_hidden=x, student_weight=w, teacher_hidden=x_t, teacher_weight=w_t,
                       objective="jsd", implementation=impl, compile=False)
        (loss * factor).backward(retain_graph=True)
        grads.append((x.grad.clone(), w.grad.clone()))
        if i == 1:
            with pytest.raises(KdlensError, match="backward through the same KD loss twice"):
                loss.backward()
    torch.testing.assert_close(grads[1][0], grads[0][0] * 3.5)
    torch.testing.assert_close(grads[1][1], grads[0][1] * 3.5)


def test_numpy_inputs_and_an_empty_vocabulary_are_clear_errors():
    import numpy as np

    with pytest.raises(KdlensError, match=r"student_logits must be a torch.Tensor, got numpy.ndarray"):
        kd_loss(np.zeros((2, 5)), torch.zeros(2, 5))
    for impl in IMPLS:
        with pytest.raises(KdlensError, match="the vocabulary is empty"):
            kd_loss(torch.zeros(2, 0), torch.zeros(2, 0), implementation=impl)
        with pytest.raises(KdlensError, match="the vocabulary is empty"):
            kd_loss(student_hidden=torch.zeros(2, 4), student_weight=torch.zeros(0, 4),
                    teacher_hidden=torch.zeros(2, 4), teacher_weight=torch.zeros(7, 4), implementation=impl)
