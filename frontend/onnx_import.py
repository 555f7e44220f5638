"""Import an ONNX model into the `onnx` dialect.

The module holds one `func.func` (the graph): its arguments are the graph inputs, its
results the graph outputs, initializers become `onnx.initializer` ops and nodes the
generated `onnx.*` ops in topological order. Model-level facts (IR version, opsets,
producer, metadata) are module attributes with the `onnx.` prefix, so export is lossless.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import GraphProto, ModelProto, NodeProto
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, IntegerAttr, ModuleOp, StringAttr, TensorType, i64
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Block, Region, SSAValue

from ember.dialects.onnx import ARG_NAME, NODE_NAME, OPS, CustomOp, InitializerOp, OnnxProtoAttr, set_output_names
from ember.frontend.types import UNKNOWN_TYPE, attribute_from_onnx, element_type_from_onnx, tensor_from_onnx, type_from_onnx
from ember.support.diagnostics import EmberError

MIN_OPSET = 7
CAPTURES = "onnx_captures"
"""Attribute of an op with subgraphs: how many trailing operands are outer-scope values
its subgraphs read by name (kept as operands so that no pass deletes them)."""


def parse_input_shapes(specs: Sequence[str]) -> dict[str, list[int]]:
    """Parse `NAME=D,D,...` options (repeatable) into a name -> shape map."""
    shapes: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition("=")
        try:
            shape = [int(d) for d in dims.split(",")] if sep and name else None
        except ValueError:
            shape = None
        if shape is None or any(d <= 0 for d in shape):
            raise EmberError(f"--input-shape '{spec}': expected NAME=D,D,... with positive integer dimensions, e.g. x=1,3,320,320")
        shapes[name] = shape
    return shapes


def load_onnx(path: str | os.PathLike[str]) -> ModelProto:
    """Read an ONNX file (with its external data) or fail with a one-line message."""
    file = Path(path)
    if not file.is_file():
        raise EmberError(f"{file}: no such file")
    if file.stat().st_size == 0:
        raise EmberError(f"{file}: the file is empty; expected an ONNX model")
    try:
        model = onnx.load(str(file), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError):
        raise EmberError(f"{file}: not a valid ONNX model (the protobuf does not parse: the file is truncated or not ONNX)") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise EmberError(f"{file}: not a valid ONNX model (no graph); is it an ONNX file?")
    try:
        onnx.load_external_data_for_model(model, str(file.parent))
    except (OSError, onnx.checker.ValidationError) as err:
        raise EmberError(f"{file}: cannot read external data ({_first_line(err)}); keep the data files beside the model") from None
    return model


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def default_opset(model: ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1 if model.ir_version < 3 else 0


def import_model(model: ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None, source: str = "model") -> ModuleOp:
    """Build the `onnx`-dialect module of `model`, with `input_shapes` fixing dynamic
    input dimensions; ONNX shape inference then gives every value its type."""
    opset = default_opset(model)
    if opset and opset < MIN_OPSET and (changed := _changed_before_min_opset(model.graph, opset)):
        raise EmberError(
            f"{source}: opset {opset} is not supported ('{changed}' changed in a later opset; Ember imports opset {MIN_OPSET} and newer); "
            "convert it with onnx.version_converter"
        )
    model = _with_input_shapes(model, dict(input_shapes or {}), source)
    model = _infer_shapes(model)
    return _Importer(model, source).build()


def _changed_before_min_opset(graph: GraphProto, opset: int) -> str | None:
    """The first default-domain op type whose definition at `opset` is not the one in
    force at MIN_OPSET, or None: a model of an older opset whose ops all kept their
    definition (say, `Not` from opset 1) means the same at MIN_OPSET, so it imports."""
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            if onnx.defs.get_schema(node.op_type, opset).since_version != onnx.defs.get_schema(node.op_type, MIN_OPSET).since_version:
                return node.op_type
        except onnx.defs.SchemaError:
            return node.op_type
    return None


def _graph_inputs(graph: GraphProto) -> list[onnx.ValueInfoProto]:
    """The real inputs: old IR versions also list every initializer as an input."""
    initializers = {init.name for init in graph.initializer}
    return [value for value in graph.input if value.name not in initializers]


def _with_input_shapes(model: ModelProto, shapes: dict[str, Sequence[int]], source: str) -> ModelProto:
    inputs = {value.name: value for value in _graph_inputs(model.graph)}
    unknown = [name for name in shapes if name not in inputs]
    if unknown:
        raise EmberError(f"{source}: --input-shape names unknown input '{unknown[0]}'; the inputs are: {', '.join(inputs) or '(none)'}")
    if not shapes:
        return model
    model = ModelProto.FromString(model.SerializeToString())
    for value in _graph_inputs(model.graph):
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = shapes[value.name]
        if value.type.tensor_type.HasField("shape") and len(dims) != len(shape):
            raise EmberError(f"{source}: input '{value.name}' has rank {len(dims)} but --input-shape gives {len(shape)} dimensions")
        for index, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != shape[index]:
                raise EmberError(f"{source}: input '{value.name}' has static dimension {index} = {dim.dim_value}, but --input-shape gives {shape[index]}")
        value.type.tensor_type.shape.Clear()
        for extent in shape:
            value.type.tensor_type.shape.dim.add().dim_value = extent
    return model


def _infer_shapes(model: ModelProto) -> ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError):
        # Inference is best effort: values it cannot type stay of unknown type.
        return model


def _outer_references(graph: GraphProto) -> list[str]:
    """Names a subgraph reads from enclosing scopes, in first-use order."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used: list[str] = []
    for node in graph.node:
        reads = list(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                reads.extend(_outer_references(sub))
        for name in reads:
            if name and name not in defined and name not in used:
                used.append(name)
        defined.update(node.output)
    for value in graph.output:
        if value.name not in defined and value.name not in used:
            used.append(value.name)
    return used


class _Importer:
    def __init__(self, model: ModelProto, source: str):
        self.model = model
        self.source = source
        self.graph = model.graph
        self.values: dict[str, SSAValue] = {}
        self.types: dict[str, Attribute] = {}
        for info in [*self.graph.input, *self.graph.value_info, *self.graph.output]:
            self.types[info.name] = type_from_onnx(info.type)

    def build(self) -> ModuleOp:
        inputs = _graph_inputs(self.graph)
        arg_types = [type_from_onnx(v.type) for v in inputs]
        block = Block(arg_types=arg_types)
        for arg, value in zip(block.args, inputs):
            self.values[value.name] = arg
        for tensor in self.graph.initializer:
            op = InitializerOp(tensor.name, tensor_from_onnx(tensor), _initializer_type(tensor))
            block.add_op(op)
            self.values[tensor.name] = op.output
        for node in _topological(self.graph, set(self.values), self.source):
            block.add_op(self.node(node))
        outputs = []
        for value in self.graph.output:
            if value.name not in self.values:
                raise EmberError(f"{self.source}: graph output '{value.name}' is produced by no node")
            outputs.append(self.values[value.name])
        block.add_op(ReturnOp(*outputs))
        func = FuncOp.from_region(
            self.graph.name or "main_graph",
            arg_types,
            [v.type for v in outputs],
            Region(block),
        )
        func.arg_attrs = ArrayAttr([DictionaryAttr({ARG_NAME: StringAttr(v.name)}) for v in inputs])
        func.attributes["onnx.output_names"] = ArrayAttr([StringAttr(v.name) for v in self.graph.output])
        return ModuleOp([func], attributes=self.model_attributes())

    def model_attributes(self) -> dict[str, Attribute]:
        model = self.model
        attrs: dict[str, Attribute] = {
            "onnx.ir_version": IntegerAttr(model.ir_version, i64),
            "onnx.opset_import": DictionaryAttr({e.domain: IntegerAttr(e.version, i64) for e in model.opset_import}),
        }
        for field in ("producer_name", "producer_version", "domain", "doc_string"):
            if getattr(model, field):
                attrs[f"onnx.{field}"] = StringAttr(getattr(model, field))
        if model.model_version:
            attrs["onnx.model_version"] = IntegerAttr(model.model_version, i64)
        if model.metadata_props:
            attrs["onnx.metadata_props"] = DictionaryAttr({p.key: StringAttr(p.value) for p in model.metadata_props})
        if model.functions:
            attrs["onnx.functions"] = ArrayAttr([OnnxProtoAttr(f.SerializeToString()) for f in model.functions])
        return attrs

    def node(self, node: NodeProto):
        inputs = [self.values[name] if name else None for name in node.input]
        result_types = [self.types.get(name, UNKNOWN_TYPE) for name in node.output if name]
        attributes: dict[str, Attribute] = {}
        if node.name:
            attributes[NODE_NAME] = StringAttr(node.name)
        properties = {a.name: attribute_from_onnx(a) for a in node.attribute}
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        op_class = OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if op_class is None or has_subgraph or not set(properties) <= op_class.ATTRIBUTES:
            op = self.custom(node, inputs, result_types, properties, attributes)
        else:
            present = [bool(name) for name in node.output]
            op = op_class.build_from_slots(inputs, result_types, properties, attributes, present)
        set_output_names(op, list(node.output))
        for name, result in zip([n for n in node.output if n], op.results):
            self.values[name] = result
        return op

    def custom(self, node: NodeProto, inputs, result_types, properties, attributes) -> CustomOp:
        if any(value is None for value in inputs):
            attributes["onnx_absent_inputs"] = ArrayAttr([IntegerAttr(i, i64) for i, v in enumerate(inputs) if v is None])
        operands = [v for v in inputs if v is not None]
        captured = []
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                captured.extend(n for n in _outer_references(sub) if n in self.values and n not in captured)
        if captured:
            attributes[CAPTURES] = IntegerAttr(len(captured), i64)
            operands.extend(self.values[n] for n in captured)
        return CustomOp.create(
            operands=operands,
            result_types=result_types,
            properties={
                "domain": StringAttr(node.domain),
                "op_type": StringAttr(node.op_type),
                "attrs": DictionaryAttr(properties),
            },
            attributes=attributes,
        )


def _initializer_type(tensor: onnx.TensorProto) -> Attribute:
    elem = element_type_from_onnx(tensor.data_type)
    if elem is None:
        return type_from_onnx(onnx.helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims)))
    return TensorType(elem, list(tensor.dims))


