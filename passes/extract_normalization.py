"""`extract-normalization`: move the input normalization that exporters put into models
out of the graph and record it on the input.

At each graph input the pass follows the preprocessing chain exporters write:

    [Cast (to float)] -> [Transpose (layout)] -> (Mul | Add | Sub | Div by a constant)+

The arithmetic part must be an exact per-channel affine map: every constant is a scalar or
varies along one axis only (the same for all of them), and the variable operand is never a
divisor. The chain reduces to `a * x + b` (float64), which is normalization with
`mean = -b / a`, `std = 1 / a` in the input's own range (0..255 for a uint8 input). The chain
is stripped, so the graph now takes `(x - mean) / std` directly; the Transpose stays (the
input keeps its layout) unless `strip_transpose=true`.

The record, on the graph input's argument attributes (`axis` is the channel axis of the new
input; mean and std hold one value when every constant was a scalar):

    %x: tensor<1x3x224x224xf32> {onnx.name = "x", onnx.normalization = {axis = 1 : i64, mean = [...], std = [...]}}

The ONNX exporter writes it to `metadata_props["ember.normalization.<input>"]` as JSON
`{"mean": [...], "std": [...], "axis": 1}`. With `remarks=true` (the default) the pass prints
the model-script line for each input on stderr, numbered in input order:
`normalization1 = normalization([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])`.
Values are rounded to 7 significant digits, the precision of the float32 constants they
come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto
from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, FloatAttr, FunctionType, IntegerAttr, ModuleOp, TensorType, f64, i64
from xdsl.dialects.func import FuncOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from ember.dialects.onnx import OnnxOp
from ember.frontend.onnx_export import NORMALIZATION, graph_function
from ember.passes.onnx_graph import constant_array, property_value, remark, single_user

_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)


@dataclass
class _Chain:
    """The preprocessing found at one graph input."""

    cast: OnnxOp | None = None
    transpose: OnnxOp | None = None
    affine: list[OnnxOp] = field(default_factory=list)
    axis: int | None = None
    """The channel axis of the constants, in the coordinates after the Transpose."""
    scale: np.ndarray = field(default_factory=lambda: np.ones(1))
    shift: np.ndarray = field(default_factory=lambda: np.zeros(1))


def _next(value: SSAValue, op_type: str | tuple[str, ...]) -> OnnxOp | None:
    user = single_user(value)
    types = (op_type,) if isinstance(op_type, str) else op_type
    return user if isinstance(user, OnnxOp) and user.ONNX_TYPE in types else None


def _channel_vector(constant: np.ndarray, rank: int) -> tuple[int | None, np.ndarray] | None:
    """The constant as (axis, vector) if it varies along one axis at most."""
    if constant.ndim > rank or constant.dtype.kind != "f":
        return None
    shape = (1,) * (rank - constant.ndim) + constant.shape
    varying = [i for i, d in enumerate(shape) if d != 1]
    if len(varying) > 1:
        return None
    return (varying[0] if varying else None), constant.astype(np.float64).reshape(-1)


def _step(chain: _Chain, op: OnnxOp, value: SSAValue) -> bool:
    """Compose `op` (reading `value`) into the chain's affine map; False if it is not an
    exact per-channel affine step."""
    lhs, rhs = op.operands
    if (lhs is value) == (rhs is value):
        return False
    constant_operand = rhs if lhs is value else lhs
    constant = constant_array(constant_operand)
    if constant is None or not isinstance(value.type, TensorType):
        return False
    found = _channel_vector(constant, len(value.type.get_shape()))
    if found is None:
        return False
    axis, k = found
    if axis is not None and chain.axis is not None and axis != chain.axis:
        return False
    if axis is not None and len(chain.scale) > 1 and len(k) != len(chain.scale):
        return False
    variable_first = lhs is value
    if op.ONNX_TYPE == "Mul":
        scale, shift = chain.scale * k, chain.shift * k
    elif op.ONNX_TYPE == "Add":
        scale, shift = chain.scale, chain.shift + k
    elif op.ONNX_TYPE == "Sub":
        scale, shift = (chain.scale, chain.shift - k) if variable_first else (-chain.scale, k - chain.shift)
    elif variable_first and np.all(k != 0):  # Div by a constant
        scale, shift = chain.scale / k, chain.shift / k
    else:
        return False
    chain.axis = axis if axis is not None else chain.axis
    chain.scale, chain.shift = np.broadcast_arrays(scale, shift)
    chain.affine.append(op)
    return True


def _find_chain(arg: SSAValue) -> _Chain | None:
    chain = _Chain()
    value = arg
    cast = _next(value, "Cast")
    if cast is not None and property_value(cast, "to") in _FLOATS:
        chain.cast, value = cast, cast.results[0]
    transpose = _next(value, "Transpose")
    if transpose is not None:
        chain.transpose, value = transpose, transpose.results[0]
    while (op := _next(value, ("Mul", "Add", "Sub", "Div"))) is not None and _step(chain, op, value):
        value = op.results[0]
    if not chain.affine or np.any(chain.scale == 0):
        return None
    return chain


def _round(values: np.ndarray) -> list[float]:
    return [float(f"{v:.7g}") for v in values]


@dataclass(frozen=True)
class ExtractNormalizationPass(ModulePass):
    """Strip the per-channel input normalization (after an optional Cast and layout
    Transpose) from each graph input and record its mean and std on the input."""

    name = "extract-normalization"

    strip_transpose: bool = False
    remarks: bool = True

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        func = graph_function(op)
        number = 0
        for index, arg in enumerate(func.body.block.args):
            chain = _find_chain(arg)
            if chain is None:
                continue
            mean, std = _round(-chain.shift / chain.scale), _round(1 / chain.scale)
            axis = self._strip(func, index, chain)
            record = {"mean": _floats(mean), "std": _floats(std)}
            if axis is not None:
                record["axis"] = IntegerAttr(axis, i64)
            _set_arg_attr(func, index, DictionaryAttr(record))
            number += 1
            if self.remarks:
                remark(self.name, f"normalization{number} = normalization({mean}, {std})")

    def _strip(self, func: FuncOp, index: int, chain: _Chain) -> int | None:
        """Remove the chain; the channel axis in the new input's coordinates."""
        end = chain.affine[-1].results[0]
        keep = chain.transpose is not None and not self.strip_transpose
        arg = func.body.block.args[index]
        shape = arg.type.get_shape() if keep else end.type.get_shape()
        new_arg = Rewriter.replace_value_with_new_type(arg, TensorType(end.type.element_type, shape))
        erase: list[Operation] = list(reversed(chain.affine))
        axis = chain.axis
        if keep:
            chain.transpose.operands[0] = new_arg
            end.replace_all_uses_with(chain.transpose.results[0])
            if axis is not None:
                axis = property_value(chain.transpose, "perm", list(reversed(range(len(shape)))))[axis]
        else:
            end.replace_all_uses_with(new_arg)
            erase.append(chain.transpose)
        erase.append(chain.cast)
        for op in erase:
            if op is not None:
                constants = [v for v in op.operands if constant_array(v) is not None]
                Rewriter.erase_op(op)
                for value in constants:
                    if not value.uses:
                        Rewriter.erase_op(value.op)
        func.function_type = FunctionType.from_lists([a.type for a in func.body.block.args], func.function_type.outputs.data)
        return axis


def _floats(values: list[float]) -> ArrayAttr:
    return ArrayAttr([FloatAttr(v, f64) for v in values])


def _set_arg_attr(func: FuncOp, index: int, record: DictionaryAttr) -> None:
    entries = list(func.arg_attrs.data) if func.arg_attrs is not None else [DictionaryAttr({})] * len(func.body.block.args)
    entries[index] = DictionaryAttr({**entries[index].data, NORMALIZATION: record})
    func.arg_attrs = ArrayAttr(entries)
