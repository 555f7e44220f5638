"""A small program builder for hand-written NPU test programs.

`TileProgram` loads arrays from CONST into on-chip buffers (load engine), runs compute
instructions, stores one result tile to DRAM (store engine), with the tokens that order
them, and returns the stored array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ember.target import isa
from ember.target.arch import load_arch
from ember.target.ebin import Ebin
from ember.target.isa import Buffer, Opcode, Token
from ember.target.simulator import Simulator


def dense_load(buf: Buffer, sram: int, dram: int, shape: tuple[int, int, int], tokens: int = 0, **pads: int):
    """A LOAD of a dense [rows, cols, channels] DRAM array."""
    esize = isa.BUFFER_DTYPES[buf].itemsize
    rows, cols, chans = shape
    return isa.make(
        Opcode.LOAD,
        tokens,
        dram=dram,
        sram=sram,
        stride0=cols * chans * esize,
        stride1=chans * esize,
        stride2=esize,
        size0=rows,
        size1=cols,
        size2=chans,
        buf=buf,
        **pads,
    )


def dense_store(buf: Buffer, sram: int, dram: int, shape: tuple[int, int, int], tokens: int = 0):
    esize = isa.BUFFER_DTYPES[buf].itemsize
    rows, cols, chans = shape
    return isa.make(
        Opcode.STORE,
        tokens,
        dram=dram,
        sram=sram,
        stride0=cols * chans * esize,
        stride1=chans * esize,
        stride2=esize,
        size0=rows,
        size1=cols,
        size2=chans,
        buf=buf,
    )


def as_3d(array: np.ndarray) -> tuple[int, int, int]:
    if array.ndim == 3:
        return array.shape
    return (1, 1, array.size)


class TileProgram:
    """Collects CONST data, loads, compute instructions and one output store."""

    def __init__(self, arch: str = "ember16"):
        self.arch = load_arch(arch)
        self.const = bytearray()
        self.loads: list[isa.Instruction] = []
        self.compute: list[isa.Instruction] = []

    def data(self, array: np.ndarray) -> int:
        """Append an array to CONST (16-byte aligned); return its DRAM offset."""
        offset = len(self.const)
        self.const += np.ascontiguousarray(array).tobytes()
        self.const += bytes(-len(self.const) % 16)
        return offset

    def load(self, buf: Buffer, sram: int, array: np.ndarray, shape: tuple[int, int, int] | None = None, **pads: int):
        array = np.ascontiguousarray(array, dtype=isa.BUFFER_DTYPES[buf])
        self.loads.append(dense_load(buf, sram, self.data(array), shape or as_3d(array), **pads))

    def op(self, opcode: Opcode, **fields: int) -> None:
        self.compute.append(isa.make(opcode, **fields))

    def ebin(self, out_buf: Buffer, out_sram: int, out_shape: tuple[int, ...]) -> Ebin:
        rows, cols, chans = out_shape if len(out_shape) == 3 else (1, 1, int(np.prod(out_shape)))
        dtype = isa.BUFFER_DTYPES[out_buf]
        out_offset = len(self.const) + 64
        loads = list(self.loads)
        loads[-1] = isa.Instruction(Opcode.LOAD, loads[-1].tokens | Token.PUSH_NEXT, loads[-1].fields)
        compute = list(self.compute)
        compute[0] = isa.Instruction(compute[0].opcode, compute[0].tokens | Token.POP_PREV, compute[0].fields)
        compute[-1] = isa.Instruction(compute[-1].opcode, compute[-1].tokens | Token.PUSH_NEXT, compute[-1].fields)
        store = dense_store(out_buf, out_sram, out_offset, (rows, cols, chans), Token.POP_PREV)
        program = loads + compute + [store, isa.make(Opcode.END)]
        nbytes = rows * cols * chans * dtype.itemsize
        return Ebin(
            arch=self.arch,
            program=program,
            const=bytes(self.const),
            memmap={"dram_size": out_offset + nbytes, "const_offset": 0, "regions": []},
            iodesc={
                "inputs": [],
                "outputs": [{"name": "y", "offset": out_offset, "shape": list(out_shape), "dtype": str(dtype.newbyteorder("="))}],
            },
            debug=[("test.op", f"node{i}") for i in range(len(program))],
        )

    def run(self, out_buf: Buffer, out_sram: int, out_shape: tuple[int, ...]) -> np.ndarray:
        return Simulator(self.ebin(out_buf, out_sram, out_shape), "test.ebin").run({})["y"]


@pytest.fixture
def tile_program() -> type[TileProgram]:
    return TileProgram


@pytest.fixture
def helpers() -> dict[str, Any]:
    return {"dense_load": dense_load, "dense_store": dense_store}
