"""`crop`: split the graph into host pre-processing, the main (accelerator) part and host
post-processing, at boundary tensors given by their ONNX names (MemryX's cropping).

    crop{inputs="a,b" outputs="c,d"}     crop{config="crop.json"}   # {"inputs": [...], "outputs": [...]}

- main: the nodes that compute the crop `outputs` from the crop `inputs` (and weights);
- pre:  the nodes that compute the crop `inputs` from the graph inputs;
- post: every other node (what turns the crop outputs into the graph outputs).

The cut must separate the graph: main may read nothing but the crop inputs and weights, and
post nothing computed inside main or pre except the crop outputs and inputs; an error names
the tensors that break it. The result has one `func.func` per non-empty part, main first,
each with `onnx.part = "pre" | "main" | "post"`; weights are copied into each part that
reads them; the boundary is the module attribute `onnx.crop = {inputs = [...], outputs = [...]}`.
`ember-opt -t onnx -o out.onnx` writes `out.onnx`, `out_pre.onnx`, `out_post.onnx` and
`out_crop.json` from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Block, BlockArgument, Operation, OpResult, Region, SSAValue
from xdsl.passes import ModulePass

from ember.dialects.onnx import ARG_NAME, InitializerOp, OnnxOp, value_name
from ember.frontend.onnx_export import PART, graph_function
from ember.support.diagnostics import EmberError

CROP = "onnx.crop"
"""Module attribute of a cropped module: its boundary tensors `{inputs, outputs}`."""


def _is_constant(op: Operation) -> bool:
    return isinstance(op, InitializerOp) or (isinstance(op, OnnxOp) and op.ONNX_TYPE == "Constant")


def _names(values: Iterable[SSAValue]) -> str:
    return ", ".join(f"'{value_name(v)}'" for v in values)


def _producers(values: Iterable[SSAValue], stop: set[SSAValue]) -> tuple[set[Operation], list[SSAValue]]:
    """The non-constant ops computing `values` back to `stop`, and the graph inputs reached."""
    ops: set[Operation] = set()
    reached: list[SSAValue] = []
    pending = [v for v in values if v not in stop]
    seen = set(pending)
    while pending:
        value = pending.pop()
        if isinstance(value, BlockArgument):
            reached.append(value)
            continue
        op = value.op
        if _is_constant(op) or op in ops:
            continue
        ops.add(op)
        for operand in op.operands:
            if operand not in stop and operand not in seen:
                seen.add(operand)
                pending.append(operand)
    return ops, reached


def crop_module(module: ModuleOp, input_names: Sequence[str], output_names: Sequence[str]) -> None:
    """Split `module`'s graph at the named boundary tensors (see the module docstring)."""
    if CROP in module.attributes:
        raise EmberError("crop: the module is already cropped; crop the original model")
    func = graph_function(module)
    block = func.body.block
    by_name = {value_name(a): a for a in block.args}
    for op in block.ops:
        by_name.update((value_name(r), r) for r in op.results if not _is_constant(op))
    if not output_names:
        raise EmberError("crop: no outputs given; name the tensors where the main part ends (outputs=\"a,b\")")
    for name in [*input_names, *output_names]:
        if name not in by_name:
            raise EmberError(f"crop: tensor '{name}' is not a non-constant tensor of the graph; check the name in the IR (ember-opt model.onnx --elide-weights)")
    inputs = [by_name[n] for n in input_names]
    outputs = [by_name[n] for n in output_names]
    main, reached = _producers(outputs, set(inputs))
    if not inputs:
        # Without crop inputs the main part starts at the graph inputs it reads.
        inputs, reached = list(dict.fromkeys(reached)), []
        input_names = [value_name(v) for v in inputs]
    stop = set(inputs)
    pre, _ = _producers(inputs, set())
    crossing = [r for op in main & pre for r in op.results if any(u.operation in main - pre for u in r.uses)]
    leaks = crossing or reached
    if leaks:
        raise EmberError(
            f"crop: the cut does not separate the graph: the main part also reads {_names(dict.fromkeys(leaks))}, "
            "which the crop inputs do not cover; add them to inputs or move the cut"
        )
    main_reads = {operand for op in main for operand in op.operands}
    unused = [v for v in inputs if v not in main_reads and v not in outputs]
    if unused:
        raise EmberError(f"crop: input {_names(unused)} does not lead to any crop output; remove it or move the cut")

    ret = block.last_op
    assert isinstance(ret, ReturnOp)
    post = {op for op in block.ops if op is not ret and not _is_constant(op) and op not in main and op not in pre}
    allowed = set(outputs) | stop
    for op in block.ops:
        if op not in post:
            continue
        bad = [v for v in op.operands if isinstance(v, OpResult) and (v.op in main or v.op in pre) and v not in allowed]
        if bad:
            raise EmberError(
                f"crop: the post-processing node '{op.node_name if isinstance(op, OnnxOp) else op.name}' reads {_names(bad)}, "
                "computed inside the cropped parts; add it to outputs (or inputs) or move the cut"
            )

    graph_outputs = list(ret.arguments)
    pre_outputs = [v for v in inputs if isinstance(v, OpResult)] + [v for v in graph_outputs if isinstance(v, OpResult) and v.op in pre]
    post_outputs = [v for v in graph_outputs if isinstance(v, OpResult) and v.op in post]
    parts = [("main", main, inputs, outputs)]
    if pre_outputs:
        parts.append(("pre", pre, None, list(dict.fromkeys(pre_outputs))))
    if post_outputs:
        parts.append(("post", post, None, post_outputs))
    # A part's graph outputs keep the model's output names (an exporter's Identity may
    # have been folded away), except a main output that post reads by its tensor name.
    names = func.attributes.get("onnx.output_names")
    renamed = {v: n.data for v, n in zip(graph_outputs, names.data) if isinstance(n, StringAttr)} if isinstance(names, ArrayAttr) else {}
    post_reads = {operand for op in post for operand in op.operands}
    keep = {v: n for v, n in renamed.items() if v not in post_reads}
    new_funcs = [_part_function(func, part, ops, part_inputs, part_outputs, keep if part != "pre" else {})
                 for part, ops, part_inputs, part_outputs in parts]  # fmt: skip
    module.body.block.insert_ops_before(new_funcs, func)
    func.detach()
    func.erase()
    module.attributes[CROP] = DictionaryAttr(
        {"inputs": ArrayAttr([StringAttr(n) for n in input_names]), "outputs": ArrayAttr([StringAttr(n) for n in output_names])}
    )


