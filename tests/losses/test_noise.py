"""Teacher noise: the torch Philox twin equals Triton's tl.randn (interpreter), has N(0, 1) moments, is seeded,
and the KD loss with noise does not depend on chunk size or implementation.

Run: python -m pytest tests/losses/test_noise.py -q
"""

import math

import pytest
import torch

from kdlens.losses import kd_loss
from kdlens.losses.noise import philox4x32_10, philox_randn

triton = pytest.importorskip("triton")
tl = triton.language


@triton.jit
def _randn_probe(out_ptr, word_ptr, seed, row_offset, V, BLOCK: tl.constexpr):
    local = tl.program_id(0).to(tl.int64)
    row = local + row_offset
    cols = tl.arange(0, BLOCK)
    mask = cols < V
    offset = (row << 32) | cols.to(tl.int64)
    tl.store(out_ptr + local * V + cols, tl.randn(seed, offset), mask=mask)
    w0, w1, _, _ = tl.randint4x(seed, offset)
    tl.store(word_ptr + 2 * (local * V + cols), w0.to(tl.int64) & 0xFFFFFFFF, mask=mask)
    tl.store(word_ptr + 2 * (local * V + cols) + 1, w1.to(tl.int64) & 0xFFFFFFFF, mask=mask)


@pytest.mark.parametrize("seed,row_offset", [(0, 0), (12345, 7), (2**31 - 1, 100_000)])
def test_philox_twin_matches_triton_randn(seed, row_offset):
    n, v = 3, 200
    out = torch.empty(n, v)
    words = torch.empty(n, v, 2, dtype=torch.int64)
    _randn_probe[(n,)](out, words, seed, row_offset, v, BLOCK=256)
    rows = torch.arange(n) + row_offset
    c0, c1 = philox4x32_10(seed, torch.arange(v).reshape(1, -1), rows.reshape(-1, 1))
    assert torch.equal(words[..., 0], c0) and torch.equal(words[..., 1], c1)  # integer stream: bit-exact
    # normals: same uniforms, log/cos of numpy vs torch may differ in the last float32 bit
    torch.testing.assert_close(philox_randn(seed, rows, v), out, rtol=0, atol=2e-6)


def test_philox_against_published_known_answer():
    # Random123's kat_vectors: philox4x32_10 with counter 0 and key 0 -> 6627e8d5 e169c58d bc57ac4c 9b00dbd8
    c0, c1 = philox4x32_10(0, torch.tensor([0]), torch.tensor([0]))
    assert (int(c0), int(c1)) == (0x6627E8D5, 0xE169C58D)


def test_noise_moments_and_seed_determinism():
    eps = philox_randn(3, torch.arange(64), 4096)
    assert abs(eps.mean().item()) < 0.01
    assert abs(eps.var().item() - 1.0) < 0.02
    # fourth moment of a standard normal is 3
    assert abs((eps**4).mean().item() - 3.0) < 0.1
    assert torch.equal(eps, philox_randn(3, torch.arange(64), 4096))
    other = philox_randn(4, torch.arange(64), 4096)
    assert abs(torch.corrcoef(torch.stack([eps.flatten(), other.flatten()]))[0, 1].item()) < 0.01
    # rows are keyed by their global index, not their position in the request
    torch.testing.assert_close(philox_randn(3, torch.arange(10, 20), 4096), eps[10:20], rtol=0, atol=0)


def _noisy_case():
    g = torch.Generator().manual_seed(0)
    x_s, x_t = torch.randn(11, 8, generator=g), torch.randn(11, 12, generator=g)
    w_s, w_t = torch.randn(150, 8, generator=g), torch.randn(150, 12, generator=g)
    return x_s, w_s, x_t, w_t


@pytest.mark.parametrize("implementation", ["chunked", "triton"])
def test_noisy_loss_is_invariant_to_chunk_size(implementation):
    x_s, w_s, x_t, w_t = _noisy_case()
    results = []
    for chunk_bytes in (150 * 4 * 10 * 3, 150 * 4 * 10 * 24, 1 << 30):  # 1 row (triton) / 3 rows / all rows
        x = x_s.clone().requires_grad_()
        loss = kd_loss(student_hidden=x, student_weight=w_s, teacher_hidden=x_t, teacher_weight=w_t,
                       objective="reverse_kl", noise_sigma=5.0, noise_seed=9, temperature=2.0,
                       implementation=implementation, chunk_bytes=chunk_bytes, compile=False)
        loss.backward()
        results.append((loss.detach(), x.grad))
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-6, atol=1e-7)


def test_noise_is_the_same_in_every_implementation_and_changes_the_loss():
    x_s, w_s, x_t, w_t = _noisy_case()
    kw = dict(student_hidden=x_s, student_weight=w_s, teacher_hidden=x_t, teacher_weight=w_t,
              objective="forward_kl", noise_sigma=1.0, noise_seed=21, noise_row_offset=1000)
    losses = {impl: kd_loss(implementation=impl, compile=False, **kw) for impl in ("reference", "chunked", "triton")}
    torch.testing.assert_close(losses["chunked"], losses["reference"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["triton"], losses["reference"], rtol=1e-5, atol=1e-6)
    clean = kd_loss(implementation="reference", **{**kw, "noise_sigma": 0.0})
    other_seed = kd_loss(implementation="reference", **{**kw, "noise_seed": 22})
    assert not math.isclose(losses["reference"].item(), clean.item(), rel_tol=1e-3)
    assert not math.isclose(losses["reference"].item(), other_seed.item(), rel_tol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 - 1, 2**40 + 7])
def test_cpu_numpy_rounds_equal_the_torch_rounds(seed):
    """The CPU path (numpy uint64) and the any-device path (split int64 products) agree word for word."""
    from kdlens.losses import noise

    rows = torch.tensor([0, 1, 7, 2**20, 2**32 - 1], dtype=torch.int64).reshape(-1, 1)
    cols = torch.arange(0, 70000, 997, dtype=torch.int64).reshape(1, -1)
    c0, c1 = torch.broadcast_tensors(cols, rows)
    fast = noise._philox_numpy(seed, c0, c1)
    plain = noise._philox_torch(seed, c0, c1)
    assert all(torch.equal(a, b) for a, b in zip(fast, plain))
