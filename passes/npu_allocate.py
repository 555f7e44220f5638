"""`npu-allocate`: place every DRAM region and make DMA addresses absolute.

DRAM is laid out as

    [ constants | model inputs | model outputs | activation arena ]

Constants are packed in region order (they become the binary's CONST section at offset
0). Inputs and outputs get their own regions, since the host reads and writes them
around an inference. Intermediate activations share the arena by liveness: a tensor lives
from the first to the last instruction that touches it, and tensors whose lifetimes
overlap never share bytes. Placement is TFLite's greedy-by-size arena planner: largest
first, each at the lowest offset free for its whole lifetime.

Reusing memory creates write-after-read hazards between layers that `npu-schedule` orders
with tokens, like every other hazard.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.passes import ModulePass

from ember.dialects.npu import LoadOp, StoreOp
from ember.lowering.npu_memory import DRAM_SIZE_ATTR, REGION_ATTR, Region, read_regions, write_regions
from ember.support.diagnostics import EmberError

ALIGN = 64
"""Regions start at multiples of 64 bytes (a DMA burst)."""


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_arena(sizes: list[int], lifetimes: list[tuple[int, int]]) -> tuple[list[int], int]:
    """Offsets for buffers with inclusive lifetimes [first, last]; returns (offsets, size)."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], lifetimes[i][0], i))
    offsets = [0] * len(sizes)
    placed: list[int] = []
    total = 0
    for i in order:
        first, last = lifetimes[i]
        busy = sorted(
            (offsets[j], offsets[j] + _aligned(sizes[j]))
            for j in placed
            if lifetimes[j][0] <= last and first <= lifetimes[j][1]
        )
        offset = 0
        for lo, hi in busy:
            if offset + sizes[i] <= lo:
                break
            offset = max(offset, hi)
        offsets[i] = offset
        placed.append(i)
        total = max(total, _aligned(offset + sizes[i]))
    return offsets, total


def allocate(module: ModuleOp) -> int:
    """Give every region an offset and every DMA an absolute address; returns DRAM size."""
    regions = read_regions(module)
    by_name = {r.name: r for r in regions}
    dmas = [op for op in module.ops if isinstance(op, (LoadOp, StoreOp)) and REGION_ATTR in op.attributes]
    lifetimes: dict[str, list[int]] = {}
    for index, op in enumerate(dmas):
        name = op.attributes[REGION_ATTR]
        assert isinstance(name, StringAttr)
        if name.data not in by_name:
            raise EmberError(f"npu-allocate: instruction {index} uses undeclared region '{name.data}'")
        span = lifetimes.setdefault(name.data, [index, index])
        span[1] = index

    offset = 0
    for kind in ("const", "input", "output"):
        for region in regions:
            if region.kind == kind:
                region.offset = offset
                offset = _aligned(offset + region.size)
    scratch: list[Region] = [r for r in regions if r.kind == "scratch" and r.name in lifetimes]
    arena, arena_size = plan_arena([r.size for r in scratch], [tuple(lifetimes[r.name]) for r in scratch])
    for region, place in zip(scratch, arena, strict=True):
        region.offset = offset + place
    for region in regions:
        if region.offset is None:  # a scratch tensor no instruction touches
            region.offset = offset
    dram_size = max(offset + arena_size, ALIGN)

    for op in dmas:
        name = op.attributes.pop(REGION_ATTR)
        assert isinstance(name, StringAttr)
        base = by_name[name.data].offset
        assert base is not None
        relative = op.properties["dram"]
        assert isinstance(relative, IntegerAttr)
        op.properties["dram"] = IntegerAttr(base + relative.value.data, relative.type)
    write_regions(module, regions)
    module.attributes[DRAM_SIZE_ATTR] = IntegerAttr(dram_size, i64)
    return dram_size


@dataclass(frozen=True)
class NpuAllocatePass(ModulePass):
    """Place DRAM regions (constants, inputs, outputs, liveness-shared activations)."""

    name = "npu-allocate"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        allocate(op)
