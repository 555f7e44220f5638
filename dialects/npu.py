"""The `npu` dialect: one op per Ember NPU instruction; its printed form is the listing.

The ops are generated from the instruction formats of `ember.target.isa`, so the dialect,
the binary records and the simulator can never disagree on a field: every record field
is a property of the field's exact integer type (`ui8`, `si32`, ...) or, for enumerated
fields, an enum attribute printed as a bare keyword. Dependency-token flags are unit
properties. The declarative format prints every field as `name = value`:

    npu.conv inp = 0 wgt = 0 acc = 0 ih = 10 ... accumulate = 0 pop_prev push_next {node = "conv1", origin = "quant.conv"}

The optional `node` and `origin` attributes carry the ONNX node and IR op that the
instruction came from; they become the DEBUG section of a binary.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Annotated, ClassVar

from xdsl.dialects.builtin import BytesAttr, IntegerAttr, IntegerType, ModuleOp, Signedness, StringAttr, UnitAttr
from xdsl.dialects.utils import EnumAttribute
from xdsl.ir import Attribute, Dialect, SpacedOpaqueSyntaxAttribute
from xdsl.irdl import IRDLOperation, irdl_attr_definition, irdl_op_definition, opt_prop_def, prop_def
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.str_enum import StrEnum

from ember.target import isa
from ember.target.isa import FORMATS, TOKEN_NAMES, Format, Instruction, Opcode
from ember.target.program import check_structure


def _enum_attribute(values: type[enum.IntEnum], attr_name: str) -> type[EnumAttribute]:
    keywords = StrEnum(f"{values.__name__}Keyword", {m.name: m.name.lower() for m in values})  # type: ignore[misc]

    class _Attr(EnumAttribute[keywords], SpacedOpaqueSyntaxAttribute):  # type: ignore[valid-type]
        name = f"npu.{attr_name}"

    _Attr.__name__ = _Attr.__qualname__ = f"{values.__name__}Attr"
    _Attr.__doc__ = f"An `isa.{values.__name__}` value, printed as its lower-case name."
    return irdl_attr_definition(_Attr)


BufferAttr = _enum_attribute(isa.Buffer, "buffer")
EngineAttr = _enum_attribute(isa.Engine, "engine")
EltwModeAttr = _enum_attribute(isa.EltwMode, "eltw_mode")
PoolModeAttr = _enum_attribute(isa.PoolMode, "pool_mode")
ResizeModeAttr = _enum_attribute(isa.ResizeMode, "resize_mode")
PixelFormatAttr = _enum_attribute(isa.PixelFormat, "pixel_format")
ChannelOrderAttr = _enum_attribute(isa.ChannelOrder, "channel_order")

ENUM_ATTRS: dict[type[enum.IntEnum], type[EnumAttribute]] = {
    isa.Buffer: BufferAttr,
    isa.Engine: EngineAttr,
    isa.EltwMode: EltwModeAttr,
    isa.PoolMode: PoolModeAttr,
    isa.ResizeMode: ResizeModeAttr,
    isa.PixelFormat: PixelFormatAttr,
    isa.ChannelOrder: ChannelOrderAttr,
}


def integer_type(field: isa.Field) -> IntegerType:
    """The MLIR integer type of a record field: `ui8`, `si16`, `ui32`, ..."""
    signedness = Signedness.SIGNED if field.dtype.kind == "i" else Signedness.UNSIGNED
    return IntegerType(field.dtype.itemsize * 8, signedness)


class NpuInstructionOp(IRDLOperation):
    """Common base of the instruction ops: conversion to and from `isa.Instruction`."""

    OPCODE: ClassVar[Opcode]

    def instruction(self) -> Instruction:
        """The instruction this op denotes."""
        fmt = FORMATS[self.OPCODE]
        values = {}
        for f in fmt.fields:
            attr = self.properties[f.name]
            values[f.name] = int(f.enum[attr.data.name]) if f.enum else attr.value.data
        tokens = isa.tokens_from_names(name for name in TOKEN_NAMES if name in self.properties)
        return Instruction(self.OPCODE, tokens, values)

    def verify_(self) -> None:
        problem = check_structure(self.instruction())
        if problem:
            raise VerifyException(f"{self.name}: {problem}")


def _define(fmt: Format) -> type[NpuInstructionOp]:
    namespace: dict[str, object] = {
        "name": f"npu.{fmt.mnemonic}",
        "OPCODE": fmt.opcode,
        "__annotations__": {"OPCODE": ClassVar[Opcode]},
        "__doc__": fmt.doc,
    }
    pieces = []
    for f in fmt.fields:
        if f.enum is not None:
            namespace[f.name] = prop_def(ENUM_ATTRS[f.enum])
        else:
            namespace[f.name] = prop_def(IntegerAttr[Annotated[IntegerType, integer_type(f)]])
        pieces.append(f"`{f.name}` `=` ${f.name}")
    for token in TOKEN_NAMES:
        namespace[token] = opt_prop_def(UnitAttr)
        pieces.append(f"(`{token}` ${token}^)?")
    namespace["assembly_format"] = " ".join([*pieces, "attr-dict"])
    class_name = fmt.mnemonic.capitalize() + "Op"
    return irdl_op_definition(type(class_name, (NpuInstructionOp,), namespace))


LoadOp = _define(FORMATS[Opcode.LOAD])
StoreOp = _define(FORMATS[Opcode.STORE])
ConvOp = _define(FORMATS[Opcode.CONV])
PostOp = _define(FORMATS[Opcode.POST])
EltwOp = _define(FORMATS[Opcode.ELTW])
PoolOp = _define(FORMATS[Opcode.POOL])
ResizeOp = _define(FORMATS[Opcode.RESIZE])
PreprocOp = _define(FORMATS[Opcode.PREPROC])
SyncOp = _define(FORMATS[Opcode.SYNC])
EndOp = _define(FORMATS[Opcode.END])

OPS: dict[Opcode, type[NpuInstructionOp]] = {
    op_class.OPCODE: op_class
    for op_class in (LoadOp, StoreOp, ConvOp, PostOp, EltwOp, PoolOp, ResizeOp, PreprocOp, SyncOp, EndOp)
}

NPU = Dialect("npu", list(OPS.values()), list(ENUM_ATTRS.values()))


def op_from_instruction(insn: Instruction, node: str = "", origin: str = "") -> NpuInstructionOp:
    """The op of one instruction; `node` / `origin` (ONNX node, IR op) become attributes."""
    fmt = insn.format
    props: dict[str, Attribute] = {}
    for f in fmt.fields:
        value = insn.fields[f.name]
        if f.enum is not None:
            attr_class = ENUM_ATTRS[f.enum]
            props[f.name] = attr_class(attr_class.enum_type(f.enum(value).name.lower()))
        else:
            props[f.name] = IntegerAttr(value, integer_type(f))
    for name in isa.token_names(insn.tokens):
        props[name] = UnitAttr()
    attrs: dict[str, Attribute] = {}
    if node:
        attrs["node"] = StringAttr(node)
    if origin:
        attrs["origin"] = StringAttr(origin)
    return OPS[insn.opcode].create(properties=props, attributes=attrs)


def module_from_program(program: Sequence[Instruction], debug: Sequence[tuple[str, str]]) -> ModuleOp:
    """A module holding one op per instruction, in program order. `debug[i]` is
    (IR op, ONNX node) of instruction i, as in an `.ebin`."""
    return ModuleOp([op_from_instruction(insn, node, origin) for insn, (origin, node) in zip(program, debug, strict=True)])


def _text(attr: Attribute | None) -> str:
    """A string attribute's text. xDSL parses literals with escaped non-ASCII bytes
    as `BytesAttr`, which holds the UTF-8 bytes."""
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, BytesAttr):
        return attr.data.decode("utf-8", errors="replace")
    return ""


def program_from_ops(ops: Iterable[NpuInstructionOp]) -> tuple[list[Instruction], list[tuple[str, str]]]:
    """Instructions and DEBUG entries (IR op, ONNX node) of npu ops in program order."""
    program, debug = [], []
    for op in ops:
        program.append(op.instruction())
        debug.append((_text(op.attributes.get("origin")), _text(op.attributes.get("node"))))
    return program, debug
