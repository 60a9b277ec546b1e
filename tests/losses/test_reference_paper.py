"""The reference computes exactly the paper's formulas (shared/design/paper.md section 4) and the textbook
divergences, each transcribed here independently in plain float64 torch / scipy.

Run: python -m pytest tests/losses/test_reference_paper.py -q
"""

import math

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from kdlens.errors import KdlensError
from kdlens.losses import kd_loss
from kdlens.losses import reference as R
from kdlens.losses.noise import philox_randn


def _batch(seed=0, b=3, s=6, v=50):
    g = torch.Generator().manual_seed(seed)
    z_s = torch.randn(b, s, v, generator=g, dtype=torch.float64) * 2
    z_t = torch.randn(b, s, v, generator=g, dtype=torch.float64) * 2
    attention = torch.ones(b, s, dtype=torch.long)
    attention[0, 4:] = 0
    attention[2, 1:] = 0
    labels = torch.randint(0, v, (b, s), generator=g)
    labels[attention == 0] = -100
    labels[1, 0] = -100
    return z_s, z_t, attention, labels


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_paper_seqkd_and_revkd(temperature):
    z_s, z_t, attention, _ = _batch()
    T = temperature
    # paper section 4, written out loop by loop: per position sum_v p (log p - log q) (SeqKD) or
    # sum_v q (log q - log p) (RevKD); mean over each sequence's valid positions; mean over batch; times T^2
    for objective in ("forward_kl", "reverse_kl"):
        per_sequence = []
        for b in range(z_s.shape[0]):
            vals = []
            for s in range(z_s.shape[1]):
                if attention[b, s] == 0:
                    continue
                q = torch.softmax(z_s[b, s] / T, -1)
                p = torch.softmax(z_t[b, s] / T, -1)
                if objective == "forward_kl":
                    vals.append(torch.sum(p * (torch.log(p) - torch.log(q))))
                else:
                    vals.append(torch.sum(q * (torch.log(q) - torch.log(p))))
            per_sequence.append(sum(vals) / len(vals))
        paper = sum(per_sequence) / len(per_sequence) * T**2
        ours = kd_loss(z_s, z_t, objective=objective, temperature=T, scale_by_t2=True, attention_mask=attention,
                       reduction="paper_sequence_mean", implementation="reference")
        torch.testing.assert_close(ours, paper, rtol=1e-12, atol=1e-14)


def test_paper_gkd():
    z_s, z_t, attention, labels = _batch(seed=1)
    beta = 0.5
    # paper: M = beta q + (1 - beta) p in log space (logsumexp), JSD = beta KL(p||M) + (1 - beta) KL(q||M),
    # summed over the vocab, no temperature, divided by the number of positions whose label != -100
    log_q = torch.log_softmax(z_s, -1)
    log_p = torch.log_softmax(z_t, -1)
    log_m = torch.logsumexp(torch.stack([log_q + math.log(beta), log_p + math.log(1 - beta)]), 0)
    jsd = beta * (log_p.exp() * (log_p - log_m)).sum(-1) + (1 - beta) * (log_q.exp() * (log_q - log_m)).sum(-1)
    mask = labels != -100
    paper = jsd[mask].sum() / mask.sum()
    ours = kd_loss(z_s, z_t, objective="jsd", beta=0.5, temperature=1.0, labels=labels, reduction="token_mean",
                   implementation="reference")
    torch.testing.assert_close(ours, paper, rtol=1e-12, atol=1e-14)


def test_objectives_against_scipy():
    g = np.random.default_rng(0)
    z_s, z_t = g.normal(size=(4, 37)) * 2, g.normal(size=(4, 37)) * 2
    T, beta, alpha = 1.7, 0.3, 0.2
    q, p = softmax(z_s / T, axis=-1), softmax(z_t / T, axis=-1)
    m_jsd = beta * p + (1 - beta) * q
    expected = {
        "forward_kl": rel_entr(p, q).sum(-1),
        "reverse_kl": rel_entr(q, p).sum(-1),
        "jsd": beta * rel_entr(p, m_jsd).sum(-1) + (1 - beta) * rel_entr(q, m_jsd).sum(-1),
        "tvd": 0.5 * np.abs(p - q).sum(-1),
        "skew_forward_kl": rel_entr(p, alpha * p + (1 - alpha) * q).sum(-1),
        "skew_reverse_kl": rel_entr(q, alpha * q + (1 - alpha) * p).sum(-1),
        "symmetric_kl": rel_entr(p, q).sum(-1) + rel_entr(q, p).sum(-1),
    }
    s, t = torch.from_numpy(z_s), torch.from_numpy(z_t)
    got = {
        "forward_kl": R.forward_kl(s, t, T),
        "reverse_kl": R.reverse_kl(s, t, T),
        "jsd": R.jsd(s, t, beta, T),
        "tvd": R.tvd(s, t, T),
        "skew_forward_kl": R.skew_forward_kl(s, t, alpha, T),
        "skew_reverse_kl": R.skew_reverse_kl(s, t, alpha, T),
        "symmetric_kl": R.symmetric_kl(s, t, T),
    }
    for name, want in expected.items():
        np.testing.assert_allclose(got[name].numpy(), want, rtol=1e-10, atol=1e-13, err_msg=name)


