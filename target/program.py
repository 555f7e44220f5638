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
from ember.target.isa import BUFFER_DTYPES, Buffer, Engine, Instruction, Opcode, PixelFormat, PoolMode, Token
from ember.target.kernels import conv_output_size

DRAM = 0
"""The memory space number of DRAM; on-chip spaces are numbered by `isa.Buffer`."""

SPACE_NAMES = {DRAM: "DRAM", **{int(b): b.name.lower() for b in Buffer}}


@dataclass(frozen=True)
class Access:
    """A half-open element range [start, stop) of one memory space (DRAM counts bytes)."""

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
    if op in (Opcode.POST, Opcode.ELTW, Opcode.POOL, Opcode.RESIZE) and insn.act_min > insn.act_max:
        return "act_min is greater than act_max"
    if op in (Opcode.ELTW, Opcode.POOL, Opcode.RESIZE) and not (op == Opcode.POOL and insn.mode == PoolMode.SUM):
        shifts = [insn.shift_out] if op == Opcode.ELTW else [insn.shift]
        if op == Opcode.ELTW and insn.mode == 0:
            shifts += [insn.shift_a, insn.shift_b]
        if any(not 1 <= s <= 62 for s in shifts):
            return "every rescale shift must be in [1, 62]"
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
        found = [
            Access(Buffer.INP, insn.inp, insn.inp + insn.ih * insn.iw * insn.ic, False),
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
            Access(Buffer.INP, insn.out, insn.out + n, True),
        ]
        if insn.use_lut:
            found.append(Access(Buffer.LUT, insn.lut, insn.lut + 256, False))
        return found
    if op == Opcode.ELTW:
        n = insn.count * insn.channels
        nb = insn.channels if insn.broadcast_b else n
        return [
            Access(Buffer.INP, insn.a, insn.a + n, False),
            Access(Buffer.INP, insn.b, insn.b + nb, False),
            Access(Buffer.INP, insn.out, insn.out + n, True),
        ]
    if op == Opcode.POOL:
        oh, ow, c = pool_output_shape(insn)
        found = [Access(Buffer.INP, insn.inp, insn.inp + insn.ih * insn.iw * c, False)]
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
        pixels = insn.height * insn.width
        found = [
            Access(Buffer.LUT, insn.lut, insn.lut + 3 * 256, False),
            Access(Buffer.INP, insn.out, insn.out + 3 * pixels, True),
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
