"""Teacher-logit noise that every implementation reproduces exactly: Triton's Philox ``tl.randn`` in torch.

The noise added to teacher logit (row r, vocab column v) is ``eps[r, v] = tl.randn(seed, (r << 32) | v)``
as Triton 3.x computes it: Philox4x32-10 with key ``(seed & 0xffffffff, seed >> 32)`` and counter
``(v, r, 0, 0)``, the first two output words mapped to uniforms (``uint_to_uniform_float``) and then to
one standard normal by Box-Muller (``pair_uniform_to_normal``, first output). Because it is keyed on the
global row and the column, it does not depend on chunk size, block size or implementation, and it costs
no memory in the kernels. This module is the plain-torch twin used by the reference and chunked paths;
tests/losses/test_noise.py proves it equals the Triton interpreter's ``tl.randn`` bit for bit on the
integer stream and to float rounding on the normals.

On CPU the rounds run in numpy uint64 arithmetic, where a 32x32-bit product is exact; elsewhere on
int64 tensors holding 32-bit values (torch has no full uint32 arithmetic), with the 32x32->64-bit
products split into 16-bit halves so nothing overflows int64. Both give the same words (tested).
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_PHILOX_KEY_A = 0x9E3779B9
_PHILOX_KEY_B = 0xBB67AE85
_PHILOX_ROUND_A = 0xD2511F53
_PHILOX_ROUND_B = 0xCD9E8D57
_N_ROUNDS = 10
_UNIFORM_SCALE = 4.6566127342e-10  # Triton's uint_to_uniform_float scale for 32-bit words
_TWO_PI = 6.283185307179586


def _mul_hi_lo(a: torch.Tensor, const: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a * const`` for int64 tensors ``a`` in [0, 2**32)."""
    t_lo = a * (const & 0xFFFF)  # < 2**48
    t_hi = a * (const >> 16)  # < 2**48
    s = ((t_hi & 0xFFFF) << 16) + t_lo  # < 2**49
    return (t_hi >> 16) + (s >> 32), s & _M32


def philox4x32_10(seed: int, c0: torch.Tensor, c1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First two output words of Philox4x32-10 for counters (c0, c1, 0, 0) and a 64-bit ``seed`` key.

    ``c0`` and ``c1`` are int64 tensors holding values in [0, 2**32) (broadcastable). Returns int64
    tensors holding the uint32 outputs, exactly as ``triton.language.random.philox`` computes them.
    """
    if not 0 <= seed < 2**63:
        raise ValueError(f"noise seed must be in [0, 2**63), got {seed}")
    c0, c1 = torch.broadcast_tensors(c0.to(torch.int64), c1.to(torch.int64))
    if c0.device.type == "cpu":
        return _philox_numpy(seed, c0, c1)
    return _philox_torch(seed, c0, c1)


def _philox_numpy(seed: int, c0: torch.Tensor, c1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Philox4x32-10 in numpy uint64 (about 10x faster than the int64 torch rounds on a CPU)."""
    import numpy as np

    m32 = np.uint64(_M32)
    shift = np.uint64(32)
    round_a, round_b = np.uint64(_PHILOX_ROUND_A), np.uint64(_PHILOX_ROUND_B)
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    x0 = c0.numpy().astype(np.uint64)
    x1 = c1.numpy().astype(np.uint64)
    x2 = np.zeros_like(x0)
    x3 = np.zeros_like(x0)
    for _ in range(_N_ROUNDS):
        prod_b = x2 * round_b  # exact: both factors < 2**32
        prod_a = x0 * round_a
        x0 = (prod_b >> shift) ^ x1 ^ np.uint64(k0)
        x1 = prod_b & m32
        x2 = (prod_a >> shift) ^ x3 ^ np.uint64(k1)
        x3 = prod_a & m32
        k0 = (k0 + _PHILOX_KEY_A) & _M32
        k1 = (k1 + _PHILOX_KEY_B) & _M32
    return torch.from_numpy(x0.astype(np.int64)), torch.from_numpy(x1.astype(np.int64))


def _philox_torch(seed: int, c0: torch.Tensor, c1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on int64 tensors of any device (products split so nothing overflows)."""
    k0 = seed & _M32
    k1 = (seed >> 32) & _M32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(_N_ROUNDS):
        hi_b, lo_b = _mul_hi_lo(c2, _PHILOX_ROUND_B)
        hi_a, lo_a = _mul_hi_lo(c0, _PHILOX_ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _PHILOX_KEY_A) & _M32
        k1 = (k1 + _PHILOX_KEY_B) & _M32
    return c0, c1


def _uint_to_uniform_float(x: torch.Tensor) -> torch.Tensor:
    """Triton's ``uint_to_uniform_float`` for 32-bit words held in int64: a float32 in [0, 1)."""
    signed = torch.where(x >= 2**31, x - 2**32, x)
    signed = torch.where(signed < 0, -signed - 1, signed)
    return signed.to(torch.float32) * torch.tensor(_UNIFORM_SCALE, dtype=torch.float32, device=x.device)


def philox_randn(seed: int, rows: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Standard normal noise ``eps[i, v] = tl.randn(seed, (rows[i] << 32) | v)`` as float32 ``[len(rows), n_cols]``.

    ``rows`` is a 1-D integer tensor of global row indices (in [0, 2**32)); the device of ``rows`` is used.
    """
    cols = torch.arange(n_cols, device=rows.device, dtype=torch.int64).reshape(1, -1)
    return philox_randn_at(seed, rows, cols)


def philox_randn_at(seed: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``eps[i, j] = tl.randn(seed, (rows[i] << 32) | cols[i, j])`` as float32 ``[len(rows), n]`` for given
    column (vocabulary) ids ``cols`` ``[len(rows), n]`` or ``[1, n]``: the noise a sparse teacher's cached
    ids get, equal to the dense noise at those columns."""
    rows = rows.to(torch.int64).reshape(-1, 1)
    i1, i2 = philox4x32_10(seed, cols.to(device=rows.device, dtype=torch.int64), rows)
    u1 = torch.clamp_min(_uint_to_uniform_float(i1), 1.0e-7)
    u2 = _uint_to_uniform_float(i2)
    theta = torch.tensor(_TWO_PI, dtype=torch.float32, device=rows.device) * u2
    radius = torch.sqrt(-2.0 * torch.log(u1))
    return radius * torch.cos(theta)