def test_jsd_limits_are_forward_and_reverse_kl():
    z_s, z_t, _, _ = _batch(seed=2)
    fkl, rkl = R.forward_kl(z_s, z_t), R.reverse_kl(z_s, z_t)
    # jsd(beta) = beta KL(p||q) + O(beta^2): the O(beta^2) coefficient is a chi-square, large for far-apart p, q
    for eps in (1e-5, 1e-7):
        torch.testing.assert_close(R.jsd(z_s, z_t, eps) / eps, fkl, rtol=5e3 * eps, atol=1e-9)
        torch.testing.assert_close(R.jsd(z_s, z_t, 1 - eps) / eps, rkl, rtol=5e3 * eps, atol=1e-9)
    # continuity in beta: jsd is concave in beta with slopes KL(p||q) at 0 and -KL(q||p) at 1, so no step of
    # 0.01 in beta can move it by more than 0.01 x the larger end slope (no jump anywhere in (0, 1))
    betas = torch.linspace(0.0, 1.0, 101)[1:-1]
    vals = torch.stack([R.jsd(z_s, z_t, b.item()).sum() for b in betas])
    assert (vals.diff().abs() <= 0.01 * max(fkl.sum(), rkl.sum()) * 1.001).all()


def test_teacher_noise_is_added_before_temperature():
    z_s, z_t, _, _ = _batch(seed=3)
    sigma, T = 2.0, 3.0
    eps = philox_randn(11, torch.arange(z_t.shape[0] * z_t.shape[1]), z_t.shape[-1]).reshape(z_t.shape)
    want = R.forward_kl(z_s, z_t + sigma * eps.double(), T).mean()
    ours = kd_loss(z_s, z_t, temperature=T, noise_sigma=sigma, noise_seed=11, implementation="reference")
    torch.testing.assert_close(ours, want, rtol=1e-12, atol=1e-14)


def test_ce_mix_and_reductions():
    z_s, z_t, attention, labels = _batch(seed=4)
    w, T = 0.3, 2.0
    valid = (labels != -100) & (attention != 0)
    kd = R.reverse_kl(z_s, z_t, T) * T**2
    ce = torch.nn.functional.cross_entropy(z_s[valid], labels[valid], reduction="none")
    per = (1 - w) * kd[valid] + w * ce
    common = dict(objective="reverse_kl", temperature=T, scale_by_t2=True, ce_weight=w, labels=labels,
                  attention_mask=attention, implementation="reference")
    torch.testing.assert_close(kd_loss(z_s, z_t, reduction="sum", **common), per.sum())
    torch.testing.assert_close(kd_loss(z_s, z_t, reduction="token_mean", **common), per.mean())
    torch.testing.assert_close(kd_loss(z_s, z_t, reduction="normalizer", normalizer=torch.tensor(40.0), **common),
                               per.sum() / 40)


def test_bad_input_raises_kdlens_error():
    z_s, z_t, attention, labels = _batch()
    with pytest.raises(KdlensError, match="unknown KD objective"):
        kd_loss(z_s, z_t, objective="kl")
    with pytest.raises(KdlensError, match="beta"):
        kd_loss(z_s, z_t, objective="jsd", beta=1.0)
    with pytest.raises(KdlensError, match="temperature"):
        kd_loss(z_s, z_t, temperature=0.0)
    with pytest.raises(KdlensError, match="needs labels"):
        kd_loss(z_s, z_t, ce_weight=0.5)
    with pytest.raises(KdlensError, match="normalizer"):
        kd_loss(z_s, z_t, reduction="normalizer")
    with pytest.raises(KdlensError, match="different positions"):
        kd_loss(z_s, z_t[:, :-1])
    with pytest.raises(KdlensError, match="either"):
        kd_loss(z_s, z_t, student_hidden=z_s)
    with pytest.raises(KdlensError, match="implementation"):
        kd_loss(z_s, z_t, implementation="cuda")
    with pytest.raises(KdlensError, match="hidden sizes"):
        kd_loss(student_hidden=torch.zeros(4, 8), student_weight=torch.zeros(10, 9),
                teacher_hidden=torch.zeros(4, 8), teacher_weight=torch.zeros(10, 8))
