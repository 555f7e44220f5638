"""The Ember NPU instruction set: opcodes, engines, enums and the binary record layout.

This is the one definition that the `npu` dialect, the `.ebin` writer, the simulator, the
assembler and docs/isa.md share. Every instruction is a fixed 64-byte little-endian
record: a 4-byte header (opcode, dependency-token flags, reserved) followed by the
opcode's fields at naturally aligned offsets. A program decodes with one `np.frombuffer`
into `RECORD_DTYPE`; each opcode's fields are then read through a view of the same bytes
with that opcode's structured dtype (`FORMATS[op].dtype`).

Addresses of on-chip buffers count elements of the buffer (int8 for `inp`, `wgt`, `lut`;
int32 for `acc` and `par`); DRAM addresses and strides count bytes. `inp` and `lut` also
hold int16 data (a16w8 layers, as TFLite's 16x8 mode): 2 bytes per element, little-endian,
at an even address of the byte-addressed buffer, with zero point 0.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ember.support.diagnostics import EmberError

ISA_VERSION = 4
RECORD_SIZE = 64
HEADER_SIZE = 4


class Opcode(enum.IntEnum):
    LOAD = 1
    STORE = 2
    CONV = 3
    POST = 4
    ELTW = 5
    POOL = 6
    RESIZE = 7
    PREPROC = 8
    SYNC = 9
    END = 10


class Engine(enum.IntEnum):
    """The three in-order engines. Token queues connect neighbours only:
    load <-> compute <-> store (VTA's scheme). POST runs on the store engine: the
    requantization epilogue is applied as results leave the accumulator (Gemmini's
    scale-on-store, NVDLA's SDP), so it overlaps the next tile's CONV instead of
    following it on the compute engine."""

    LOAD = 0
    COMPUTE = 1
    STORE = 2


class Buffer(enum.IntEnum):
    """On-chip buffers and their element types (see `BUFFER_DTYPES`)."""

    INP = 1
    WGT = 2
    ACC = 3
    PAR = 4
    LUT = 5


BUFFER_DTYPES: dict[Buffer, np.dtype] = {
    Buffer.INP: np.dtype(np.int8),
    Buffer.WGT: np.dtype(np.int8),
    Buffer.ACC: np.dtype("<i4"),
    Buffer.PAR: np.dtype("<i4"),
    Buffer.LUT: np.dtype(np.int8),
}


class EltwMode(enum.IntEnum):
    ADD = 0
    MUL = 1


class PoolMode(enum.IntEnum):
    MAX = 0
    AVG = 1
    SUM = 2


class ResizeMode(enum.IntEnum):
    NEAREST = 0
    BILINEAR = 1


class PixelFormat(enum.IntEnum):
    RGB = 0
    BGR = 1
    NV12 = 2


class ChannelOrder(enum.IntEnum):
    RGB = 0
    BGR = 1


class Token(enum.IntFlag):
    """Dependency-token flags in header byte 1. `prev`/`next` name the neighbouring
    engine in the chain load -> compute -> store."""

    POP_PREV = 1
    POP_NEXT = 2
    PUSH_PREV = 4
    PUSH_NEXT = 8


TOKEN_NAMES = ("pop_prev", "pop_next", "push_prev", "push_next")

RESIZE_FRAC_BITS = 16
"""RESIZE source coordinates are signed fixed point with this many fraction bits."""
BILINEAR_WEIGHT_BITS = 10
"""Bilinear interpolation weights keep the top 10 fraction bits of the coordinate."""
ELTW_ADD_LEFT_SHIFT = 20
"""ELTW add scales each centred input by 2^20 before rescaling it (TFLite's scheme)."""


class PostLut(enum.IntEnum):
    """The values of POST's `use_lut`. The field stays a plain number (the listing and the
    `npu` dialect print it as one, as in ISA version 1); program.py checks its range."""

    NONE = 0
    INT8 = 1
    """256 int8 entries, result lut8[y + 128]"""
    INT16 = 2
    """513 int16 entries interpolated as TFLite's int16 LUT (`LUT16_FRAC_BITS`)"""


LUT8_ENTRIES = 256
LUT16_ENTRIES = 513
"""The int16 table: a knot every 2^7 inputs over [-32768, 32768], 1026 bytes."""
LUT16_FRAC_BITS = 7
"""Input bits below the int16 table's knot index: the interpolation weight."""


@dataclass(frozen=True)
class Field:
    """One field of an instruction record: name, little-endian numpy type, byte offset
    (filled in by `Format`), the enum whose values it holds (if any) and a one-line doc."""

    name: str
    type: str
    doc: str
    enum: type[enum.IntEnum] | None = None
    offset: int = 0

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.type)


@dataclass(frozen=True)
class Format:
    """The record layout of one opcode."""

    opcode: Opcode
    engine: Engine | None
    doc: str
    fields: tuple[Field, ...]
    dtype: np.dtype = field(init=False)

    def __post_init__(self) -> None:
        placed: list[Field] = []
        offset = HEADER_SIZE
        for f in self.fields:
            size = f.dtype.itemsize
            offset = (offset + size - 1) // size * size
            placed.append(Field(f.name, f.type, f.doc, f.enum, offset))
            offset += size
        assert offset <= RECORD_SIZE, f"{self.opcode.name} does not fit in {RECORD_SIZE} bytes"
        names = ["opcode", "tokens"] + [f.name for f in placed]
        formats = ["u1", "u1"] + [f.type for f in placed]
        offsets = [0, 1] + [f.offset for f in placed]
        object.__setattr__(self, "fields", tuple(placed))
        object.__setattr__(
            self,
            "dtype",
            np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": RECORD_SIZE}),
        )

    @property
    def mnemonic(self) -> str:
        return self.opcode.name.lower()

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


def _dma_fields(direction: str) -> tuple[Field, ...]:
    pads = (
        (
            Field("pad_top", "u1", "rows of padding written above the tile"),
            Field("pad_bottom", "u1", "rows of padding written below the tile"),
            Field("pad_left", "u1", "columns of padding written left of the tile"),
            Field("pad_right", "u1", "columns of padding written right of the tile"),
            Field("pad_value", "i1", "value of the padding elements (sign-extended for int32 buffers)"),
        )
        if direction == "load"
        else ()
    )
    return (
        Field("dram", "<u4", "DRAM byte address of element (0, 0, 0)"),
        Field("sram", "<u4", "element address of the dense tile in the on-chip buffer"),
        Field("stride0", "<u4", "DRAM byte stride of dimension 0 (rows)"),
        Field("stride1", "<u4", "DRAM byte stride of dimension 1 (columns)"),
        Field("stride2", "<u4", "DRAM byte stride of dimension 2 (channels)"),
        Field("size0", "<u2", "elements in dimension 0 (rows), >= 1"),
        Field("size1", "<u2", "elements in dimension 1 (columns), >= 1"),
        Field("size2", "<u2", "elements in dimension 2 (channels), >= 1"),
        Field("buf", "u1", "on-chip buffer", Buffer),
        *pads,
    )


_CLAMP = (
    Field("act_min", "i1", "lower clamp of the int8 result"),
    Field("act_max", "i1", "upper clamp of the int8 result"),
)

FORMATS: dict[Opcode, Format] = {
    f.opcode: f
    for f in (
        Format(
            Opcode.LOAD,
            Engine.LOAD,
            "3-D strided DMA from DRAM into a dense on-chip tile, with padding",
            _dma_fields("load"),
        ),
        Format(
            Opcode.STORE,
            Engine.STORE,
            "3-D strided DMA from a dense on-chip tile to DRAM",
            _dma_fields("store"),
        ),
        Format(
            Opcode.CONV,
            Engine.COMPUTE,
            "grouped 2-D convolution of an int8 or int16 tile into the int32 accumulator",
            (
                Field("inp", "<u4", "input tile [ih, iw, ic] in `inp` (already padded)"),
                Field("wgt", "<u4", "weights [oc, kh, kw, ic/groups] in `wgt`"),
                Field("acc", "<u4", "output [oh, ow, oc] in `acc`"),
                Field("ih", "<u2", "input tile height"),
                Field("iw", "<u2", "input tile width"),
                Field("ic", "<u2", "input channels"),
                Field("oc", "<u2", "output channels"),
                Field("groups", "<u2", "groups (ic for depthwise); divides ic and oc"),
                Field("kh", "u1", "kernel height"),
                Field("kw", "u1", "kernel width"),
                Field("sh", "u1", "vertical stride"),
                Field("sw", "u1", "horizontal stride"),
                Field("dh", "u1", "vertical dilation"),
                Field("dw", "u1", "horizontal dilation"),
                Field("in_zp", "i1", "input zero point, subtracted from every input element (0 if in_i16)"),
                Field("accumulate", "u1", "1: add to the accumulator, 0: overwrite it"),
                Field("in_i16", "u1", "1: the input tile is int16 (even address, twice the compute cycles)"),
            ),
        ),
        Format(
            Opcode.POST,
            Engine.STORE,
            "requantize int32 accumulators to int8 or int16, optionally through a lookup table",
            (
                Field("acc", "<u4", "accumulators [count, channels] in `acc`"),
                Field("par", "<u4", "bias[channels], multiplier[channels], shift[channels] in `par`"),
                Field("out", "<u4", "result [count, channels] in `inp`: int8, or int16 (even address) if out_i16"),
                Field("lut", "<u4", "table in `lut`: 256 int8 entries (use_lut = 1), 513 int16 (use_lut = 2, even address)"),
                Field("count", "<u4", "pixels"),
                Field("channels", "<u2", "channels"),
                Field("act_min", "<i2", "lower clamp of the result (within int8 unless out_i16)"),
                Field("act_max", "<i2", "upper clamp of the result (within int8 unless out_i16)"),
                Field("zp_out", "i1", "output zero point"),
                Field("use_lut", "u1", "0: none, 1: int8 table, 2: interpolated int16 table (`isa.PostLut`)"),
                Field("out_i16", "u1", "1: the result is int16, 0: int8"),
            ),
        ),
        Format(
            Opcode.ELTW,
            Engine.COMPUTE,
            "elementwise add or multiply of two int8 tiles (for mul, a may be int16) with per-input rescale",
            (
                Field("a", "<u4", "first operand [count, channels] in `inp`"),
                Field("b", "<u4", "second operand [count, channels] (or [channels] if broadcast) in `inp`"),
                Field("out", "<u4", "int8 result [count, channels] in `inp`"),
                Field("count", "<u4", "pixels"),
                Field("mult_a", "<i4", "add: rescale multiplier of a (unused for mul)"),
                Field("mult_b", "<i4", "add: rescale multiplier of b (unused for mul)"),
                Field("mult_out", "<i4", "output multiplier"),
                Field("channels", "<u2", "channels"),
                Field("shift_a", "u1", "add: rescale shift of a"),
                Field("shift_b", "u1", "add: rescale shift of b"),
                Field("shift_out", "u1", "output shift"),
                Field("zp_a", "i1", "zero point of a"),
                Field("zp_b", "i1", "zero point of b"),
                Field("zp_out", "i1", "output zero point"),
                *_CLAMP,
                Field("mode", "u1", "add or mul", EltwMode),
                Field("broadcast_b", "u1", "1: b holds one pixel, repeated over count"),
                Field("a_i16", "u1", "mul: 1: a is int16 (zp_a 0, even address)"),
            ),
        ),
        Format(
            Opcode.POOL,
            Engine.COMPUTE,
            "max, average or sum pooling of an int8 tile (for sum, int16 too), with excluded padding borders",
            (
                Field("inp", "<u4", "input tile [ih, iw, channels] in `inp`"),
                Field("out", "<u4", "result [oh, ow, channels]: int8 in `inp`, or int32 in `acc` for sum"),
                Field("lut", "<u4", "256-entry int8 table in `lut` (max/avg, used when use_lut = 1)"),
                Field("multiplier", "<i4", "max/avg: output rescale multiplier"),
                Field("ih", "<u2", "input tile height"),
                Field("iw", "<u2", "input tile width"),
                Field("channels", "<u2", "channels"),
                Field("kh", "<u2", "window height"),
                Field("kw", "<u2", "window width"),
                Field("sh", "u1", "vertical stride"),
                Field("sw", "u1", "horizontal stride"),
                Field("pad_top", "u1", "rows at the top of the tile that are padding (not counted)"),
                Field("pad_bottom", "u1", "rows at the bottom of the tile that are padding"),
                Field("pad_left", "u1", "columns at the left of the tile that are padding"),
                Field("pad_right", "u1", "columns at the right of the tile that are padding"),
                Field("shift", "u1", "max/avg: output rescale shift"),
                Field("zp_in", "i1", "input zero point"),
                Field("zp_out", "i1", "max/avg: output zero point"),
                *_CLAMP,
                Field("mode", "u1", "max, avg or sum", PoolMode),
                Field("use_lut", "u1", "max/avg: 1 maps the clamped result through the table"),
                Field("accumulate", "u1", "sum: 1 adds to the accumulator, 0 overwrites it"),
                Field("in_i16", "u1", "sum: 1: the input tile is int16 (zp_in 0, even address)"),
            ),
        ),
        Format(
            Opcode.RESIZE,
            Engine.COMPUTE,
            "nearest or bilinear resize of an int8 tile with fixed-point source coordinates",
            (
                Field("inp", "<u4", "input tile [ih, iw, channels] in `inp`"),
                Field("out", "<u4", "int8 result [oh, ow, channels] in `inp`"),
                Field("step_y", "<i4", "source rows per output row, Q16"),
                Field("offset_y", "<i4", "source row of output row 0, Q16"),
                Field("step_x", "<i4", "source columns per output column, Q16"),
                Field("offset_x", "<i4", "source column of output column 0, Q16"),
                Field("multiplier", "<i4", "output rescale multiplier"),
                Field("ih", "<u2", "input tile height"),
                Field("iw", "<u2", "input tile width"),
                Field("oh", "<u2", "output tile height"),
                Field("ow", "<u2", "output tile width"),
                Field("channels", "<u2", "channels"),
                Field("shift", "u1", "output rescale shift"),
                Field("zp_in", "i1", "input zero point"),
                Field("zp_out", "i1", "output zero point"),
                *_CLAMP,
                Field("mode", "u1", "nearest or bilinear", ResizeMode),
            ),
        ),
        Format(
            Opcode.PREPROC,
            Engine.COMPUTE,
            "raw uint8 camera frame -> int8 (or int16) NHWC through per-channel 256-entry tables",
            (
                Field("inp", "<u4", "packed pixels [h, w, 3], or the NV12 Y plane [h, w], in `inp`"),
                Field("uv", "<u4", "NV12 interleaved UV plane [h/2, w/2, 2] in `inp`"),
                Field("out", "<u4", "result [h, w, 3] in `inp`: int8, or int16 (even address) if out_i16"),
                Field(
                    "lut",
                    "<u4",
                    "three 256-entry tables, one per output channel, in `lut`: int8, or int16 (even address) if out_i16",
                ),
                Field("height", "<u2", "rows (even for nv12)"),
                Field("width", "<u2", "columns (even for nv12)"),
                Field("pixel_format", "u1", "pixel format of the frame", PixelFormat),
                Field("order", "u1", "channel order of the result", ChannelOrder),
                Field(
                    "out_i16",
                    "u1",
                    "1: int16 result [h, w, 3] (2 bytes per element, little-endian, even address) through three"
                    " 256-entry int16 tables (512 bytes each, even address), 0: int8",
                ),
            ),
        ),
        Format(
            Opcode.SYNC,
            None,
            "no work: only pops and pushes dependency tokens on the given engine",
            (Field("engine", "u1", "engine that executes it", Engine),),
        ),
        Format(Opcode.END, Engine.COMPUTE, "end of program; the NPU stops when every engine is idle", ()),
    )
}

RECORD_DTYPE = np.dtype(
    {"names": ["opcode", "tokens"], "formats": ["u1", "u1"], "offsets": [0, 1], "itemsize": RECORD_SIZE}
)
"""The common view of a record: enough to dispatch on the opcode."""

MNEMONICS: dict[str, Opcode] = {fmt.mnemonic: op for op, fmt in FORMATS.items()}


@dataclass(frozen=True)
class Instruction:
    """A decoded instruction: opcode, token flags and its fields as Python ints."""

    opcode: Opcode
    tokens: Token
    fields: dict[str, int]

    @property
    def format(self) -> Format:
        return FORMATS[self.opcode]

    @property
    def engine(self) -> Engine:
        """The engine that executes this instruction."""
        fmt = self.format
        return Engine(self.fields["engine"]) if fmt.engine is None else fmt.engine

    def __getattr__(self, name: str) -> int:
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None


def make(opcode: Opcode, tokens: Token | int = 0, **values: int) -> Instruction:
    """Build an instruction; fields not given are zero. Unknown field names raise."""
    fmt = FORMATS[opcode]
    names = {f.name for f in fmt.fields}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{fmt.mnemonic}: unknown fields {sorted(unknown)}")
    return Instruction(opcode, Token(tokens), {f.name: int(values.get(f.name, 0)) for f in fmt.fields})


def encode(program: Sequence[Instruction]) -> bytes:
    """Encode instructions as consecutive 64-byte records (reserved bytes zero).
    Raises ValueError when a field value does not fit its type."""
    out = np.zeros(len(program), dtype=RECORD_DTYPE)
    by_opcode: dict[Opcode, list[int]] = {}
    for i, insn in enumerate(program):
        by_opcode.setdefault(insn.opcode, []).append(i)
    for op, where in by_opcode.items():
        fmt = FORMATS[op]
        typed = out.view(fmt.dtype)
        typed["opcode"][where] = int(op)
        typed["tokens"][where] = [int(program[i].tokens) for i in where]
        for f in fmt.fields:
            column = [program[i].fields[f.name] for i in where]
            info = np.iinfo(f.dtype)
            for i, value in zip(where, column, strict=True):
                if not info.min <= value <= info.max:
                    raise ValueError(f"instruction {i} ({fmt.mnemonic}): {f.name} = {value} does not fit {f.dtype}")
            typed[f.name][where] = column
    return out.tobytes()


def decode(code: bytes, source: str = "CODE") -> list[Instruction]:
    """Decode a whole program (one `np.frombuffer`, then one typed view per opcode).

    Raises EmberError for a size that is not a multiple of the record size, an unknown
    opcode or undefined token bits."""
    if len(code) % RECORD_SIZE:
        raise EmberError(f"{source}: {len(code)} bytes is not a whole number of {RECORD_SIZE}-byte instructions")
    records = np.frombuffer(code, dtype=RECORD_DTYPE)
    opcodes = records["opcode"]
    known = np.isin(opcodes, [int(op) for op in Opcode])
    if not known.all():
        i = int(np.argmin(known))
        raise EmberError(f"{source}: instruction {i} has unknown opcode {int(opcodes[i])}; the binary is corrupt")
    bad_tokens = records["tokens"] > 15
    if bad_tokens.any():
        i = int(np.argmax(bad_tokens))
        raise EmberError(f"{source}: instruction {i} sets undefined token bits; the binary is corrupt")
    program: list[Instruction | None] = [None] * len(records)
    for op in np.unique(opcodes):
        fmt = FORMATS[Opcode(int(op))]
        where = np.flatnonzero(opcodes == op)
        typed = records.view(fmt.dtype)[where]
        names = [f.name for f in fmt.fields]
        for i, row in zip(where.tolist(), typed.tolist(), strict=True):
            program[i] = Instruction(fmt.opcode, Token(row[1]), dict(zip(names, row[2:], strict=True)))
    return program  # type: ignore[return-value]


def token_names(tokens: Token | int) -> list[str]:
    """The names of the set token flags, in header-bit order."""
    return [name for bit, name in enumerate(TOKEN_NAMES) if int(tokens) >> bit & 1]


def tokens_from_names(names: Iterable[str]) -> Token:
    value = Token(0)
    for name in names:
        value |= Token(1 << TOKEN_NAMES.index(name))
    return value
