"""CONV (+ POST) tiles against a direct numpy convolution written independently."""

from __future__ import annotations

import numpy as np
import pytest

from ember.target.isa import Buffer, Opcode
from ember.target.requant import quantize_multiplier, requantize
from tests.target.conv_helpers import run_conv_post


def reference_conv(x, w, zp, pads, stride, dilation, groups):
    """acc[y, x, o] = sum over the group's channels and taps of (xpad - zp) * w, int64,
    one output pixel at a time; xpad is padded with zp."""
    top, bottom, left, right = pads
    xp = np.pad(x.astype(np.int64), ((top, bottom), (left, right), (0, 0)), constant_values=zp) - zp
    oc, kh, kw, icg = w.shape
    ocg = oc // groups
    oh = (xp.shape[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (xp.shape[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((oh, ow, oc), dtype=np.int64)
    for oy in range(oh):
        for ox in range(ow):
            rows = oy * stride[0] + dilation[0] * np.arange(kh)
            cols = ox * stride[1] + dilation[1] * np.arange(kw)
            patch = xp[rows][:, cols]  # [kh, kw, ic]
            for o in range(oc):
                g = o // ocg
                out[oy, ox, o] = np.sum(patch[:, :, g * icg : (g + 1) * icg] * w[o].astype(np.int64))
    return out


CASES = {
    "3x3 pad 1": dict(h=7, w=6, ic=8, oc=5, k=(3, 3), pads=(1, 1, 1, 1), stride=(1, 1), dil=(1, 1), groups=1),
    "stride 2": dict(h=9, w=8, ic=4, oc=6, k=(3, 3), pads=(1, 0, 1, 0), stride=(2, 2), dil=(1, 1), groups=1),
    "dilation 2": dict(h=8, w=8, ic=3, oc=4, k=(3, 3), pads=(2, 2, 2, 2), stride=(1, 1), dil=(2, 2), groups=1),
    "asymmetric 5x1 stride 1x2": dict(h=8, w=9, ic=3, oc=2, k=(5, 1), pads=(2, 2, 0, 0), stride=(1, 2), dil=(1, 1), groups=1),
    "depthwise": dict(h=6, w=6, ic=8, oc=8, k=(3, 3), pads=(1, 1, 1, 1), stride=(1, 1), dil=(1, 1), groups=8),
    "depthwise stride 2 multiplier 2": dict(
        h=7, w=7, ic=4, oc=8, k=(3, 3), pads=(1, 1, 1, 1), stride=(2, 2), dil=(1, 1), groups=4
    ),
    "grouped": dict(h=5, w=5, ic=8, oc=6, k=(3, 3), pads=(0, 0, 0, 0), stride=(1, 1), dil=(1, 1), groups=2),
    "matmul as 1x1": dict(h=1, w=10, ic=32, oc=7, k=(1, 1), pads=(0, 0, 0, 0), stride=(1, 1), dil=(1, 1), groups=1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_conv_matches_direct_convolution(tile_program, name):
    case = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    x = rng.integers(-128, 128, (case["h"], case["w"], case["ic"]), dtype=np.int8)
    icg = case["ic"] // case["groups"]
    w = rng.integers(-128, 128, (case["oc"], *case["k"], icg), dtype=np.int8)
    bias = rng.integers(-5000, 5000, case["oc"]).astype(np.int64)
    m, s = quantize_multiplier(rng.uniform(0.0005, 0.004, case["oc"]))
    zp, zp_out = -7, 11
    y = run_conv_post(tile_program, x, w, zp, case["pads"], case["stride"], case["dil"], case["groups"], bias, m, s, zp_out)
    acc = reference_conv(x, w, zp, case["pads"], case["stride"], case["dil"], case["groups"])
    expected = requantize(acc, m, s, zp_out, bias=bias)
    assert y.dtype == np.int8
    assert np.array_equal(y, expected)


def test_padding_with_zero_point_contributes_nothing(tile_program):
    """A 3x3 all-ones kernel on a constant input equal to the zero point gives exactly the
    bias everywhere, border included: padding with zp is padding with real zero."""
    x = np.full((4, 4, 2), 9, dtype=np.int8)
    w = np.ones((1, 3, 3, 2), dtype=np.int8)
    m, s = quantize_multiplier(np.array([1.0]))
    y = run_conv_post(tile_program, x, w, 9, (1, 1, 1, 1), (1, 1), (1, 1), 1, np.array([5]), m, s, 0)
    assert np.array_equal(y, np.full((4, 4, 1), 5, dtype=np.int8))


def test_accumulate_flag_splits_the_reduction(tile_program):
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (5, 5, 8), dtype=np.int8)
    w = rng.integers(-128, 128, (4, 3, 3, 8), dtype=np.int8)
    bias = np.array([0, 100, -100, 7])
    m, s = quantize_multiplier(np.full(4, 0.001))
    y = run_conv_post(tile_program, x, w, 3, (1, 1, 1, 1), (1, 1), (1, 1), 1, bias, m, s, 0, split=True)
    expected = requantize(reference_conv(x, w, 3, (1, 1, 1, 1), (1, 1), (1, 1), 1), m, s, 0, bias=bias)
    assert np.array_equal(y, expected)


def test_large_reduction_uses_an_exact_path(tile_program):
    """K = 3*3*64 = 576 taps of 255 * 128 exceed 2^24: the float32 path would round; the
    result must still equal the exact integer sum."""
    x = np.full((3, 3, 64), 127, dtype=np.int8)
    x[1, 1, 0] = 126
    w = np.full((1, 3, 3, 64), -128, dtype=np.int8)
    acc = reference_conv(x, w, -128, (0, 0, 0, 0), (1, 1), (1, 1), 1)
    assert abs(acc).max() > 2**24
    m, s = quantize_multiplier(np.array([1.0]))
    prog = tile_program()
    prog.load(Buffer.WGT, 0, w.reshape(1, 9, 64), (1, 9, 64))
    prog.load(Buffer.INP, 0, x)
    prog.op(Opcode.CONV, inp=0, wgt=0, acc=0, ih=3, iw=3, ic=64, oc=1, groups=1, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, in_zp=-128)
    got = prog.run(Buffer.ACC, 0, (1, 1, 1))
    assert int(got[0, 0, 0]) == int(acc[0, 0, 0]) == -18_800_512


def test_post_lookup_table(tile_program):
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (3, 3, 4), dtype=np.int8)
    w = rng.integers(-128, 128, (4, 1, 1, 4), dtype=np.int8)
    lut = rng.integers(-128, 128, 256, dtype=np.int8)
    m, s = quantize_multiplier(np.full(4, 0.01))
    bias = np.zeros(4, dtype=np.int64)
    y = run_conv_post(tile_program, x, w, 0, (0, 0, 0, 0), (1, 1), (1, 1), 1, bias, m, s, -3, lut=lut)
    pre = requantize(reference_conv(x, w, 0, (0, 0, 0, 0), (1, 1), (1, 1), 1), m, s, -3, bias=bias)
    assert np.array_equal(y, lut[pre + 128])
