"""A small program builder for hand-written NPU test programs.

`TileProgram` loads arrays from CONST into on-chip buffers (load engine), runs the given
instructions (CONV, ELTW, POOL ... on the compute engine; POST on the store engine, ahead
of the final STORE), stores one result tile to DRAM, with the tokens that order them,
and returns the stored array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ember.target import isa, kernels
from ember.target.arch import load_arch
from ember.target.ebin import Ebin
from ember.target.isa import Buffer, Opcode, Token
from ember.target.simulator import Simulator


def _dense_dma(opcode: Opcode, buf: Buffer, sram: int, dram: int, shape: tuple[int, int, int], tokens: int, **pads: int):
    esize = isa.BUFFER_DTYPES[buf].itemsize
    rows, cols, chans = shape
    return isa.make(
        opcode,
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


def dense_load(buf: Buffer, sram: int, dram: int, shape: tuple[int, int, int], tokens: int = 0, **pads: int):
    """A LOAD of a dense [rows, cols, channels] DRAM array."""
    return _dense_dma(Opcode.LOAD, buf, sram, dram, shape, tokens, **pads)


def dense_store(buf: Buffer, sram: int, dram: int, shape: tuple[int, int, int], tokens: int = 0):
    """A STORE to a dense [rows, cols, channels] DRAM array."""
    return _dense_dma(Opcode.STORE, buf, sram, dram, shape, tokens)


def as_3d(array: np.ndarray) -> tuple[int, int, int]:
    if array.ndim == 3:
        return array.shape
    return (1, 1, array.size)


class TileProgram:
    """Collects CONST data, loads, compute and POST instructions and one output store."""

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
        # load -> compute -> store: the last LOAD releases the compute engine (a SYNC when
        # only POSTs run, since load and store share no queue), whose last instruction
        # releases the store engine (its POSTs, then the STORE)
        compute = [insn for insn in self.compute if insn.engine == isa.Engine.COMPUTE]
        posts = [insn for insn in self.compute if insn.engine == isa.Engine.STORE]
        if not compute:
            compute = [isa.make(Opcode.SYNC, engine=isa.Engine.COMPUTE)]
        store = dense_store(out_buf, out_sram, out_offset, (rows, cols, chans))
        loads, stored = list(self.loads), [*posts, store]
        for part, index, flag in ((loads, -1, Token.PUSH_NEXT), (compute, 0, Token.POP_PREV),
                                  (compute, -1, Token.PUSH_NEXT), (stored, 0, Token.POP_PREV)):  # fmt: skip
            insn = part[index]
            part[index] = isa.Instruction(insn.opcode, insn.tokens | flag, insn.fields)
        program = loads + compute + stored + [isa.make(Opcode.END)]
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


def two_layer_model() -> tuple[Ebin, np.ndarray, np.ndarray]:
    """A two-layer model: 1x1 conv (3 -> 4 channels) + POST to DRAM tensor 't1', then a
    2x2 max pool of t1 to output 'y'. Returns the binary, a sample input and the
    expected output (computed with numpy)."""
    rng = np.random.default_rng(7)
    w = rng.integers(-128, 128, (4, 3), dtype=np.int8)
    m = np.full(4, 1 << 30)
    s = np.full(4, 36)  # multiplier 2^-6
    par = np.concatenate([np.zeros(4), m, s]).astype("<i4")
    x = rng.integers(-128, 128, (1, 4, 4, 3), dtype=np.int8)
    acc = x.astype(np.int64) @ w.T.astype(np.int64)
    t1 = np.clip((acc * (1 << 30) + (1 << 35)) >> 36, -128, 127)
    y = t1.reshape(1, 2, 2, 2, 2, 4).max(axis=(2, 4)).astype(np.int8)

    const = w.tobytes() + bytes(4) + par.tobytes()
    x_at, t1_at, y_at = 64, 128, 192
    T = Token
    program = [
        dense_load(Buffer.WGT, 0, 0, (1, 4, 3)),
        dense_load(Buffer.PAR, 0, 16, (1, 1, 12)),
        dense_load(Buffer.INP, 0, x_at, (4, 4, 3), T.PUSH_NEXT),
        isa.make(Opcode.CONV, T.POP_PREV | T.PUSH_NEXT, inp=0, wgt=0, acc=0, ih=4, iw=4, ic=3, oc=4, groups=1,
                 kh=1, kw=1, sh=1, sw=1, dh=1, dw=1),  # fmt: skip
        isa.make(Opcode.POST, T.POP_PREV, acc=0, par=0, out=100, count=16, channels=4, act_min=-128, act_max=127),
        dense_store(Buffer.INP, 100, t1_at, (4, 4, 4), T.PUSH_PREV),
        isa.make(Opcode.SYNC, T.POP_NEXT | T.PUSH_PREV, engine=isa.Engine.COMPUTE),
        dense_load(Buffer.INP, 200, t1_at, (4, 4, 4), T.POP_NEXT | T.PUSH_NEXT),
        isa.make(Opcode.POOL, T.POP_PREV | T.PUSH_NEXT, inp=200, out=300, ih=4, iw=4, channels=4, kh=2, kw=2,
                 sh=2, sw=2, multiplier=1 << 30, shift=30, act_min=-128, act_max=127),  # fmt: skip
        dense_store(Buffer.INP, 300, y_at, (2, 2, 4), T.POP_PREV),
        isa.make(Opcode.END),
    ]
    nodes = ["conv1"] * 6 + ["pool1"] * 4 + [""]
    origins = ["quant.conv2d"] * 6 + ["quant.max_pool"] * 4 + [""]
    model = Ebin(
        arch=load_arch("ember16"),
        program=program,
        const=const,
        memmap={
            "dram_size": 256,
            "const_offset": 0,
            "regions": [
                {"name": "const", "kind": "const", "offset": 0, "size": len(const)},
                {"name": "images", "kind": "input", "offset": x_at, "size": 48, "shape": [1, 4, 4, 3], "dtype": "int8"},
                {"name": "t1", "kind": "activation", "offset": t1_at, "size": 64, "shape": [1, 4, 4, 4],
                 "dtype": "int8", "producer": "conv1"},  # fmt: skip
                {"name": "y", "kind": "output", "offset": y_at, "size": 16, "shape": [1, 2, 2, 4], "dtype": "int8",
                 "producer": "pool1"},  # fmt: skip
            ],
        },
        iodesc={
            "inputs": [{"name": "images", "offset": x_at, "shape": [1, 4, 4, 3], "dtype": "int8", "layout": "NHWC",
                        "scale": 0.0186, "zero_point": 0, "pixel_format": "none", "normalization": None}],  # fmt: skip
            "outputs": [{"name": "y", "offset": y_at, "shape": [1, 2, 2, 4], "dtype": "int8", "layout": "NHWC",
                         "scale": 0.25, "zero_point": 0}],  # fmt: skip
        },
        debug=list(zip(origins, nodes, strict=True)),
        meta={"compiler": "hand-written test", "options": {}},
    )
    return model, x, y


@pytest.fixture
def model_files(tmp_path):
    """The two-layer model written to tmp_path: (ebin path, input .npy path, expected y)."""
    from ember.target.ebin import write

    model, x, y = two_layer_model()
    path = tmp_path / "model.ebin"
    write(model, path)
    np.save(tmp_path / "x.npy", x)
    return path, tmp_path / "x.npy", y


@pytest.fixture(params=["one thread", "all threads"])
def kernel_threads(request, monkeypatch):
    """The compiled kernels on one thread (every tile below the parallel thresholds) or
    on all of numba's threads (every tile above them): both paths must give the same bits."""
    size = 2**62 if request.param == "one thread" else 0
    for name in ("PARALLEL_MACS", "PARALLEL_DEPTHWISE_MACS", "PARALLEL_ELEMENTS"):
        monkeypatch.setattr(kernels, name, size)
    return request.param
