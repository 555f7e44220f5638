"""The `onnx` dialect: one op class per default-domain ONNX operator, generated from the
`onnx.defs` schemas, plus `onnx.initializer` (a graph weight) and `onnx.custom` (a node of
any other domain, kept with its domain, type and attributes).

Conventions:
- An op's operands and results follow its ONNX schema positionally; the IR keeps the
  model's opset (module attribute `onnx.opset_import`), so a pass reads semantics that
  changed between opsets through `opset_version`. Operands that are optional in any
  opset from 7 on are optional here, so every real model's node imports.
- ONNX attributes are properties (INT -> i64 IntegerAttr, FLOAT -> f32 FloatAttr,
  INTS/FLOATS -> `array<...>`, STRING(S) -> StringAttr / ArrayAttr, TENSOR -> dense);
  graphs and other rare kinds are kept opaque as `#onnx.proto<"base64">`.
- Every value keeps its ONNX tensor name: results in the discardable attribute
  `onnx_outputs` (one string per output, "" for an absent optional output), graph
  inputs in the `onnx.name` argument attribute; the node name is `onnx_node`.

Custom syntax (operands positional, `none` for an absent optional operand):

    %c = onnx.Conv(%x, %w, %b) {group = 1 : i64, onnx_node = "Conv_0", onnx_outputs = ["c"]}
           : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>) -> tensor<1x4x6x6xf32>
    %w = onnx.initializer "conv.w" = dense<"0x..."> : tensor<4x3x3x3xf32>
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import onnx
import onnx.defs
from onnx import AttributeProto
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    BytesAttr,
    StringAttr,
    TensorType,
    UnitAttr,
    i32,
)
from xdsl.ir import Attribute, Data, Dialect, Operation, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    AttrSizedResultSegments,
    IRDLOperation,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    opt_result_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import AttrParser, Parser

from ember.dialects.dense import dense_from_numpy, numpy_dtype_of, print_dense_fast
from xdsl.printer import Printer
from xdsl.traits import HasCanonicalizationPatternsTrait, Pure
from xdsl.utils.exceptions import VerifyException

OUTPUT_NAMES = "onnx_outputs"
"""Discardable attribute: the ONNX tensor name of each result."""
NODE_NAME = "onnx_node"
"""Discardable attribute: the ONNX node name."""
ARG_NAME = "onnx.name"
"""Argument attribute of the graph function: the ONNX name of a graph input."""

MIN_OPSET = 7
"""The oldest default-domain opset Ember imports."""


# --------------------------------------------------------------------------- attributes


class _SerializedProto(Data[bytes]):
    """A serialized protobuf message, printed as a base64 string literal."""

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> bytes:
        with parser.in_angle_brackets():
            text = parser.parse_str_literal()
        return base64.b64decode(text)

    def print_parameter(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string(f'"{base64.b64encode(self.data).decode()}"')


@irdl_attr_definition
class OnnxProtoAttr(_SerializedProto):
    """An ONNX attribute kept opaque: the serialized `AttributeProto` (a subgraph, a
    sparse tensor, a list of tensors, a type...)."""

    name = "onnx.proto"


@irdl_attr_definition
class StringType(ParametrizedAttribute, TypeAttribute):
    """The element type of ONNX string tensors."""

    name = "onnx.string"


@irdl_attr_definition
class OpaqueType(_SerializedProto, TypeAttribute):
    """A non-tensor ONNX type (sequence, map, optional, ...) kept as its serialized
    `TypeProto`. Such values only flow through host-side ops."""

    name = "onnx.opaque"


# --------------------------------------------------------------------------- printing helpers

def _print_attr_entries(printer: Printer, entries: dict[str, Attribute]) -> None:
    if not entries:
        return
    printer.print_string(" {")
    first = True
    for key, value in entries.items():
        if not first:
            printer.print_string(", ")
        first = False
        printer.print_identifier_or_string_literal(key)
        printer.print_string(" = ")
        print_dense_fast(printer, value)
    printer.print_string("}")


# --------------------------------------------------------------------------- parsing helpers


def parse_attr_dict(parser: Parser) -> dict[str, Attribute]:
    """An optional `{name = value, ...}`, as `parse_optional_attr_dict` reads it, with
    values read by `parse_attr_value`."""

    def entry() -> tuple[str, Attribute]:
        name = parser.parse_optional_identifier_or_str_literal()
        if name is None:
            parser.raise_error("expected an attribute name (bare identifier or string)")
        if parser.parse_optional_punctuation("=") is None:
            return name, UnitAttr()
        return name, parse_attr_value(parser)

    entries = parser.parse_optional_comma_separated_list(parser.Delimiter.BRACES, entry) or []
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        parser.raise_error(f"duplicate attribute '{next(n for n in names if names.count(n) > 1)}'")
    return dict(entries)


def parse_attr_value(parser: Parser) -> Attribute:
    """An attribute value. Dense literals (`dense<"0x...">` weights, or `dense<1.0>` and
    `dense<[...]>` in hand-written IR) are read here from bytes or with numpy: xDSL's
    own dense parser rebuilds a type constraint for every literal, 4 ms each, which made
    reading the 342 Constant weights of the PP-OCRv4 detector take 1.4 s."""
    if parser.parse_optional_keyword("dense") is None:
        return parser.parse_attribute()
    parser.parse_punctuation("<")
    hex_text = parser.parse_optional_str_literal()
    literal = None
    if hex_text is None and parser.parse_optional_punctuation(">") is None:
        literal = _parse_dense_literal(parser)
    if hex_text is not None or literal is not None:
        parser.parse_punctuation(">")
    parser.parse_punctuation(":")
    tensor_type = parser.parse_type()
    if not isinstance(tensor_type, TensorType) or any(d < 0 for d in tensor_type.get_shape()):
        parser.raise_error(f"a dense literal needs a statically shaped tensor type, not {tensor_type}")
    try:
        dtype = numpy_dtype_of(tensor_type.element_type)
    except ValueError:
        parser.raise_error(f"no dense literal of element type {tensor_type.element_type}")
    shape = tuple(tensor_type.get_shape())
    count = int(np.prod(shape))
    if hex_text is not None:
        try:
            data = bytes.fromhex(hex_text[2:]) if hex_text[:2] in ("0x", "0X") else None
        except ValueError:
            data = None
        if data is None:
            parser.raise_error('expected dense<"0x..."> with hexadecimal bytes')
        if len(data) == dtype.itemsize and count != 1:
            data *= count  # a splat
        if len(data) != count * dtype.itemsize:
            parser.raise_error(f"dense literal has {len(data)} bytes, {tensor_type} needs {count * dtype.itemsize}")
        return DenseIntOrFPElementsAttr(tensor_type, BytesAttr(data))
    try:
        array = np.array([] if literal is None else literal, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        parser.raise_error(f"dense literal values do not fit {tensor_type.element_type}")
    if array.ndim == 0:
        array = np.broadcast_to(array, shape)  # a splat
    if array.shape != shape:
        parser.raise_error(f"dense literal of shape {list(array.shape)} for {tensor_type}")
    return dense_from_numpy(array, tensor_type.element_type)


def _parse_dense_literal(parser: Parser):
    """A number, a boolean, or a nested list of them."""
    if parser.parse_optional_punctuation("[") is not None:
        if parser.parse_optional_punctuation("]") is not None:
            return []
        values = [_parse_dense_literal(parser)]
        while parser.parse_optional_punctuation(",") is not None:
            values.append(_parse_dense_literal(parser))
        parser.parse_punctuation("]")
        return values
    if (flag := parser.parse_optional_boolean()) is not None:
        return flag
    if (number := parser.parse_optional_number()) is not None:
        return number
    parser.raise_error("expected a number, true/false or a list in a dense literal")


def _print_signature(printer: Printer, op: Operation) -> None:
    printer.print_string(" : ")
    printer.print_function_type(op.operand_types, op.result_types)


# --------------------------------------------------------------------------- op base


class OnnxOp(IRDLOperation):
    """Base of the generated default-domain ONNX ops."""

    ONNX_TYPE: ClassVar[str]
    INPUT_KINDS: ClassVar[tuple[str, ...]]
    """Per formal input: 'single', 'optional' or 'variadic'."""
    OUTPUT_KINDS: ClassVar[tuple[str, ...]]
    ATTRIBUTES: ClassVar[frozenset[str]]
    """The ONNX attribute names this op accepts (its properties, same names)."""

    @property
    def node_name(self) -> str:
        attr = self.attributes.get(NODE_NAME)
        return attr.data if isinstance(attr, StringAttr) else ""

    def input_slots(self) -> list[SSAValue | None]:
        """The operands by formal input position, `None` for an absent optional input;
        a variadic last input contributes all its values."""
        slots: list[SSAValue | None] = []
        start = 0
        for kind, size in zip(self.INPUT_KINDS, _segment_sizes(self.INPUT_KINDS, self.properties.get("operandSegmentSizes"), len(self.operands))):
            group = self.operands[start : start + size]
            start += size
            slots.extend(group) if kind == "variadic" else slots.append(group[0] if group else None)
        return slots

    def print(self, printer: Printer) -> None:
        printer.print_string("(")
        slots = self.input_slots()
        while slots and slots[-1] is None:
            slots.pop()
        for i, value in enumerate(slots):
            if i:
                printer.print_string(", ")
            if value is None:
                printer.print_string("none")
            else:
                printer.print_operand(value)
        printer.print_string(")")
        entries = {k: v for k, v in self.properties.items() if k != "operandSegmentSizes" and k != "resultSegmentSizes"}
        entries.update(self.attributes)
        _print_attr_entries(printer, entries)
        _print_signature(printer, self)

    @classmethod
    def parse(cls, parser: Parser) -> OnnxOp:
        unresolved = parser.parse_comma_separated_list(
            parser.Delimiter.PAREN,
            lambda: None if parser.parse_optional_keyword("none") else parser.parse_unresolved_operand(),
        )
        entries = parse_attr_dict(parser)
        parser.parse_punctuation(":")
        func_type = parser.parse_function_type()
        present = [u for u in unresolved if u is not None]
        if len(present) != len(func_type.inputs.data):
            parser.raise_error(f"{cls.name}: {len(present)} operands but {len(func_type.inputs.data)} operand types")
        resolved = iter(parser.resolve_operands(present, func_type.inputs.data, parser.pos))
        slots = [None if u is None else next(resolved) for u in unresolved]
        properties = {k: v for k, v in entries.items() if k in cls.ATTRIBUTES}
        attributes = {k: v for k, v in entries.items() if k not in cls.ATTRIBUTES}
        names = attributes.get(OUTPUT_NAMES)
        present_outputs = None
        if isinstance(names, ArrayAttr):
            present_outputs = [isinstance(n, StringAttr) and n.data != "" for n in names.data]
        return cls.build_from_slots(slots, list(func_type.outputs.data), properties, attributes, present_outputs)

    @classmethod
    def build_from_slots(
        cls,
        slots: Sequence[SSAValue | None],
        result_types: Sequence[Attribute],
        properties: dict[str, Attribute],
        attributes: dict[str, Attribute],
        present_outputs: Sequence[bool] | None = None,
    ) -> OnnxOp:
        """Create the op from operands by formal input position (None = absent) and the
        types of the present results; `present_outputs` says which formal outputs exist
        when an optional output in the middle is absent."""
        operands, operand_sizes = _group_by_kinds(list(slots), cls.INPUT_KINDS)
        properties = dict(properties)
        if _needs_segments(cls.INPUT_KINDS):
            properties["operandSegmentSizes"] = DenseArrayBase.from_list(i32, operand_sizes)
        if present_outputs is None:
            present_outputs = [True] * len(result_types)
        result_groups: list[list[Attribute]] = []
        types = iter(result_types)
        result_sizes: list[int] = []
        for index, kind in enumerate(cls.OUTPUT_KINDS):
            if kind == "variadic":
                group = list(types)
            else:
                exists = index < len(present_outputs) and present_outputs[index]
                group = [next(types)] if exists else []
            result_groups.append(group)
            result_sizes.append(len(group))
        if _needs_segments(cls.OUTPUT_KINDS):
            properties["resultSegmentSizes"] = DenseArrayBase.from_list(i32, result_sizes)
        return cls.create(
            operands=operands,
            result_types=[t for group in result_groups for t in group],
            properties=properties,
            attributes=attributes,
        )


def _segment_sizes(kinds: Sequence[str], sizes: Attribute | None, count: int) -> list[int]:
    """How many values each formal parameter holds."""
    if isinstance(sizes, DenseArrayBase):
        return list(sizes.get_values())
    # At most one non-single parameter: it holds what the single ones leave.
    rest = count - sum(kind == "single" for kind in kinds)
    return [1 if kind == "single" else rest for kind in kinds]


def _needs_segments(kinds: Sequence[str]) -> bool:
    return sum(kind != "single" for kind in kinds) > 1


def _group_by_kinds(slots: list[SSAValue | None], kinds: Sequence[str]) -> tuple[list[SSAValue], list[int]]:
    operands: list[SSAValue] = []
    sizes: list[int] = []
    for index, kind in enumerate(kinds):
        if kind == "variadic":
            group = [v for v in slots[index:] if v is not None]
        else:
            value = slots[index] if index < len(slots) else None
            group = [] if value is None else [value]
        operands.extend(group)
        sizes.append(len(group))
    return operands, sizes


# --------------------------------------------------------------------------- generation

_ATTR_CONSTRAINT: dict[int, type[Attribute]] = {
    AttributeProto.INT: IntegerAttr,
    AttributeProto.FLOAT: FloatAttr,
    AttributeProto.STRING: StringAttr,
    AttributeProto.INTS: DenseArrayBase,
    AttributeProto.FLOATS: DenseArrayBase,
    AttributeProto.STRINGS: ArrayAttr,
}

_KIND = {
    onnx.defs.OpSchema.FormalParameterOption.Single: "single",
    onnx.defs.OpSchema.FormalParameterOption.Optional: "optional",
    onnx.defs.OpSchema.FormalParameterOption.Variadic: "variadic",
}


def _schemas_by_type() -> dict[str, list[onnx.defs.OpSchema]]:
    by_type: dict[str, list[onnx.defs.OpSchema]] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain in ("", "ai.onnx"):
            by_type.setdefault(schema.name, []).append(schema)
    for versions in by_type.values():
        versions.sort(key=lambda s: s.since_version)
    return by_type


def _relevant(versions: list[onnx.defs.OpSchema]) -> list[onnx.defs.OpSchema]:
    """The schema versions in force at some opset >= MIN_OPSET."""
    keep = [s for s in versions if s.since_version >= MIN_OPSET]
    older = [s for s in versions if s.since_version < MIN_OPSET]
    if older:
        keep.insert(0, older[-1])
    return keep


def _formal_kinds(params_per_version: list[list[onnx.defs.OpSchema.FormalParameter]]) -> list[str]:
    """Merge formal parameter lists over versions: a position is 'single' only if every
    version has a single parameter there; the longest list sets the count."""
    count = max(len(p) for p in params_per_version)
    kinds: list[str] = []
    for index in range(count):
        options = [_KIND[p[index].option] if index < len(p) else "optional" for p in params_per_version]
        if "variadic" in options:
            kinds.append("variadic")
        elif all(o == "single" for o in options):
            kinds.append("single")
        else:
            kinds.append("optional")
    # Only the last position may be variadic (an ONNX rule, kept across versions).
    if "variadic" in kinds[:-1]:
        kinds = kinds[: kinds.index("variadic") + 1]
    return kinds


_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


class ForwardingCanonicalization(HasCanonicalizationPatternsTrait):
    """Identity and inference-mode Dropout forward their input (`canonicalize`)."""

    @classmethod
    def get_canonicalization_patterns(cls):
        from ember.passes.onnx_canonicalization import ForwardIdentityLike

        return (ForwardIdentityLike(),)


_RESERVED = {"name", "operands", "results", "properties", "attributes", "regions", "successors", "parent"}


def _field(name: str, taken: set[str]) -> str:
    field = name if name.isidentifier() and name not in _RESERVED else f"{name}_"
    field = "".join(c if c.isalnum() or c == "_" else "_" for c in field)
    while field in taken or field in _RESERVED or not field.isidentifier():
        field += "_"
    taken.add(field)
    return field


def _make_op_class(op_type: str, versions: list[onnx.defs.OpSchema]) -> type[OnnxOp]:
    relevant = _relevant(versions)
    latest = versions[-1]
    input_kinds = _formal_kinds([list(s.inputs) for s in relevant] or [list(latest.inputs)])
    output_kinds = _formal_kinds([list(s.outputs) for s in relevant] or [list(latest.outputs)])
    namespace: dict[str, object] = {
        "name": f"onnx.{op_type}",
        "ONNX_TYPE": op_type,
        "INPUT_KINDS": tuple(input_kinds),
        "OUTPUT_KINDS": tuple(output_kinds),
        "__doc__": f"ONNX `{op_type}` (opsets {relevant[0].since_version if relevant else latest.since_version}+).",
        "__module__": __name__,
        "__annotations__": {k: ClassVar for k in ("ONNX_TYPE", "INPUT_KINDS", "OUTPUT_KINDS", "ATTRIBUTES")},
    }
    taken: set[str] = set()
    input_names = [p.name for p in latest.inputs]
    for index, kind in enumerate(input_kinds):
        label = input_names[index] if index < len(input_names) else f"input{index}"
        definer = {"single": operand_def, "optional": opt_operand_def, "variadic": var_operand_def}[kind]
        namespace[_field(label, taken)] = definer()
    output_names = [p.name for p in latest.outputs]
    for index, kind in enumerate(output_kinds):
        label = output_names[index] if index < len(output_names) else f"output{index}"
        definer = {"single": result_def, "optional": opt_result_def, "variadic": var_result_def}[kind]
        namespace[_field(label, taken)] = definer()
    attribute_kinds: dict[str, set[int]] = {}
    for schema in relevant or [latest]:
        for attr_name, attr in schema.attributes.items():
            attribute_kinds.setdefault(attr_name, set()).add(attr.type)
    for attr_name, kinds in attribute_kinds.items():
        # An attribute whose kind changed between versions accepts any value.
        constraint = _ATTR_CONSTRAINT.get(next(iter(kinds)), Attribute) if len(kinds) == 1 else Attribute
        namespace[_field(attr_name, taken)] = opt_prop_def(constraint, prop_name=attr_name)
    namespace["ATTRIBUTES"] = frozenset(attribute_kinds)
    options = []
    if _needs_segments(input_kinds):
        options.append(AttrSizedOperandSegments(as_property=True))
    if _needs_segments(output_kinds):
        options.append(AttrSizedResultSegments(as_property=True))
    if options:
        namespace["irdl_options"] = tuple(options)
    if op_type not in _NONDETERMINISTIC:
        traits: list = [Pure()]
        if op_type in ("Identity", "Dropout"):
            traits.append(ForwardingCanonicalization())
        namespace["traits"] = traits_def(*traits)
    cls = type(op_type, (OnnxOp,), namespace)
    return irdl_op_definition(cls)


_BY_TYPE = _schemas_by_type()

OPS: dict[str, type[OnnxOp]] = {op_type: _make_op_class(op_type, versions) for op_type, versions in sorted(_BY_TYPE.items())}
"""Every default-domain ONNX op type -> its op class."""

globals().update(OPS)


def opset_version(op: Operation) -> int:
    """The default-domain opset of the model that `op` (or the module itself) belongs to."""
    module = op
    while module.parent_op() is not None:
        module = module.parent_op()
    opsets = module.attributes.get("onnx.opset_import")
    if isinstance(opsets, DictionaryAttr):
        for domain in ("", "ai.onnx"):
            if isinstance(version := opsets.data.get(domain), IntegerAttr):
                return version.value.data
    return onnx.defs.onnx_opset_version()


def schema_for(op_type: str, opset: int) -> onnx.defs.OpSchema | None:
    """The ONNX schema of `op_type` in force at `opset`, or None."""
    try:
        return onnx.defs.get_schema(op_type, opset, "")
    except onnx.defs.SchemaError:
        return None


# --------------------------------------------------------------------------- non-schema ops


@irdl_op_definition
class InitializerOp(IRDLOperation):
    """A graph initializer (a weight): its ONNX name and its value."""

    name = "onnx.initializer"
    value = prop_def(Attribute)
    output = result_def()
    traits = traits_def(Pure())

    def __init__(self, tensor_name: str, value: Attribute, result_type: Attribute | None = None):
        if result_type is None:
            assert isinstance(value, DenseIntOrFPElementsAttr)
            result_type = value.type
        super().__init__(
            properties={"value": value},
            result_types=[result_type],
            attributes={OUTPUT_NAMES: ArrayAttr([StringAttr(tensor_name)])},
        )

    @property
    def tensor_name(self) -> str:
        return value_name(self.output)

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.tensor_name)
        printer.print_string(" = ")
        if isinstance(self.value, DenseIntOrFPElementsAttr):
            print_dense_fast(printer, self.value)
        else:
            printer.print_attribute(self.value)
            printer.print_string(" : ")
            printer.print_attribute(self.output.type)

    @classmethod
    def parse(cls, parser: Parser) -> InitializerOp:
        tensor_name = parser.parse_str_literal()
        parser.parse_punctuation("=")
        value = parse_attr_value(parser)
        if isinstance(value, DenseIntOrFPElementsAttr | DenseResourceAttr):
            return cls(tensor_name, value, value.type)
        parser.parse_punctuation(":")
        return cls(tensor_name, value, parser.parse_type())

    def verify_(self) -> None:
        if isinstance(self.value, DenseIntOrFPElementsAttr) and self.value.type != self.output.type:
            raise VerifyException(f"initializer {self.tensor_name}: value type {self.value.type} != result type")


@irdl_op_definition
class CustomOp(IRDLOperation):
    """A node of a domain other than the default one, kept as it is."""

    name = "onnx.custom"
    domain = prop_def(StringAttr)
    op_type = prop_def(StringAttr)
    attrs = prop_def(DictionaryAttr)
    inputs = var_operand_def()
    outputs = var_result_def()

    def print(self, printer: Printer) -> None:
        printer.print_string("<")
        printer.print_string_literal(self.domain.data)
        printer.print_string(", ")
        printer.print_string_literal(self.op_type.data)
        printer.print_string(">(")
        printer.print_list(self.inputs, printer.print_operand)
        printer.print_string(")")
        entries: dict[str, Attribute] = dict(self.attrs.data)
        if entries:
            printer.print_string(" attrs")
            _print_attr_entries(printer, entries)
        _print_attr_entries(printer, dict(self.attributes))
        _print_signature(printer, self)

    @classmethod
    def parse(cls, parser: Parser) -> CustomOp:
        parser.parse_punctuation("<")
        domain = parser.parse_str_literal()
        parser.parse_punctuation(",")
        op_type = parser.parse_str_literal()
        parser.parse_punctuation(">")
        unresolved = parser.parse_comma_separated_list(parser.Delimiter.PAREN, parser.parse_unresolved_operand)
        attrs = parse_attr_dict(parser) if parser.parse_optional_keyword("attrs") else {}
        attributes = parse_attr_dict(parser)
        parser.parse_punctuation(":")
        func_type = parser.parse_function_type()
        operands = parser.resolve_operands(unresolved, func_type.inputs.data, parser.pos)
        return cls.create(
            operands=operands,
            result_types=list(func_type.outputs.data),
            properties={
                "domain": StringAttr(domain),
                "op_type": StringAttr(op_type),
                "attrs": DictionaryAttr(attrs),
            },
            attributes=attributes,
        )


# --------------------------------------------------------------------------- names and attributes


def value_name(value: SSAValue) -> str:
    """The ONNX tensor name of a value ("" when it has none yet)."""
    from xdsl.ir import BlockArgument, OpResult

    if isinstance(value, OpResult):
        names = value.op.attributes.get(OUTPUT_NAMES)
        if isinstance(names, ArrayAttr):
            present = [n for n in names.data if isinstance(n, StringAttr) and n.data]
            if value.index < len(present):
                return present[value.index].data
        return ""
    if isinstance(value, BlockArgument):
        func = value.block.parent_op()
        arg_attrs = getattr(func, "arg_attrs", None)
        if isinstance(arg_attrs, ArrayAttr) and value.index < len(arg_attrs.data):
            entry = arg_attrs.data[value.index]
            if isinstance(entry, DictionaryAttr) and isinstance(name := entry.data.get(ARG_NAME), StringAttr):
                return name.data
    return ""


def set_output_names(op: Operation, names: Sequence[str]) -> None:
    """Name the results of `op` (one ONNX tensor name per result)."""
    op.attributes[OUTPUT_NAMES] = ArrayAttr([StringAttr(n) for n in names])
    for result, name in zip(op.results, names):
        result.name_hint = _hint(name)


def _hint(name: str) -> str | None:
    cleaned = "".join(c if c.isalnum() or c in "_." else "_" for c in name).strip("_")
    if not cleaned:
        return None
    return cleaned if not cleaned[0].isdigit() else f"t{cleaned}"


def attribute_value(op: OnnxOp, name: str, opset: int | None = None):
    """An ONNX attribute of `op` as a Python value, or the schema default, or None.

    INT -> int, FLOAT -> float, STRING -> str, INTS -> list[int], FLOATS -> list[float],
    STRINGS -> list[str], TENSOR -> np.ndarray."""
    attr = op.properties.get(name)
    if attr is not None:
        return python_value(attr)
    versions = _BY_TYPE.get(op.ONNX_TYPE, [])
    schema = schema_for(op.ONNX_TYPE, opset) if opset is not None else (versions[-1] if versions else None)
    if schema is None or name not in schema.attributes:
        return None
    default = schema.attributes[name].default_value
    if default is None or default.type == AttributeProto.UNDEFINED:
        return None
    return onnx.helper.get_attribute_value(default) if default.type != AttributeProto.STRING else default.s.decode()


def python_value(attr: Attribute):
    """The Python value of a property built by the importer."""
    from ember.dialects.dense import numpy_from_dense

    if isinstance(attr, IntegerAttr):
        return attr.value.data
    if isinstance(attr, FloatAttr):
        return attr.value.data
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, DenseArrayBase):
        return list(attr.get_values())
    if isinstance(attr, ArrayAttr):
        return [python_value(a) for a in attr.data]
    if isinstance(attr, DenseIntOrFPElementsAttr):
        return numpy_from_dense(attr)
    return attr


def make_property(value) -> Attribute:
    """The property for a Python attribute value (int, float, str, list, ndarray)."""
    from xdsl.dialects.builtin import f32, i64

    from ember.dialects.dense import dense_from_numpy

    if isinstance(value, bool | int | np.integer):
        return IntegerAttr(int(value), i64)
    if isinstance(value, float | np.floating):
        return FloatAttr(float(value), f32)
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, np.ndarray):
        return dense_from_numpy(value)
    if isinstance(value, list | tuple):
        if all(isinstance(v, int | np.integer) for v in value):
            return DenseArrayBase.from_list(i64, [int(v) for v in value])
        if all(isinstance(v, float | int | np.number) for v in value):
            return DenseArrayBase.from_list(f32, [float(v) for v in value])
        return ArrayAttr([StringAttr(str(v)) for v in value])
    raise TypeError(f"no property for {type(value).__name__}")


ONNX = Dialect(
    "onnx",
    [*OPS.values(), InitializerOp, CustomOp],
    [OnnxProtoAttr, StringType, OpaqueType],
)
