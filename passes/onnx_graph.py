"""Helpers shared by the graph passes that rewrite the `onnx` dialect: reading
compile-time constants, asking who uses a value, building named ops and weights, and
printing remarks."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, StringAttr, TensorType
from xdsl.dialects.func import ReturnOp
from xdsl.ir import Attribute, Operation, OpResult, SSAValue
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from ember.dialects.dense import dense_from_numpy, numpy_from_dense
from ember.dialects.onnx import NODE_NAME, OPS, InitializerOp, OnnxOp, python_value, set_output_names, value_name


def constant_array(value: SSAValue | None) -> np.ndarray | None:
    """The value of `value` if it is an initializer or a `Constant` node's tensor, else None."""
    owner = value.op if isinstance(value, OpResult) else None
    if isinstance(owner, InitializerOp) and isinstance(owner.value, DenseIntOrFPElementsAttr):
        return numpy_from_dense(owner.value)
    if isinstance(owner, OnnxOp) and owner.ONNX_TYPE == "Constant":
        tensor = owner.properties.get("value")
        if isinstance(tensor, DenseIntOrFPElementsAttr):
            return numpy_from_dense(tensor)
    return None


def is_graph_output(value: SSAValue) -> bool:
    return any(isinstance(use.operation, ReturnOp) for use in value.uses)


def single_user(value: SSAValue) -> Operation | None:
    """The only op reading `value` (once), or None."""
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


def onnx_producer(value: SSAValue | None) -> OnnxOp | None:
    owner = value.op if isinstance(value, OpResult) else None
    return owner if isinstance(owner, OnnxOp) else None


def describe(op: Operation) -> str:
    """`Type 'node name'` for remarks and errors (the output name when the node has none)."""
    if isinstance(op, OnnxOp):
        return f"{op.ONNX_TYPE} '{op.node_name or (value_name(op.results[0]) if op.results else '')}'"
    return op.name


def static_shape(value: SSAValue) -> list[int] | None:
    if isinstance(value.type, TensorType):
        shape = list(value.type.get_shape())
        if all(d >= 0 for d in shape):
            return shape
    return None


def property_value(op: OnnxOp, name: str, default=None):
    """An ONNX attribute as a Python value, `default` when the node does not set it."""
    attr = op.properties.get(name)
    return default if attr is None else python_value(attr)


def add_initializer(rewriter: PatternRewriter, before: Operation, name: str, array: np.ndarray) -> SSAValue:
    init = InitializerOp(name, dense_from_numpy(array))
    rewriter.insert(init, InsertPoint.before(before))
    return init.output


def build_onnx(
    op_type: str,
    slots: Sequence[SSAValue | None],
    result_type: Attribute,
    output_name: str,
    properties: dict[str, Attribute] | None = None,
    node_name: str = "",
) -> OnnxOp:
    """A one-result ONNX node with its output named `output_name`."""
    attributes: dict[str, Attribute] = {NODE_NAME: StringAttr(node_name)} if node_name else {}
    op = OPS[op_type].build_from_slots(slots, [result_type], properties or {}, attributes)
    set_output_names(op, [output_name])
    return op


def erase_dead_constants(rewriter: PatternRewriter, values: Sequence[SSAValue | None]) -> None:
    """Erase the initializers and `Constant` nodes among `values` that nothing reads any more."""
    for value in values:
        if value is None or value.uses or not isinstance(value, OpResult):
            continue
        owner = value.op
        if isinstance(owner, InitializerOp) or (isinstance(owner, OnnxOp) and owner.ONNX_TYPE == "Constant"):
            if owner.parent is not None:
                rewriter.erase(owner)


def remark(pass_name: str, text: str) -> None:
    """One remark line on stderr (remarks are for people; stdout carries the IR)."""
    print(f"{pass_name}: {text}", file=sys.stderr)
