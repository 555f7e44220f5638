"""Export an `onnx`-dialect module back to an ONNX model.

The inverse of `onnx_import`: names, attributes, opsets and model metadata come back as
they were, so import followed by export gives a model whose outputs onnxruntime computes
identically. Values a pass created without a name get a fresh unique one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
from onnx import ModelProto, NodeProto
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, IntegerAttr, ModuleOp, StringAttr
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Operation, SSAValue

from ember.dialects.onnx import NODE_NAME, OUTPUT_NAMES, CustomOp, InitializerOp, OnnxOp, OnnxProtoAttr, value_name
from ember.frontend.onnx_import import CAPTURES
from ember.frontend.types import attribute_to_onnx, tensor_to_onnx, type_to_onnx
from ember.support.atomic_output import write_bytes_atomic
from ember.support.diagnostics import EmberError

_SEGMENTS = ("operandSegmentSizes", "resultSegmentSizes")


NORMALIZATION = "onnx.normalization"
"""Argument attribute of a graph input: its extracted normalization (`extract-normalization`)."""
PART = "onnx.part"
"""Function attribute of a cropped module's graphs: "pre", "main" or "post"."""


def graph_function(module: ModuleOp, part: str = "main") -> FuncOp:
    """The module's graph function: the `func.func` whose `onnx.part` is `part` (a
    function without that attribute is the main part of an uncropped module)."""
    for op in module.ops:
        if isinstance(op, FuncOp):
            attr = op.attributes.get(PART)
            if (attr.data if isinstance(attr, StringAttr) else "main") == part:
                return op
    if part != "main":
        raise EmberError(f"the module has no '{part}' part; crop it first (-p crop or -p autocrop)")
    raise EmberError("the module has no func.func graph; is it an onnx-dialect module?")


def export_model(module: ModuleOp, part: str = "main") -> ModelProto:
    """Build the ONNX model of an `onnx`-dialect module (of one part of a cropped one)."""
    return _Exporter(module, part).build()


def write_host_parts(module: ModuleOp, path: str | os.PathLike[str]) -> None:
    """For a cropped module whose main graph goes to `path`, write its host parts beside
    it: `<stem>_pre.onnx`, `<stem>_post.onnx` (when not empty) and `<stem>_crop.json` (the
    boundary tensors, MemryX's `{"inputs": [...], "outputs": [...]}`), each atomically.
    An uncropped module has none."""
    target = Path(path)
    parts = {op.attributes[PART].data for op in module.ops if isinstance(op, FuncOp) and isinstance(op.attributes.get(PART), StringAttr)}
    for part in ("pre", "post"):
        if part in parts:
            write_bytes_atomic(target.with_name(f"{target.stem}_{part}.onnx"), export_model(module, part).SerializeToString())
    if isinstance(crop := module.attributes.get("onnx.crop"), DictionaryAttr):
        boundary = {k: [n.data for n in v.data] for k, v in crop.data.items() if isinstance(v, ArrayAttr)}
        write_bytes_atomic(target.with_name(f"{target.stem}_crop.json"), (json.dumps(boundary, indent=2) + "\n").encode())


