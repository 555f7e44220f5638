"""POST, ELTW, POOL, RESIZE and PREPROC tiles against independent numpy / integer math."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ember.target.isa import Buffer, ChannelOrder, EltwMode, Opcode, PixelFormat, PoolMode, ResizeMode
from ember.target.requant import quantize_multiplier

IDENTITY = (1 << 30, 30)  # requantize multiplier and shift of exactly 1.0


def round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def rescale_exact(v: int, m: int, s: int) -> int:
    """The requantization rounding in exact rational arithmetic."""
    return round_half_up(Fraction(v * m, 2**s))


# ------------------------------------------------------------------------------ POST


def run_post(tile_program, acc, bias, m, s, zp_out, act_min=-128, act_max=127):
    n, c = acc.shape
    prog = tile_program()
    prog.load(Buffer.PAR, 0, np.concatenate([bias, m, s]).astype(np.int32))
    prog.load(Buffer.ACC, 0, acc.astype(np.int32))
    prog.op(Opcode.POST, acc=0, par=0, out=0, count=n, channels=c, zp_out=zp_out, act_min=act_min, act_max=act_max)
    return prog.run(Buffer.INP, 0, (1, n, c))[0]


def test_post_rounds_ties_up_including_negative_ties(tile_program):
    acc = np.array([[-5], [-3], [-1], [1], [3], [5], [-4]])
    y = run_post(tile_program, acc, np.zeros(1), np.array([1 << 30]), np.array([31]), 0)
    assert y[:, 0].tolist() == [-2, -1, 0, 1, 2, 3, -2]


def test_post_bias_zero_point_saturation_and_clamp(tile_program):
    acc = np.array([[10**9, 0], [-(10**9), 40], [200, -40]])
    m, s = quantize_multiplier(np.array([0.5, 0.25]))
    y = run_post(tile_program, acc, np.array([0, -4]), m, s, 5, act_min=5, act_max=100)
    expected = [[100, 5], [5, 14], [100, 5]]
    assert y.tolist() == expected


# ------------------------------------------------------------------------------ ELTW


def eltw_add_exact(a, b, zp_a, zp_b, ra, rb, ro, zp_out, lo=-128, hi=127):
    out = []
    for x, y in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True):
        xa = rescale_exact((x - zp_a) << 20, *ra)
        yb = rescale_exact((y - zp_b) << 20, *rb)
        out.append(min(hi, max(lo, rescale_exact(xa + yb, *ro) + zp_out)))
    return np.array(out).reshape(a.shape)


def run_eltw(tile_program, a, b, **fields):
    n, c = a.shape
    prog = tile_program()
    prog.load(Buffer.INP, 0, a)
    prog.load(Buffer.INP, 4096, b)
    prog.op(Opcode.ELTW, a=0, b=4096, out=8192, count=n, channels=c, **fields)
    return prog.run(Buffer.INP, 8192, (1, n, c))[0]


def test_eltw_add_with_different_input_scales(tile_program):
    rng = np.random.default_rng(11)
    a = rng.integers(-128, 128, (40, 3), dtype=np.int8)
    b = rng.integers(-128, 128, (40, 3), dtype=np.int8)
    s_a, s_b, s_out = 0.02, 0.05, 0.06
    big = 2 * max(s_a, s_b)
    (ma,), (sa,) = quantize_multiplier(s_a / big)
    (mb,), (sb,) = quantize_multiplier(s_b / big)
    (mo,), (so,) = quantize_multiplier(big / (s_out * 2**20))
    y = run_eltw(tile_program, a, b, mode=EltwMode.ADD, zp_a=3, zp_b=-9, zp_out=-2, act_min=-128, act_max=127,
                 mult_a=ma, shift_a=sa, mult_b=mb, shift_b=sb, mult_out=mo, shift_out=so)  # fmt: skip
    expected = eltw_add_exact(a, b, 3, -9, (ma, sa), (mb, sb), (mo, so), -2)
    assert np.array_equal(y, expected)
    real = ((a.astype(float) - 3) * s_a + (b.astype(float) - (-9)) * s_b) / s_out - 2
    assert np.abs(np.clip(real, -128, 127) - y).max() <= 1


def test_eltw_add_saturates(tile_program):
    a = np.array([[127, -128]], dtype=np.int8)
    (m,), (s,) = quantize_multiplier(0.5)
    (mo,), (so,) = quantize_multiplier(2.0 / 2**20)
    y = run_eltw(tile_program, a, a, mode=EltwMode.ADD, act_min=-128, act_max=127,
                 mult_a=m, shift_a=s, mult_b=m, shift_b=s, mult_out=mo, shift_out=so)  # fmt: skip
    assert y.tolist() == [[127, -128]]


@pytest.mark.parametrize("out", [8192, 4096], ids=["separate output", "output over the broadcast row"])
def test_eltw_mul_and_broadcast(tile_program, out):
    """With the output starting at the broadcast row, every output row still uses the row
    as it was before the instruction: ELTW reads its operands before it writes."""
    rng = np.random.default_rng(12)
    a = rng.integers(-128, 128, (6, 4), dtype=np.int8)
    b = rng.integers(-128, 128, (1, 4), dtype=np.int8)
    (m,), (s,) = quantize_multiplier(0.013)
    prog = tile_program()
    prog.load(Buffer.INP, 0, a)
    prog.load(Buffer.INP, 4096, b)
    prog.op(Opcode.ELTW, a=0, b=4096, out=out, count=6, channels=4, mode=EltwMode.MUL, broadcast_b=1,
            zp_a=-1, zp_b=4, zp_out=7, act_min=-128, act_max=127, mult_out=m, shift_out=s)  # fmt: skip
    y = prog.run(Buffer.INP, out, (6, 4))
    expected = [
        [min(127, max(-128, rescale_exact((int(a[i, j]) + 1) * (int(b[0, j]) - 4), m, s) + 7)) for j in range(4)]
        for i in range(6)
    ]
    assert y.tolist() == expected


# ------------------------------------------------------------------------------ POOL


def run_pool(tile_program, x, out_shape, out_buf=Buffer.INP, lut=None, **fields):
    prog = tile_program()
    if lut is not None:
        prog.load(Buffer.LUT, 0, lut)
    prog.load(Buffer.INP, 0, x)
    ih, iw, c = x.shape
    prog.op(Opcode.POOL, inp=0, out=30000, ih=ih, iw=iw, channels=c, use_lut=int(lut is not None), **fields)
    return prog.run(out_buf, 30000, out_shape)


def test_max_pool_excludes_padding_borders(tile_program):
    rng = np.random.default_rng(21)
    x = rng.integers(-128, -100, (5, 5, 3), dtype=np.int8)
    x[0, :] = 127  # padding rows/cols hold garbage that must never win
    x[:, 0] = 127
    y = run_pool(tile_program, x, (2, 2, 3), kh=3, kw=3, sh=2, sw=2, pad_top=1, pad_left=1, mode=PoolMode.MAX,
                 multiplier=IDENTITY[0], shift=IDENTITY[1], act_min=-128, act_max=127)  # fmt: skip
    inner = x[1:, 1:]
    expected = np.stack(
        [np.stack([inner[max(0, 2 * r - 1) : 2 * r + 2, max(0, 2 * c - 1) : 2 * c + 2].max(axis=(0, 1)) for c in range(2)])
         for r in range(2)]
    )  # fmt: skip
    assert np.array_equal(y, expected)


def test_avg_pool_counts_only_real_taps_and_rounds_half_up(tile_program):
    x = np.array([[[-3], [0]], [[0], [0]]], dtype=np.int8)  # 2x2, one channel
    # 2x2 window over a tile whose last row and column are padding: one counted tap.
    y = run_pool(tile_program, x, (1, 1, 1), kh=2, kw=2, sh=1, sw=1, pad_bottom=1, pad_right=1, mode=PoolMode.AVG,
                 multiplier=IDENTITY[0], shift=IDENTITY[1], act_min=-128, act_max=127)  # fmt: skip
    assert y.ravel().tolist() == [-3]
    # Counted taps -3, -2 (sum -5, n = 2): -2.5 rounds half up to -2; with zp 1 all shift.
    x2 = np.array([[[-3], [-2]], [[9], [9]]], dtype=np.int8)
    y2 = run_pool(tile_program, x2, (1, 1, 1), kh=2, kw=2, sh=1, sw=1, pad_bottom=1, mode=PoolMode.AVG,
                  multiplier=IDENTITY[0], shift=IDENTITY[1], zp_in=0, act_min=-128, act_max=127)  # fmt: skip
    assert y2.ravel().tolist() == [-2]


def test_avg_pool_matches_rational_average(tile_program):
    rng = np.random.default_rng(22)
    x = rng.integers(-128, 128, (6, 7, 4), dtype=np.int8)
    (m,), (s,) = quantize_multiplier(0.8)
    y = run_pool(tile_program, x, (2, 3, 4), kh=3, kw=3, sh=2, sw=2, pad_top=1, pad_right=1, mode=PoolMode.AVG,
                 multiplier=m, shift=s, zp_in=5, zp_out=-4, act_min=-128, act_max=127)  # fmt: skip
    expected = np.zeros((2, 3, 4), dtype=np.int64)
    for r in range(2):
        for c in range(3):
            rows = [i for i in range(2 * r, 2 * r + 3) if 1 <= i < 6]
            cols = [j for j in range(2 * c, 2 * c + 3) if 0 <= j < 6]
            for ch in range(4):
                total = sum(int(x[i, j, ch]) - 5 for i in rows for j in cols)
                v = round_half_up(Fraction(total, len(rows) * len(cols)))
                expected[r, c, ch] = min(127, max(-128, rescale_exact(v, m, s) - 4))
    assert np.array_equal(y, expected)


def test_global_average_pool_as_sum_then_post(tile_program):
    """Global average over two spatial tiles: POOL sum, POOL sum accumulating, POST with
    the multiplier of 1 / (h * w): a single rounding of the exact mean."""
    rng = np.random.default_rng(23)
    x = rng.integers(-128, 128, (6, 5, 3), dtype=np.int8)
    (m,), (s,) = quantize_multiplier(1.0 / 30)
    prog = tile_program()
    prog.load(Buffer.PAR, 0, np.array([0, 0, 0, m, m, m, s, s, s], dtype=np.int32))
    prog.load(Buffer.INP, 0, np.ascontiguousarray(x[:3]))
    prog.load(Buffer.INP, 1000, np.ascontiguousarray(x[3:]))
    for k, addr in enumerate((0, 1000)):
        prog.op(Opcode.POOL, inp=addr, out=0, ih=3, iw=5, channels=3, kh=3, kw=5, sh=1, sw=1, mode=PoolMode.SUM,
                zp_in=-2, accumulate=k)  # fmt: skip
    prog.op(Opcode.POST, acc=0, par=0, out=2000, count=1, channels=3, zp_out=1, act_min=-128, act_max=127)
    y = prog.run(Buffer.INP, 2000, (1, 1, 3))
    sums = (x.astype(np.int64) + 2).sum(axis=(0, 1))
    expected = [min(127, max(-128, rescale_exact(int(t), m, s) + 1)) for t in sums]
    assert y.ravel().tolist() == expected


def test_pool_identity_with_lut_is_an_elementwise_table(tile_program):
    rng = np.random.default_rng(24)
    x = rng.integers(-128, 128, (4, 4, 2), dtype=np.int8)
    lut = rng.integers(-128, 128, 256, dtype=np.int8)
    y = run_pool(tile_program, x, (4, 4, 2), lut=lut, kh=1, kw=1, sh=1, sw=1, mode=PoolMode.MAX, zp_in=3, zp_out=3,
                 multiplier=IDENTITY[0], shift=IDENTITY[1], act_min=-128, act_max=127)  # fmt: skip
    assert np.array_equal(y, lut[x.astype(np.int64) + 128])


# ---------------------------------------------------------------------------- RESIZE


def run_resize(tile_program, x, oh, ow, **fields):
    ih, iw, c = x.shape
    prog = tile_program()
    prog.load(Buffer.INP, 0, x)
    prog.op(Opcode.RESIZE, inp=0, out=20000, ih=ih, iw=iw, oh=oh, ow=ow, channels=c, act_min=-128, act_max=127, **fields)
    return prog.run(Buffer.INP, 20000, (oh, ow, c))


def test_nearest_2x_upsample_is_repeat(tile_program):
    rng = np.random.default_rng(31)
    x = rng.integers(-128, 128, (3, 4, 2), dtype=np.int8)
    # asymmetric, floor: src = o / 2 -> step 0.5 in Q16, offset 0
    y = run_resize(tile_program, x, 6, 8, mode=ResizeMode.NEAREST, step_y=1 << 15, step_x=1 << 15,
                   multiplier=IDENTITY[0], shift=IDENTITY[1], zp_in=4, zp_out=4)  # fmt: skip
    assert np.array_equal(y, x.repeat(2, axis=0).repeat(2, axis=1))


def test_bilinear_half_pixel_matches_exact_definition(tile_program):
    rng = np.random.default_rng(32)
    x = rng.integers(-128, 128, (3, 5, 2), dtype=np.int8)
    oh, ow = 7, 4
    step_y, off_y = round(3 / 7 * 65536), round((0.5 * 3 / 7 - 0.5) * 65536)
    step_x, off_x = round(5 / 4 * 65536), round((0.5 * 5 / 4 - 0.5) * 65536)
    (m,), (s,) = quantize_multiplier(0.9 / 2**20)
    y = run_resize(tile_program, x, oh, ow, mode=ResizeMode.BILINEAR, step_y=step_y, offset_y=off_y, step_x=step_x,
                   offset_x=off_x, multiplier=m, shift=s, zp_in=-6, zp_out=2)  # fmt: skip

    def taps(o, step, off, size):
        src = min(max(off + o * step, 0), (size - 1) << 16)
        i0 = src >> 16
        return i0, min(i0 + 1, size - 1), (src & 0xFFFF) >> 6

    for r in range(oh):
        y0, y1, fy = taps(r, step_y, off_y, 3)
        for c in range(ow):
            x0, x1, fx = taps(c, step_x, off_x, 5)
            for ch in range(2):
                v = lambda i, j: int(x[i, j, ch]) + 6  # noqa: E731
                top = v(y0, x0) * (1024 - fy) + v(y1, x0) * fy
                right = v(y0, x1) * (1024 - fy) + v(y1, x1) * fy
                acc = top * (1024 - fx) + right * fx
                assert y[r, c, ch] == min(127, max(-128, rescale_exact(acc, m, s) + 2))
    # and it is a bilinear interpolation: close to the float computation
    ys = np.clip((np.arange(oh) + 0.5) * 3 / 7 - 0.5, 0, 2)
    xs = np.clip((np.arange(ow) + 0.5) * 5 / 4 - 0.5, 0, 4)
    xf = x.astype(float) + 6
    y0 = np.floor(ys).astype(int); y1 = np.minimum(y0 + 1, 2); fy = ys - y0  # noqa: E702
    x0 = np.floor(xs).astype(int); x1 = np.minimum(x0 + 1, 4); fx = xs - x0  # noqa: E702
    rows = xf[y0] * (1 - fy)[:, None, None] + xf[y1] * fy[:, None, None]
    ref = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    assert np.abs(np.clip(np.rint(ref * 0.9) + 2, -128, 127) - y).max() <= 1


# --------------------------------------------------------------------------- PREPROC


def run_preproc(tile_program, frame, uv, fmt, order, tables, h, w):
    """PREPROC of one frame; int16 `tables` select `out_i16` (tables and result move as bytes)."""
    out_i16 = tables.dtype == np.int16
    prog = tile_program()
    prog.load(Buffer.LUT, 0, tables.astype("<i2").view(np.int8).reshape(-1) if out_i16 else tables.reshape(-1))
    prog.load(Buffer.INP, 0, frame.view(np.int8))
    if uv is not None:
        prog.load(Buffer.INP, 50000, uv.view(np.int8))
    prog.op(Opcode.PREPROC, inp=0, uv=50000, out=100000, lut=0, height=h, width=w, pixel_format=fmt, order=order,
            out_i16=int(out_i16))  # fmt: skip
    if out_i16:
        return prog.run(Buffer.INP, 100000, (h, w, 6)).view("<i2")
    return prog.run(Buffer.INP, 100000, (h, w, 3))


def normalization_tables(mean, std, scale, zp, dtype=np.int8):
    """[3, 256] `dtype` tables: pixel value -> quantized (v - mean[k]) / std[k]."""
    v, info = np.arange(256, dtype=np.float64), np.iinfo(dtype)
    rows = [np.clip(np.floor((v - m) / s / scale + 0.5) + zp, info.min, info.max) for m, s in zip(mean, std)]
    return np.stack(rows).astype(dtype)


@pytest.mark.parametrize("fmt,order", [(PixelFormat.RGB, ChannelOrder.RGB), (PixelFormat.BGR, ChannelOrder.RGB),
                                       (PixelFormat.RGB, ChannelOrder.BGR)])  # fmt: skip
def test_preproc_packed_formats(tile_program, fmt, order):
    rng = np.random.default_rng(41)
    frame = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    tables = normalization_tables([123.675, 116.28, 103.53], [58.395, 57.12, 57.375], 0.0186, -5)
    y = run_preproc(tile_program, frame, None, fmt, order, tables, 4, 6)
    rgb = frame[..., ::-1] if fmt == PixelFormat.BGR else frame
    wanted = rgb[..., ::-1] if order == ChannelOrder.BGR else rgb
    expected = np.stack([tables[k][wanted[..., k]] for k in range(3)], axis=-1)
    assert np.array_equal(y, expected)


@pytest.mark.parametrize("order", [ChannelOrder.RGB, ChannelOrder.BGR])
@pytest.mark.parametrize("fmt", [PixelFormat.RGB, PixelFormat.BGR, PixelFormat.NV12])
def test_preproc_int16_on_a_photograph(tile_program, fmt, order):
    """out_i16: a 16x24 crop of a real photograph through int16 tables (ImageNet
    normalization at an int16 scale, steps finer than a pixel level) gives
    table[k][pixel] per channel, stored to DRAM as little-endian int16."""
    from PIL import Image

    from ember.runtime.frames import rgb_to_nv12
    from ember.target import kernels

    path = Path(__file__).resolve().parents[2].parent / "shared" / "images" / "astronaut.png"
    rgb = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))[100:116, 200:224])
    h, w = rgb.shape[:2]
    tables = normalization_tables([123.675, 116.28, 103.53], [58.395, 57.12, 57.375], 2.64 / 32767, 0, np.int16)
    assert all(len(np.unique(t)) == 256 for t in tables)  # every pixel level stays distinct
    if fmt == PixelFormat.NV12:
        frame = rgb_to_nv12(rgb)
        pixels, uv = frame[:h], frame[h:].reshape(h // 2, w // 2, 2)
        seen = kernels.nv12_to_rgb(pixels, uv)  # the colours PREPROC converts the frame to
    else:
        pixels = np.ascontiguousarray(rgb[..., ::-1]) if fmt == PixelFormat.BGR else rgb
        uv, seen = None, rgb
    got = run_preproc(tile_program, pixels, uv, fmt, order, tables, h, w)
    wanted = seen[..., ::-1] if order == ChannelOrder.BGR else seen
    expected = np.stack([tables[k][wanted[..., k]] for k in range(3)], axis=-1)
    assert got.dtype == np.int16 and got.tobytes() == expected.astype("<i2").tobytes()
    assert np.array_equal(kernels.preproc(pixels, uv, fmt, order, tables), expected)


def test_preproc_nv12_known_colours(tile_program):
    # 2x4 frame: left 2x2 block white (Y 235, neutral chroma), right block pure red.
    y_plane = np.array([[235, 235, 81, 81], [235, 235, 81, 81]], dtype=np.uint8)
    uv = np.array([[[128, 128], [90, 240]]], dtype=np.uint8)
    identity = np.tile(np.arange(256).astype(np.uint8).view(np.int8), (3, 1))
    frame = run_preproc(tile_program, y_plane, uv, PixelFormat.NV12, ChannelOrder.RGB, identity, 2, 4).view(np.uint8)
    assert frame[0, 0].tolist() == [255, 255, 255]
    assert frame[1, 3].tolist() == [255, 0, 0]  # R = (298*65 + 409*112 + 128) >> 8 = 255, B clamps from -1
    black = run_preproc(tile_program, np.full((2, 2), 16, np.uint8), np.full((1, 1, 2), 128, np.uint8),
                        PixelFormat.NV12, ChannelOrder.RGB, identity, 2, 2).view(np.uint8)  # fmt: skip
    assert black.max() == 0


def test_preproc_nv12_formula(tile_program):
    rng = np.random.default_rng(42)
    h, w = 4, 6
    y_plane = rng.integers(0, 256, (h, w), dtype=np.uint8)
    uv = rng.integers(0, 256, (h // 2, w // 2, 2), dtype=np.uint8)
    identity = np.tile(np.arange(256).astype(np.uint8).view(np.int8), (3, 1))
    out = run_preproc(tile_program, y_plane, uv, PixelFormat.NV12, ChannelOrder.RGB, identity, h, w).view(np.uint8)
    for r in range(h):
        for c in range(w):
            cy, d, e = int(y_plane[r, c]) - 16, int(uv[r // 2, c // 2, 0]) - 128, int(uv[r // 2, c // 2, 1]) - 128
            rgb = [(298 * cy + 409 * e + 128) >> 8, (298 * cy - 100 * d - 208 * e + 128) >> 8, (298 * cy + 516 * d + 128) >> 8]
            assert out[r, c].tolist() == [min(255, max(0, v)) for v in rgb]


def test_bad_parameters_stop_with_the_instruction(tile_program):
    from ember.support.diagnostics import EmberError

    with pytest.raises(EmberError) as err:
        run_post(tile_program, np.zeros((1, 1)), np.zeros(1), np.array([1 << 30]), np.array([0]), 0)
    assert str(err.value) == (
        "test.ebin: instruction 3 (post, node 'node3'): par holds a negative multiplier or a shift outside [1, 62]"
    )
    x = np.zeros((2, 2, 1), dtype=np.int8)
    with pytest.raises(EmberError, match=r"^test.ebin: instruction 1 \(pool, node 'node1'\): a pooling window covers"
                                         r" padding only$"):  # fmt: skip
        run_pool(tile_program, x, (1, 1, 1), kh=1, kw=1, sh=1, sw=1, pad_top=1, pad_bottom=1, mode=PoolMode.AVG,
                 multiplier=IDENTITY[0], shift=IDENTITY[1], act_min=-128, act_max=127)  # fmt: skip
