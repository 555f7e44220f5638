"""Lookup tables for elementwise activations (`quant.lut`, and the table a
conv/fully-connected applies after requantization): 256 int8 entries for int8 activations,
513 interpolated int16 entries for int16 ones (`build_table16`).

A table is built in float64: each of the 256 int8 inputs is dequantized with
(s_in, zp_in), the function applied, and the result quantized with (s_out, zp_out) by
rounding half to even (as ONNX QuantizeLinear and `quant.quantize`) and clamping to int8.
Entry `i` is the output for the input `i - 128`, so the hardware indexes `table[x + 128]`.
The NPU only indexes tables, so activations are exact by construction.

The functions take float64 arrays and follow the ONNX operators' definitions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ember.target.isa import LUT16_ENTRIES, LUT16_FRAC_BITS

INT8_INPUTS = np.arange(-128, 128, dtype=np.int64)
"""The table's inputs, in entry order."""
INT16_KNOTS = (np.arange(LUT16_ENTRIES, dtype=np.int64) << LUT16_FRAC_BITS) - 32768
"""The int16 table's knots: entry `i` is the output at input `128 * i - 32768`."""


def build_table(
    function: Callable[[np.ndarray], np.ndarray],
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
) -> np.ndarray:
    """The int8 table `clamp(rint(f((x - zp_in) * s_in) / s_out) + zp_out)` for x in [-128, 127]."""
    real = (INT8_INPUTS - input_zero_point) * np.float64(input_scale)
    out = np.rint(np.asarray(function(real), dtype=np.float64) / np.float64(output_scale)) + output_zero_point
    return np.clip(out, -128, 127).astype(np.int8)


def build_table16(
    function: Callable[[np.ndarray], np.ndarray], input_scale: float, output_scale: float
) -> np.ndarray:
    """The 513-entry int16 table of a symmetric int16 activation (TFLite's int16 LUT):
    entry `i` is `clamp(rint(f(k_i * s_in) / s_out))` at the knot `k_i = 128 i - 32768`;
    POST interpolates linearly between knots (docs/isa.md), so inputs between knots get
    the chord, within a rounding step of the function where it is smooth over 128 steps."""
    real = INT16_KNOTS * np.float64(input_scale)
    out = np.rint(np.asarray(function(real), dtype=np.float64) / np.float64(output_scale))
    return np.clip(out, -32768, 32767).astype(np.int16)


def lookup16(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """POST's interpolated int16 lookup: with `u = x + 32768`, `i = u >> 7`, `f = u & 127`,
    `table[i] + (((table[i+1] - table[i]) * f + 64) >> 7)` (arithmetic shift)."""
    u = np.asarray(x, dtype=np.int64) + 32768
    i, f = u >> LUT16_FRAC_BITS, u & ((1 << LUT16_FRAC_BITS) - 1)
    t = np.asarray(table, dtype=np.int64)
    return (t[i] + (((t[i + 1] - t[i]) * f + (1 << (LUT16_FRAC_BITS - 1))) >> LUT16_FRAC_BITS)).astype(np.int16)


def identity(x: np.ndarray) -> np.ndarray:
    return x


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def clip(x: np.ndarray, min: float = -np.inf, max: float = np.inf) -> np.ndarray:
    """ONNX Clip (Relu6 is `clip(x, 0, 6)`)."""
    return np.clip(x, min, max)


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def leaky_relu(x: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    return np.where(x >= 0, x, alpha * x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) = inf gives the right limit 0
        return 1.0 / (1.0 + np.exp(-x))


def hard_sigmoid(x: np.ndarray, alpha: float = 0.2, beta: float = 0.5) -> np.ndarray:
    """ONNX HardSigmoid: `max(0, min(1, alpha * x + beta))`."""
    return np.clip(alpha * x + beta, 0.0, 1.0)


def hard_swish(x: np.ndarray) -> np.ndarray:
    """ONNX HardSwish: `x * HardSigmoid(x; alpha = 1/6, beta = 0.5)`."""
    return x * hard_sigmoid(x, 1.0 / 6.0, 0.5)


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU / Swish: `x * sigmoid(x)`."""
    return x * sigmoid(x)


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


_erf = np.vectorize(math.erf, otypes=[np.float64])  # 256 values per table: cost is nil


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """ONNX Gelu: `x/2 * (1 + erf(x / sqrt 2))`, or its tanh approximation."""
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def exp(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # inf saturates to 127
        return np.exp(x)
