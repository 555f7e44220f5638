"""`npu-preproc`: the NPU takes raw uint8 camera frames for an input and normalizes them
itself with PREPROC (docs/isa.md).

    lower-quant-to-npu,npu-preproc{input=x format=bgr mean=127.5 std=127.5},npu-allocate,npu-schedule

Runs between `lower-quant-to-npu` and `npu-allocate`. The lowered program reads the int8
(or int16) NHWC input region `input` (1 x H x W x 3); this pass turns that region into scratch and
gives the binary a new input of the same name: the uint8 frame, packed `[1, H, W, 3]` in
`rgb` / `bgr`, or for `nv12` the Y plane followed by the interleaved UV plane,
`[1, H * 3 / 2, W]`. The program then starts with row tiles of LOAD (frame) -> PREPROC ->
STORE (int8, or int16 with PREPROC's `out_i16` and int16 tables) into the old region.

The three tables give, for channel k of the model (RGB order, as calibration reads
images) and each pixel value v, exactly what the host would feed: `(v - mean[k]) /
std[k]` in float32 (`ember.frontend.samples.Normalization`), quantized to the input's
scale and zero point by ONNX QuantizeLinear (float32, round half to even). So a frame
through PREPROC and the same pixels normalized on the host give the same int8 tensor,
and the same outputs bit for bit.

The IODESC entry of the input records `dtype = uint8`, the layout (`HWC` or `NV12`), the
pixel format, the normalization and `normalized_dtype` (int8 or int16: what PREPROC
writes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, FloatAttr, ModuleOp, StringAttr, f64
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from ember.dialects.npu import NpuInstructionOp, op_from_instruction
from ember.frontend.samples import Normalization
from ember.interpreters.quant_reference import quantize
from ember.lowering.npu_memory import REGION_ATTR, Region, module_arch, read_regions, write_regions
from ember.support.diagnostics import EmberError
from ember.target import isa
from ember.target.arch import load_arch
from ember.target.isa import Buffer, ChannelOrder, Opcode, PixelFormat

FORMATS = {"rgb": PixelFormat.RGB, "bgr": PixelFormat.BGR, "nv12": PixelFormat.NV12}


def preproc_tables(normalization: Normalization, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """[3, 256] of `dtype` (int8 or int16): row k maps a pixel value of channel k to the
    quantized input."""
    levels = np.broadcast_to(np.arange(256, dtype=np.float32).reshape(1, 1, 1, 256), (1, 3, 1, 256))
    normalized = normalization.apply(levels)  # mean/std broadcast: one value or one per channel
    info = np.iinfo(dtype)
    return quantize(normalized, scale, zero_point, None, info.min, info.max).reshape(3, 256)


def frame_shape(height: int, width: int, pixel_format: str) -> tuple[int, ...]:
    """The IODESC shape of a raw frame input."""
    return (1, height * 3 // 2, width) if pixel_format == "nv12" else (1, height, width, 3)


def _row_tile(height: int, width: int, pixel_format: str, capacity: int, out_bytes: int) -> int:
    """The most rows per tile such that two tiles of frame and result fit the input buffer."""
    frame_bytes = 1.5 if pixel_format == "nv12" else 3
    rows = int(capacity // (2 * width * (frame_bytes + 3 * out_bytes)))
    if pixel_format == "nv12":
        rows -= rows % 2
    if rows < (2 if pixel_format == "nv12" else 1):
        raise EmberError(f"npu-preproc: a row of {width} pixels does not fit the input buffer twice")
    return min(rows, height)


@dataclass(frozen=True)
class NpuPreprocPass(ModulePass):
    """Raw uint8 frames for `input`, converted and normalized on the NPU by PREPROC.

    `format`: rgb | bgr | nv12. `mean`, `std`: `(pixel - mean) / std` on the 0..255
    scale, one value or one per channel, in the model's RGB channel order."""

    name = "npu-preproc"

    input: str
    format: str = "rgb"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.format not in FORMATS:
            raise EmberError(f"npu-preproc: pixel format '{self.format}' is not one of {', '.join(FORMATS)}")
        normalization = Normalization(tuple(map(float, self.mean)), tuple(map(float, self.std)))
        if any(len(v) not in (1, 3) for v in (normalization.mean, normalization.std)):
            raise EmberError("npu-preproc: mean and std take one value or three (one per channel)")
        regions = read_regions(op)
        found = [r for r in regions if r.kind == "input" and r.name == self.input]
        if not found:
            names = ", ".join(r.name for r in regions if r.kind == "input") or "none"
            raise EmberError(f"npu-preproc: the program has no input '{self.input}' (inputs: {names}); run lower-quant-to-npu first")
        source = found[0]
        if len(source.shape) != 4 or source.shape[0] != 1 or source.shape[3] != 3:
            raise EmberError(f"npu-preproc: input '{self.input}' is {'x'.join(map(str, source.shape))}, PREPROC needs 1 x 3 x H x W")
        _, height, width, _ = source.shape
        if self.format == "nv12" and (height % 2 or width % 2):
            raise EmberError(f"npu-preproc: nv12 frames need an even height and width, '{self.input}' is {height}x{width}")
        assert source.scale is not None and source.zero_point is not None
        dtype = source.dtype  # an int16 input (read only by convolutions) gets int16 tables and results

        node = f"{self.input}.preproc"
        scratch = f"{self.input}.normalized"
        for instruction in op.ops:
            if isinstance(instruction, NpuInstructionOp) and instruction.attributes.get(REGION_ATTR) == StringAttr(self.input):
                instruction.attributes[REGION_ATTR] = StringAttr(scratch)
        tables = preproc_tables(normalization, source.scale, source.zero_point, dtype)
        frame = Region(
            self.input, "input", int(np.prod(frame_shape(height, width, self.format))),
            frame_shape(height, width, self.format), "NV12" if self.format == "nv12" else "HWC", "",
            source.scale, source.zero_point,
            extra={
                "dtype": StringAttr("uint8"),
                "pixel_format": StringAttr(self.format),
                "normalized_dtype": StringAttr(dtype),
                "normalization": DictionaryAttr({
                    key: ArrayAttr(FloatAttr(v, f64) for v in values)
                    for key, values in (("mean", normalization.mean), ("std", normalization.std))
                }),
            },
        )  # fmt: skip
        table_region = Region(f"{node}.tables", "const", tables.nbytes, producer=node, data=tables.astype(tables.dtype.newbyteorder("<")).tobytes())
        normalized = Region(scratch, "scratch", source.size, source.shape, source.layout, node, extra=source.extra)
        rest = [r for r in regions if r is not source]
        write_regions(op, [table_region, frame, normalized, *rest])

        capacity = load_arch(module_arch(op)).input_buffer_bytes
        code = self._program(height, width, tables.itemsize, capacity, node, table_region.name, scratch)
        first = next(o for o in op.ops if isinstance(o, NpuInstructionOp))
        Rewriter.insert_op(code, InsertPoint.before(first))

    def _program(self, height: int, width: int, out_bytes: int, capacity: int, node: str, tables: str,
                 scratch: str) -> list[NpuInstructionOp]:
        """LOAD tables; per row tile LOAD frame -> PREPROC -> STORE, tiles ping-ponging
        between the two halves of the input buffer (frames from the bottom, results from the top)."""
        code: list[tuple[isa.Instruction, str]] = []

        def load(region: str, buf: Buffer, sram: int, dram: int, sizes: tuple[int, int, int], strides: tuple[int, int, int]):
            code.append((isa.make(Opcode.LOAD, dram=dram, sram=sram, stride0=strides[0], stride1=strides[1],
                                  stride2=strides[2], size0=sizes[0], size1=sizes[1], size2=sizes[2], buf=buf), region))  # fmt: skip

        table_row = 256 * out_bytes
        load(tables, Buffer.LUT, 0, 0, (1, 3, table_row), (3 * table_row, table_row, 1))
        rows = _row_tile(height, width, self.format, capacity, out_bytes)
        nv12 = self.format == "nv12"
        frame_size = rows * width * 3 // 2 if nv12 else rows * width * 3
        out_size = rows * width * 3 * out_bytes
        for t, r0 in enumerate(range(0, height, rows)):
            n = min(rows, height - r0)
            inp = (t % 2) * frame_size
            out = capacity - (t % 2 + 1) * out_size
            uv = inp + n * width
            if nv12:
                load(self.input, Buffer.INP, inp, r0 * width, (n, width, 1), (width, 1, 1))
                load(self.input, Buffer.INP, uv, height * width + r0 // 2 * width, (n // 2, width // 2, 2), (width, 2, 1))
            else:
                load(self.input, Buffer.INP, inp, r0 * width * 3, (n, width, 3), (width * 3, 3, 1))
            code.append((isa.make(Opcode.PREPROC, inp=inp, uv=uv if nv12 else 0, out=out, lut=0, height=n, width=width,
                                  pixel_format=FORMATS[self.format], order=ChannelOrder.RGB,
                                  out_i16=int(out_bytes == 2)), ""))  # fmt: skip
            pixel = 3 * out_bytes  # STORE moves bytes: an int16 pixel is 6 of them
            code.append((isa.make(Opcode.STORE, dram=r0 * width * pixel, sram=out, stride0=width * pixel, stride1=pixel,
                                  stride2=1, size0=n, size1=width, size2=pixel, buf=Buffer.INP), scratch))  # fmt: skip
        ops = []
        for insn, region in code:
            instruction = op_from_instruction(insn, node, "npu.preproc")
            if region:
                instruction.attributes[REGION_ATTR] = StringAttr(region)
            ops.append(instruction)
        return ops
