"""The integer semantics of the Ember NPU's compute instructions, on whole numpy tiles.

Each function is the exact definition that docs/isa.md states in words; the simulator
calls them on the tiles an instruction names. They are vectorised: no Python loop runs over
pixels or channels (the depthwise convolution loops over kernel taps only).

Requantization always goes through `ember.target.requant.requantize` (single rounding,
ties towards +inf).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ember.target.isa import BILINEAR_WEIGHT_BITS, ELTW_ADD_LEFT_SHIFT, RESIZE_FRAC_BITS, ChannelOrder, PixelFormat
from ember.target.requant import requantize

FLOAT32_EXACT = 2**24
"""Integers below this magnitude, and every partial sum of them, are exact in float32."""


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


def conv(
    x: np.ndarray,
    w: np.ndarray,
    in_zp: int,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> np.ndarray:
    """Grouped convolution: x int8 [ih, iw, ic], w int8 [oc, kh, kw, ic/groups] ->
    int32 [oh, ow, oc] with acc = sum((x - in_zp) * w), wrapped to int32.

    The products are summed in float32 BLAS when every partial sum is provably below
    2^24 (so the sum is exact in any order), else in float64 (exact for any int8 tile)."""
    oc, kh, kw, icg = w.shape
    ic = x.shape[2]
    ocg = oc // groups
    centred_max = max(abs(int(x.max()) - in_zp), abs(int(x.min()) - in_zp)) if x.size else 0
    bound = kh * kw * icg * centred_max * max(abs(int(w.max())), abs(int(w.min())))
    ftype = np.float32 if bound < FLOAT32_EXACT else np.float64
    xc = x.astype(ftype)
    if in_zp:
        xc -= ftype(in_zp)
    wf = w.astype(ftype)
    win = _windows(xc, kh, kw, *stride, *dilation)
    oh, ow = win.shape[:2]
    if groups == 1:
        cols = win.reshape(oh * ow, kh * kw * ic)
        out = cols @ wf.reshape(oc, -1).T
    elif icg == 1:
        # Depthwise (with channel multiplier ocg): one multiply-add per kernel tap.
        src = np.repeat(np.arange(ic), ocg) if ocg > 1 else slice(None)
        out = np.zeros((oh, ow, oc), dtype=ftype)
        for ky in range(kh):
            for kx in range(kw):
                out += win[:, :, ky, kx, src] * wf[:, ky, kx, 0]
        out = out.reshape(oh * ow, oc)
    else:
        cols = win.reshape(oh * ow, kh * kw, groups, icg).transpose(2, 0, 1, 3).reshape(groups, oh * ow, -1)
        wg = wf.reshape(groups, ocg, kh * kw * icg).transpose(0, 2, 1)
        out = np.matmul(cols, wg).transpose(1, 0, 2).reshape(oh * ow, oc)
    return out.astype(np.int64).astype(np.int32).reshape(oh, ow, oc)


def post(
    acc: np.ndarray,
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    zp_out: int,
    act_min: int,
    act_max: int,
    lut: np.ndarray | None,
) -> np.ndarray:
    """int32 [count, channels] -> int8: per-channel requantization, clamp, then (if given)
    `y = lut[y + 128]`."""
    y = requantize(acc, multiplier, shift, zp_out, act_min, act_max, bias=bias, channel_axis=-1)
    if lut is not None:
        return lut[y + 128]
    return y.astype(np.int8)


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
    (zero point 0, no clamp) to a common scale; the int64 sum is requantized to the output."""
    wide = (-(2**31), 2**31 - 1)
    a2 = requantize((a.astype(np.int64) - zp_a) << ELTW_ADD_LEFT_SHIFT, *rescale_a, 0, *wide)
    b2 = requantize((b.astype(np.int64) - zp_b) << ELTW_ADD_LEFT_SHIFT, *rescale_b, 0, *wide)
    total = a2.astype(np.int64) + b2
    return requantize(total, *rescale_out, zp_out, act_min, act_max).astype(np.int8)


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
    """Multiply: requantize((a - zp_a) * (b - zp_b)) to the output."""
    product = (a.astype(np.int64) - zp_a) * (b.astype(np.int64) - zp_b)
    return requantize(product, *rescale_out, zp_out, act_min, act_max).astype(np.int8)


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


def pool_sum(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int], zp_in: int
) -> np.ndarray:
    """Window sums of x - zp_in over the counted taps (padding contributes 0): int64
    [oh, ow, c], through a summed-area table so large windows cost no more than small."""
    _window_counts(x, kernel, stride, pads)
    ih, iw, c = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    centred = _blank_padding(x.astype(np.int64) - zp_in, pads, 0)
    integral = np.zeros((ih + 1, iw + 1, c), dtype=np.int64)
    np.cumsum(np.cumsum(centred, axis=0), axis=1, out=integral[1:, 1:])
    y0 = np.arange(conv_output_size(ih, kh, sh, 1))[:, None] * sh
    x0 = np.arange(conv_output_size(iw, kw, sw, 1))[None, :] * sw
    return integral[y0 + kh, x0 + kw] - integral[y0, x0 + kw] - integral[y0 + kh, x0] + integral[y0, x0]


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
    else:
        _window_counts(x, kernel, stride, pads)
        masked = _blank_padding(x.astype(np.int16), pads, np.iinfo(np.int16).min)
        value = _windows(masked, *kernel, *stride, 1, 1).max(axis=(2, 3)).astype(np.int64) - zp_in
    y = requantize(value, *rescale, zp_out, act_min, act_max)
    return lut[y + 128] if lut is not None else y.astype(np.int8)


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
    centred = x.astype(np.int64) - zp_in
    if not bilinear:
        iy = np.clip(sy >> RESIZE_FRAC_BITS, 0, ih - 1)
        ix = np.clip(sx >> RESIZE_FRAC_BITS, 0, iw - 1)
        value = centred[iy][:, ix]
    else:
        drop = RESIZE_FRAC_BITS - BILINEAR_WEIGHT_BITS
        one = 1 << BILINEAR_WEIGHT_BITS

        def taps(s: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            s = np.clip(s, 0, (size - 1) << RESIZE_FRAC_BITS)
            i0 = s >> RESIZE_FRAC_BITS
            frac = (s & ((1 << RESIZE_FRAC_BITS) - 1)) >> drop
            return i0, np.minimum(i0 + 1, size - 1), frac

        y0, y1, fy = taps(sy, ih)
        x0, x1, fx = taps(sx, iw)
        rows = centred[y0] * (one - fy)[:, None, None] + centred[y1] * fy[:, None, None]
        value = rows[:, x0] * (one - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return requantize(value, *rescale, zp_out, act_min, act_max).astype(np.int8)


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
    """uint8 frame -> int8 [h, w, 3]: convert to RGB (or BGR, by `order`), then
    out[..., k] = tables[k][pixel[..., k]] (tables int8 [3, 256])."""
    if fmt == PixelFormat.NV12:
        rgb = nv12_to_rgb(pixels, uv_plane)
    elif fmt == PixelFormat.BGR:
        rgb = pixels[..., ::-1]
    else:
        rgb = pixels
    if order == ChannelOrder.BGR:
        rgb = rgb[..., ::-1]
    return np.stack([tables[k][rgb[..., k]] for k in range(3)], axis=-1)
