"""Quantization parameters: scales and zero points from ranges, and the integer
multipliers each quant op needs for its requantization.

Decisions (docs/quant.md):
- Scales are rounded to float32, the precision ONNX and the types' expressed type keep, so
  the multipliers the compiler derives equal those anyone recomputes from an exported model.
- Activations: int8 asymmetric over the range extended to include 0, so real 0 (padding,
  ReLU) is exactly representable. A degenerate range (constant zero) gets scale 1.0 and
  zero point 0: every scale represents it exactly. Activations chosen for 16 bits
  (`precision(..., int16)`) are int16 symmetric, `scale = max(|min|, |max|) / 32767`, zero
  point 0 (TFLite's 16x8 scheme: padding and the NPU's byte-wise DMA need no zero point).
- Weights: int8 symmetric per output channel, narrow range [-127, 127] (TOSA/TFLite),
  zero points 0. An all-zero channel is given the scale of a channel whose maximum is 1.
- Biases: int32 with scale `s_in * s_w[c]`, zero point 0, saturated to int32.
- Multipliers: `ember.target.requant.quantize_multiplier` of the real multiplier in float64.
"""

from __future__ import annotations

import numpy as np

from ember.dialects.quant import ADD_LEFT_SHIFT
from ember.support.diagnostics import EmberError
from ember.target.requant import quantize_multiplier

