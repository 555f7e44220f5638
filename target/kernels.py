"""The integer semantics of the Ember NPU's compute instructions, on whole numpy tiles.

Each function is the exact definition that docs/isa.md states in words; the simulator
calls them on the tiles an instruction names, one call per tile.

Activations are int8, or int16 where an instruction says so (CONV's input, POST's result:
a16w8 layers): the same kernels, compiled once more for the int16 arrays.

Speed (issue 5: the simulator within 2x of onnxruntime float32) comes from three sources:
dense convolutions sum in float32 (or float64) BLAS where that is provably exact; the
per-element integer work (POST's requantization, depthwise convolution, ELTW lookups,
global pool sums, the table lookups of max pooling and nearest resize) runs in loops
compiled by numba, each one fused pass in the arithmetic of the definition (numpy alone
cannot fuse them: every operation is a pass over the whole tile with its own temporary,
and POST alone took six); and the large tiles use both cores. The compiled functions take
arrays of fixed dtypes and layouts (few signatures, cached on disk by `cache=True`) and
release the GIL while they run (`nogil=True`).

Threads: the kernels whose outer loop is independent rows (`_PARALLEL`) split it over
numba's threads when the tile is above a size threshold (`_launch`), and the dense
convolution's BLAS calls are made from those threads (scipy's BLAS, which numba's np.dot
binds, on one thread each: `support.blas.single_threaded_blas` sets it while the simulator
runs). OpenBLAS's own threads were tried first: next to numba's, both pools spin and the
simulator became 18x slower; numba's pool alone was faster on the detector (143 ms, against
149 ms with OpenBLAS threads for the large matmuls alone).

Requantization is `ember.target.requant.requantize` (single rounding, ties towards +inf):
compiled with the same int64 operations in the same order (so the same wrap-around), or
in float64 where `_post_kernel` shows that is exact; as numpy int64 operations in place
(`_rescale`); or as a lookup in a table of its results over every possible int8 input
(one or two operands), built with `_rescale` once per parameter set.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

import numba
import numba.extending
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ember.target.isa import (
    BILINEAR_WEIGHT_BITS,
    ELTW_ADD_LEFT_SHIFT,
    LUT8_ENTRIES,
    LUT16_ENTRIES,
    LUT16_FRAC_BITS,
    RESIZE_FRAC_BITS,
    ChannelOrder,
    PixelFormat,
)

# Before numba's OpenMP threading layer loads libgomp (at the first parallel kernel, on
# the `ember-npu` thread: see `npu_thread`): pin its threads to distinct cores. Unpinned,
# a worker woken after an idle spell often lands on its master's core and the two share
# it for milliseconds: the classifier's inference then took 15-20 ms instead of 5, at
# random. A user's own setting wins.
os.environ.setdefault("OMP_PROC_BIND", "true")

T = TypeVar("T")

FLOAT32_EXACT = 2**24
"""Integers below this magnitude, and every partial sum of them, are exact in float32."""

_JIT = {"cache": True, "nogil": True}
"""Options of every compiled kernel: compiled code cached on disk (the first run of a
fresh checkout compiles, later processes load it), the GIL released while it runs."""

_PARALLEL = {**_JIT, "parallel": True}
"""Options of the kernels whose outer loop (`prange`: rows or output lines, independent)
numba splits over its threads: 1.6-1.7x on 2 cores for POST tiles of 20-60 k values."""

_PARALLEL_LOCK = threading.Lock()
"""One parallel kernel at a time in the process: numba's fallback threading layer
(workqueue, when there is no OpenMP or TBB) aborts on concurrent launches."""

PARALLEL_MACS = 2**18
"""Dense convolutions of fewer multiply-adds run on one thread, and"""
PARALLEL_DEPTHWISE_MACS = 2**15
"""depthwise ones of fewer, and"""
PARALLEL_ELEMENTS = 2**12
"""POST and lookups of fewer output values: each is about 30 us of one core's work, and
waking numba's idle threads for less made the classifier's 600 small instructions slower
and erratic (5 ms on one thread; 5-20 ms on two)."""


_NPU_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ember-npu")
_team_started = False


def npu_thread(function: Callable[..., T], *args) -> T:
    """`function(*args)` on the `ember-npu` thread, the one that starts numba's OpenMP
    team: with OMP_PROC_BIND, libgomp pins the thread that starts it, and that must not be
    the caller's (every thread it creates afterwards, an onnxruntime pool for instance,
    would inherit the one core). The simulator runs its inferences there."""
    if threading.current_thread().name.startswith("ember-npu"):
        return function(*args)
    return _NPU_THREAD.submit(function, *args).result()


def _start_team() -> None:
    """Start numba's threads from the `ember-npu` thread, once, before any other parallel
    kernel runs (a 1x1 POST is the smallest parallel launch)."""
    global _team_started
    one = np.zeros((1, 1), dtype=np.int32)
    npu_thread(_post_kernel, np.zeros((1, 1), dtype=np.int8), one, np.array([[0], [0], [1]], dtype=np.int32), 0, -128, 127, _NO_LUT, 1)
    _team_started = True


def _launch(kernel, parallel: bool, *args):
    """`kernel(*args)`, on all of numba's threads if `parallel`, else on this one."""
    if not _team_started:
        _start_team()
    with _PARALLEL_LOCK:
        if parallel:
            return kernel(*args)
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return kernel(*args)
        finally:
            numba.set_num_threads(threads)


