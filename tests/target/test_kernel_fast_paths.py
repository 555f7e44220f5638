"""The simulator kernels' fast paths give the reference formulas bit for bit.

`target/kernels.py` computes requantization in compiled int64 loops (POST) and through
lookup tables of all int8 inputs, depthwise convolutions in compiled int32 loops, and dense
convolutions in float BLAS without im2col; each case below drives one of those paths to its
edges (ties, saturation, int32 extremes, shifts 1 and 62, wrap-around) and compares with
`requantize` in int64, the formula on Python integers, or a direct int64 convolution."""

from __future__ import annotations

import numpy as np
import pytest

from ember.target import kernels
from ember.target.isa import ELTW_ADD_LEFT_SHIFT
from ember.target.requant import requantize
from tests.target.conv_helpers import direct_conv

INT32 = np.iinfo(np.int32)


def reference_post(acc, bias, m, s, zp, lo, hi, lut):
    y = requantize(acc, m, s, zp, lo, hi, bias=bias, channel_axis=-1)
    return lut[y + 128] if lut is not None else y.astype(np.int8)


def post_case(rng, n, shifts):
    """acc rows: random, int32 extremes, and exact ties v * M = (2k + 1) 2^(S-1) per channel."""
    c = len(shifts)
    s = np.asarray(shifts, dtype=np.int64)
    m = rng.integers(2**30, 2**31, c)
    m[0] = 0  # a flushed multiplier
    bias = rng.integers(-(2**20), 2**20, c)
    acc = rng.integers(-(2**24), 2**24, (n, c))
    acc[0], acc[1] = INT32.min, INT32.max
    # a tie: with M = 2^30 and S >= 31, v = (2k + 1) 2^(S-31) hits the midpoint exactly
    tie = s >= 31
    m[1:][tie[1:]] = 2**30
    k = rng.integers(-40, 40, c)
    v = (2 * k + 1) * (np.int64(1) << np.maximum(s - 31, 0))
    acc[2] = np.where(tie & (np.abs(v - bias) < 2**31 - 1), v - bias, acc[2])
    acc[3] = np.clip(acc[2] + 1, INT32.min, INT32.max)
    return acc.astype(np.int32), bias, m, s


@pytest.mark.parametrize("shifts", [list(range(30, 43)), list(range(36, 63, 2)), [1, 12, 31, 42, 43, 62]])
@pytest.mark.parametrize("with_lut", [False, True])
def test_post_matches_int64_requantize(shifts, with_lut, kernel_threads):
    rng = np.random.default_rng(len(shifts) + with_lut)
    acc, bias, m, s = post_case(rng, 64, shifts)
    lut = rng.integers(-128, 128, 256).astype(np.int8) if with_lut else None
    for zp, lo, hi in ((0, -128, 127), (-128, -128, 127), (127, -128, 127), (5, -20, 90)):
        got = kernels.post(acc, bias, m, s, zp, lo, hi, lut)
        assert got.dtype == np.int8
        assert np.array_equal(got, reference_post(acc, bias, m, s, zp, lo, hi, lut))


def test_post_wraps_like_int64_requantize():
    """A bias at the int32 limits, and an int64 accumulator (POOL sums in tests): products
    that overflow int64 wrap as the reference's numpy int64 operations do."""
    acc = np.array([[INT32.max, INT32.min, 7]], dtype=np.int32)
    bias = np.array([INT32.max, INT32.min, INT32.max])
    m, s = np.full(3, 2**31 - 1), np.full(3, 40)
    assert np.array_equal(kernels.post(acc, bias, m, s, 3, -128, 127, None), reference_post(acc, bias, m, s, 3, -128, 127, None))
    wide = np.array([[2**40, -(2**40), 12345]], dtype=np.int64)
    assert np.array_equal(kernels.post(wide, np.zeros(3), m, s, 0, -128, 127, None), reference_post(wide, np.zeros(3), m, s, 0, -128, 127, None))


def wrap64(v: int) -> int:
    return (v + 2**63) % 2**64 - 2**63


def python_post(acc: int, bias: int, m: int, s: int, zp: int, lo: int, hi: int) -> int:
    """The requantization formula on Python integers, each int64 step wrapped explicitly."""
    y = wrap64(wrap64(wrap64(acc + bias) * m) + (1 << (s - 1))) >> s
    return min(max(y + zp, lo), hi)


