"""`onnx-shape-inference`: give every value the type ONNX's shape inference finds.

The module goes to ONNX, through `onnx.shape_inference` (with data propagation, so shape
arithmetic on static shapes gives static shapes) and the inferred types come back onto
the IR values by tensor name. A type already more precise than the inferred one stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from xdsl.context import Context
from xdsl.dialects.builtin import FunctionType, ModuleOp, TensorType
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from ember.dialects.onnx import value_name
from ember.frontend.onnx_export import export_model, graph_function
from ember.frontend.types import UNKNOWN_TYPE, type_from_onnx


@dataclass(frozen=True)
class OnnxShapeInferencePass(ModulePass):
    """Refine the types of all values of an `onnx`-dialect module."""

    name = "onnx-shape-inference"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        func = graph_function(op)
        try:
            model = onnx.shape_inference.infer_shapes(export_model(op), data_prop=True)
        except (onnx.shape_inference.InferenceError, RuntimeError):
            model = onnx.shape_inference.infer_shapes(export_model(op), data_prop=False, strict_mode=False)
        inferred = {v.name: type_from_onnx(v.type) for v in [*model.graph.value_info, *model.graph.output]}
        for inner in func.body.block.ops:
            for result in list(inner.results):
                new = inferred.get(value_name(result))
                if new is not None and _more_precise(new, result.type):
                    Rewriter.replace_value_with_new_type(result, new)
        _update_signature(func)


def _more_precise(new: Attribute, old: Attribute) -> bool:
    if new == old or new == UNKNOWN_TYPE:
        return False
    if not isinstance(old, TensorType):
        return True
    if not isinstance(new, TensorType) or new.element_type != old.element_type:
        return False
    return sum(d >= 0 for d in new.get_shape()) > sum(d >= 0 for d in old.get_shape())


def _update_signature(func: FuncOp) -> None:
    ret = func.body.block.last_op
    assert isinstance(ret, ReturnOp)
    func.function_type = FunctionType.from_lists(func.function_type.inputs.data, [v.type for v in ret.arguments])
