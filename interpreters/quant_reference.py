"""The numpy reference interpreter of the `quant` dialect: it DEFINES the integer semantics.

Every op is a function on whole int8 tensors (NCHW; int16 where `precision(..., int16)`
chose it: convolution inputs and results) that the NPU simulator must match bit for bit; `docs/quant.md` states the same definitions as formulas. All requantization goes
through `ember.target.requant.requantize` (TOSA RESCALE, single rounding), the one
definition the simulator shares.

Convolution and fully-connected accumulate in float64, which is exact here: every product
`(x - zp) * w` is below 2^23 in magnitude (int16 inputs), so sums stay exact far beyond
any real kernel (2^30 terms), and BLAS makes the reference fast enough for whole models.
The sum then wraps to int32 as the NPU's accumulator does.

`run_quant_module` runs a `func.func` of quant ops through xDSL's interpreter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr, TensorType
from xdsl.interpreter import Interpreter, InterpreterFunctions, PythonValues, impl, register_impls
from xdsl.interpreters.func import FuncFunctions
from xdsl.ir import Operation

from ember.dialects import quant
from ember.dialects.quant import ADD_LEFT_SHIFT, array_values, quant_type_of, window_output_size
from ember.dialects.quant_tables import lookup16
from ember.support.diagnostics import EmberError
from ember.target.isa import BILINEAR_WEIGHT_BITS, RESIZE_FRAC_BITS
from ember.target.requant import requantize

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


# ----------------------------------------------------------------------- float boundary


def _along(values: np.ndarray | float, axis: int | None, ndim: int) -> np.ndarray:
    """Per-tensor parameters as scalars, per-axis ones shaped to broadcast along `axis`."""
    array = np.asarray(values)
    if axis is None or array.size == 1:
        return array.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return array.reshape(shape)


def quantize(
    x: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    axis: int | None = None,
    qmin: int = -128,
    qmax: int = 127,
) -> np.ndarray:
    """`clamp(rint(x / scale) + zp, qmin, qmax)` in float32 with round half to even,
    exactly ONNX QuantizeLinear (so the host-side boundary matches onnxruntime), in the
    narrowest of int8 / int16 / int32 that holds [qmin, qmax]."""
    x = np.asarray(x, dtype=np.float32)
    s = _along(np.asarray(scale, dtype=np.float32), axis, x.ndim)
    zp = _along(np.asarray(zero_point, dtype=np.int64), axis, x.ndim)
    q = np.rint(x / s).astype(np.int64) + zp
    dtype = next(t for t in (np.int8, np.int16, np.int32) if np.iinfo(t).min <= qmin and qmax <= np.iinfo(t).max)
    return np.clip(q, qmin, qmax).astype(dtype)


def dequantize(
    q: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | int, axis: int | None = None
) -> np.ndarray:
    """`(q - zp) * scale` in float32, exactly ONNX DequantizeLinear."""
    q = np.asarray(q)
    s = _along(np.asarray(scale, dtype=np.float32), axis, q.ndim)
    zp = _along(np.asarray(zero_point, dtype=np.int64), axis, q.ndim)
    return ((q.astype(np.int64) - zp).astype(np.float32) * s).astype(np.float32)


# --------------------------------------------------------------------- accumulate + POST


def post(
    acc: np.ndarray,
    bias: np.ndarray | None,
    multiplier: np.ndarray,
    shift: np.ndarray,
    out_zp: int,
    act_min: int = -128,
    act_max: int = 127,
    lut: np.ndarray | None = None,
    channel_axis: int = 1,
    out_dtype: np.dtype = np.dtype(np.int8),
) -> np.ndarray:
    """The POST stage: `requantize(acc + bias[c], M[c], S[c], zp)` clamped to
    [act_min, act_max], then optionally through the table: `lut[y + 128]` for a 256-entry
    int8 table, `lookup16(y, lut)` for a 513-entry int16 one. Returns `out_dtype`."""
    y = requantize(acc, multiplier, shift, out_zp, act_min, act_max, bias=bias, channel_axis=channel_axis)
    if lut is not None:
        table = np.asarray(lut)
        return lookup16(y, table) if table.dtype == np.int16 else table.astype(np.int8)[y + 128]
    return y.astype(out_dtype)


def wrap_int32(acc: np.ndarray) -> np.ndarray:
    """int64 sums taken modulo 2^32 into [-2^31, 2^31): the accumulator's wrap-around."""
    return (np.asarray(acc, dtype=np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)


def conv2d_accumulate(
    x: np.ndarray,
    x_zp: int,
    weight: np.ndarray,
    *,
    strides: Sequence[int] = (1, 1),
    pads: Sequence[int] = (0, 0, 0, 0),
    dilations: Sequence[int] = (1, 1),
    group: int = 1,
) -> np.ndarray:
    """`acc[n, o, y, x] = sum (xpad[n, g*Cg + c, y*sh + i*dh, x*sw + j*dw] - x_zp) * w[o, c, i, j]`
    over c < Cg, i < kh, j < kw, with g = o // (O / group) and `xpad` padded with `x_zp`
    (so padded taps contribute 0), wrapped to int32. int8 or int16 NCHW input, OIHW
    weights; returns int64."""
    n, channels, height, width = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    (sh, sw), (dh, dw), (top, left, bottom, right) = strides, dilations, pads
    oh = window_output_size(height, kh, sh, dh, top, bottom)
    ow = window_output_size(width, kw, sw, dw, left, right)
    centred = np.pad(
        x.astype(np.float64) - x_zp, ((0, 0), (0, 0), (top, bottom), (left, right))
    ).reshape(n, group, group_channels, height + top + bottom, width + left + right)
    w = weight.astype(np.float64).reshape(group, out_channels // group, group_channels, kh, kw)
    acc = np.zeros((n, group, out_channels // group, oh * ow))
    for i in range(kh):  # one vectorised step per kernel tap keeps memory at one input copy
        for j in range(kw):
            tap = centred[
                :, :, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw
            ].reshape(n, group, group_channels, oh * ow)
            if group_channels == 1:  # depthwise: a broadcast product, not G tiny matmuls
                acc += w[None, :, :, 0, i, j, None] * tap
            else:
                acc += w[:, :, :, i, j] @ tap
    return wrap_int32(acc.reshape(n, out_channels, oh, ow).astype(np.int64))


def conv2d(
    x: np.ndarray,
    x_zp: int,
    weight: np.ndarray,
    bias: np.ndarray | None,
    multiplier: np.ndarray,
    shift: np.ndarray,
    out_zp: int,
    *,
    strides: Sequence[int] = (1, 1),
    pads: Sequence[int] = (0, 0, 0, 0),
    dilations: Sequence[int] = (1, 1),
    group: int = 1,
    act_min: int = -128,
    act_max: int = 127,
    lut: np.ndarray | None = None,
    out_dtype: np.dtype = np.dtype(np.int8),
) -> np.ndarray:
    """`quant.conv2d`: `conv2d_accumulate` then `post` per output channel (axis 1)."""
    acc = conv2d_accumulate(x, x_zp, weight, strides=strides, pads=pads, dilations=dilations, group=group)
    return post(acc, bias, multiplier, shift, out_zp, act_min, act_max, lut, channel_axis=1, out_dtype=out_dtype)


def conv_transpose(
    x: np.ndarray,
    x_zp: int,
    weight: np.ndarray,
    bias: np.ndarray | None,
    multiplier: np.ndarray,
    shift: np.ndarray,
    out_zp: int,
    *,
    group: int = 1,
    act_min: int = -128,
    act_max: int = 127,
    lut: np.ndarray | None = None,
    out_dtype: np.dtype = np.dtype(np.int8),
) -> np.ndarray:
    """`quant.conv_transpose` (stride = kernel): kernel tap (i, j) is a 1x1 convolution
    whose result fills output rows `kh*y + i`, columns `kw*x + j`; then `post` per output
    channel (axis 1). OIHW weights."""
    n, _, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    acc = np.empty((n, out_channels, height * kh, width * kw), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            acc[:, :, i::kh, j::kw] = conv2d_accumulate(x, x_zp, weight[:, :, i : i + 1, j : j + 1], group=group)
    return post(acc, bias, multiplier, shift, out_zp, act_min, act_max, lut, channel_axis=1, out_dtype=out_dtype)


def fully_connected(
    x: np.ndarray,
    x_zp: int,
    weight: np.ndarray,
    bias: np.ndarray | None,
    multiplier: np.ndarray,
    shift: np.ndarray,
    out_zp: int,
    act_min: int = -128,
    act_max: int = 127,
    lut: np.ndarray | None = None,
    out_dtype: np.dtype = np.dtype(np.int8),
) -> np.ndarray:
    """`quant.fully_connected`: `acc[..., n] = sum_k (x[..., k] - x_zp) * w[n, k]` (wrapped
    to int32), then `post` per output feature (last axis)."""
    acc = wrap_int32(((x.astype(np.float64) - x_zp) @ weight.astype(np.float64).T).astype(np.int64))
    return post(acc, bias, multiplier, shift, out_zp, act_min, act_max, lut, channel_axis=-1, out_dtype=out_dtype)


# -------------------------------------------------------------------------- elementwise


def add(
    a: np.ndarray,
    a_zp: int,
    b: np.ndarray,
    b_zp: int,
    input_multipliers: Sequence[int],
    input_shifts: Sequence[int],
    multiplier: int,
    shift: int,
    out_zp: int,
    act_min: int = -128,
    act_max: int = 127,
) -> np.ndarray:
    """`quant.add` (TFLite's scheme, integer only, numpy broadcasting):
    `a' = requantize((a - a_zp) << 20, Ma, Sa, 0)`, `b'` likewise, then
    `y = requantize(a' + b', M, S, out_zp)` clamped to [act_min, act_max]."""

    def rescale(v: np.ndarray, zp: int, m: int, s: int) -> np.ndarray:
        centred = (v.astype(np.int64) - zp) << ADD_LEFT_SHIFT
        return requantize(centred, np.int64(m), np.int64(s), 0, INT32_MIN, INT32_MAX).astype(np.int64)

    total = rescale(a, a_zp, input_multipliers[0], input_shifts[0]) + rescale(
        b, b_zp, input_multipliers[1], input_shifts[1]
    )
    return requantize(total, np.int64(multiplier), np.int64(shift), out_zp, act_min, act_max).astype(np.int8)


def mul(
    a: np.ndarray,
    a_zp: int,
    b: np.ndarray,
    b_zp: int,
    multiplier: int,
    shift: int,
    out_zp: int,
    act_min: int = -128,
    act_max: int = 127,
) -> np.ndarray:
    """`quant.mul`: `y = requantize((a - a_zp) * (b - b_zp), M, S, out_zp)` clamped
    (numpy broadcasting); the product is exact in 17 bits (25 with an int16 operand)."""
    product = (a.astype(np.int64) - a_zp) * (b.astype(np.int64) - b_zp)
    return requantize(product, np.int64(multiplier), np.int64(shift), out_zp, act_min, act_max).astype(np.int8)


def rescale(x: np.ndarray, x_zp: int, multiplier: int, shift: int, out_zp: int) -> np.ndarray:
    """`requantize(x - x_zp, M, S, out_zp)`: one tensor to another scale and zero point
    (identity for M = 2^30, S = 30 and equal zero points)."""
    return requantize(x.astype(np.int64) - x_zp, np.int64(multiplier), np.int64(shift), out_zp).astype(np.int8)


def concat(
    inputs: Sequence[np.ndarray],
    zero_points: Sequence[int],
    multipliers: Sequence[int],
    shifts: Sequence[int],
    out_zp: int,
    axis: int,
) -> np.ndarray:
    """`quant.concat`: each input `rescale`d to the result's type, then concatenated."""
    parts = [rescale(x, zp, m, s, out_zp) for x, zp, m, s in zip(inputs, zero_points, multipliers, shifts)]
    return np.concatenate(parts, axis=axis)


def lut(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """`quant.lut`: `table[x + 128]`."""
    return np.asarray(table, dtype=np.int8)[x.astype(np.int16) + 128]


# ---------------------------------------------------------------------------- pooling


def _window_taps(
    padded: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], out_hw: tuple[int, int]
):
    """The strided views of `padded` (…, H, W) for each kernel tap, each (…, oh, ow)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, strides, dilations, out_hw
    for i in range(kh):
        for j in range(kw):
            yield padded[..., i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]


def _pool_out_hw(shape, kernel, strides, pads, dilations) -> tuple[int, int]:
    return (
        window_output_size(shape[-2], kernel[0], strides[0], dilations[0], pads[0], pads[2]),
        window_output_size(shape[-1], kernel[1], strides[1], dilations[1], pads[1], pads[3]),
    )


def _pad_hw(x: np.ndarray, pads: Sequence[int], value: int | float) -> np.ndarray:
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0),) * (x.ndim - 2) + ((top, bottom), (left, right)), constant_values=value)


def max_pool(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int] = (1, 1),
    pads: Sequence[int] = (0, 0, 0, 0),
    dilations: Sequence[int] = (1, 1),
) -> np.ndarray:
    """`quant.max_pool`: the window maximum; padding is -128, which never wins as every
    window holds at least one input element."""
    out_hw = _pool_out_hw(x.shape, kernel, strides, pads, dilations)
    taps = _window_taps(_pad_hw(x, pads, -128), kernel, strides, dilations, out_hw)
    return np.maximum.reduce(list(taps)).astype(np.int8)


def avg_pool(
    x: np.ndarray,
    x_zp: int,
    kernel: Sequence[int],
    multiplier: int,
    shift: int,
    out_zp: int,
    strides: Sequence[int] = (1, 1),
    pads: Sequence[int] = (0, 0, 0, 0),
    count_include_pad: bool = False,
) -> np.ndarray:
    """`quant.avg_pool`, the NPU's POOL average: `s = Σ (x - x_zp)` over the window's
    input elements, `v = floor((2 s + n) / (2 n))` (division rounding half up) with `n` =
    kh*kw when `count_include_pad`, else the number of window elements inside the input;
    `y = requantize(v, M, S, out_zp)`."""
    out_hw = _pool_out_hw(x.shape, kernel, strides, pads, (1, 1))
    centred = _pad_hw(x.astype(np.int64) - x_zp, pads, 0)
    total = sum(_window_taps(centred, kernel, strides, (1, 1), out_hw))
    if count_include_pad:
        count = np.full(out_hw, kernel[0] * kernel[1], dtype=np.int64)
    else:
        inside = _pad_hw(np.ones(x.shape[-2:], dtype=np.int64), pads, 0)
        count = sum(_window_taps(inside, kernel, strides, (1, 1), out_hw))
    value = (2 * total + count) // (2 * count)
    return requantize(value, np.int64(multiplier), np.int64(shift), out_zp).astype(np.int8)


def global_avg_pool(x: np.ndarray, x_zp: int, multiplier: int, shift: int, out_zp: int) -> np.ndarray:
    """`quant.global_avg_pool`: `requantize(Σ_hw (x - x_zp), M, S, out_zp)`, N x C x 1 x 1."""
    total = (x.astype(np.int64) - x_zp).sum(axis=(2, 3), keepdims=True)
    return requantize(total, np.int64(multiplier), np.int64(shift), out_zp).astype(np.int8)


# ----------------------------------------------------------------------------- resize


_NEAREST_BIAS = {
    "floor": 0,
    "round_prefer_ceil": 1 << (RESIZE_FRAC_BITS - 1),  # floor(src + 1/2)
    "round_prefer_floor": (1 << (RESIZE_FRAC_BITS - 1)) - 1,  # ceil(src - 1/2)
    "ceil": (1 << RESIZE_FRAC_BITS) - 1,
}
"""Nearest rounding folded into the Q16 offset, so every nearest index is `src >> 16`."""


def resize_coordinates(
    in_size: int,
    out_size: int,
    mode: str,
    coordinate_transformation_mode: str = "half_pixel",
    nearest_mode: str = "round_prefer_floor",
) -> tuple[int, int]:
    """The Q16 integers `(step, offset)` of the source coordinate `src(o) = o * step +
    offset` along one axis: ONNX Resize's transformation (scale = out_size / in_size) in
    exact rational arithmetic, then rounded to Q16. These are the RESIZE instruction's
    `step`/`offset` fields.

    Bilinear rounds half up. Nearest rounds towards the side its rounding is continuous
    from (up for floor and round_prefer_ceil, down for ceil and round_prefer_floor) and
    adds the mode's bias to the offset: the index `src >> 16` then equals ONNX's exactly
    whenever the accumulated Q16 error stays below the distance to a rounding boundary,
    which holds for every size when `in/out * 2^16` is an integer (2x, 4x, 1/2 ...) and for
    outputs up to 181 pixels otherwise."""
    ratio = Fraction(in_size, out_size)
    if coordinate_transformation_mode == "asymmetric":
        step, offset = ratio, Fraction(0)
    elif coordinate_transformation_mode == "align_corners":
        step, offset = (Fraction(in_size - 1, out_size - 1) if out_size > 1 else Fraction(0)), Fraction(0)
    elif coordinate_transformation_mode == "pytorch_half_pixel" and out_size == 1:
        step, offset = Fraction(0), Fraction(0)
    elif coordinate_transformation_mode in ("half_pixel", "pytorch_half_pixel"):
        step, offset = ratio, ratio / 2 - Fraction(1, 2)
    else:
        raise ValueError(f"unknown coordinate transformation mode {coordinate_transformation_mode!r}")
    one = 1 << RESIZE_FRAC_BITS
    if mode == "nearest":
        to_q16 = math.ceil if nearest_mode in ("floor", "round_prefer_ceil") else math.floor
        return to_q16(step * one), to_q16(offset * one) + _NEAREST_BIAS[nearest_mode]
    return math.floor(step * one + Fraction(1, 2)), math.floor(offset * one + Fraction(1, 2))


def resize(
    x: np.ndarray,
    x_zp: int,
    out_hw: tuple[int, int],
    multiplier: int,
    shift: int,
    out_zp: int,
    *,
    mode: str,
    coordinate_transformation_mode: str = "half_pixel",
    nearest_mode: str = "round_prefer_floor",
) -> np.ndarray:
    """`quant.resize` of H and W, the NPU's RESIZE, with `src = o * step + offset` (Q16,
    from `resize_coordinates`) per axis.

    nearest: `i = clamp(src >> 16, 0, in - 1)`, `acc = x[i] - x_zp`. bilinear:
    `s = clamp(src, 0, (in - 1) << 16)`, `i0 = s >> 16`, `i1 = min(i0 + 1, in - 1)`,
    `f = (s & 0xFFFF) >> 6` (Q10); rows then columns blend `(1024 - f) * v[i0] + f * v[i1]`
    on `v = x - x_zp`, so `acc` has 20 fraction bits. Then `y = requantize(acc, M, S, out_zp)`."""
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"unknown resize mode {mode!r}")
    centred = x.astype(np.int64) - x_zp
    (in_h, in_w), (out_h, out_w) = x.shape[-2:], out_hw

    def source(in_size: int, out_size: int) -> np.ndarray:
        step, offset = resize_coordinates(in_size, out_size, mode, coordinate_transformation_mode, nearest_mode)
        return np.arange(out_size, dtype=np.int64) * step + offset

    src_y, src_x = source(in_h, out_h), source(in_w, out_w)
    if mode == "nearest":
        iy = np.clip(src_y >> RESIZE_FRAC_BITS, 0, in_h - 1)
        ix = np.clip(src_x >> RESIZE_FRAC_BITS, 0, in_w - 1)
        acc = centred[..., iy, :][..., ix]
    else:
        frac_drop = RESIZE_FRAC_BITS - BILINEAR_WEIGHT_BITS
        one = 1 << BILINEAR_WEIGHT_BITS

        def taps(src: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            s = np.clip(src, 0, (size - 1) << RESIZE_FRAC_BITS)
            i0 = s >> RESIZE_FRAC_BITS
            return i0, np.minimum(i0 + 1, size - 1), (s & ((1 << RESIZE_FRAC_BITS) - 1)) >> frac_drop

        y0, y1, fy = taps(src_y, in_h)
        x0, x1, fx = taps(src_x, in_w)
        rows = centred[..., y0, :] * (one - fy)[:, None] + centred[..., y1, :] * fy[:, None]
        acc = rows[..., x0] * (one - fx) + rows[..., x1] * fx
    return requantize(acc, np.int64(multiplier), np.int64(shift), out_zp).astype(np.int8)


# ------------------------------------------------------------------------------- layout


def pad(x: np.ndarray, x_zp: int, pads: Sequence[int]) -> np.ndarray:
    """`quant.pad`: constant padding with the zero point; pads = begins then ends."""
    rank = x.ndim
    return np.pad(x, [(pads[i], pads[i + rank]) for i in range(rank)], constant_values=x_zp)


def slice_(x: np.ndarray, starts: Sequence[int], ends: Sequence[int], steps: Sequence[int]) -> np.ndarray:
    """`quant.slice`: `x[start:end:step]` along every dimension."""
    return x[tuple(slice(b, e, s) for b, e, s in zip(starts, ends, steps))]


# -------------------------------------------------------------------------- interpreter


def _zp(value) -> int:
    return quant_type_of(value).zero_point


def _shape(value) -> tuple[int, ...]:
    assert isinstance(value.type, TensorType)
    return value.type.get_shape()


def _scalar(attr) -> int:
    return attr.value.data


def _weights(op: quant.Conv2DOp | quant.ConvTransposeOp | quant.FullyConnectedOp, values: PythonValues):
    bias = values[2] if len(values) > 2 else None
    return values[1], bias, array_values(op.multiplier), array_values(op.shift), op.table()


@register_impls
class QuantFunctions(InterpreterFunctions):
    """xDSL interpreter implementations of the quant ops, each calling the function above."""

    @impl(quant.QuantizeOp)
    def run_quantize(self, interpreter: Interpreter, op: quant.QuantizeOp, values: PythonValues):
        qtype = quant_type_of(op.output)
        axis = qtype.quantized_dimension if qtype.is_per_axis else None
        return (
            quantize(values[0], qtype.scale_array(), qtype.zero_point_array(), axis, qtype.storage_min, qtype.storage_max),
        )

    @impl(quant.DequantizeOp)
    def run_dequantize(self, interpreter: Interpreter, op: quant.DequantizeOp, values: PythonValues):
        qtype = quant_type_of(op.input)
        axis = qtype.quantized_dimension if qtype.is_per_axis else None
        return (dequantize(values[0], qtype.scale_array(), qtype.zero_point_array(), axis),)

    @impl(quant.ConstantOp)
    def run_constant(self, interpreter: Interpreter, op: quant.ConstantOp, values: PythonValues):
        return (op.numpy(),)

    @impl(quant.Conv2DOp)
    def run_conv2d(self, interpreter: Interpreter, op: quant.Conv2DOp, values: PythonValues):
        weight, bias, multiplier, shift, table = _weights(op, values)
        y = conv2d(
            values[0], _zp(op.input), weight, bias, multiplier, shift, op.requant_zero_point(),
            strides=array_values(op.strides), pads=array_values(op.pads), dilations=array_values(op.dilations),
            group=_scalar(op.group), act_min=_scalar(op.act_min), act_max=_scalar(op.act_max), lut=table,
            out_dtype=quant_type_of(op.output).storage_dtype,
        )  # fmt: skip
        return (y,)

    @impl(quant.ConvTransposeOp)
    def run_conv_transpose(self, interpreter: Interpreter, op: quant.ConvTransposeOp, values: PythonValues):
        weight, bias, multiplier, shift, table = _weights(op, values)
        y = conv_transpose(
            values[0], _zp(op.input), weight, bias, multiplier, shift, op.requant_zero_point(),
            group=_scalar(op.group), act_min=_scalar(op.act_min), act_max=_scalar(op.act_max), lut=table,
            out_dtype=quant_type_of(op.output).storage_dtype,
        )  # fmt: skip
        return (y,)

    @impl(quant.FullyConnectedOp)
    def run_fully_connected(self, interpreter: Interpreter, op: quant.FullyConnectedOp, values: PythonValues):
        weight, bias, multiplier, shift, table = _weights(op, values)
        y = fully_connected(
            values[0], _zp(op.input), weight, bias, multiplier, shift, op.requant_zero_point(),
            _scalar(op.act_min), _scalar(op.act_max), table, quant_type_of(op.output).storage_dtype,
        )  # fmt: skip
        return (y,)

    @impl(quant.AddOp)
    def run_add(self, interpreter: Interpreter, op: quant.AddOp, values: PythonValues):
        y = add(
            values[0], _zp(op.lhs), values[1], _zp(op.rhs),
            array_values(op.input_multipliers), array_values(op.input_shifts),
            _scalar(op.multiplier), _scalar(op.shift), _zp(op.output), _scalar(op.act_min), _scalar(op.act_max),
        )  # fmt: skip
        return (y,)

    @impl(quant.MulOp)
    def run_mul(self, interpreter: Interpreter, op: quant.MulOp, values: PythonValues):
        y = mul(
            values[0], _zp(op.lhs), values[1], _zp(op.rhs), _scalar(op.multiplier), _scalar(op.shift),
            _zp(op.output), _scalar(op.act_min), _scalar(op.act_max),
        )  # fmt: skip
        return (y,)

    @impl(quant.ConcatOp)
    def run_concat(self, interpreter: Interpreter, op: quant.ConcatOp, values: PythonValues):
        zero_points = [_zp(v) for v in op.inputs]
        y = concat(
            values, zero_points, array_values(op.multipliers), array_values(op.shifts), _zp(op.output),
            _scalar(op.axis),
        )  # fmt: skip
        return (y,)

    @impl(quant.MaxPoolOp)
    def run_max_pool(self, interpreter: Interpreter, op: quant.MaxPoolOp, values: PythonValues):
        return (
            max_pool(
                values[0], array_values(op.kernel), array_values(op.strides), array_values(op.pads),
                array_values(op.dilations),
            ),
        )  # fmt: skip

    @impl(quant.AvgPoolOp)
    def run_avg_pool(self, interpreter: Interpreter, op: quant.AvgPoolOp, values: PythonValues):
        y = avg_pool(
            values[0], _zp(op.input), array_values(op.kernel), _scalar(op.multiplier), _scalar(op.shift),
            _zp(op.output), array_values(op.strides), array_values(op.pads), bool(_scalar(op.count_include_pad)),
        )  # fmt: skip
        return (y,)

    @impl(quant.GlobalAvgPoolOp)
    def run_global_avg_pool(self, interpreter: Interpreter, op: quant.GlobalAvgPoolOp, values: PythonValues):
        return (global_avg_pool(values[0], _zp(op.input), _scalar(op.multiplier), _scalar(op.shift), _zp(op.output)),)

    @impl(quant.ResizeOp)
    def run_resize(self, interpreter: Interpreter, op: quant.ResizeOp, values: PythonValues):
        y = resize(
            values[0], _zp(op.input), _shape(op.output)[-2:], _scalar(op.multiplier), _scalar(op.shift),
            _zp(op.output), mode=op.mode.data,
            coordinate_transformation_mode=op.coordinate_transformation_mode.data,
            nearest_mode=op.nearest_mode.data,
        )  # fmt: skip
        return (y,)

    @impl(quant.LutOp)
    def run_lut(self, interpreter: Interpreter, op: quant.LutOp, values: PythonValues):
        return (lut(values[0], array_values(op.table)),)

    @impl(quant.ReshapeOp)
    def run_reshape(self, interpreter: Interpreter, op: quant.ReshapeOp, values: PythonValues):
        return (values[0].reshape(_shape(op.output)),)

    @impl(quant.TransposeOp)
    def run_transpose(self, interpreter: Interpreter, op: quant.TransposeOp, values: PythonValues):
        return (np.transpose(values[0], array_values(op.perm)),)

    @impl(quant.PadOp)
    def run_pad(self, interpreter: Interpreter, op: quant.PadOp, values: PythonValues):
        return (pad(values[0], _zp(op.input), array_values(op.pads)),)

    @impl(quant.SliceOp)
    def run_slice(self, interpreter: Interpreter, op: quant.SliceOp, values: PythonValues):
        return (slice_(values[0], array_values(op.starts), array_values(op.ends), array_values(op.steps)),)


# Names the ONNX importer gives graph inputs and outputs (see ember.dialects.onnx).
_ARG_NAME = "onnx.name"
_OUTPUT_NAMES = "onnx.output_names"


def _input_names(function: func.FuncOp) -> list[str]:
    names = []
    for i, arg in enumerate(function.args):
        entry = function.arg_attrs.data[i] if function.arg_attrs is not None else None
        name = entry.data.get(_ARG_NAME) if isinstance(entry, DictionaryAttr) else None
        names.append(name.data if isinstance(name, StringAttr) else arg.name_hint or f"arg{i}")
    return names


def _output_names(function: func.FuncOp) -> list[str]:
    names = function.attributes.get(_OUTPUT_NAMES)
    if isinstance(names, ArrayAttr):
        return [n.data for n in names.data if isinstance(n, StringAttr)]
    ret = function.body.block.last_op
    assert isinstance(ret, func.ReturnOp)
    return [v.name_hint or f"output{i}" for i, v in enumerate(ret.arguments)]


class _Observer(Interpreter.Listener):
    def __init__(self, callback: Callable[[Operation, tuple[Any, ...]], None]):
        self.callback = callback

    def did_interpret_op(self, op: Operation, results: PythonValues) -> None:
        self.callback(op, results)


def _expected_dtype(tensor: TensorType) -> np.dtype:
    element = tensor.element_type
    if isinstance(element, quant.UniformQuantizedType):
        return element.storage_dtype
    return np.dtype(np.float32)


def run_quant_module(
    module: ModuleOp,
    inputs: Mapping[str, np.ndarray],
    observe: Callable[[Operation, tuple[Any, ...]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run the module's `func.func` (its only one, or `main`) on named inputs.

    Inputs and outputs are keyed by ONNX tensor name (`onnx.name` argument attributes and
    the `onnx.output_names` function attribute), falling back to SSA name hints. Quantized
    tensors are passed as their stored integers (int8), float tensors as float32.
    `observe(op, results)` is called after every op (per-layer dumps, accuracy reports).
    """
    functions = [op for op in module.ops if isinstance(op, func.FuncOp)]
    if len(functions) != 1:
        functions = [f for f in functions if f.sym_name.data == "main"]
    if len(functions) != 1:
        raise EmberError("quant module: expected one func.func (or one named 'main') to run")
    function = functions[0]
    args = []
    for name, arg in zip(_input_names(function), function.args, strict=True):
        if name not in inputs:
            raise EmberError(f"{name}: input not given; pass an array for every graph input")
        value = np.asarray(inputs[name])
        assert isinstance(arg.type, TensorType)
        shape, dtype = arg.type.get_shape(), _expected_dtype(arg.type)
        if value.shape != shape:
            raise EmberError(f"{name}: input has shape {value.shape}, the model expects {shape}")
        if value.dtype != dtype:
            raise EmberError(f"{name}: input has dtype {value.dtype}, the model expects {dtype}")
        args.append(value)
    listeners = (_Observer(observe),) if observe is not None else ()
    interpreter = Interpreter(module, listeners=listeners)
    interpreter.register_implementations(FuncFunctions())
    interpreter.register_implementations(QuantFunctions())
    results = interpreter.call_op(function.sym_name.data, tuple(args))
    return dict(zip(_output_names(function), (np.asarray(r) for r in results), strict=True))