@numba.extending.intrinsic
def _wrapping_add(typingctx, a, b):
    """a + b in int64, wrapping. numba marks its integer + and * `nsw` (overflow is undefined
    behaviour to LLVM, which may optimise on it); requantization's operands can overflow
    int64 and the definition is numpy's wrap-around, so these emit the plain instructions."""

    def codegen(context, builder, signature, args):
        return builder.add(*args)

    return numba.types.int64(numba.types.int64, numba.types.int64), codegen


@numba.extending.intrinsic
def _wrapping_mul(typingctx, a, b):
    """a * b in int64, wrapping (see `_wrapping_add`)."""

    def codegen(context, builder, signature, args):
        return builder.mul(*args)

    return numba.types.int64(numba.types.int64, numba.types.int64), codegen


def conv_output_size(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Output extent of a valid (unpadded) convolution or pooling window sweep."""
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int) -> np.ndarray:
    """A read-only [oh, ow, kh, kw, c] view of the sliding windows of a [ih, iw, c] array."""
    ih, iw, c = x.shape
    oh = conv_output_size(ih, kh, sh, dh)
    ow = conv_output_size(iw, kw, sw, dw)
    s0, s1, s2 = x.strides
    return as_strided(x, (oh, ow, kh, kw, c), (sh * s0, sw * s1, dh * s0, dw * s1, s2), writeable=False)


def _rescale(values: np.ndarray, multiplier, shift, zp_out: int, act_min: int, act_max: int) -> np.ndarray:
    """`requantize` on an int64 array this function may overwrite: the same int64
    operations in the same order (so the same wrap-around and rounding), done in place
    instead of through five temporaries. Returns int64 values in [act_min, act_max]."""
    values *= multiplier
    values += np.left_shift(np.int64(1), np.subtract(shift, 1, dtype=np.int64))
    values >>= shift
    values += zp_out
    np.maximum(values, act_min, out=values)
    np.minimum(values, act_max, out=values)
    return values


def _centred_bound(itemsize: int, in_zp: int) -> int:
    """The largest |x - in_zp| of an int8 (itemsize 1) or int16 (itemsize 2) input."""
    half = 1 << (8 * itemsize - 1)
    return max(half - 1 - in_zp, in_zp + half)


def _accumulation_dtype(x: np.ndarray, w: np.ndarray, in_zp: int) -> type:
    """float32 if every partial sum of every output channel is provably below 2^24, else
    float64, exact for any tile the buffers hold: |sum| <= K * 255 * 128 < 2^53 for int8
    inputs, K * 2^15 * 128 < 2^53 for int16 ones (K < 2^31; the weight buffer holds less).

    Any partial sum of output channel o, in any summation order, is bounded by
    sum_i |x_i - zp| |w_oi| <= max|x - zp| * sum_i |w_oi| <= max|x - zp| * K max|w|: the
    data-free bound of that for the input type first (no pass over the tile: for int8
    every K below 514), then the cheap last one, the tighter middle one when that is not
    enough."""
    taps = w[0].size
    if not x.size or not w.size or _centred_bound(x.itemsize, in_zp) * taps * 128 < FLOAT32_EXACT:
        return np.float32
    centred_max = max(abs(int(x.max()) - in_zp), abs(int(x.min()) - in_zp))
    if centred_max * taps * max(abs(int(w.max())), abs(int(w.min()))) < FLOAT32_EXACT:
        return np.float32
    weight_l1 = int(np.abs(w.reshape(w.shape[0], taps), dtype=np.int32).sum(axis=1).max())
    return np.float32 if centred_max * weight_l1 < FLOAT32_EXACT else np.float64


def _to_int32(out: np.ndarray) -> np.ndarray:
    """The exact integer sums as int32. Below 2^31 (always the case for float32, and for
    float64 while K * 255 * 128 < 2^31, K < 65794) a direct cast is exact; beyond that go
    through int64 so the result wraps as the int32 accumulator does."""
    if out.dtype == np.float32 or not out.size or float(np.abs(out).max()) < 2.0**31:
        return out.astype(np.int32)
    return out.astype(np.int64).astype(np.int32)


_FLOAT32, _FLOAT64 = np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float64)
"""Empty arrays whose dtype tells `_dense_kernel` the float type to sum in."""


@numba.njit(**_PARALLEL)
def _dense_kernel(out, x, in_zp, w, kernel_width, row_step, col_step, row_length, accumulate, threads, ftype):
    """out[y, c, :] (+)= sum over taps (ky, kx) of
    (x[p + ky * row_step + kx * col_step] - in_zp) @ w[:, ky * kernel_width + kx, :].T
    for the flat position p = y * row_length + c, every c < out.shape[1]: x int8 or int16
    [rows, k], w int8 [n, taps, k] (a kernel's taps in the weights' own layout), out int32
    [oh, ow, n], all contiguous; sums in the float type of `ftype` (an empty array).

    The rows are split into one block per thread (`threads`, numba's thread count: asked
    for inside, it would make the function uncacheable). Each block converts the weights
    and the input rows it reads to the float type once, then makes one BLAS call (scipy's,
    which numba's np.dot binds) per kernel row ky, with that row's taps side by side
    (n * kernel_width columns: 17% faster than one call per tap for the detector's 3x3,
    24-channel layers), and adds each tap's columns at its shifted rows. The sums are
    exact integers (the caller chose the float type), so their int64 -> int32 truncation
    wraps as the accumulator does."""
    oh, ow, n = out.shape
    k = w.shape[2]
    kernel_height = w.shape[1] // kernel_width
    wide = ftype.itemsize == 8
    length = (oh - 1) * row_length + ow
    reach = (kernel_height - 1) * row_step + (kernel_width - 1) * col_step
    block = (length + threads - 1) // threads
    for part in numba.prange(threads):
        lo, hi = part * block, min(length, part * block + block)
        if lo < hi:
            taps = np.empty((kernel_height, kernel_width * n, k), dtype=ftype.dtype)
            for ky in range(kernel_height):
                for kx in range(kernel_width):
                    for o in range(n):
                        for i in range(k):
                            taps[ky, kx * n + o, i] = w[o, ky * kernel_width + kx, i]
            rows = x[lo : hi + reach]
            centred = np.empty(rows.shape, dtype=ftype.dtype)
            zp = np.full(1, in_zp, dtype=ftype.dtype)[0]  # int8/16 - float stays in the float type: vectorizes
            for r in range(rows.shape[0]):
                for i in range(k):
                    centred[r, i] = rows[r, i] - zp
            acc = np.zeros((hi - lo, n), dtype=ftype.dtype)
            span = hi - lo + (kernel_width - 1) * col_step
            for ky in range(kernel_height):
                products = np.dot(centred[ky * row_step : ky * row_step + span], taps[ky].T)
                for r in range(hi - lo):
                    for kx in range(kernel_width):
                        shifted = products[r + kx * col_step]
                        for o in range(n):
                            acc[r, o] += shifted[kx * n + o]
            for p in range(lo, hi):
                y, c = p // row_length, p % row_length
                if c < ow:
                    for o in range(n):
                        # float32 sums are below 2^24: a direct (vectorizing) conversion
                        total = np.int32(np.int64(acc[p - lo, o])) if wide else np.int32(acc[p - lo, o])
                        out[y, c, o] = out[y, c, o] + total if accumulate else total


@numba.njit(**_PARALLEL)
def _depthwise_kernel(out, x, w, in_zp, sh, sw, dh, dw, accumulate):
    """out[y, x, c] (+)= sum over taps (i, j) of (x[y*sh + i*dh, x*sw + j*dw, c] - in_zp) *
    w[c, i, j, 0], summed in int32, for x int8 or int16 [ih, iw, c], w int8 [c, kh, kw, 1],
    out int32 [oh, ow, c]. An int32 sum wraps exactly as the exact sum wrapped to int32 does
    (arithmetic mod 2^32), which is `conv`'s contract; each product fits
    (|x - in_zp| <= 255 for int8, <= 2^15 for int16). The channel loop is innermost,
    contiguous in x, taps and out, so it vectorizes; output rows are split over the
    threads."""
    oh, ow, channels = out.shape
    kh, kw = w.shape[1], w.shape[2]
    taps = np.empty((kh, kw, channels), dtype=np.int32)
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                taps[i, j, c] = w[c, i, j, 0]
    for oy in numba.prange(oh):
        for ox in range(ow):
            acc = out[oy, ox]
            if not accumulate:
                acc[:] = 0
            for i in range(kh):
                for j in range(kw):
                    pixel = x[oy * sh + i * dh, ox * sw + j * dw]
                    weight = taps[i, j]
                    for c in range(channels):
                        acc[c] += (np.int32(pixel[c]) - in_zp) * weight[c]


class Conv:
    """A CONV with its static part prepared once (the simulator makes one per instruction
    when it loads a program): tile shapes, input zero point, stride, dilation, groups, the
    accumulate flag and the input type. Calling it with the tiles x [ih, iw, ic] (int8, or
    int16 if `in_i16`), w int8 [oc, kh, kw, ic/groups] and out int32 [oh, ow, oc]
    (contiguous) sets out to, or with `accumulate` increments it by,
    acc = sum((x - in_zp) * w), wrapping as int32 does.

    Depthwise convolutions (one input channel per group) sum in int32 in a compiled loop.
    The other dense ones sum the products in float32 BLAS when every partial sum is
    provably below 2^24 (so the sum is exact in any order), else in float64 (exact for any
    tile: see `_accumulation_dtype`; int16 products reach 2^22, so int16 tiles take
    float64 unless their values are small). Stride 1 needs no im2col: on the row-major
    flattened input X[ih * iw, ic], output pixel (y, x) at flat position p = y * iw + x
    reads, for tap (ky, kx), row
    p + dh * ky * iw + dw * kx, so every tap reads a contiguous row range of X (the
    iw - ow positions past each output row wrap into the next row and are not written).
    Other strides gather the windows first; grouped convolutions that are not depthwise
    (rare) use one numpy matmul per group."""

    def __init__(self, x_shape, w_shape, in_zp: int, stride, dilation, groups: int, accumulate: bool, in_i16: bool = False):
        (ih, iw, _), (oc, kh, kw, icg) = x_shape, w_shape
        self.in_zp, self.groups, self.accumulate = int(in_zp), int(groups), bool(accumulate)
        self.stride, self.dilation = tuple(map(int, stride)), tuple(map(int, dilation))
        self.out_shape = (
            conv_output_size(ih, kh, self.stride[0], self.dilation[0]), conv_output_size(iw, kw, self.stride[1], self.dilation[1]), oc,
        )  # fmt: skip
        # the data-free bound of `_accumulation_dtype`, decided once
        self.always_float32 = _centred_bound(2 if in_i16 else 1, in_zp) * kh * kw * icg * 128 < FLOAT32_EXACT

    def __call__(self, out: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
        if out.shape != self.out_shape:
            raise ValueError(f"convolution output {list(out.shape)} is not {list(self.out_shape)}")
        oc, kh, kw, icg = w.shape
        if self.groups == 1:
            exact32 = self.always_float32 or _accumulation_dtype(x, w, self.in_zp) is np.float32
            ftype = _FLOAT32 if exact32 else _FLOAT64
            if self.stride == (1, 1):
                iw = x.shape[1]
                rows, w3 = x.reshape(-1, icg), w.reshape(oc, kh * kw, icg)
                geometry = (kw, self.dilation[0] * iw, self.dilation[1], iw)
            else:
                windows = _windows(x, kh, kw, *self.stride, *self.dilation)
                rows, w3 = windows.reshape(-1, kh * kw * icg), w.reshape(oc, 1, -1)
                geometry = (1, 0, 0, out.shape[1])
            parallel = out.size * kh * kw * icg >= PARALLEL_MACS
            threads = numba.get_num_threads() if parallel else 1
            args = (out, np.ascontiguousarray(rows), self.in_zp, w3, *geometry, self.accumulate, threads, ftype)
            _launch(_dense_kernel, parallel, *args)
        elif icg == 1:
            channel_multiplier = oc // x.shape[2]
            if channel_multiplier > 1:  # output channel o reads input channel o // multiplier
                x = np.repeat(x, channel_multiplier, axis=2)
            parallel = out.size * kh * kw >= PARALLEL_DEPTHWISE_MACS
            args = (out, np.ascontiguousarray(x), w, np.int32(self.in_zp), *self.stride, *self.dilation, self.accumulate)
            _launch(_depthwise_kernel, parallel, *args)
        else:
            self._grouped(out, x, w)

    def _grouped(self, out: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
        oc, kh, kw, icg = w.shape
        (oh, ow, _), groups = out.shape, self.groups
        ftype = _accumulation_dtype(x, w, self.in_zp)
        windows = _windows(np.subtract(x, ftype(self.in_zp), dtype=ftype), kh, kw, *self.stride, *self.dilation)
        cols = windows.reshape(oh * ow, kh * kw, groups, icg).transpose(2, 0, 1, 3).reshape(groups, oh * ow, -1)
        wg = w.astype(ftype).reshape(groups, oc // groups, kh * kw * icg).transpose(0, 2, 1)
        result = _to_int32(np.matmul(cols, wg).transpose(1, 0, 2).reshape(oh, ow, oc))
        if self.accumulate:
            out += result  # int32 arithmetic wraps, as the accumulator does
        else:
            out[...] = result


def conv(
    x: np.ndarray,
    w: np.ndarray,
    in_zp: int,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> np.ndarray:
    """The `Conv` of a new int32 [oh, ow, oc] tile (x int8 or int16)."""
    plan = Conv(x.shape, w.shape, in_zp, stride, dilation, groups, accumulate=False, in_i16=x.dtype == np.int16)
    out = np.empty(plan.out_shape, dtype=np.int32)
    plan(out, x, w)
    return out


_NO_LUT = np.zeros(0, dtype=np.int8)
"""The table argument of `_post_kernel` when the instruction has no LUT."""
_NO_LUT16 = np.zeros(0, dtype=np.int16)
"""The same for an int16 result (one compiled signature per result type)."""


@numba.njit(**_JIT)
def _lookup16(table, y):
    """The interpolated int16 table (TFLite's int16 LUT) at y in [-32768, 32767]:
    u = y + 32768, i = u >> 7, f = u & 127, table[i] + (((table[i+1] - table[i]) * f + 64) >> 7),
    in int64 with an arithmetic shift. The result lies between table[i] and table[i+1]."""
    u = y + 32768
    i, f = u >> LUT16_FRAC_BITS, u & ((1 << LUT16_FRAC_BITS) - 1)
    low = np.int64(table[i])
    return low + (((np.int64(table[i + 1]) - low) * f + (1 << (LUT16_FRAC_BITS - 1))) >> LUT16_FRAC_BITS)


@numba.njit(**_PARALLEL)
def _post_kernel(out, acc, params, zp_out, act_min, act_max, lut, threads):
    """out[i, c] = clamp(((acc + bias) * M + 2^(S-1)) >> S + zp_out) per channel c, then
    through `lut` if it is not empty (int8: lut[out + 128]; int16: `_lookup16`), for params
    int32 [3, channels] = (bias, M, S): `requantize`'s int64 operations with their
    wrap-around, regrouped. In int64 arithmetic (mod 2^64)
    (acc + bias) * M + 2^(S-1) = acc * M + (bias * M + 2^(S-1)):
    the second term is one int64 per channel, and for an int32 accumulator acc * M is a
    product of two sign-extended int32 values, which AVX2 multiplies 4 at a time (a full
    64-bit multiply it has not: this made POST 1.7-6x faster). The shift right is
    arithmetic, and y + zp_out cannot overflow (|y| <= 2^62). out is int8 or int16; the
    clamp keeps every value in its range and in the table's domain (the caller's duty).

    Rows are split into one block per thread (`threads`; each block allocates its row
    buffer once: a prange over rows allocated per row, 1.6x slower); a row is requantized
    first and looked up after (the first loop vectorizes, a byte lookup cannot)."""
    count, channels = acc.shape
    multiplier, shift = params[1].copy(), params[2].astype(np.int64)
    offset = np.empty(channels, dtype=np.int64)
    for c in range(channels):
        if multiplier[c] < 0 or shift[c] < 1 or shift[c] > 62:
            raise ValueError("par holds a negative multiplier or a shift outside [1, 62]")
        offset[c] = _wrapping_add(np.int64(params[0, c]) * np.int64(multiplier[c]), np.int64(1) << (shift[c] - 1))
    block = (count + threads - 1) // threads
    for part in numba.prange(threads):
        row = np.empty(channels, dtype=np.int64)
        for i in range(part * block, min(count, part * block + block)):
            for c in range(channels):
                y = _wrapping_add(_wrapping_mul(np.int64(acc[i, c]), np.int64(multiplier[c])), offset[c]) >> shift[c]
                row[c] = min(max(y + zp_out, act_min), act_max)
            if not lut.size:
                for c in range(channels):
                    out[i, c] = row[c]
            elif lut.itemsize == 1:
                for c in range(channels):
                    out[i, c] = lut[row[c] + 128]
            else:
                for c in range(channels):
                    out[i, c] = _lookup16(lut, row[c])


def post_into(out: np.ndarray, acc: np.ndarray, params: np.ndarray, zp_out: int, act_min: int, act_max: int, lut: np.ndarray | None) -> None:
    """POST: acc int32 [count, channels] -> out [count, channels], per-channel
    requantization (`requantize`) with params int32 [3, channels] = (bias, multiplier,
    shift), clamp, then (if given) the table; one compiled pass, all arrays contiguous.
    out int8 takes no table or a 256-entry int8 one (`y = lut[y + 128]`), out int16 none
    or a 513-entry int16 one (interpolated: `_lookup16`); [act_min, act_max] must lie in
    the result type (and so in the table's domain), which `program.check_structure`
    checks for the simulator. An accumulator of another integer type (a POOL sum in a
    test) is taken as int64. Raises ValueError for a table that does not fit the result
    type, a negative multiplier or a shift outside [1, 62]."""
    if lut is not None and (lut.itemsize != out.itemsize or lut.size != (LUT8_ENTRIES if out.itemsize == 1 else LUT16_ENTRIES)):
        raise ValueError(f"an {out.dtype} result takes no table of {lut.size} {lut.dtype} entries")
    acc = np.ascontiguousarray(acc, dtype=np.int32 if acc.dtype == np.int32 else np.int64)
    parallel = acc.size >= PARALLEL_ELEMENTS
    threads = numba.get_num_threads() if parallel else 1
    table = lut if lut is not None else _NO_LUT if out.itemsize == 1 else _NO_LUT16
    _launch(_post_kernel, parallel, out, acc, params, zp_out, act_min, act_max, table, threads)


def post(
    acc: np.ndarray,
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    zp_out: int,
    act_min: int,
    act_max: int,
    lut: np.ndarray | None,
    out_dtype: type = np.int8,
) -> np.ndarray:
    """`post_into` a new array of `out_dtype` (int8 or int16), the parameters given as
    three vectors."""
    out = np.empty(acc.shape, dtype=out_dtype)
    post_into(out, acc, np.stack([bias, multiplier, shift]).astype(np.int32), zp_out, act_min, act_max, lut)
    return out


_INT8_BY_UINT8 = np.arange(256, dtype=np.uint8).view(np.int8)
"""The int8 value of each byte 0..255 (two's complement): index order of the ELTW tables."""


@numba.njit(**_PARALLEL)
def _pair_lookup(out, table, a, b):
    """out[i, j] = table[256 * byte(a[i, j]) + byte(b[i, j])] for a, b uint8 [n, c], or
    with b's single row for every i if b is [1, c]; out int8 [n, c]."""
    count, channels = a.shape
    step = 1 if b.shape[0] == count else 0
    for i in numba.prange(count):
        for j in range(channels):
            out[i, j] = table[(np.int32(a[i, j]) << 8) | b[i * step, j]]


def pair_lookup_into(out: np.ndarray, table: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """An ELTW by its table (`eltw_table`) on int8 operands of any rank, rows along the
    last axis: b has a's shape or one row of its last dimension (the compiled loop does
    not check its indices); out, contiguous int8 of a's shape, receives the result."""
    a_rows, b_rows = _byte_rows(a), _byte_rows(b)
    if b_rows.shape[1] != a_rows.shape[1] or b_rows.shape[0] not in (1, a_rows.shape[0]) or out.shape != a.shape:
        raise ValueError(f"ELTW operand shapes {a.shape} and {b.shape} do not match")
    _launch(_pair_lookup, a_rows.size >= PARALLEL_ELEMENTS, out.reshape(a_rows.shape), table, a_rows, b_rows)


def _byte_rows(v: np.ndarray) -> np.ndarray:
    """int8 v as contiguous uint8 [-1, last dimension], the layout `_pair_lookup` compiles for."""
    return np.ascontiguousarray(v).view(np.uint8).reshape(-1, v.shape[-1])


@lru_cache(maxsize=512)
def eltw_table(mode: str, *params: int) -> np.ndarray:
    """The int8 result of an ELTW for every pair of int8 inputs, [256 * 256] indexed by
    256 * byte(a) + byte(b): the int64 formula evaluated once per parameter set (a layer's
    parameters repeat in every tile and every inference; the 640x640 detector has 21 sets).
    64 KiB each, so the cache holds at most 32 MiB."""
    a = np.repeat(_INT8_BY_UINT8, 256).reshape(256, 256)
    b = np.tile(_INT8_BY_UINT8, 256).reshape(256, 256)
    formula = _eltw_add_int64 if mode == "add" else _eltw_mul_int64
    return formula(a, b, *params).reshape(-1)


def _eltw_add_int64(a, b, zp_a, zp_b, mult_a, shift_a, mult_b, shift_b, mult_out, shift_out, zp_out, act_min, act_max):
    wide = (-(2**31), 2**31 - 1)

    def rescaled(x: np.ndarray, zp: int, mult: int, shift: int) -> np.ndarray:
        values = x.astype(np.int64)
        values -= zp
        values <<= ELTW_ADD_LEFT_SHIFT
        return _rescale(values, mult, shift, 0, *wide)

    total = rescaled(a, zp_a, mult_a, shift_a)
    total += rescaled(b, zp_b, mult_b, shift_b)
    return _rescale(total, mult_out, shift_out, zp_out, act_min, act_max).astype(np.int8)


def _eltw_mul_int64(a, b, zp_a, zp_b, mult_out, shift_out, zp_out, act_min, act_max):
    product = a.astype(np.int64)
    product -= zp_a
    product *= b.astype(np.int64) - zp_b
    return _rescale(product, mult_out, shift_out, zp_out, act_min, act_max).astype(np.int8)


def eltw_add(
    a: np.ndarray,
    b: np.ndarray,
    zp_a: int,
    zp_b: int,
    rescale_a: tuple[int, int],
    rescale_b: tuple[int, int],
    rescale_out: tuple[int, int],
    zp_out: int,
    act_min: int,
    act_max: int,
) -> np.ndarray:
    """Add with per-input rescale: each input, centred and scaled by 2^20, is requantized
    (zero point 0, no clamp) to a common scale; the int64 sum is requantized to the output.
    b may be [1, c] against a [n, c]. Evaluated by lookup in the table of all int8 pairs."""
    out = np.empty(a.shape, dtype=np.int8)
    params = (zp_a, zp_b, *rescale_a, *rescale_b, *rescale_out, zp_out, act_min, act_max)
    pair_lookup_into(out, eltw_table("add", *map(int, params)), a, b)
    return out


def eltw_mul(
    a: np.ndarray,
    b: np.ndarray,
    zp_a: int,
    zp_b: int,
    rescale_out: tuple[int, int],
    zp_out: int,
    act_min: int,
    act_max: int,
) -> np.ndarray:
    """Multiply: requantize((a - zp_a) * (b - zp_b)) to the output. b may be [1, c]
    against a [n, c]. Evaluated by lookup in the table of all int8 pairs; an int16 `a`
    (ELTW's `a_i16`) by the int64 formula."""
    if a.dtype == np.int16:
        return _eltw_mul_int64(a, b, zp_a, zp_b, *rescale_out, zp_out, act_min, act_max)
    out = np.empty(a.shape, dtype=np.int8)
    pair_lookup_into(out, eltw_table("mul", *map(int, (zp_a, zp_b, *rescale_out, zp_out, act_min, act_max))), a, b)
    return out


def _valid_taps(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, out: int) -> np.ndarray:
    """For each output position, how many window taps lie outside the padding borders."""
    start = np.arange(out) * stride
    return np.maximum(0, np.minimum(start + kernel, size - pad_hi) - np.maximum(start, pad_lo))


def _blank_padding(x: np.ndarray, pads: tuple[int, int, int, int], value: int) -> np.ndarray:
    top, bottom, left, right = pads
    ih, iw, _ = x.shape
    x[:top] = value
    x[ih - bottom :] = value
    x[:, :left] = value
    x[:, iw - right :] = value
    return x


def _window_counts(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int]):
    """The number of counted taps of each window, [oh, ow, 1]. Raises ValueError if a
    window covers padding only."""
    ih, iw, _ = x.shape
    oh = conv_output_size(ih, kernel[0], stride[0], 1)
    ow = conv_output_size(iw, kernel[1], stride[1], 1)
    rows = _valid_taps(ih, kernel[0], stride[0], pads[0], pads[1], oh)
    cols = _valid_taps(iw, kernel[1], stride[1], pads[2], pads[3], ow)
    if not (rows.all() and cols.all()):
        raise ValueError("a pooling window covers padding only")
    return (rows[:, None] * cols[None, :])[:, :, None].astype(np.int64)


@numba.njit(**_JIT)
def _box_sum(x, top, bottom, left, right):
    """Per channel, the int64 sum of x[top:bottom, left:right] (int8 or int16 [h, w, c])."""
    total = np.zeros(x.shape[2], dtype=np.int64)
    for y in range(top, bottom):
        for col in range(left, right):
            pixel = x[y, col]
            for c in range(total.size):
                total[c] += pixel[c]
    return total


def pool_sum(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int], zp_in: int
) -> np.ndarray:
    """Window sums of x - zp_in over the counted taps (padding contributes 0): int64
    [oh, ow, c]. A single window (global pooling) is one sum; otherwise a summed-area table
    makes large windows cost no more than small."""
    counts = _window_counts(x, kernel, stride, pads)
    ih, iw, c = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    if counts.shape[:2] == (1, 1):
        top, bottom, left, right = pads
        box = map(int, (top, min(kh, ih - bottom), left, min(kw, iw - right)))
        total = _box_sum(np.ascontiguousarray(x), *box)
        return (total - zp_in * counts[0, 0]).reshape(1, 1, c)
    centred = _blank_padding(x.astype(np.int64) - zp_in, pads, 0)
    integral = np.zeros((ih + 1, iw + 1, c), dtype=np.int64)
    np.cumsum(np.cumsum(centred, axis=0), axis=1, out=integral[1:, 1:])
    y0 = np.arange(conv_output_size(ih, kh, sh, 1))[:, None] * sh
    x0 = np.arange(conv_output_size(iw, kw, sw, 1))[None, :] * sw
    return integral[y0 + kh, x0 + kw] - integral[y0, x0 + kw] - integral[y0 + kh, x0] + integral[y0, x0]


@lru_cache(maxsize=4096)
def _unary_table(zp_in: int, multiplier: int, shift: int, zp_out: int, act_min: int, act_max: int) -> np.ndarray:
    """requantize(v - zp_in) for every int8 v, [256] int8 indexed by v's byte: the int64
    formula evaluated once per parameter set."""
    values = _INT8_BY_UINT8.astype(np.int64) - zp_in
    return _rescale(values, multiplier, shift, zp_out, act_min, act_max).astype(np.int8)


@numba.njit(**_PARALLEL)
def _gather_lookup(x, rows, cols, table):
    """out[i, j, c] = table[x[rows[i], cols[j], c]] for x uint8 [h, w, c] (bytes of int8)."""
    out = np.empty((rows.size, cols.size, x.shape[2]), dtype=np.int8)
    for i in numba.prange(rows.size):
        for j in range(cols.size):
            pixel = x[rows[i], cols[j]]
            for c in range(pixel.size):
                out[i, j, c] = table[pixel[c]]
    return out


def _lookup(x: np.ndarray, table: np.ndarray, lut: np.ndarray | None, rows=None, cols=None) -> np.ndarray:
    """table[byte(x)] at rows `rows` and columns `cols` of x (all if None), then through
    `lut` (y -> lut[y + 128]) if given."""
    if lut is not None:
        table = np.take(lut, table.view(np.uint8) ^ 0x80)  # composed: lut[table + 128]
    rows = np.arange(x.shape[0]) if rows is None else rows
    cols = np.arange(x.shape[1]) if cols is None else cols
    parallel = rows.size * cols.size * x.shape[2] >= PARALLEL_ELEMENTS
    args = (np.ascontiguousarray(x).view(np.uint8), rows.astype(np.int64), cols.astype(np.int64), table)
    return _launch(_gather_lookup, parallel, *args)


def pool(
    x: np.ndarray,
    avg: bool,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, int, int, int],
    zp_in: int,
    rescale: tuple[int, int],
    zp_out: int,
    act_min: int,
    act_max: int,
    lut: np.ndarray | None = None,
) -> np.ndarray:
    """Max or average pooling of int8 [ih, iw, c] over the taps that are not padding.

    max: v = max(x) - zp_in.  avg: s = sum(x - zp_in), n = number of counted taps,
    v = floor((2 s + n) / (2 n)) (division rounding half up). Then y = requantize(v),
    and `y = lut[y + 128]` if a table is given. Raises ValueError if some window has no
    counted tap."""
    if avg:
        count = _window_counts(x, kernel, stride, pads)
        value = (2 * pool_sum(x, kernel, stride, pads, zp_in) + count) // (2 * count)
        y = _rescale(value, *rescale, zp_out, act_min, act_max)
        return lut[y + 128] if lut is not None else y.astype(np.int8)
    # requantize is monotone (M >= 0), so it commutes with max: pool the int8 values and
    # look the maximum up in requantize's table. Padding is blanked with -128, which never
    # exceeds a counted tap, and every window has one.
    _window_counts(x, kernel, stride, pads)
    if any(pads):
        x = _blank_padding(x.copy(), pads, -128)
    peak = x if kernel == (1, 1) and stride == (1, 1) else _windows(x, *kernel, *stride, 1, 1).max(axis=(2, 3))
    return _lookup(peak, _unary_table(int(zp_in), int(rescale[0]), int(rescale[1]), zp_out, act_min, act_max), lut)


def _source_coords(out: int, step: int, offset: int) -> np.ndarray:
    return offset + np.arange(out, dtype=np.int64) * step


def resize(
    x: np.ndarray,
    bilinear: bool,
    out_size: tuple[int, int],
    step: tuple[int, int],
    offset: tuple[int, int],
    zp_in: int,
    rescale: tuple[int, int],
    zp_out: int,
    act_min: int,
    act_max: int,
) -> np.ndarray:
    """Resize int8 [ih, iw, c] to [oh, ow, c]. Output row o reads source row
    s = offset_y + o * step_y (Q16), likewise for columns.

    nearest: i = clamp(s >> 16, 0, ih - 1); v = x[i] - zp_in.
    bilinear: s' = clamp(s, 0, (ih - 1) << 16), i0 = s' >> 16, i1 = min(i0 + 1, ih - 1),
    f = (s' & 0xFFFF) >> 6 (Q10); rows then columns blend as (1024 - f) * x[i0] + f * x[i1]
    on x - zp_in, giving v with 20 fraction bits. Then y = requantize(v)."""
    ih, iw, _ = x.shape
    oh, ow = out_size
    sy = _source_coords(oh, step[0], offset[0])
    sx = _source_coords(ow, step[1], offset[1])
    if not bilinear:
        # v is one input value: y is requantize's table at the picked pixel
        iy = np.clip(sy >> RESIZE_FRAC_BITS, 0, ih - 1)
        ix = np.clip(sx >> RESIZE_FRAC_BITS, 0, iw - 1)
        table = _unary_table(int(zp_in), int(rescale[0]), int(rescale[1]), zp_out, act_min, act_max)
        return _lookup(x, table, None, iy, ix)
    drop = RESIZE_FRAC_BITS - BILINEAR_WEIGHT_BITS
    one = 1 << BILINEAR_WEIGHT_BITS

    def taps(s: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.clip(s, 0, (size - 1) << RESIZE_FRAC_BITS)
        i0 = s >> RESIZE_FRAC_BITS
        frac = (s & ((1 << RESIZE_FRAC_BITS) - 1)) >> drop
        return i0, np.minimum(i0 + 1, size - 1), frac

    y0, y1, fy = taps(sy, ih)
    x0, x1, fx = taps(sx, iw)
    centred = x.astype(np.int64) - zp_in
    rows = centred[y0] * (one - fy)[:, None, None] + centred[y1] * fy[:, None, None]
    value = rows[:, x0] * (one - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return _rescale(value, *rescale, zp_out, act_min, act_max).astype(np.int8)


def nv12_to_rgb(y_plane: np.ndarray, uv_plane: np.ndarray) -> np.ndarray:
    """BT.601 limited-range NV12 -> RGB uint8 [h, w, 3], integer only:
    c = Y - 16, d = U - 128, e = V - 128 (U, V of the pixel's 2x2 block);
    R = clamp((298 c + 409 e + 128) >> 8), G = clamp((298 c - 100 d - 208 e + 128) >> 8),
    B = clamp((298 c + 516 d + 128) >> 8), clamp to [0, 255]."""
    c = y_plane.astype(np.int32) - 16
    uv = np.repeat(np.repeat(uv_plane.astype(np.int32) - 128, 2, axis=0), 2, axis=1)
    d, e = uv[..., 0], uv[..., 1]
    r = (298 * c + 409 * e + 128) >> 8
    g = (298 * c - 100 * d - 208 * e + 128) >> 8
    b = (298 * c + 516 * d + 128) >> 8
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def preproc(
    pixels: np.ndarray,
    uv_plane: np.ndarray | None,
    fmt: PixelFormat,
    order: ChannelOrder,
    tables: np.ndarray,
) -> np.ndarray:
    """uint8 frame -> [h, w, 3] of the tables' type: convert to RGB (or BGR, by `order`),
    then out[..., k] = tables[k][pixel[..., k]] (tables int8 or int16 [3, 256])."""
    if fmt == PixelFormat.NV12:
        rgb = nv12_to_rgb(pixels, uv_plane)
    elif fmt == PixelFormat.BGR:
        rgb = pixels[..., ::-1]
    else:
        rgb = pixels
    if order == ChannelOrder.BGR:
        rgb = rgb[..., ::-1]
    return np.stack([tables[k][rgb[..., k]] for k in range(3)], axis=-1)