INT8_MIN, INT8_MAX = -128, 127
INT16_MAX = 32767
WEIGHT_MAX = 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _f32(values: np.ndarray | float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def activation_params(rmin: float, rmax: float, name: str = "tensor") -> tuple[float, int]:
    """Asymmetric int8 `(scale, zero_point)` for a calibrated range [rmin, rmax].

    The range is widened to include 0; `scale = (max - min) / 255` (float32) and
    `zp = clamp(rint(-128 - min / scale))`. Raises EmberError for a non-finite or
    inverted range."""
    if not (np.isfinite(rmin) and np.isfinite(rmax)):
        raise EmberError(f"{name}: calibration range [{rmin}, {rmax}] is not finite; check the samples for NaN/Inf")
    if rmin > rmax:
        raise EmberError(f"{name}: calibration range [{rmin}, {rmax}] is inverted; min must not exceed max")
    lo, hi = min(float(rmin), 0.0), max(float(rmax), 0.0)
    scale = float(_f32((hi - lo) / (INT8_MAX - INT8_MIN)))
    if scale == 0.0:  # constant zero, or a range below float32's resolution
        return 1.0, 0
    zero_point = int(np.clip(np.rint(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return scale, zero_point


def activation16_params(rmin: float, rmax: float, name: str = "tensor") -> tuple[float, int]:
    """Symmetric int16 `(scale, 0)` for a calibrated range: `scale = max(|min|, |max|) / 32767`
    (float32). Raises EmberError like `activation_params`."""
    activation_params(rmin, rmax, name)  # the same checks of the range
    scale = float(_f32(max(abs(float(rmin)), abs(float(rmax))) / INT16_MAX))
    return (scale if scale > 0.0 else 1.0), 0


def weight_scales(weights: np.ndarray, axis: int = 0, name: str = "weights") -> np.ndarray:
    """Symmetric per-channel scales `max|w[c]| / 127` (float32 values, float64 array)."""
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise EmberError(f"{name}: weights contain NaN or Inf; fix the model")
    reduce_axes = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    peak = np.abs(w).max(axis=reduce_axes) if w.size else np.zeros(w.shape[axis])
    return _f32(np.where(peak > 0, peak, 1.0) / WEIGHT_MAX)


def quantize_weights(
    weights: np.ndarray, axis: int = 0, name: str = "weights", min_scales: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights `clamp(rint(w / s[c]), -127, 127)` and their per-channel scales, each
    at least `min_scales[c]` when given."""
    w = np.asarray(weights, dtype=np.float64)
    scales = weight_scales(w, axis, name)
    if min_scales is not None:
        scales = np.maximum(scales, min_scales)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scales.reshape(shape)), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    return q, scales


def bias_weight_scales(bias: np.ndarray, input_scale: float) -> np.ndarray:
    """The least weight scale per channel at which the bias fits in 2^30, half of int32
    (its scale is `s_in * s_w[c]`; the other half is room for bias correction): a channel
    with a large bias and tiny weights, behind a finely quantized (int16) input, would
    saturate it."""
    return np.abs(np.asarray(bias, dtype=np.float64)) / (input_scale * (1 << 30))


def quantize_bias(bias: np.ndarray, input_scale: float, weight_scale: np.ndarray, name: str = "bias") -> np.ndarray:
    """int32 bias `clamp(rint(b / (s_in * s_w[c])))` (scale `s_in * s_w[c]`, zero point 0)."""
    b = np.asarray(bias, dtype=np.float64)
    if not np.all(np.isfinite(b)):
        raise EmberError(f"{name}: bias contains NaN or Inf; fix the model")
    return np.clip(np.rint(b / (input_scale * np.asarray(weight_scale, dtype=np.float64))), INT32_MIN, INT32_MAX).astype(
        np.int32
    )


def multipliers(real: np.ndarray | float, name: str = "layer") -> tuple[np.ndarray, np.ndarray]:
    """`(M, S)` int64 arrays for real multipliers; EmberError when one is unusable."""
    try:
        return quantize_multiplier(real)
    except ValueError as err:
        raise EmberError(f"{name}: {err}; the calibrated output range is degenerate, recalibrate") from None


def conv_multipliers(
    input_scale: float, weight_scales: np.ndarray, output_scale: float, name: str = "layer"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel `(M, S)` for conv/fully-connected: `s_in * s_w[c] / s_out`."""
    return multipliers(input_scale * np.asarray(weight_scales, dtype=np.float64) / output_scale, name)


def rescale_multiplier(input_scale: float, output_scale: float, name: str = "layer") -> tuple[int, int]:
    """`(M, S)` for `s_in / s_out`: concat inputs, average pooling (after its rounded
    division by the count)."""
    m, s = multipliers(input_scale / output_scale, name)
    return int(m[0]), int(s[0])


def add_multipliers(
    lhs_scale: float, rhs_scale: float, output_scale: float, name: str = "add"
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """`(input_multipliers, input_shifts, multiplier, shift)` for `quant.add`, TFLite's
    choice: inputs to the common scale `2 * max(s_a, s_b) / 2^20` (real multipliers
    `s_i / (2 max)` <= 1/2), the sum to the output with `2 max / (2^20 s_out)`."""
    twice_max = 2.0 * max(lhs_scale, rhs_scale)
    in_m, in_s = multipliers(np.array([lhs_scale, rhs_scale]) / twice_max, name)
    out_m, out_s = multipliers(twice_max / ((1 << ADD_LEFT_SHIFT) * output_scale), name)
    return in_m, in_s, int(out_m[0]), int(out_s[0])


def mul_multiplier(lhs_scale: float, rhs_scale: float, output_scale: float, name: str = "mul") -> tuple[int, int]:
    """`(M, S)` for `quant.mul`: `s_a * s_b / s_out`."""
    m, s = multipliers(lhs_scale * rhs_scale / output_scale, name)
    return int(m[0]), int(s[0])


def global_avg_pool_multiplier(
    input_scale: float, output_scale: float, count: int, name: str = "global_avg_pool"
) -> tuple[int, int]:
    """`(M, S)` for `quant.global_avg_pool` over `count = H * W` elements."""
    m, s = multipliers(input_scale / (output_scale * count), name)
    return int(m[0]), int(s[0])


def resize_multiplier(
    input_scale: float, output_scale: float, mode: str, name: str = "resize"
) -> tuple[int, int]:
    """`(M, S)` for `quant.resize`: `s_in / s_out`, divided by 2^20 for bilinear (Q10 x Q10
    interpolation weights)."""
    weight_scale = 1.0 if mode == "nearest" else 2.0**-20
    m, s = multipliers(input_scale / output_scale * weight_scale, name)
    return int(m[0]), int(s[0])
