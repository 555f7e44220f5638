"""Shared by the CONV tests: a direct int64 convolution, and one LOAD -> CONV -> POST ->
STORE program on int8 or int16 tiles."""

from __future__ import annotations

import numpy as np

from ember.target.isa import Buffer, Opcode


def wrap32(values: np.ndarray) -> np.ndarray:
    """int64 values taken modulo 2^32 into [-2^31, 2^31)."""
    return ((np.asarray(values, dtype=np.int64) + 2**31) % 2**32 - 2**31).astype(np.int32)


def conv_int64(x, w, zp, stride, dilation, groups):
    """sum (x - zp) * w over each group's channels and taps, in int64, one tap at a time
    over the window view (not wrapped: `direct_conv` wraps)."""
    oc, kh, kw, icg = w.shape
    ih, iw, _ = x.shape
    oh = (ih - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (iw - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    xc = x.astype(np.int64) - zp
    out = np.zeros((oh, ow, oc), dtype=np.int64)
    ocg = oc // groups
    for o in range(oc):
        g = o // ocg
        for ky in range(kh):
            for kx in range(kw):
                y0, x0 = ky * dilation[0], kx * dilation[1]
                patch = xc[y0 : y0 + stride[0] * (oh - 1) + 1 : stride[0], x0 : x0 + stride[1] * (ow - 1) + 1 : stride[1]]
                out[:, :, o] += patch[:, :, g * icg : (g + 1) * icg] @ w[o, ky, kx].astype(np.int64)
    return out


def direct_conv(x, w, zp, stride, dilation, groups):
    """`conv_int64` wrapped to int32, as the accumulator wraps."""
    return wrap32(conv_int64(x, w, zp, stride, dilation, groups))


def run_conv_post(tile_program, x, w, zp, pads, stride, dil, groups, bias, m, s, zp_out, lut=None, split=False, post=None):
    """Load x (padded with zp) and w, CONV (or two CONVs over the two halves of the input
    channels, the second accumulating, when `split`), POST, store. An int16 x moves as its
    bytes (the box [h, w, 2c] that LOAD moves, padded with zero bytes: zp must be 0) into a
    CONV with in_i16; an int16 table is loaded as its bytes. `post` overrides POST's
    zp_out/act_min/act_max/use_lut/out_i16; an out_i16 result comes back as int16."""
    i16 = x.dtype == np.int16
    h, wd, ic = x.shape
    oc, kh, kw, _ = w.shape
    top, bottom, left, right = pads
    ih, iw = h + top + bottom, wd + left + right
    oh = (ih - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (iw - dil[1] * (kw - 1) - 1) // stride[1] + 1
    padding = dict(pad_top=top, pad_bottom=bottom, pad_left=left, pad_right=right, pad_value=zp)
    geometry = dict(ih=ih, iw=iw, oc=oc, kh=kh, kw=kw, sh=stride[0], sw=stride[1], dh=dil[0], dw=dil[1], in_zp=zp, in_i16=int(i16))
    parts = [(0, ic // 2), (ic // 2, ic)] if split else [(0, ic)]
    prog = tile_program()
    prog.load(Buffer.PAR, 0, np.concatenate([bias, m, s]).astype(np.int32))
    if lut is not None:
        prog.load(Buffer.LUT, 256, np.ascontiguousarray(lut, dtype="<i2").view(np.int8) if lut.dtype == np.int16 else lut)
    for k, (lo, hi) in enumerate(parts):
        part = np.ascontiguousarray(w[..., lo:hi])
        prog.load(Buffer.WGT, 8192 * k, part.reshape(oc, kh * kw, -1), (oc, kh * kw, part.shape[3]))
        tile = np.ascontiguousarray(x[..., lo:hi], dtype="<i2").view(np.int8) if i16 else np.ascontiguousarray(x[..., lo:hi])
        prog.load(Buffer.INP, 4096 * k, tile, **padding)
    for k, (lo, hi) in enumerate(parts):
        channels = hi - lo if split else ic
        prog.op(Opcode.CONV, inp=4096 * k, wgt=8192 * k, acc=0, ic=channels, groups=groups, accumulate=k, **geometry)
    fields = dict(zp_out=zp_out, act_min=-128, act_max=127, use_lut=int(lut is not None)) | (post or {})
    prog.op(Opcode.POST, acc=0, par=0, out=60000, lut=256, count=oh * ow, channels=oc, **fields)
    if fields.get("out_i16"):
        return prog.run(Buffer.INP, 60000, (oh, ow, 2 * oc)).view("<i2")
    return prog.run(Buffer.INP, 60000, (oh, ow, oc))