def _topological(graph: GraphProto, available: set[str], source: str) -> list[NodeProto]:
    """The nodes in an order where each input is defined first: the file's own order where
    it is valid (real files are usually sorted), otherwise the earliest node whose inputs
    are defined goes next. Kahn's algorithm, so an unsorted graph costs O(n log n), not
    one sweep of the pending nodes per node."""
    produced = {name for node in graph.node for name in node.output if name}
    nodes = list(graph.node)
    unmet = [0] * len(nodes)
    waiting: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        needs = {n for n in node.input if n}
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                needs.update(n for n in _outer_references(sub) if n in produced)
        for name in needs - available:
            waiting.setdefault(name, []).append(index)
            unmet[index] += 1
    ready = [index for index, count in enumerate(unmet) if count == 0]
    heapq.heapify(ready)
    ordered: list[NodeProto] = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        ordered.append(node)
        for name in node.output:
            for index in waiting.pop(name, ()):
                unmet[index] -= 1
                if unmet[index] == 0:
                    heapq.heappush(ready, index)
    if len(ordered) < len(nodes):
        defined = available | {name for node in ordered for name in node.output if name}
        node = next(n for i, n in enumerate(nodes) if unmet[i] > 0)
        missing = next((n for n in node.input if n and n not in defined), "?")
        raise EmberError(f"{source}: node '{node.name or node.op_type}' reads tensor '{missing}', which no node, input or initializer defines")
    return ordered
