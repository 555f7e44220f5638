"""Tile sizes for the NPU lowering, derived from the arch's buffer sizes.

Every layer runs tile by tile: LOAD the input tile (and, once per block, weights and
parameters), compute, POST/vector op, STORE. The input buffer holds two input tiles and
two result tiles (ping-pong, so the load and store engines work on one tile while the
compute engine works on the other). The accumulator holds two tiles for the same reason:
POST runs on the store engine and requantizes one while CONV fills the other. Weight,
parameter and table tiles alternate between two halves of their buffers, so the next
block's are loaded while the current block computes.

A plan that cannot fit even the smallest tile raises `TilingError` with the limit hit;
the lowering adds the ONNX node name.
"""

from __future__ import annotations

from dataclasses import dataclass

from ember.target.arch import Arch

MAX_DIM = 0xFFFF
"""Tile extents are u16 instruction fields."""


class TilingError(Exception):
    """No tile fits the on-chip buffers; the message names the limit."""


def window_extent(outputs: int, stride: int, dilation: int, kernel: int) -> int:
    """Input positions a window sweep producing `outputs` positions reads."""
    return (outputs - 1) * stride + dilation * (kernel - 1) + 1


def window_span(o0: int, o1: int, stride: int, dilation: int, kernel: int, pad: int, size: int):
    """For output positions [o0, o1): the real input range [lo, hi) the windows read and
    the padding positions before and after it."""
    start = o0 * stride - pad
    stop = start + window_extent(o1 - o0, stride, dilation, kernel)
    lo, hi = max(start, 0), min(stop, size)
    return lo, hi, lo - start, stop - hi


@dataclass(frozen=True)
class Window:
    """Geometry of a 2-D window op on NHWC tiles (conv or pooling)."""

    out_h: int
    out_w: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)

    def input_extent(self, rows: int, cols: int) -> tuple[int, int]:
        return (
            window_extent(rows, self.stride[0], self.dilation[0], self.kernel[0]),
            window_extent(cols, self.stride[1], self.dilation[1], self.kernel[1]),
        )


@dataclass(frozen=True)
class SpatialTile:
    rows: int
    cols: int


def spatial_tile(window: Window, in_channels: int, out_bytes_per_pixel: int, inp_budget: int, acc_per_pixel: int,
                 acc_budget: int) -> SpatialTile | None:
    """The largest output tile (full rows first, then narrower columns) whose two input
    tiles and two result tiles fit `inp_budget` bytes and whose accumulator fits
    `acc_budget` elements. None if not even one output pixel fits."""

    def fits(rows: int, cols: int) -> bool:
        ih, iw = window.input_extent(rows, cols)
        if max(ih, iw) > MAX_DIM:
            return False
        pixels = rows * cols
        return 2 * (ih * iw * in_channels + pixels * out_bytes_per_pixel) <= inp_budget and (
            pixels * acc_per_pixel <= acc_budget
        )

    cols = min(window.out_w, MAX_DIM)
    while cols >= 1:
        if fits(1, cols):
            lo, hi = 1, min(window.out_h, MAX_DIM)
            while lo < hi:  # the largest row count that fits
                mid = (lo + hi + 1) // 2
                if fits(mid, cols):
                    lo = mid
                else:
                    hi = mid - 1
            return SpatialTile(lo, cols)
        cols = cols // 2 if cols > 1 else 0
    return None


@dataclass(frozen=True)
class ConvTiling:
    """Output channels per block (whole groups when grouped), input channels per
    accumulation step, and the output tile."""

    oc_block: int
    ic_chunk: int
    tile: SpatialTile


def plan_conv(arch: Arch, window: Window, in_channels: int, out_channels: int, groups: int,
              whole_oc: bool = False, in_bytes: int = 1, out_bytes: int = 1) -> ConvTiling:
    """Pick the channel blocking and the output tile of a convolution.

    Output channels are blocked in multiples of the MAC array's columns (channel padding
    happens on chip: a block's last pass is partial); a grouped conv is blocked in whole
    groups. A plain conv whose weights for one column block do not fit half the weight
    buffer accumulates over input-channel chunks. `whole_oc` allows only one block of all
    output channels (a result tile whose STORE needs every channel of a pixel).
    `in_bytes` / `out_bytes`: bytes per input / result element (2 for int16 tiles)."""
    taps = window.kernel[0] * window.kernel[1]
    icg, ocg = in_channels // groups, out_channels // groups
    wgt_half = arch.weight_buffer_bytes // 2
    par_half = arch.param_buffer_bytes // 4 // 2
    acc_half = arch.acc_buffer_bytes // 4 // 2
    cols = arch.mac_cols

    candidates: list[tuple[int, int, int]] = []  # (oc_block, ic_chunk, input channels loaded)
    if groups == 1:
        blocks = sorted({out_channels} | {k * cols for k in range(1, -(-out_channels // cols))}, reverse=True)
        for oc in blocks:
            ic = in_channels
            while oc * taps * ic > wgt_half and ic > 1:
                ic = -(-ic // 2)
            if oc * taps * ic <= wgt_half and 3 * oc <= par_half:
                candidates.append((oc, ic, ic))
        # whole input channels first (no partial sums), then the widest block
        candidates.sort(key=lambda c: (-c[1], -c[0]))
    else:
        g = groups
        while g >= 1:
            if g * ocg * taps * icg <= wgt_half and 3 * g * ocg <= par_half:
                candidates.append((g * ocg, icg, g * icg))
            g = g // 2 if g > 1 else 0
    if whole_oc:
        candidates = [c for c in candidates if c[0] == out_channels]

    for oc_block, ic_chunk, loaded in candidates:
        tile = spatial_tile(window, loaded * in_bytes, oc_block * out_bytes, arch.input_buffer_bytes, oc_block, acc_half)
        if tile is not None:
            return ConvTiling(oc_block, ic_chunk, tile)
    if not candidates:
        raise TilingError(
            f"the weights of one group ({ocg * taps * icg} bytes) exceed half the weight buffer ({wgt_half} bytes)"
        )
    ih, iw = window.input_extent(1, 1)
    raise TilingError(
        f"one output pixel needs a {ih}x{iw} input window that does not fit the input buffer"
        f" ({arch.input_buffer_bytes} bytes) twice"
    )


def plan_vector(arch: Arch, window: Window, channels: int, in_bytes: int = 1, acc_per_pixel: int = 0) -> SpatialTile:
    """The output tile of a vector op (POOL, RESIZE, ELTW, copies) whose input tiles hold
    `in_bytes` bytes per channel of an input pixel (2 for ELTW's two int8 operands, or
    for one int16 tile) and whose result has `channels` int8 channels."""
    acc_elems = arch.acc_buffer_bytes // 4
    tile = spatial_tile(window, in_bytes * channels, channels, arch.input_buffer_bytes, acc_per_pixel, acc_elems)
    if tile is None:
        ih, iw = window.input_extent(1, 1)
        raise TilingError(
            f"one output pixel needs {ih}x{iw}x{channels} input bytes, more than the input buffer"
            f" ({arch.input_buffer_bytes} bytes) holds twice"
        )
    return tile