def test_compiled_post_edge_cases_match_the_int64_formula(kernel_threads):
    """Every (multiplier, shift, bias) channel below against accumulators at the int32
    extremes, around zero, and on exact positive and negative ties for M = 1 (v = (2k + 1)
    2^(S-1): -0.5 -> 0, -1.5 -> -1, ties towards +inf), with and without a LUT; the
    kernel regroups the int64 terms (acc * M + (bias * M + 2^(S-1))), which must not show."""
    channels = [
        (m, s, b)
        for m in (0, 1, 2**30, 2**31 - 1)
        for s in (1, 2, 31, 42, 43, 61, 62)
        for b in (INT32.min, -(2**31) + 2**11, -1, 0, 1, 2**31 - 2**11, INT32.max)
    ]
    m, s, bias = (np.array(column, dtype=np.int64) for column in zip(*channels))
    rows = [INT32.min, INT32.min + 1, -(2**30), -3, -1, 0, 1, 3, 2**30, INT32.max - 1, INT32.max]
    acc = np.array(rows, dtype=np.int64)[:, None].repeat(len(channels), axis=1)
    half = np.left_shift(np.int64(1), s - 1)
    for k in (-2, -1, 0, 1):  # ties at v = (2k + 1) * 2^(S-1) where acc + bias reaches them
        tie = (2 * k + 1) * half - bias
        acc = np.vstack([acc, np.where(np.abs(tie) <= 2**31 - 1, tie, 0)[None]])
    acc = acc.astype(np.int32)
    lut = np.random.default_rng(17).integers(-128, 128, 256).astype(np.int8)
    for zp, lo, hi in ((0, -128, 127), (-128, -128, 127), (127, -128, 127), (3, -7, 9)):
        expected = np.array(
            [[python_post(int(a), int(b), int(mm), int(ss), zp, lo, hi) for a, b, mm, ss in zip(row, bias, m, s)] for row in acc]
        )
        assert np.array_equal(expected, requantize(acc, m, s, zp, lo, hi, bias=bias))
        assert np.array_equal(kernels.post(acc, bias, m, s, zp, lo, hi, None), expected.astype(np.int8))
        assert np.array_equal(kernels.post(acc, bias, m, s, zp, lo, hi, lut), lut[expected + 128])
    out = np.empty(acc.shape, dtype=np.int8)
    kernels.post_into(out, acc, np.stack([bias, m, s]).astype(np.int32), 0, -128, 127, lut)
    assert np.array_equal(out, lut[requantize(acc, m, s, 0, -128, 127, bias=bias) + 128])


def test_rescale_is_requantize():
    rng = np.random.default_rng(3)
    values = rng.integers(-(2**40), 2**40, (50, 8))
    m, s = rng.integers(0, 2**31, 8), rng.integers(1, 63, 8)
    expected = requantize(values, m, s, -7, -100, 110)
    assert np.array_equal(kernels._rescale(values.copy(), m, s, -7, -100, 110), expected)


def eltw_add_reference(a, b, zp_a, zp_b, ra, rb, ro, zp, lo, hi):
    wide = (-(2**31), 2**31 - 1)
    a2 = requantize((a.astype(np.int64) - zp_a) << ELTW_ADD_LEFT_SHIFT, *ra, 0, *wide)
    b2 = requantize((b.astype(np.int64) - zp_b) << ELTW_ADD_LEFT_SHIFT, *rb, 0, *wide)
    return requantize(a2.astype(np.int64) + b2, *ro, zp, lo, hi).astype(np.int8)


@pytest.mark.parametrize("broadcast", [False, True])
def test_eltw_tables_match_the_int64_formulas(broadcast):
    rng = np.random.default_rng(11 + broadcast)
    every = np.arange(-128, 128, dtype=np.int8)
    a = np.repeat(every, 256).reshape(-1, 256)  # every pair of int8 values
    b = every[None, :] if broadcast else np.tile(every, 256).reshape(-1, 256)
    for _ in range(3):
        zp_a, zp_b, zp = (int(v) for v in rng.integers(-128, 128, 3))
        ra, rb = (int(rng.integers(2**30, 2**31)), 31), (int(rng.integers(2**30, 2**31)), int(rng.integers(30, 34)))
        ro = (int(rng.integers(2**30, 2**31)), int(rng.integers(45, 55)))
        got = kernels.eltw_add(a, b, zp_a, zp_b, ra, rb, ro, zp, -128, 127)
        assert np.array_equal(got, eltw_add_reference(a, b, zp_a, zp_b, ra, rb, ro, zp, -128, 127))
        mo = (int(rng.integers(2**30, 2**31)), int(rng.integers(30, 45)))
        product = (a.astype(np.int64) - zp_a) * (b.astype(np.int64) - zp_b)
        expected = requantize(product, *mo, zp, -50, 127).astype(np.int8)
        assert np.array_equal(kernels.eltw_mul(a, b, zp_a, zp_b, mo, zp, -50, 127), expected)


