"""Collects the instructions and DRAM regions of a program while quant ops are lowered.

The builder knows three things the per-op lowerings share: the region table (tensors and
constant blocks, by name), the rotation of weight/parameter/accumulator/table slots
between the halves of their on-chip buffers, and how DMA boxes over NHWC tensors are
spelled.
`finish` turns everything into npu ops and module attributes (see `npu_memory`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation

from ember.dialects.npu import op_from_instruction
from ember.lowering.npu_memory import ARCH_ATTR, REGION_ATTR, Region, write_regions
from ember.target import isa
from ember.target.arch import Arch
from ember.target.isa import Buffer, Opcode


@dataclass(frozen=True)
class TensorView:
    """An activation tensor in DRAM as the NPU sees it: `rows x cols x channels` int8 (or
    int16: `elem_bytes` = 2, little-endian), dense NHWC (a 4-D NCHW tensor with N = 1) or
    row-major (other ranks, the last axis as channels). Offsets and strides count
    elements; DMA boxes count bytes (`load_tile`, `store_tile`)."""

    region: str
    rows: int
    cols: int
    channels: int
    elem_bytes: int = 1

    @property
    def row_stride(self) -> int:
        return self.cols * self.channels

    def offset(self, row: int, col: int, channel: int = 0) -> int:
        return (row * self.cols + col) * self.channels + channel

    def box(self, rows: tuple[int, int], cols: tuple[int, int], chans: tuple[int, int]):
        """(byte offset, byte sizes, byte strides) of a rows x cols x channels box: an
        int16 box moves as `2 * channels` bytes per pixel."""
        e = self.elem_bytes
        sizes = (rows[1] - rows[0], cols[1] - cols[0], (chans[1] - chans[0]) * e)
        return e * self.offset(rows[0], cols[0], chans[0]), sizes, (e * self.row_stride, e * self.channels, 1)


@dataclass
class _Emitted:
    insn: isa.Instruction
    region: str
    node: str
    origin: str


class ProgramBuilder:
    """The program under construction, in program order."""

    def __init__(self, arch: Arch):
        self.arch = arch
        self.regions: dict[str, Region] = {}
        self.code: list[_Emitted] = []
        self.node = ""
        self.origin = ""
        self._weight_half = 0
        self._param_half = 0
        self._acc_half = 0
        self._lut_slot = 0
        self._consts: dict[bytes, str] = {}
        self.tile_phase = 0
        """Parity of the next layer's first tile slot (see quant_to_npu._Slots)."""

    # ------------------------------------------------------------------ regions

    def add_region(self, region: Region) -> Region:
        if region.name in self.regions:
            raise ValueError(f"region {region.name!r} defined twice")
        self.regions[region.name] = region
        return region

    def const(self, name: str, data: np.ndarray) -> str:
        """A constant block holding `data`'s little-endian bytes; returns its region name.
        Identical blocks (weights shared by two layers, equal tables) are stored once."""
        raw = np.ascontiguousarray(data).tobytes()
        if raw in self._consts:
            return self._consts[raw]
        unique, k = name, 1
        while unique in self.regions:
            unique, k = f"{name}#{k}", k + 1
        self.add_region(Region(unique, "const", len(raw), data=raw, producer=self.node))
        self._consts[raw] = unique
        return unique

    # ------------------------------------------------------------- on-chip slots

    def weight_slot(self) -> int:
        """Element address of the next weight tile (alternating buffer halves)."""
        self._weight_half ^= 1
        return self._weight_half * (self.arch.weight_buffer_bytes // 2)

    def param_slot(self) -> int:
        self._param_half ^= 1
        return self._param_half * (self.arch.param_buffer_bytes // 4 // 2)

    def acc_slot(self) -> int:
        """Element address of the next accumulator tile (alternating buffer halves): the
        store engine requantizes one half (POST) while the compute engine fills the other."""
        self._acc_half ^= 1
        return self._acc_half * (self.arch.acc_buffer_bytes // 4 // 2)

    def lut_slot(self, size: int = 256) -> int:
        """Byte address of the next table of `size` bytes: tables rotate through 256-byte
        slots, a larger one takes consecutive slots (an int16 table's 1026 bytes, 5)."""
        slots, need = self.arch.lut_buffer_bytes // 256, -(-size // 256)
        start = (self._lut_slot + 1) % slots
        if start + need > slots:
            start = 0
        self._lut_slot = start + need - 1  # the last slot taken
        return start * 256

    # ------------------------------------------------------------- instructions

    def emit(self, opcode: Opcode, region: str = "", **fields: int) -> None:
        self.code.append(_Emitted(isa.make(opcode, **fields), region, self.node, self.origin))

    def load(
        self,
        buf: Buffer,
        sram: int,
        region: str,
        offset: int,
        sizes: tuple[int, int, int],
        strides: tuple[int, int, int],
        pads: tuple[int, int, int, int] = (0, 0, 0, 0),
        pad_value: int = 0,
    ) -> None:
        """A LOAD of a 3-D box; `pads` = (top, bottom, left, right) rows/columns of
        `pad_value` around it on chip."""
        top, bottom, left, right = pads
        self.emit(
            Opcode.LOAD, region, dram=offset, sram=sram, stride0=strides[0], stride1=strides[1], stride2=strides[2],
            size0=sizes[0], size1=sizes[1], size2=sizes[2], buf=buf, pad_top=top, pad_bottom=bottom, pad_left=left,
            pad_right=right, pad_value=pad_value,
        )  # fmt: skip

    def store(self, sram: int, region: str, offset: int, sizes: tuple[int, int, int], strides: tuple[int, int, int]):
        """A STORE of a dense int8 tile of the input buffer to a 3-D DRAM box."""
        self.emit(
            Opcode.STORE, region, dram=offset, sram=sram, stride0=strides[0], stride1=strides[1], stride2=strides[2],
            size0=sizes[0], size1=sizes[1], size2=sizes[2], buf=Buffer.INP,
        )  # fmt: skip

    def load_tile(self, sram: int, view: TensorView, rows: tuple[int, int], cols: tuple[int, int],
                  chans: tuple[int, int], pads: tuple[int, int, int, int] = (0, 0, 0, 0), pad_value: int = 0) -> None:
        """LOAD rows x cols x channels (half-open ranges) of an NHWC tensor, padded (an int16
        tile pads with zero bytes: its zero point is 0)."""
        offset, sizes, strides = view.box(rows, cols, chans)
        self.load(Buffer.INP, sram, view.region, offset, sizes, strides, pads, pad_value)

    def store_tile(self, sram: int, view: TensorView, rows: tuple[int, int], cols: tuple[int, int],
                   chans: tuple[int, int]) -> None:
        offset, sizes, strides = view.box(rows, cols, chans)
        self.store(sram, view.region, offset, sizes, strides)

    def load_const(self, buf: Buffer, sram: int, region: str, elements: int, offset: int = 0) -> None:
        """LOAD a dense run of `elements` buffer elements of a constant block."""
        esize = isa.BUFFER_DTYPES[buf].itemsize
        cols = 1
        while elements // cols > 0xFFFF or elements % cols:  # split into rows of <= 65535
            cols += 1
        self.load(buf, sram, region, offset, (1, elements // cols, cols), (elements * esize, cols * esize, esize))

    # ------------------------------------------------------------------- output

    def finish(self, module: ModuleOp, lowered: Operation) -> None:
        """Replace the lowered function by the program (other functions, the host parts of
        a cropped model, stay) and record arch and regions on the module."""
        self.node, self.origin = "", ""
        self.emit(Opcode.END)
        ops = []
        for item in self.code:
            op = op_from_instruction(item.insn, item.node, item.origin)
            if item.region:
                op.attributes[REGION_ATTR] = StringAttr(item.region)
            ops.append(op)
        lowered.detach()
        lowered.erase()
        module.body.block.add_ops(ops)
        module.attributes[ARCH_ATTR] = StringAttr(self.arch.name)
        write_regions(module, list(self.regions.values()))
