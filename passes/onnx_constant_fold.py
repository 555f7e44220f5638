"""`onnx-constant-fold`: evaluate constant subgraphs into initializers.

- `Constant` nodes become `onnx.initializer`s with the same tensor name.
- `Shape` and `Size` of a value with a static shape become constants, which is what
  lets the `Shape -> Gather -> Concat -> Reshape` chains of exporters fold away.
- Any deterministic node whose inputs are all initializers is evaluated with ONNX's
  reference evaluator (so every op and opset folds the way the spec says) and replaced
  by initializers carrying its output names.
- `Identity` and inference `Dropout` forward their input.
Initializers nothing reads any more are removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from xdsl.context import Context
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp, TensorType
from xdsl.dialects.func import FuncOp
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from ember.dialects.dense import dense_from_numpy, numpy_from_dense
from ember.dialects.onnx import InitializerOp, OnnxOp, attribute_value, opset_version, value_name
from ember.frontend.types import attribute_to_onnx
from ember.passes.onnx_canonicalization import forwarded_value

_NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


@dataclass(frozen=True)
class OnnxConstantFoldPass(ModulePass):
    """Fold constant subgraphs of the `onnx` dialect into `onnx.initializer` ops."""

    name = "onnx-constant-fold"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        opset = opset_version(op)
        for func in op.ops:
            if isinstance(func, FuncOp):
                _fold_block(func, opset)


def _fold_block(func: FuncOp, opset: int) -> None:
    block = func.body.block
    for op in list(block.ops):
        if not isinstance(op, OnnxOp) or op.ONNX_TYPE in _NEVER_FOLD:
            continue
        if (source := forwarded_value(op)) is not None:
            op.results[0].replace_all_uses_with(source)
            Rewriter.erase_op(op)
            continue
        values = _fold(op, opset)
        if values is None:
            continue
        replacements = []
        for result, array in zip(op.results, values):
            init = InitializerOp(value_name(result), dense_from_numpy(array))
            init.output.name_hint = result.name_hint
            Rewriter.insert_op(init, InsertPoint.before(op))
            replacements.append(init.output)
        for result, new in zip(op.results, replacements):
            # The folded value's own type wins over a stale value_info of the file.
            result.replace_all_uses_with(new)
        Rewriter.erase_op(op)
    for op in list(block.ops):
        if isinstance(op, InitializerOp) and not op.output.uses:
            Rewriter.erase_op(op)


def _is_static(type_attr: TensorType) -> bool:
    return all(d >= 0 for d in type_attr.get_shape())


def _constant_input(value) -> np.ndarray | None:
    owner = getattr(value, "op", None)
    if isinstance(owner, InitializerOp) and isinstance(owner.value, DenseIntOrFPElementsAttr):
        return numpy_from_dense(owner.value)
    return None


def _fold(op: OnnxOp, opset: int) -> list[np.ndarray] | None:
    """The values of `op`'s results if they are compile-time constants, else None."""
    if op.ONNX_TYPE in ("Shape", "Size"):
        source = op.input_slots()[0]
        if isinstance(source.type, TensorType) and _is_static(source.type):
            shape = np.array(source.type.get_shape(), dtype=np.int64)
            if op.ONNX_TYPE == "Size":
                return [np.array(int(np.prod(shape)), dtype=np.int64)]
            start = attribute_value(op, "start") or 0
            end = attribute_value(op, "end")
            return [shape[start:end]]
    slots = op.input_slots()
    arrays = [None if v is None else _constant_input(v) for v in slots]
    if any(v is not None and a is None for v, a in zip(slots, arrays)):
        return None
    if op.ONNX_TYPE != "Constant" and not any(a is not None for a in arrays):
        return None  # no inputs at all (e.g. a generator op): keep it
    return _evaluate(op, arrays, opset)


def _evaluate(op: OnnxOp, arrays: list[np.ndarray | None], opset: int) -> list[np.ndarray] | None:
    inputs = [f"in{i}" if a is not None else "" for i, a in enumerate(arrays)]
    outputs = [f"out{i}" for i in range(len(op.results))]
    node = onnx.helper.make_node(op.ONNX_TYPE, inputs, outputs)
    node.attribute.extend(
        attribute_to_onnx(k, v) for k, v in op.properties.items() if k not in ("operandSegmentSizes", "resultSegmentSizes")
    )
    feeds = {name: np.asarray(a) for name, a in zip(inputs, arrays) if a is not None}
    graph = onnx.helper.make_graph(
        [node],
        "fold",
        [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in feeds.items()],
        [onnx.helper.make_empty_tensor_value_info(n) for n in outputs],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    try:
        results = ReferenceEvaluator(model).run(None, feeds)
    except Exception:  # noqa: BLE001 - a node the evaluator cannot run stays unfolded
        return None
    return [np.asarray(r) for r in results]