def test_max_pool_and_nearest_resize_by_table():
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (7, 9, 5)).astype(np.int8)
    x[0, 0] = -128  # a counted tap equal to the padding blank
    lut = rng.integers(-128, 128, 256).astype(np.int8)
    rescale, zp_in = (int(rng.integers(2**30, 2**31)), 32), -3
    pads = (1, 0, 1, 1)
    padded = x.astype(np.int64)
    top, bottom, left, right = pads
    valid = np.zeros(x.shape[:2], bool)
    valid[top : x.shape[0] - bottom, left : x.shape[1] - right] = True
    for lut_or_none in (None, lut):
        got = kernels.pool(x, False, (3, 3), (2, 2), pads, zp_in, rescale, 4, -128, 127, lut_or_none)
        for oy in range(got.shape[0]):
            for ox in range(got.shape[1]):
                window = padded[2 * oy : 2 * oy + 3, 2 * ox : 2 * ox + 3][valid[2 * oy : 2 * oy + 3, 2 * ox : 2 * ox + 3]]
                y = requantize(window.max(axis=0) - zp_in, *rescale, 4, -128, 127)
                assert np.array_equal(got[oy, ox], lut_or_none[y + 128] if lut_or_none is not None else y.astype(np.int8))
    identity = kernels.pool(x, False, (1, 1), (1, 1), (0, 0, 0, 0), zp_in, rescale, 4, -128, 127)
    assert np.array_equal(identity, requantize(x.astype(np.int64) - zp_in, *rescale, 4, -128, 127).astype(np.int8))
    resized = kernels.resize(x, False, (14, 20), (1 << 15, 29491), (0, 1000), zp_in, rescale, 4, -128, 127)
    iy = np.minimum((np.arange(14) << 15) >> 16, 6)
    ix = np.minimum((1000 + np.arange(20) * 29491) >> 16, 8)
    expected = requantize(x[iy][:, ix].astype(np.int64) - zp_in, *rescale, 4, -128, 127).astype(np.int8)
    assert np.array_equal(resized, expected)


def test_global_pool_sum_is_one_window_sum():
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, (6, 5, 3)).astype(np.int8)
    got = kernels.pool_sum(x, (6, 5), (1, 1), (1, 0, 0, 2), 7)
    assert np.array_equal(got[0, 0], (x[1:, :3].astype(np.int64) - 7).sum(axis=(0, 1)))


