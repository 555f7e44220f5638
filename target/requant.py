"""Requantization: int32 accumulator -> int8, bit-exact and shared by definition.

This is the single rounding mode of TOSA RESCALE (TFLite's single-rounding mode):

    r = (int64(acc + bias[c]) * M[c] + (1 << (S[c] - 1))) >> S[c]      # arithmetic shift
    y = clamp(r + zp_out, act_min, act_max)

with `M` in [2^30, 2^31) (or 0) and 1 <= S <= 62. `M`, `S` come from the real multiplier
`m = s_in * s_w[c] / s_out` in float64: `(q, e) = frexp(m)`, `M = round_half_away(q * 2^31)`
(if `M == 2^31`: `M //= 2`, `e += 1`), `S = 31 - e`; a multiplier too small for
`S <= 62` becomes `M = 0`. Rounding therefore goes half up (towards +inf) on ties,
including negative ties: -2.5 -> -2.
"""

from __future__ import annotations

import numpy as np

MAX_SHIFT = 62
"""The largest shift an instruction encodes; smaller multipliers flush to zero."""


def quantize_multiplier(m: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Split real multipliers into (M, S) int64 arrays such that m ~= M * 2^-S.

    Raises ValueError for a negative, non-finite or too large (>= 2^30) multiplier.
    """
    real = np.atleast_1d(np.asarray(m, dtype=np.float64))
    if not np.all(np.isfinite(real)) or np.any(real < 0):
        raise ValueError("requantization multiplier must be finite and non-negative")
    if np.any(real >= 2.0**30):
        raise ValueError(f"requantization multiplier {real.max():g} is too large (must be < 2^30)")
    q, e = np.frexp(real)
    e = e.astype(np.int64)
    scaled = q * 2.0**31  # exact in float64: q has 53 bits
    multiplier = np.floor(scaled + 0.5).astype(np.int64)  # half away from zero, as q >= 0
    carry = multiplier == 2**31
    multiplier[carry] //= 2
    e[carry] += 1
    shift = 31 - e
    flush = (real == 0) | (shift > MAX_SHIFT)
    multiplier[flush] = 0
    shift[flush] = MAX_SHIFT
    return multiplier, shift


def requantize(
    acc: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    zp_out: int,
    act_min: int = -128,
    act_max: int = 127,
    bias: np.ndarray | None = None,
    channel_axis: int = -1,
) -> np.ndarray:
    """Apply the requantization formula to an integer accumulator, per channel along
    `channel_axis`. Returns int32 values in [act_min, act_max] (callers cast to int8)."""
    values = np.asarray(acc, dtype=np.int64)
    axis = channel_axis % values.ndim if values.ndim else 0
    shape = [1] * values.ndim
    if values.ndim:
        shape[axis] = -1

    def per_channel(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        return x.reshape(shape) if x.size > 1 else x.reshape(())

    if bias is not None:
        values = values + per_channel(bias)
    mult = per_channel(multiplier)
    sh = per_channel(shift)
    rounded = (values * mult + (np.int64(1) << (sh - 1))) >> sh
    return np.clip(rounded + zp_out, act_min, act_max).astype(np.int32)
