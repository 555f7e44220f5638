"""The DRAM regions of a lowered program, kept as module attributes between the npu passes.

After `lower-quant-to-npu` a module holds the npu instruction ops at top level and:

    npu.arch    = "ember16"
    npu.regions = [{name, kind, size, ...}, ...]     one dictionary per region

A region is a tensor (model input or output, an intermediate activation) or a constant
block (weights, requantization parameters, tables). Instructions that touch DRAM (LOAD,
STORE) carry a `region` attribute and, until `npu-allocate` runs, their `dram` field is
the byte offset inside that region. `npu-allocate` gives every region an `offset`, makes
each `dram` field absolute and sets `npu.dram_size`.

Tensors live in DRAM in the NPU's layout: 4-D NCHW tensors as NHWC (`layout = "NHWC"`,
`shape` physical), tensors of other ranks row-major; both are dense int8.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    f64,
    i64,
)
from xdsl.ir import Attribute

from ember.dialects.dense import dense_from_numpy, numpy_from_dense

ARCH_ATTR = "npu.arch"
REGIONS_ATTR = "npu.regions"
DRAM_SIZE_ATTR = "npu.dram_size"
REGION_ATTR = "region"
"""On a LOAD/STORE op: the name of the region its `dram` field points into."""

KINDS = ("const", "input", "output", "scratch")


@dataclass
class Region:
    """One DRAM region. `data` holds a constant's bytes; `offset` is set by allocation."""

    name: str
    kind: str
    size: int
    shape: tuple[int, ...] = ()
    layout: str = ""
    producer: str = ""
    scale: float | None = None
    zero_point: int | None = None
    data: bytes | None = None
    offset: int | None = None
    extra: dict[str, Attribute] = field(default_factory=dict)

    @property
    def dtype(self) -> str:
        """The element type of a tensor region: int8, or what was recorded in `extra`
        (int16 tensors, `npu-preproc`'s uint8 frames)."""
        dtype = self.extra.get("dtype")
        return dtype.data if isinstance(dtype, StringAttr) else "int8"

    def to_attr(self) -> DictionaryAttr:
        entries: dict[str, Attribute] = {
            "name": StringAttr(self.name),
            "kind": StringAttr(self.kind),
            "size": IntegerAttr(self.size, i64),
        }
        if self.shape:
            entries["shape"] = ArrayAttr(IntegerAttr(d, i64) for d in self.shape)
        if self.layout:
            entries["layout"] = StringAttr(self.layout)
        if self.producer:
            entries["producer"] = StringAttr(self.producer)
        if self.scale is not None:
            entries["scale"] = FloatAttr(self.scale, f64)
        if self.zero_point is not None:
            entries["zero_point"] = IntegerAttr(self.zero_point, i64)
        if self.data is not None:
            entries["data"] = dense_from_numpy(np.frombuffer(self.data, dtype=np.uint8))
        if self.offset is not None:
            entries["offset"] = IntegerAttr(self.offset, i64)
        return DictionaryAttr(entries | self.extra)

    @classmethod
    def from_attr(cls, attr: DictionaryAttr) -> Region:
        d = dict(attr.data)

        def text(key: str) -> str:
            value = d.pop(key, None)
            return value.data if isinstance(value, StringAttr) else ""

        def integer(key: str) -> int | None:
            value = d.pop(key, None)
            return value.value.data if isinstance(value, IntegerAttr) else None

        name, kind = text("name"), text("kind")
        size = integer("size") or 0
        shape_attr = d.pop("shape", None)
        shape = tuple(a.value.data for a in shape_attr.data) if isinstance(shape_attr, ArrayAttr) else ()
        layout, producer = text("layout"), text("producer")
        scale_attr = d.pop("scale", None)
        scale = scale_attr.value.data if isinstance(scale_attr, FloatAttr) else None
        zero_point = integer("zero_point")
        data_attr = d.pop("data", None)
        data = numpy_from_dense(data_attr).tobytes() if isinstance(data_attr, DenseIntOrFPElementsAttr) else None
        offset = integer("offset")
        return cls(name, kind, size, shape, layout, producer, scale, zero_point, data, offset, d)


def read_regions(module: ModuleOp) -> list[Region]:
    attr = module.attributes.get(REGIONS_ATTR)
    if not isinstance(attr, ArrayAttr):
        return []
    return [Region.from_attr(entry) for entry in attr.data if isinstance(entry, DictionaryAttr)]


def write_regions(module: ModuleOp, regions: list[Region]) -> None:
    module.attributes[REGIONS_ATTR] = ArrayAttr(r.to_attr() for r in regions)


def module_arch(module: ModuleOp) -> str:
    attr = module.attributes.get(ARCH_ATTR)
    return attr.data if isinstance(attr, StringAttr) else ""