CONVS = {
    "dense 3x3 stride 1 (shifted row ranges)": ((6, 11, 64), 8, (3, 3), (1, 1), (1, 1), 1),
    "dense 3x2 dilation 2x3": ((9, 10, 5), 4, (3, 2), (1, 1), (2, 3), 1),
    "dense stride 2 (im2col)": ((7, 9, 3), 6, (3, 3), (2, 2), (1, 1), 1),
    "depthwise few channels, stride 1": ((6, 13, 16), 16, (3, 3), (1, 1), (1, 1), 16),
    "depthwise many channels, 5x5": ((8, 9, 96), 96, (5, 5), (1, 1), (1, 1), 96),
    "depthwise stride 2 dilation 2": ((9, 11, 8), 8, (3, 3), (2, 2), (2, 2), 8),
    "depthwise multiplier 2": ((5, 6, 4), 8, (3, 3), (1, 1), (1, 1), 4),
    "depthwise multiplier 2, stride 2x1, dilation 1x2": ((9, 10, 3), 6, (3, 3), (2, 1), (1, 2), 3),
    "depthwise multiplier 3, 1x1": ((4, 5, 2), 6, (1, 1), (1, 1), (1, 1), 2),
    "grouped": ((5, 5, 8), 6, (3, 3), (1, 1), (1, 1), 2),
}


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("full_range", [False, True], ids=["float32", "float64"])
def test_conv_paths_match_direct_convolution(name, full_range, kernel_threads):
    """Small values keep the sums below 2^24 (float32); with int8 extremes, 64 channels of
    3x3 taps (576 x 255 x 128 > 2^24) take float64."""
    (ih, iw, ic), oc, (kh, kw), stride, dilation, groups = CONVS[name]
    rng = np.random.default_rng(len(name) + full_range)
    span = 128 if full_range else 4
    x = rng.integers(-span, span, (ih, iw, ic)).astype(np.int8)
    w = rng.integers(-span, span, (oc, kh, kw, ic // groups)).astype(np.int8)
    if full_range:
        x[0], w[0] = 127, -128
    zp = -128 if full_range else 3
    wide = full_range and kh * kw * ic // groups * 255 * 128 >= kernels.FLOAT32_EXACT
    assert kernels._accumulation_dtype(x, w, zp) == (np.float64 if wide else np.float32)
    got = kernels.conv(x, w, zp, stride, dilation, groups)
    assert got.dtype == np.int32
    assert np.array_equal(got, direct_conv(x, w, zp, stride, dilation, groups))


def test_conv_wraps_beyond_int32_like_the_accumulator(kernel_threads):
    """K = 66000 products of 255 * -128 sum below -2^31: float64 is exact, the int32 result wraps."""
    x = np.full((1, 1, 66000), 127, dtype=np.int8)
    w = np.full((1, 1, 1, 66000), -128, dtype=np.int8)
    got = kernels.conv(x, w, -128, (1, 1), (1, 1), 1)
    assert int(got[0, 0, 0]) == np.int64(66000 * 255 * -128).astype(np.int32)


@pytest.mark.parametrize("zp", [-128, 0, 127])
def test_depthwise_padding_and_int8_extremes(zp):
    """A LOAD-padded border equal to the zero point contributes nothing; inputs and weights
    at the int8 extremes (|x - zp| up to 255) with channel multiplier 2, stride 2 and
    dilation 2, against the direct int64 convolution."""
    rng = np.random.default_rng(zp + 200)
    inner = rng.choice(np.array([-128, -127, -1, 0, 1, 126, 127], dtype=np.int8), (7, 8, 5))
    x = np.pad(inner, ((2, 2), (2, 2), (0, 0)), constant_values=zp)
    w = rng.choice(np.array([-128, -1, 0, 1, 127], dtype=np.int8), (10, 3, 3, 1))
    for stride, dilation in (((1, 1), (1, 1)), ((2, 2), (2, 2)), ((1, 2), (2, 1))):
        got = kernels.conv(x, w, zp, stride, dilation, 5)
        assert got.dtype == np.int32
        assert np.array_equal(got, direct_conv(x, w, zp, stride, dilation, 5))
    unpadded = direct_conv(inner, w, zp, (1, 1), (1, 1), 5)
    assert np.array_equal(kernels.conv(x, w, zp, (1, 1), (1, 1), 5)[2:-2, 2:-2], unpadded)


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_accumulates_with_int32_wrap_around(name, kernel_threads):
    """CONV with the accumulate flag adds to what the accumulator holds (values near the
    int32 limits, so the sum wraps), on every path."""
    (ih, iw, ic), oc, (kh, kw), stride, dilation, groups = CONVS[name]
    rng = np.random.default_rng(len(name))
    x = rng.integers(-128, 128, (ih, iw, ic)).astype(np.int8)
    w = rng.integers(-128, 128, (oc, kh, kw, ic // groups)).astype(np.int8)
    expected = direct_conv(x, w, -5, stride, dilation, groups)
    held = rng.choice(np.array([INT32.min, -1, 0, INT32.max], dtype=np.int32), expected.shape)
    out = held.copy()
    kernels.Conv(x.shape, w.shape, -5, stride, dilation, groups, accumulate=True)(out, x, w)
    assert np.array_equal(out, (held.astype(np.int64) + expected).astype(np.int32))


def test_depthwise_wraps_beyond_int32_like_the_accumulator():
    """A 257x257 depthwise kernel: 66049 taps of 255 * -128 sum below -2^31 and the int32
    accumulation wraps to the exact sum mod 2^32."""
    x = np.full((257, 257, 2), 127, dtype=np.int8)
    w = np.full((2, 257, 257, 1), -128, dtype=np.int8)
    got = kernels.conv(x, w, -128, (1, 1), (1, 1), 2)
    assert got.shape == (1, 1, 2)
    assert (got == np.int64(257 * 257 * 255 * -128).astype(np.int32)).all()


def test_eltw_operands_that_do_not_broadcast_are_refused():
    a = np.zeros((4, 3), dtype=np.int8)
    with pytest.raises(ValueError, match="do not match"):
        kernels.eltw_mul(a, np.zeros((2, 3), dtype=np.int8), 0, 0, (2**30, 31), 0, -128, 127)
