"""The Ember NPU simulator: runs a `.ebin` instruction by instruction, bit-exactly.

Loading a binary checks everything that can be checked before running: structure and
bounds of each instruction (`program.validate`), the token discipline and memory ordering
between engines, and the cycle schedule (`schedule.schedule`). Running then only moves
tiles and calls the integer kernels of `kernels.py`, one numpy call per tile.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from ember.support.blas import single_threaded_blas
from ember.support.diagnostics import EmberError
from ember.target import kernels
from ember.target.cost import dma_bytes, macs
from ember.target.ebin import Ebin
from ember.target.isa import (
    BUFFER_DTYPES,
    LUT8_ENTRIES,
    LUT16_ENTRIES,
    Buffer,
    ChannelOrder,
    EltwMode,
    Engine,
    Instruction,
    Opcode,
    PixelFormat,
    PoolMode,
    PostLut,
    ResizeMode,
)
from ember.target.program import DRAM, conv_output_shape, load_tile_shape, pool_output_shape, validate
from ember.target.schedule import Schedule, schedule



@dataclass(frozen=True)
class Stats:
    """Static figures of one inference (the schedule does not depend on the data)."""

    instructions: dict[str, int]
    total_cycles: int
    engine_cycles: dict[str, int]
    macs: int
    mac_utilization: float
    dram_read_bytes: int
    dram_write_bytes: int
    layer_cycles: dict[str, int]
    clock_mhz: int
    layer_compute_cycles: dict[str, int]
    """Per layer: busy cycles of its compute-engine instructions."""
    layer_macs: dict[str, int]
    mac_array: int
    """MACs the array does per cycle (rows x columns)."""

    @property
    def npu_ms(self) -> float:
        """Estimated NPU latency of one inference in milliseconds."""
        return self.total_cycles / (self.clock_mhz * 1000.0)

    def layer_utilization(self, layer: str) -> float:
        """The layer's MACs / (its compute-engine cycles x MAC array): how full the array is
        while the layer computes (0 for a layer without compute or MACs)."""
        busy = self.layer_compute_cycles.get(layer, 0)
        return self.layer_macs.get(layer, 0) / (busy * self.mac_array) if busy else 0.0


class Simulator:
    """A loaded, checked program ready to run any number of inferences."""

    def __init__(self, ebin: Ebin, source: str = "model.ebin"):
        self.ebin = ebin
        self.source = source
        self.arch = ebin.arch
        self.program = ebin.program
        self.dram_size = int(ebin.memmap["dram_size"])
        self.footprints = validate(self.program, self.arch, self.dram_size, self.describe)
        self.schedule: Schedule = schedule(self.program, self.footprints, self.arch, self.describe)
        for kind in ("inputs", "outputs"):
            for desc in ebin.iodesc.get(kind, []):
                if int(desc["offset"]) + self._nbytes(desc) > self.dram_size:
                    raise EmberError(f"{source}: IODESC {kind[:-1]} '{desc['name']}' lies outside DRAM; rebuild the binary")
        self._dump_after = self._dump_points()
        self._machine = _Machine(self)
        self._lock = threading.Lock()

    def describe(self, i: int) -> str:
        """'instruction 12 (conv, node 'conv1')': how errors name an instruction."""
        node = self.ebin.debug[i][1] if i < len(self.ebin.debug) else ""
        where = f", node '{node}'" if node else ""
        return f"{self.source}: instruction {i} ({self.program[i].format.mnemonic}{where})"

    @staticmethod
    def _nbytes(desc: Mapping[str, Any]) -> int:
        return int(np.prod(desc["shape"], dtype=np.int64)) * np.dtype(desc["dtype"]).itemsize

    def _dump_points(self) -> dict[int, list[dict[str, Any]]]:
        """For each tensor region of MEMMAP: the last instruction of its producer node that
        writes into it (or the last writer at all if no producer is named)."""
        points: dict[int, list[dict[str, Any]]] = {}
        rank = {i: k for k, i in enumerate(self.schedule.order)}
        for region in self.ebin.memmap.get("regions", []):
            if "shape" not in region:
                continue
            lo, hi = int(region["offset"]), int(region["offset"]) + int(region["size"])
            writers = [
                i
                for i, found in enumerate(self.footprints)
                if any(a.space == DRAM and a.write and a.start < hi and lo < a.stop for a in found)
                and (not region.get("producer") or self.ebin.debug[i][1] == region["producer"])
            ]
            if writers:
                points.setdefault(max(writers, key=rank.__getitem__), []).append(region)
        return points

    def stats(self) -> Stats:
        """Instruction counts, cycles, MAC utilization, DRAM traffic and per-layer cycles."""
        sched = self.schedule
        counts = Counter(insn.format.mnemonic.upper() for insn in self.program)
        engine_cycles = {
            name: int(sched.cost[sched.engines == e].sum()) for e, name in enumerate(("load", "compute", "store"))
        }
        total_macs = sum(macs(insn) for insn in self.program)
        array = self.arch.mac_rows * self.arch.mac_cols
        layers: Counter[str] = Counter()
        compute: Counter[str] = Counter()
        layer_macs: Counter[str] = Counter()
        for i, (_, node) in enumerate(self.ebin.debug):
            name = node or "(none)"
            layers[name] += int(sched.cost[i])
            if sched.engines[i] == Engine.COMPUTE:
                compute[name] += int(sched.cost[i])
            layer_macs[name] += macs(self.program[i])
        read = sum(dma_bytes(insn) for insn in self.program if insn.opcode == Opcode.LOAD)
        written = sum(dma_bytes(insn) for insn in self.program if insn.opcode == Opcode.STORE)
        total = sched.total_cycles
        return Stats(
            instructions=dict(sorted(counts.items())),
            total_cycles=total,
            engine_cycles=engine_cycles,
            macs=total_macs,
            mac_utilization=total_macs / (total * array) if total else 0.0,
            dram_read_bytes=read,
            dram_write_bytes=written,
            layer_cycles=dict(layers),
            clock_mhz=self.arch.clock_mhz,
            layer_compute_cycles=dict(compute),
            layer_macs=dict(layer_macs),
            mac_array=array,
        )

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        trace: IO[str] | None = None,
        dump: Callable[[str, np.ndarray], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """One inference. `inputs` maps IODESC input names to arrays of exactly the
        described shape and dtype. `trace` receives one line per instruction in execution
        order; `dump(name, array)` receives each MEMMAP tensor once its producer is done.
        OpenBLAS runs on one thread meanwhile (`single_threaded_blas` says why). One
        inference at a time, on the `ember-npu` thread (`kernels.npu_thread` says why):
        the simulator's machine is reused."""
        with self._lock:
            return kernels.npu_thread(self._inference, inputs, trace, dump)

    def _inference(self, inputs, trace, dump) -> dict[str, np.ndarray]:
        with single_threaded_blas():
            self._machine.reset(inputs)
            return self._run(self._machine, trace, dump)

    def _run(
        self,
        machine: _Machine,
        trace: IO[str] | None,
        dump: Callable[[str, np.ndarray], None] | None,
    ) -> dict[str, np.ndarray]:
        sched, steps = self.schedule, machine.steps
        for i in sched.order:
            step = steps[i]
            try:
                if step is not None:
                    step()
            except ValueError as err:
                raise EmberError(f"{self.describe(i)}: {err}") from None
            if trace is not None:
                node = self.ebin.debug[i][1]
                trace.write(
                    f"{i:6d} {('load', 'compute', 'store')[sched.engines[i]]:<7} {self.program[i].format.mnemonic:<7}"
                    f" start={sched.start[i]} end={sched.end[i]} node={node}\n"
                )
            if dump is not None:
                for region in self._dump_after.get(i, []):
                    dump(region["name"], machine.read_dram(region))
        return {desc["name"]: machine.read_dram(desc) for desc in self.ebin.iodesc.get("outputs", [])}