class _Exporter:
    def __init__(self, module: ModuleOp, part: str = "main"):
        self.module = module
        self.func = graph_function(module, part)
        self.names: dict[SSAValue, str] = {}
        self.assigned: set[str] = set()
        self.reserved: set[str] = set()
        # Per base name, the first suffix not yet tried: fresh names for many unnamed
        # values of one base then cost O(1) each instead of a scan from `_1`.
        self.next_suffix: dict[str, int] = {}

    def name(self, value: SSAValue) -> str:
        """The value's ONNX name: its recorded one, or a fresh name that no value uses."""
        if value in self.names:
            return self.names[value]
        name = value_name(value)
        if not name or name in self.assigned:
            base = name or value.name_hint or "t"
            counter = self.next_suffix.get(base, 1)
            while f"{base}_{counter}" in self.reserved or f"{base}_{counter}" in self.assigned:
                counter += 1
            name = f"{base}_{counter}"
            self.next_suffix[base] = counter + 1
        self.names[value] = name
        self.assigned.add(name)
        return name

    def build(self) -> ModelProto:
        block = self.func.body.block
        # Fresh names must not collide with any recorded one.
        self.reserved.update(value_name(a) for a in block.args)
        for op in block.ops:
            self.reserved.update(value_name(r) for r in op.results)
        inputs = [_value_info(self.name(arg), arg.type, required=True) for arg in block.args]
        initializers, nodes, value_infos = [], [], []
        outputs: list[SSAValue] = []
        for op in block.ops:
            if isinstance(op, ReturnOp):
                outputs = list(op.arguments)
            elif isinstance(op, InitializerOp):
                initializers.append(_initializer(op, self.name(op.output)))
            else:
                nodes.append(self.node(op))
                value_infos.extend(_value_info(self.name(r), r.type) for r in op.results)
        graph_outputs = []
        wanted = self.func.attributes.get("onnx.output_names")
        wanted_names = [s.data for s in wanted.data] if isinstance(wanted, ArrayAttr) else []
        for index, value in enumerate(outputs):
            name = self.name(value)
            target = wanted_names[index] if index < len(wanted_names) else name
            if target != name:
                # A pass replaced the value behind this output: keep the output's name.
                nodes.append(onnx.helper.make_node("Identity", [name], [target]))
            graph_outputs.append(_value_info(target, value.type, required=True))
        graph = onnx.helper.make_graph(
            nodes,
            self.func.sym_name.data,
            [i for i in inputs if i is not None],
            [o for o in graph_outputs if o is not None],
            initializers,
            value_info=[v for v in value_infos if v is not None],
        )
        return self.model(graph)

    def node(self, op: Operation) -> NodeProto:
        outputs = _output_names(op, self)
        attributes = op.attributes
        node_name = attributes[NODE_NAME].data if isinstance(attributes.get(NODE_NAME), StringAttr) else ""
        if isinstance(op, CustomOp):
            operands = list(op.operands)
            captures = attributes.get(CAPTURES)
            if isinstance(captures, IntegerAttr):
                operands = operands[: len(operands) - captures.value.data]
            inputs = [self.name(v) for v in operands]
            absent = attributes.get("onnx_absent_inputs")
            if isinstance(absent, ArrayAttr):
                for index in (a.value.data for a in absent.data if isinstance(a, IntegerAttr)):
                    inputs.insert(index, "")
            node = onnx.helper.make_node(op.op_type.data, inputs, outputs, name=node_name or None, domain=op.domain.data or None)
            node.attribute.extend(_attributes(node, op.attrs.data))
            return node
        if not isinstance(op, OnnxOp):
            raise EmberError(f"cannot export '{op.name}' to ONNX: only onnx-dialect ops have an ONNX form")
        inputs = ["" if v is None else self.name(v) for v in op.input_slots()]
        while inputs and inputs[-1] == "":
            inputs.pop()
        node = onnx.helper.make_node(op.ONNX_TYPE, inputs, outputs, name=node_name or None)
        node.attribute.extend(_attributes(node, {k: v for k, v in op.properties.items() if k not in _SEGMENTS}))
        return node

    def model(self, graph: onnx.GraphProto) -> ModelProto:
        attrs = self.module.attributes
        opsets = attrs.get("onnx.opset_import")
        opset_import = (
            [onnx.helper.make_opsetid(k, v.value.data) for k, v in opsets.data.items() if isinstance(v, IntegerAttr)]
            if isinstance(opsets, DictionaryAttr)
            else [onnx.helper.make_opsetid("", onnx.defs.onnx_opset_version())]
        )
        model = onnx.helper.make_model(graph, opset_imports=opset_import)
        ir_version = attrs.get("onnx.ir_version")
        if isinstance(ir_version, IntegerAttr):
            # IR 3 listed every initializer as a graph input; Ember writes IR 4 or newer.
            model.ir_version = max(4, ir_version.value.data)
        for field in ("producer_name", "producer_version", "domain", "doc_string"):
            if isinstance(value := attrs.get(f"onnx.{field}"), StringAttr):
                setattr(model, field, value.data)
        if isinstance(version := attrs.get("onnx.model_version"), IntegerAttr):
            model.model_version = version.value.data
        props = attrs.get("onnx.metadata_props")
        metadata = {k: v.data for k, v in props.data.items() if isinstance(v, StringAttr)} if isinstance(props, DictionaryAttr) else {}
        metadata.update(_normalization_metadata(self.func))
        if metadata:
            onnx.helper.set_model_props(model, metadata)
        if isinstance(functions := attrs.get("onnx.functions"), ArrayAttr):
            for function in functions.data:
                if isinstance(function, OnnxProtoAttr):
                    model.functions.add().ParseFromString(function.data)
        return model


def _normalization_metadata(func: FuncOp) -> dict[str, str]:
    """`ember.normalization.<input>` -> JSON of each input's `onnx.normalization` record."""
    metadata = {}
    for arg, entry in zip(func.body.block.args, func.arg_attrs.data if func.arg_attrs is not None else ()):
        record = entry.data.get(NORMALIZATION) if isinstance(entry, DictionaryAttr) else None
        if isinstance(record, DictionaryAttr):
            fields = {k: [f.value.data for f in v.data] if isinstance(v, ArrayAttr) else v.value.data for k, v in record.data.items()}
            metadata[f"ember.normalization.{value_name(arg)}"] = json.dumps(fields)
    return metadata


def _attributes(node: NodeProto, properties: dict) -> list[onnx.AttributeProto]:
    try:
        return [attribute_to_onnx(k, v) for k, v in properties.items()]
    except EmberError as err:
        label = f"node '{node.name}'" if node.name else f"the {node.op_type} node producing '{node.output[0] if node.output else ''}'"
        raise EmberError(f"{label}: {err}") from None


def _output_names(op: Operation, exporter: _Exporter) -> list[str]:
    """Output names with "" kept for absent optional outputs."""
    names = op.attributes.get(OUTPUT_NAMES)
    recorded = [n.data for n in names.data if isinstance(n, StringAttr)] if isinstance(names, ArrayAttr) else []
    results = iter(op.results)
    out: list[str] = []
    for name in recorded:
        if name == "":
            out.append("")
            continue
        result = next(results, None)
        if result is None:
            break
        out.append(exporter.name(result))
    out.extend(exporter.name(r) for r in results)
    while out and out[-1] == "":
        out.pop()
    return out


def _initializer(op: InitializerOp, name: str) -> onnx.TensorProto:
    from xdsl.dialects.builtin import DenseResourceAttr

    if isinstance(op.value, DenseResourceAttr):
        raise EmberError(f"initializer '{name}' was printed with elided weights; re-import the model from its .onnx file")
    return tensor_to_onnx(op.value, name)


def _value_info(name: str, type_attr, required: bool = False) -> onnx.ValueInfoProto | None:
    proto = type_to_onnx(type_attr)
    if proto is None:
        if required:
            return onnx.helper.make_empty_tensor_value_info(name)
        return None
    info = onnx.ValueInfoProto()
    info.name = name
    info.type.CopyFrom(proto)
    return info