def _part_function(
    func: FuncOp, part: str, ops: set[Operation], inputs: Sequence[SSAValue] | None, outputs: Sequence[SSAValue],
    output_names: dict[SSAValue, str],
) -> FuncOp:
    """A new graph function holding `ops` (in their original order) and the weights they read.
    Without explicit `inputs` the part reads whatever its ops read from outside it."""
    block = func.body.block
    if inputs is None:
        produced = {r for op in ops for r in op.results}
        inputs = list(
            dict.fromkeys(
                v for op in block.ops if op in ops for v in op.operands if v not in produced and not (isinstance(v, OpResult) and _is_constant(v.op))
            )
        )
    arg_attrs = func.arg_attrs.data if func.arg_attrs is not None else ()
    new_block = Block(arg_types=[v.type for v in inputs])
    mapping: dict[SSAValue, SSAValue] = dict(zip(inputs, new_block.args))
    for value, arg in mapping.items():
        arg.name_hint = value.name_hint
    attrs = []
    for value in inputs:
        original = arg_attrs[value.index] if isinstance(value, BlockArgument) and value.index < len(arg_attrs) else None
        attrs.append(original if isinstance(original, DictionaryAttr) else DictionaryAttr({ARG_NAME: StringAttr(value_name(value))}))
    needed = {v for op in ops for v in op.operands}
    for op in block.ops:
        if op in ops or (_is_constant(op) and any(r in needed for r in op.results)):
            new_block.add_op(op.clone(value_mapper=mapping))
    new_block.add_op(ReturnOp(*[mapping[v] for v in outputs]))
    name = func.sym_name.data if part == "main" else f"{func.sym_name.data}_{part}"
    new = FuncOp.from_region(name, [v.type for v in inputs], [v.type for v in outputs], Region(new_block))
    new.arg_attrs = ArrayAttr(attrs)
    new.attributes["onnx.output_names"] = ArrayAttr([StringAttr(output_names.get(v, value_name(v))) for v in outputs])
    new.attributes[PART] = StringAttr(part)
    return new


def _split(names: str) -> list[str]:
    return [n.strip() for n in names.split(",") if n.strip()]


def read_crop_config(path: str) -> tuple[list[str], list[str]]:
    """The inputs and outputs of a MemryX-style crop JSON file."""
    try:
        config = json.loads(Path(path).read_text())
    except OSError as err:
        raise EmberError(f"{path}: cannot read the crop config ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise EmberError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); expected {{\"inputs\": [...], \"outputs\": [...]}}") from None
    if not isinstance(config, dict) or not all(isinstance(config.get(k, []), list) for k in ("inputs", "outputs")):
        raise EmberError(f"{path}: expected {{\"inputs\": [...], \"outputs\": [...]}} with lists of tensor names")
    return [str(n) for n in config.get("inputs", [])], [str(n) for n in config.get("outputs", [])]


@dataclass(frozen=True)
class CropPass(ModulePass):
    """Split the graph into pre / main / post parts at the given boundary tensors."""

    name = "crop"

    inputs: str = ""
    outputs: str = ""
    config: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.config and (self.inputs or self.outputs):
            raise EmberError("crop: give either config=FILE or inputs=/outputs=, not both")
        if self.config:
            inputs, outputs = read_crop_config(self.config)
        else:
            inputs, outputs = _split(self.inputs), _split(self.outputs)
        crop_module(op, inputs, outputs)
