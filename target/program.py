"""Static facts about a decoded program: tile geometry, memory footprints, validity.

Every instruction's memory accesses are known before it runs, so structural errors
(a zero-sized DMA, groups that do not divide the channels, a bad enum value) and
out-of-range accesses are found up front, each reported with the instruction index, its
opcode and the ONNX node it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ember.support.diagnostics import EmberError
from ember.target.arch import Arch
from ember.target.isa import (
    BUFFER_DTYPES,
    LUT8_ENTRIES,
    LUT16_ENTRIES,
    Buffer,
    EltwMode,
    Engine,
    Instruction,
    Opcode,
    PixelFormat,
    PoolMode,
    PostLut,
    Token,
)
from ember.target.kernels import conv_output_size

DRAM = 0
"""The memory space number of DRAM; on-chip spaces are numbered by `isa.Buffer`."""

SPACE_NAMES = {DRAM: "DRAM", **{int(b): b.name.lower() for b in Buffer}}


@dataclass(frozen=True)
class Access:
    """A half-open range [start, stop) of one memory space in its address units: bytes for
    DRAM and the int8 buffers (int16 data in `inp` and `lut` spans two per element), int32
    elements for `acc` and `par`."""

    space: int
    start: int
    stop: int
    write: bool


def dma_span(insn: Instruction) -> tuple[int, int]:
    """The DRAM byte range a LOAD or STORE touches: the bounding range of its strided box."""
    esize = BUFFER_DTYPES[Buffer(insn.buf)].itemsize
    last = (insn.size0 - 1) * insn.stride0 + (insn.size1 - 1) * insn.stride1 + (insn.size2 - 1) * insn.stride2
    return insn.dram, insn.dram + last + esize


def load_tile_shape(insn: Instruction) -> tuple[int, int, int]:
    """The on-chip [rows, columns, channels] that a LOAD writes, padding included."""
    return (
        insn.pad_top + insn.size0 + insn.pad_bottom,
        insn.pad_left + insn.size1 + insn.pad_right,
        insn.size2,
    )


def conv_output_shape(insn: Instruction) -> tuple[int, int, int]:
    return (
        conv_output_size(insn.ih, insn.kh, insn.sh, insn.dh),
        conv_output_size(insn.iw, insn.kw, insn.sw, insn.dw),
        insn.oc,
    )


def pool_output_shape(insn: Instruction) -> tuple[int, int, int]:
    return (
        conv_output_size(insn.ih, insn.kh, insn.sh, 1),
        conv_output_size(insn.iw, insn.kw, insn.sw, 1),
        insn.channels,
    )


def check_structure(insn: Instruction) -> str | None:
    """Why the instruction is malformed, or None."""
    op = insn.opcode
    fmt = insn.format
    for f in fmt.fields:
        if f.enum is not None and insn.fields[f.name] not in {int(v) for v in f.enum}:
            return f"{f.name} = {insn.fields[f.name]} is not a valid {f.enum.__name__}"
    engine = insn.engine
    allowed = {
        Engine.LOAD: Token.POP_NEXT | Token.PUSH_NEXT,
        Engine.COMPUTE: Token(15),
        Engine.STORE: Token.POP_PREV | Token.PUSH_PREV,
    }[engine]
    if insn.tokens & ~allowed:
        return f"the {engine.name.lower()} engine has no queue for tokens {int(insn.tokens & ~allowed):#x}"
    if op in (Opcode.LOAD, Opcode.STORE):
        if min(insn.size0, insn.size1, insn.size2) == 0:
            return "every DMA size must be at least 1"
    elif op == Opcode.CONV:
        if min(insn.ih, insn.iw, insn.ic, insn.oc, insn.groups, insn.kh, insn.kw, insn.sh, insn.sw, insn.dh, insn.dw) == 0:
            return "sizes, groups, kernel, stride and dilation must be at least 1"
        if insn.ic % insn.groups or insn.oc % insn.groups:
            return f"groups = {insn.groups} must divide ic = {insn.ic} and oc = {insn.oc}"
        if min(conv_output_shape(insn)[:2]) < 1:
            return "the kernel does not fit in the input tile"
    elif op in (Opcode.POST, Opcode.ELTW):
        if min(insn.count, insn.channels) == 0:
            return "count and channels must be at least 1"
        if op == Opcode.POST and (problem := _check_post_types(insn)):
            return problem
    elif op == Opcode.POOL:
        if min(insn.ih, insn.iw, insn.channels, insn.kh, insn.kw, insn.sh, insn.sw) == 0:
            return "sizes, kernel and stride must be at least 1"
        if min(pool_output_shape(insn)[:2]) < 1:
            return "the window does not fit in the input tile"
    elif op == Opcode.RESIZE:
        if min(insn.ih, insn.iw, insn.oh, insn.ow, insn.channels) == 0:
            return "sizes must be at least 1"
    elif op == Opcode.PREPROC:
        if min(insn.height, insn.width) == 0:
            return "height and width must be at least 1"
        if insn.pixel_format == PixelFormat.NV12 and (insn.height % 2 or insn.width % 2):
            return "an NV12 frame needs even height and width"
    if op in _INT16_FLAGS and (problem := _check_i16(insn)):
        return problem
    if op in (Opcode.POST, Opcode.ELTW, Opcode.POOL, Opcode.RESIZE) and insn.act_min > insn.act_max:
        return "act_min is greater than act_max"
    if op in (Opcode.ELTW, Opcode.POOL, Opcode.RESIZE) and not (op == Opcode.POOL and insn.mode == PoolMode.SUM):
        shifts = [insn.shift_out] if op == Opcode.ELTW else [insn.shift]
        if op == Opcode.ELTW and insn.mode == 0:
            shifts += [insn.shift_a, insn.shift_b]
        if any(not 1 <= s <= 62 for s in shifts):
            return "every rescale shift must be in [1, 62]"
    return None


def _odd(name: str, value: int) -> str:
    return f"{name} = {value} is odd; int16 data needs an even byte address"


_INT16_FLAGS = {
    # opcode: (flag, zero point of the int16 operand, its even addresses, the mode that reads it)
    Opcode.CONV: ("in_i16", "in_zp", ("inp",), None),
    Opcode.ELTW: ("a_i16", "zp_a", ("a",), EltwMode.MUL),
    Opcode.POOL: ("in_i16", "zp_in", ("inp",), PoolMode.SUM),
    Opcode.PREPROC: ("out_i16", None, ("out", "lut"), None),
}
"""The int16 flag of CONV, ELTW, POOL and PREPROC (POST's `out_i16`: `_check_post_types`)."""


def _check_i16(insn: Instruction) -> str | None:
    """Why the instruction's int16 flag is not usable, or None: it is 0 or 1; set, it needs
    the mode that reads int16, a zero point of 0 (int16 data is symmetric) and even byte
    addresses for the int16 data."""
    flag, zero_point, addresses, mode = _INT16_FLAGS[insn.opcode]
    if (value := getattr(insn, flag)) > 1:
        return f"{flag} = {value} is not 0 or 1"
    if not value:
        return None
    if mode is not None and insn.mode != mode:
        return f"{flag} = 1 with mode {type(mode)(insn.mode).name.lower()}; only {mode.name.lower()} reads int16"
    if zero_point and (zp := getattr(insn, zero_point)):
        return f"{zero_point} = {zp} with {flag} = 1; int16 inputs are symmetric ({zero_point} must be 0)"
    return next((_odd(a, getattr(insn, a)) for a in addresses if getattr(insn, a) % 2), None)


def _check_post_types(insn: Instruction) -> str | None:
    """Why POST's result type, table mode and clamp do not go together, or None: an int8
    result takes no table or the int8 one and a clamp within int8 (the table's domain);
    an int16 result no table or the int16 one (whose domain is all of int16)."""
    if insn.out_i16 > 1:
        return f"out_i16 = {insn.out_i16} is not 0 or 1"
    if insn.use_lut not in {int(mode) for mode in PostLut}:
        return f"use_lut = {insn.use_lut} is not 0 (no table), 1 (int8 table) or 2 (int16 table)"
    if insn.out_i16:
        if insn.use_lut == PostLut.INT8:
            return "use_lut = 1 (int8 table) with out_i16 = 1; an int16 result takes use_lut 0 or 2"
        if insn.out % 2:
            return _odd("out", insn.out)
    else:
        if insn.use_lut == PostLut.INT16:
            return "use_lut = 2 (int16 table) with out_i16 = 0; an int8 result takes use_lut 0 or 1"
        if insn.act_min < -128 or insn.act_max > 127:
            return f"act_min = {insn.act_min}, act_max = {insn.act_max} exceed the int8 result range [-128, 127]"
    if insn.use_lut == PostLut.INT16 and insn.lut % 2:
        return _odd("lut", insn.lut)
    return None


def accesses(insn: Instruction) -> list[Access]:
    """The memory ranges an instruction reads and writes (structure must be valid)."""
    op = insn.opcode
    if op == Opcode.LOAD:
        rows, cols, chans = load_tile_shape(insn)
        return [Access(DRAM, *dma_span(insn), False), Access(insn.buf, insn.sram, insn.sram + rows * cols * chans, True)]
    if op == Opcode.STORE:
        n = insn.size0 * insn.size1 * insn.size2
        return [Access(insn.buf, insn.sram, insn.sram + n, False), Access(DRAM, *dma_span(insn), True)]
    if op == Opcode.CONV:
        oh, ow, oc = conv_output_shape(insn)
        out = Access(Buffer.ACC, insn.acc, insn.acc + oh * ow * oc, True)
        input_bytes = insn.ih * insn.iw * insn.ic * (2 if insn.in_i16 else 1)
        found = [
            Access(Buffer.INP, insn.inp, insn.inp + input_bytes, False),
            Access(Buffer.WGT, insn.wgt, insn.wgt + oc * insn.kh * insn.kw * (insn.ic // insn.groups), False),
            out,
        ]
        if insn.accumulate:
            found.append(Access(Buffer.ACC, out.start, out.stop, False))
        return found
    if op == Opcode.POST:
        n = insn.count * insn.channels
        found = [
            Access(Buffer.ACC, insn.acc, insn.acc + n, False),
            Access(Buffer.PAR, insn.par, insn.par + 3 * insn.channels, False),
            Access(Buffer.INP, insn.out, insn.out + n * (2 if insn.out_i16 else 1), True),
        ]
        if insn.use_lut:
            table_bytes = LUT16_ENTRIES * 2 if insn.use_lut == PostLut.INT16 else LUT8_ENTRIES
            found.append(Access(Buffer.LUT, insn.lut, insn.lut + table_bytes, False))
        return found
    if op == Opcode.ELTW:
        n = insn.count * insn.channels
        nb = insn.channels if insn.broadcast_b else n
        return [
            Access(Buffer.INP, insn.a, insn.a + n * (2 if insn.a_i16 else 1), False),
            Access(Buffer.INP, insn.b, insn.b + nb, False),
            Access(Buffer.INP, insn.out, insn.out + n, True),
        ]
    if op == Opcode.POOL:
        oh, ow, c = pool_output_shape(insn)
        found = [Access(Buffer.INP, insn.inp, insn.inp + insn.ih * insn.iw * c * (2 if insn.in_i16 else 1), False)]
        if insn.mode == PoolMode.SUM:
            found.append(Access(Buffer.ACC, insn.out, insn.out + oh * ow * c, True))
            if insn.accumulate:
                found.append(Access(Buffer.ACC, insn.out, insn.out + oh * ow * c, False))
        else:
            found.append(Access(Buffer.INP, insn.out, insn.out + oh * ow * c, True))
            if insn.use_lut:
                found.append(Access(Buffer.LUT, insn.lut, insn.lut + 256, False))
        return found
    if op == Opcode.RESIZE:
        c = insn.channels
        return [
            Access(Buffer.INP, insn.inp, insn.inp + insn.ih * insn.iw * c, False),
            Access(Buffer.INP, insn.out, insn.out + insn.oh * insn.ow * c, True),
        ]
    if op == Opcode.PREPROC:
        pixels, elem = insn.height * insn.width, 2 if insn.out_i16 else 1  # bytes per table entry and result
        found = [
            Access(Buffer.LUT, insn.lut, insn.lut + 3 * 256 * elem, False),
            Access(Buffer.INP, insn.out, insn.out + 3 * pixels * elem, True),
        ]
        if insn.pixel_format == PixelFormat.NV12:
            found += [
                Access(Buffer.INP, insn.inp, insn.inp + pixels, False),
                Access(Buffer.INP, insn.uv, insn.uv + pixels // 2, False),
            ]
        else:
            found.append(Access(Buffer.INP, insn.inp, insn.inp + 3 * pixels, False))
        return found
    return []


def validate(
    program: Sequence[Instruction],
    arch: Arch,
    dram_size: int,
    describe: Callable[[int], str],
) -> list[list[Access]]:
    """Check structure and bounds of every instruction; return each one's accesses.

    The program must end with its only END. Raises EmberError naming the first offender."""
    ends = [i for i, insn in enumerate(program) if insn.opcode == Opcode.END]
    if not program or ends != [len(program) - 1]:
        raise EmberError("CODE: a program must end with exactly one END instruction")
    sizes = {DRAM: dram_size}
    for buf in Buffer:
        sizes[int(buf)] = arch.buffer_bytes(buf) // BUFFER_DTYPES[buf].itemsize
    footprints = []
    for i, insn in enumerate(program):
        problem = check_structure(insn)
        if problem:
            raise EmberError(f"{describe(i)}: {problem}")
        found = accesses(insn)
        for acc in found:
            if acc.stop > sizes[acc.space]:
                kind = "write" if acc.write else "read"
                raise EmberError(
                    f"{describe(i)}: out-of-range {kind} of {SPACE_NAMES[acc.space]} [{acc.start}, {acc.stop})"
                    f" (size {sizes[acc.space]})"
                )
        footprints.append(found)
    return footprints