class _Fields:
    """An instruction's fields as plain attributes: read many times while binding, they
    are faster here than through `Instruction.__getattr__`."""

    def __init__(self, insn: Instruction):
        self.__dict__.update(insn.fields)


Step = Callable[[], None]
"""One instruction bound to the machine: its tiles are views made once, at load time."""


class _Machine:
    """DRAM and on-chip buffers, and each instruction bound to them as a `Step`.

    A simulator keeps one machine for all its inferences: the instruction addresses are
    static, so every view an instruction reads or writes is made once, and an inference
    only resets the memories (DRAM to zeros + CONST, buffers to zeros: a fresh machine's
    state) and runs the steps."""

    def __init__(self, sim: Simulator):
        ebin = sim.ebin
        self.initial_dram = np.zeros(sim.dram_size, dtype=np.uint8)
        offset = int(ebin.memmap.get("const_offset", 0))
        self.initial_dram[offset : offset + len(ebin.const)] = np.frombuffer(ebin.const, dtype=np.uint8)
        self.dram = self.initial_dram.copy()
        self.buffers = {
            buf: np.zeros(sim.arch.buffer_bytes(buf) // dtype.itemsize, dtype=dtype) for buf, dtype in BUFFER_DTYPES.items()
        }
        self.inputs = {desc["name"]: desc for desc in ebin.iodesc.get("inputs", [])}
        self.steps: list[Step | None] = []
        for i, insn in enumerate(sim.program):
            binder = _BINDERS.get(insn.opcode)
            try:
                self.steps.append(binder(self, _Fields(insn)) if binder is not None else None)
            except ValueError as err:
                raise EmberError(f"{sim.describe(i)}: {err}") from None

    def reset(self, inputs: Mapping[str, np.ndarray]) -> None:
        """A fresh machine's memories, with `inputs` written where IODESC places them."""
        unknown = sorted(set(inputs) - set(self.inputs))
        if unknown:
            raise EmberError(
                f"input '{unknown[0]}': the model has no such input; its inputs are {', '.join(sorted(self.inputs))}"
            )
        values = {}
        for name, desc in self.inputs.items():
            if name not in inputs:
                raise EmberError(f"input '{name}': missing; pass --input {name}=file.npy")
            value = np.asarray(inputs[name])
            shape = [int(d) for d in desc["shape"]]
            if list(value.shape) != shape or value.dtype != np.dtype(desc["dtype"]):
                raise EmberError(
                    f"input '{name}': expected shape {shape} {desc['dtype']}, got {list(value.shape)} {value.dtype};"
                    " quantize and lay out the input as IODESC describes"
                )
            values[name] = value
        np.copyto(self.dram, self.initial_dram)
        for buffer in self.buffers.values():
            buffer.fill(0)
        for name, value in values.items():
            start = int(self.inputs[name]["offset"])
            raw = np.ascontiguousarray(value).view(np.uint8).ravel()
            self.dram[start : start + raw.size] = raw

    def read_dram(self, desc: Mapping[str, Any]) -> np.ndarray:
        dtype = np.dtype(desc["dtype"])
        start = int(desc["offset"])
        count = int(np.prod(desc["shape"], dtype=np.int64))
        return self.dram[start : start + count * dtype.itemsize].view(dtype).reshape(desc["shape"]).copy()

    def tile(self, buf: Buffer, addr: int, shape: tuple[int, ...], i16: bool = False) -> np.ndarray:
        """A writable view of a dense tile of an on-chip buffer; with `i16`, of an int16
        tile at byte address `addr` of `inp` or `lut` (little-endian, `validate` has
        checked the address is even, so the view is aligned)."""
        if i16:
            return self.buffers[buf][addr : addr + 2 * math.prod(shape)].view("<i2").reshape(shape)
        return self.buffers[buf][addr : addr + math.prod(shape)].reshape(shape)

    def _dram_box(self, insn: _Fields) -> np.ndarray:
        """The DMA's DRAM box as a [size0, size1, size2] view in the buffer's element type
        (byte strides need not be multiples of the element size; `validate` has checked
        the box lies in DRAM, and the ndarray constructor checks it again)."""
        return np.ndarray(
            (insn.size0, insn.size1, insn.size2),
            BUFFER_DTYPES[Buffer(insn.buf)],
            buffer=self.dram,
            offset=insn.dram,
            strides=(insn.stride0, insn.stride1, insn.stride2),
        )

    def load(self, insn: _Fields) -> Step:
        dest = self.tile(Buffer(insn.buf), insn.sram, load_tile_shape(insn))
        top, left, rows, cols = insn.pad_top, insn.pad_left, insn.size0, insn.size1
        inner, box = dest[top : top + rows, left : left + cols], self._dram_box(insn)
        pads = [dest[:top], dest[top + rows :], dest[top : top + rows, :left], dest[top : top + rows, left + cols :]]
        pads = [pad for pad in pads if pad.size]
        pad_value = insn.pad_value

        def step() -> None:
            np.copyto(inner, box)
            for pad in pads:
                pad.fill(pad_value)

        return step

    def store(self, insn: _Fields) -> Step:
        box, tile = self._dram_box(insn), self.tile(Buffer(insn.buf), insn.sram, (insn.size0, insn.size1, insn.size2))
        return lambda: np.copyto(box, tile)

    def conv(self, insn: _Fields) -> Step:
        x = self.tile(Buffer.INP, insn.inp, (insn.ih, insn.iw, insn.ic), bool(insn.in_i16))
        w = self.tile(Buffer.WGT, insn.wgt, (insn.oc, insn.kh, insn.kw, insn.ic // insn.groups))
        out = self.tile(Buffer.ACC, insn.acc, conv_output_shape(insn))
        geometry = ((insn.sh, insn.sw), (insn.dh, insn.dw), insn.groups)
        conv = kernels.Conv(x.shape, w.shape, insn.in_zp, *geometry, insn.accumulate, bool(insn.in_i16))
        return lambda: conv(out, x, w)

    def post(self, insn: _Fields) -> Step:
        n, c = insn.count, insn.channels
        params = self.tile(Buffer.PAR, insn.par, (3, c))
        lut = None
        if insn.use_lut == PostLut.INT8:
            lut = self.tile(Buffer.LUT, insn.lut, (LUT8_ENTRIES,))
        elif insn.use_lut == PostLut.INT16:
            lut = self.tile(Buffer.LUT, insn.lut, (LUT16_ENTRIES,), True)
        acc, out = self.tile(Buffer.ACC, insn.acc, (n, c)), self.tile(Buffer.INP, insn.out, (n, c), bool(insn.out_i16))
        clamp = (insn.zp_out, insn.act_min, insn.act_max)
        return lambda: kernels.post_into(out, acc, params, *clamp, lut)

    def eltw(self, insn: _Fields) -> Step:
        n, c = insn.count, insn.channels
        a = self.tile(Buffer.INP, insn.a, (n, c), bool(insn.a_i16))
        b = self.tile(Buffer.INP, insn.b, (1, c) if insn.broadcast_b else (n, c))
        out = self.tile(Buffer.INP, insn.out, (n, c))
        tail = (insn.mult_out, insn.shift_out, insn.zp_out, insn.act_min, insn.act_max)
        if insn.a_i16:  # 2^16 x 2^8 operand pairs: computed, not looked up
            return lambda: np.copyto(out, kernels.eltw_mul(a, b, insn.zp_a, insn.zp_b, tail[:2], *tail[2:]))
        if insn.mode == EltwMode.ADD:  # the parameters are fields: the table is made once
            table = kernels.eltw_table("add", insn.zp_a, insn.zp_b, insn.mult_a, insn.shift_a, insn.mult_b, insn.shift_b, *tail)
        else:
            table = kernels.eltw_table("mul", insn.zp_a, insn.zp_b, *tail)
        if np.shares_memory(out, a) or np.shares_memory(out, b):
            # the instruction reads both operands before it writes: go through a scratch tile
            scratch = np.empty_like(out)

            def step() -> None:
                kernels.pair_lookup_into(scratch, table, a, b)
                np.copyto(out, scratch)

            return step
        return lambda: kernels.pair_lookup_into(out, table, a, b)

    def pool(self, insn: _Fields) -> Step:
        x = self.tile(Buffer.INP, insn.inp, (insn.ih, insn.iw, insn.channels), bool(insn.in_i16))
        window = ((insn.kh, insn.kw), (insn.sh, insn.sw), (insn.pad_top, insn.pad_bottom, insn.pad_left, insn.pad_right))
        if insn.mode == PoolMode.SUM:
            acc = self.tile(Buffer.ACC, insn.out, pool_output_shape(insn))
            if insn.accumulate:
                return lambda: np.add(acc, kernels.pool_sum(x, *window, insn.zp_in).astype(np.int32), out=acc)
            return lambda: np.copyto(acc, kernels.pool_sum(x, *window, insn.zp_in).astype(np.int32))
        out = self.tile(Buffer.INP, insn.out, pool_output_shape(insn))
        lut = self.tile(Buffer.LUT, insn.lut, (256,)) if insn.use_lut else None
        average, rescale = insn.mode == PoolMode.AVG, (insn.multiplier, insn.shift)
        tail = (insn.zp_in, rescale, insn.zp_out, insn.act_min, insn.act_max, lut)
        return lambda: np.copyto(out, kernels.pool(x, average, *window, *tail))

    def resize(self, insn: _Fields) -> Step:
        x = self.tile(Buffer.INP, insn.inp, (insn.ih, insn.iw, insn.channels))
        out = self.tile(Buffer.INP, insn.out, (insn.oh, insn.ow, insn.channels))
        args = (
            insn.mode == ResizeMode.BILINEAR, (insn.oh, insn.ow), (insn.step_y, insn.step_x), (insn.offset_y, insn.offset_x),
            insn.zp_in, (insn.multiplier, insn.shift), insn.zp_out, insn.act_min, insn.act_max,
        )  # fmt: skip
        return lambda: np.copyto(out, kernels.resize(x, *args))

    def preproc(self, insn: _Fields) -> Step:
        h, w = insn.height, insn.width
        fmt = PixelFormat(insn.pixel_format)
        raw = self.buffers[Buffer.INP].view(np.uint8)
        if fmt == PixelFormat.NV12:
            pixels = raw[insn.inp : insn.inp + h * w].reshape(h, w)
            uv = raw[insn.uv : insn.uv + h * w // 2].reshape(h // 2, w // 2, 2)
        else:
            pixels = raw[insn.inp : insn.inp + h * w * 3].reshape(h, w, 3)
            uv = None
        tables = self.tile(Buffer.LUT, insn.lut, (3, 256), bool(insn.out_i16))
        out = self.tile(Buffer.INP, insn.out, (h, w, 3), bool(insn.out_i16))
        order = ChannelOrder(insn.order)
        return lambda: np.copyto(out, kernels.preproc(pixels, uv, fmt, order, tables))


_BINDERS: dict[Opcode, Callable[[_Machine, _Fields], Step]] = {
    Opcode.LOAD: _Machine.load,
    Opcode.STORE: _Machine.store,
    Opcode.CONV: _Machine.conv,
    Opcode.POST: _Machine.post,
    Opcode.ELTW: _Machine.eltw,
    Opcode.POOL: _Machine.pool,
    Opcode.RESIZE: _Machine.resize,
    Opcode.PREPROC: _Machine.preproc,
}
