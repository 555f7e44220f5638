"""`autocrop`: find the crop points from the NPU's capability table and `crop` there.

The graph is first constant-folded and shape-inferred (the capability checks need static
shapes). The NPU runs a node when the capability table (`target/capabilities.py`) accepts
it and `quantize`'s pattern table takes it (`onnx_to_quant.quantizable_nodes`): a node
`quantize` would leave float (a per-channel Sub / Div normalization on an input, a
BatchNormalization after no convolution) cannot run between quant ops. Then each node
goes to one place:
- pre (host): a node the NPU cannot run that reads only graph inputs, weights and other
  pre nodes: input preprocessing (Cast, layout Transpose, normalization, ...);
- post (host): a node the NPU cannot run, or one that reads a post node's result; and,
  from the outputs backwards, every node whose results only feed post nodes or graph
  outputs, unless it is a convolution / matrix product (Conv, ConvTranspose, Gemm, MatMul)
  or an epilogue that fuses into one (Relu, Clip, Add / Sub / Mul / Div by a constant).
  So for a detector the main part ends at the last convolutions of each head, and the head
  decoding (Reshape / Transpose / Split / Softmax / Sigmoid / anchors / Concat of boxes and
  scores, whose ranges differ widely and would share one int8 scale) runs on the host;
- main (NPU): the rest.
The boundary tensors go to `crop`. With `remarks=true` (the default) each cut is explained
on stderr: where main starts and ends, the host node on the other side and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import ReturnOp
from xdsl.ir import BlockArgument, Operation, OpResult, SSAValue
from xdsl.passes import ModulePass

from ember.dialects.onnx import InitializerOp, OnnxOp, value_name
from ember.frontend.onnx_export import graph_function
from ember.lowering.onnx_to_quant import quantizable_nodes
from ember.passes.crop import crop_module
from ember.passes.onnx_constant_fold import OnnxConstantFoldPass
from ember.passes.onnx_graph import constant_array, describe, remark
from ember.passes.onnx_shape_inference import OnnxShapeInferencePass
from ember.support.diagnostics import EmberError
from ember.target.capabilities import ANCHORS, CLAMP_ACTIVATIONS, npu_unsupported_reason

_DECODING = "head decoding after the last convolution"


def _is_constant(op: Operation) -> bool:
    return isinstance(op, InitializerOp) or (isinstance(op, OnnxOp) and op.ONNX_TYPE == "Constant")


def _epilogue(op: OnnxOp) -> bool:
    """Fuses into the POST stage of the convolution before it (bias, scale, clamp)."""
    if op.ONNX_TYPE in CLAMP_ACTIVATIONS:
        return True
    return op.ONNX_TYPE in ("Add", "Sub", "Mul", "Div") and any(constant_array(v) is not None for v in op.operands)


def npu_reasons(module: ModuleOp, nodes: list[Operation], host: set[Operation]) -> dict[Operation, str | None]:
    """Why the NPU cannot run each node (None: it can) when the `host` nodes run on the host."""
    quantized = quantizable_nodes(module, host)
    reasons = {}
    for node in nodes:
        reasons[node] = npu_unsupported_reason(node)
        if reasons[node] is None and node not in quantized:
            reasons[node] = "no quantize pattern takes it, so it would stay float"
    return reasons


def place_nodes(nodes: list[Operation], reasons: dict[Operation, str | None]) -> dict[Operation, tuple[str, str]]:
    """The host nodes: op -> ("pre" | "post", why it runs on the host)."""
    host: dict[Operation, tuple[str, str]] = {}

    def placed(value: SSAValue, part: str) -> bool:
        return isinstance(value, OpResult) and host.get(value.op, ("", ""))[0] == part

    for node in nodes:
        reads_inputs_only = all(isinstance(v, BlockArgument) or _is_constant(v.op) or placed(v, "pre") for v in node.operands)
        if reasons[node] is not None and reads_inputs_only:
            host[node] = ("pre", reasons[node])
    for node in nodes:
        if node in host:
            continue
        if reasons[node] is not None:
            host[node] = ("post", reasons[node])
        elif (source := next((v for v in node.operands if placed(v, "post")), None)) is not None:
            host[node] = ("post", f"it reads '{value_name(source)}', computed on the host")
    for node in reversed(nodes):
        if node in host or not isinstance(node, OnnxOp) or node.ONNX_TYPE in ANCHORS or _epilogue(node):
            continue
        users = [use.operation for result in node.results for use in result.uses]
        if users and all(isinstance(u, ReturnOp) or host.get(u, ("", ""))[0] == "post" for u in users):
            host[node] = ("post", _DECODING)
    return host


@dataclass(frozen=True)
class AutocropPass(ModulePass):
    """Crop host pre- and post-processing off the graph where the NPU's capabilities end."""

    name = "autocrop"

    remarks: bool = True

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        OnnxConstantFoldPass().apply(ctx, op)
        OnnxShapeInferencePass().apply(ctx, op)
        block = graph_function(op).body.block
        nodes = [n for n in block.ops if not _is_constant(n) and not isinstance(n, ReturnOp)]
        # Moving nodes to the host can break the chains `quantize` matches (a tail left
        # without its anchor), so placement repeats until the host set stops growing.
        host: dict[Operation, tuple[str, str]] = {}
        while True:
            placed = place_nodes(nodes, npu_reasons(op, nodes, set(host)))
            if placed.keys() <= host.keys():
                break
            host = {**placed, **host}
        main = [n for n in nodes if n not in host]
        if not main:
            first = nodes[0] if nodes else None
            why = f": {describe(first)} cannot run ({host[first][1]})" if first is not None else ""
            raise EmberError(f"autocrop: no node of the graph can run on the NPU{why}")
        main_set = set(main)
        inputs: dict[SSAValue, None] = {}
        outputs: dict[SSAValue, None] = {}
        for node in main:
            for value in node.operands:
                if isinstance(value, BlockArgument) or (value.op not in main_set and not _is_constant(value.op)):
                    inputs[value] = None
            for result in node.results:
                if any(isinstance(u.operation, ReturnOp) or u.operation not in main_set for u in result.uses):
                    outputs[result] = None
        if self.remarks:
            self._explain(list(inputs), list(outputs), host)
        crop_module(op, [value_name(v) for v in inputs], [value_name(v) for v in outputs])

    def _explain(self, inputs: list[SSAValue], outputs: list[SSAValue], host: dict[Operation, tuple[str, str]]) -> None:
        for value in inputs:
            if isinstance(value, BlockArgument):
                remark(self.name, f"main starts at graph input '{value_name(value)}'")
            else:
                remark(self.name, f"main starts at '{value_name(value)}': {describe(value.op)} runs on the host ({host[value.op][1]})")
        for value in outputs:
            consumer = next((u.operation for u in value.uses if u.operation in host), None)
            if consumer is None:
                remark(self.name, f"main ends at graph output '{value_name(value)}' ({describe(value.op)})")
            else:
                remark(
                    self.name,
                    f"main ends at '{value_name(value)}' ({describe(value.op)}): {describe(consumer)} runs on the host ({host[consumer][1]})",
                )
