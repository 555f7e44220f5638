"""The cycle cost of each instruction on one engine, from the arch constants.

- DMA: `dma_setup_cycles + ceil(bytes / dram_bytes_per_cycle)`.
- CONV: `compute_setup_cycles + passes * oh * ow`. The MAC array takes `mac_rows`
  reduction elements (kernel taps x input channels of one group) and `mac_cols` output
  channels per cycle: `passes = groups * ceil(kh*kw*icg / rows) * ceil(ocg / cols)`.
  A depthwise conv (icg = 1) maps kernel taps to rows and channels to columns:
  `passes = ceil(kh*kw / rows) * ceil(oc / cols)`. An int16 input (`in_i16`) takes two
  passes of each: the int8 MAC array multiplies its low and its high byte separately.
- Vector instructions (POST, ELTW, POOL, RESIZE, PREPROC): `compute_setup_cycles +
  ceil(element operations / vector_lanes)`, where POOL costs one operation per window tap
  and bilinear RESIZE four per output element. An int16 result (POST's or PREPROC's
  `out_i16`) costs the same: the element count, not the bytes, sets the lane work.
- SYNC and END cost one cycle.
"""

from __future__ import annotations

from ember.target.arch import Arch
from ember.target.isa import BUFFER_DTYPES, Buffer, Instruction, Opcode, ResizeMode
from ember.target.program import conv_output_shape, pool_output_shape


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def dma_bytes(insn: Instruction) -> int:
    """Bytes a LOAD or STORE moves over the DRAM interface (padding is generated on chip)."""
    return insn.size0 * insn.size1 * insn.size2 * BUFFER_DTYPES[Buffer(insn.buf)].itemsize


def macs(insn: Instruction) -> int:
    """Useful multiply-accumulates of a CONV (0 for other instructions)."""
    if insn.opcode != Opcode.CONV:
        return 0
    oh, ow, oc = conv_output_shape(insn)
    return oh * ow * oc * insn.kh * insn.kw * (insn.ic // insn.groups)


def cycles(insn: Instruction, arch: Arch) -> int:
    """Busy cycles of the instruction on its engine."""
    op = insn.opcode
    if op in (Opcode.LOAD, Opcode.STORE):
        return arch.dma_setup_cycles + _ceil(dma_bytes(insn), arch.dram_bytes_per_cycle)
    setup = arch.compute_setup_cycles
    lanes = arch.vector_lanes
    if op == Opcode.CONV:
        oh, ow, oc = conv_output_shape(insn)
        icg = insn.ic // insn.groups
        taps = insn.kh * insn.kw
        if icg == 1 and insn.groups > 1:
            passes = _ceil(taps, arch.mac_rows) * _ceil(oc, arch.mac_cols)
        else:
            passes = insn.groups * _ceil(taps * icg, arch.mac_rows) * _ceil(oc // insn.groups, arch.mac_cols)
        if insn.in_i16:
            passes *= 2
        return setup + passes * oh * ow
    if op in (Opcode.POST, Opcode.ELTW):
        return setup + _ceil(insn.count * insn.channels, lanes)
    if op == Opcode.POOL:
        oh, ow, c = pool_output_shape(insn)
        return setup + _ceil(oh * ow * c * insn.kh * insn.kw, lanes)
    if op == Opcode.RESIZE:
        per = 4 if insn.mode == ResizeMode.BILINEAR else 1
        return setup + _ceil(insn.oh * insn.ow * insn.channels * per, lanes)
    if op == Opcode.PREPROC:
        return setup + _ceil(insn.height * insn.width * 3, lanes)
    return 1
