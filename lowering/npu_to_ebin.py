"""Emission: an allocated, scheduled npu module -> `.ebin` (see docs/ebin.md).

`ebin_from_module` fills every section from the module: CODE and DEBUG from the npu ops
(their `origin` IR op and `node` ONNX node), CONST from the constant regions at their
allocated offsets, MEMMAP from the region table, IODESC from the input and output
regions, META from the compiler version and the caller's options. The bytes depend only
on the module and the options: compiling twice gives the same file.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Any

from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, ModuleOp, StringAttr

from ember.dialects.npu import NpuInstructionOp, program_from_ops
from ember.lowering.npu_memory import DRAM_SIZE_ATTR, Region, module_arch, read_regions
from ember.support.diagnostics import EmberError
from ember.target.arch import load_arch
from ember.target.ebin import Ebin, to_bytes
from ember.target.isa import Opcode


def _io_entry(region: Region) -> dict[str, Any]:
    pixel_format = region.extra.get("pixel_format")
    normalization = region.extra.get("normalization")
    normalized_dtype = region.extra.get("normalized_dtype")  # a frame input: what PREPROC writes
    entry = {
        "name": region.name,
        "offset": region.offset,
        "shape": list(region.shape),
        "dtype": region.dtype,
        "layout": region.layout,
        "scale": region.scale,
        "zero_point": region.zero_point,
        "pixel_format": pixel_format.data if isinstance(pixel_format, StringAttr) else "none",
        "normalization": {key: [v.value.data for v in values.data] for key, values in normalization.data.items()}
        if isinstance(normalization, DictionaryAttr)
        else None,
    }
    if isinstance(normalized_dtype, StringAttr):
        entry["normalized_dtype"] = normalized_dtype.data
    return entry


def _memmap_entry(region: Region) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": region.name, "kind": region.kind, "offset": region.offset, "size": region.size}
    if region.shape:
        entry |= {"shape": list(region.shape), "dtype": region.dtype}
        if region.kind == "scratch":
            entry["kind"] = "activation"
    if region.producer:
        entry["producer"] = region.producer
    return entry


def compiler_version() -> str:
    try:
        return metadata.version("ember")
    except metadata.PackageNotFoundError:
        return "unknown"


def ebin_from_module(module: ModuleOp, options: Mapping[str, Any] | None = None) -> Ebin:
    """The binary of a module after lower-quant-to-npu, npu-allocate and npu-schedule."""
    arch_name = module_arch(module)
    dram = module.attributes.get(DRAM_SIZE_ATTR)
    ops = [op for op in module.ops if isinstance(op, NpuInstructionOp)]
    if not arch_name or not ops:
        raise EmberError("-t ebin: the module holds no NPU program; run lower-quant-to-npu first")
    if not isinstance(dram, IntegerAttr):
        raise EmberError("-t ebin: DRAM is not allocated; run npu-allocate (then npu-schedule) before emitting")
    program, debug = program_from_ops(ops)
    if not any(insn.tokens for insn in program) and any(insn.opcode != Opcode.END for insn in program):
        raise EmberError("-t ebin: the program has no dependency tokens; run npu-schedule before emitting")
    regions = read_regions(module)
    consts = [r for r in regions if r.kind == "const"]
    const_end = max((r.offset + r.size for r in consts), default=0)
    const = bytearray(const_end)
    for r in consts:
        assert r.data is not None and r.offset is not None
        const[r.offset : r.offset + r.size] = r.data
    memmap = {"dram_size": dram.value.data, "const_offset": 0, "regions": [_memmap_entry(r) for r in regions]}
    iodesc = {
        "inputs": [_io_entry(r) for r in regions if r.kind == "input"],
        "outputs": [_io_entry(r) for r in regions if r.kind == "output"],
    }
    meta = {"compiler": "ember", "version": compiler_version(), "arch": arch_name, "options": dict(options or {})}
    return Ebin(load_arch(arch_name), program, bytes(const), memmap, iodesc, [(o, n) for o, n in debug], meta)


def ebin_bytes(module: ModuleOp, options: Mapping[str, Any] | None = None) -> bytes:
    """The `.ebin` file content of a lowered, allocated and scheduled module."""
    return to_bytes(ebin_from_module(module, options))


def compile_to_ebin(module: ModuleOp, arch: str = "ember16", options: Mapping[str, Any] | None = None) -> Ebin:
    """The NPU back end in one call, for drivers: lower-quant-to-npu, npu-allocate and
    npu-schedule on `module` (in place; a cropped module keeps its host parts), then the
    binary. Raises EmberError for a model the NPU cannot run."""
    from xdsl.context import Context

    from ember.lowering.quant_to_npu import LowerQuantToNpuPass
    from ember.passes.npu_allocate import NpuAllocatePass
    from ember.passes.npu_schedule import NpuSchedulePass

    ctx = Context()
    for p in (LowerQuantToNpuPass(arch), NpuAllocatePass(), NpuSchedulePass()):
        p.apply(ctx, module)
    return ebin_from_module(module, {"arch": arch, **(options or {})})
