"""`fold-batchnorm`: fold inference `BatchNormalization` into the linear ops next to it.

In inference form a BatchNormalization is a per-channel (axis 1) affine map
`y = s * x + t` with `s = gamma / sqrt(var + eps)` and `t = beta - s * mean`, computed in
float64 and stored in the weights' own type.

Backward, into the op computing the BN's input (the common case, AIMET's batch-norm folding):
- Conv:          `W'[o] = s[o] W[o]`, `b' = s b + t`;
- ConvTranspose: the weight is `[Cin, Cout/group, k...]`, so output channel `o` of group `g`
  scales column `o - g*Cout/group` of that group's rows;
- Gemm:          column `n` of `op(B)` scales by `s[n]`, `C' = s (beta C) + t`, `beta' = 1`;
- MatMul with a constant 2-D weight and a 2-D input becomes `Gemm(A, B s, t)`.
A constant per-channel Add between the op and the BN (how exporters write a ConvTranspose
bias) is folded along: `BN(y + c) = s y + (s c + t)`.

Forward, into the op reading the BN's output:
- Conv with group 1: `W'[:, c] = s[c] W[:, c]`, `b' = b + sum(W t)`; exact only when the Conv
  does not pad, or when `t == 0` (the padded zeros would otherwise become `t`);
- Gemm, directly or through a Flatten / Reshape to `[N, features]`: row `k` of `op(B)` scales
  by the per-feature `s`, `C' = beta C + alpha t op(B)`, `beta' = 1`.

Nothing folds through a value that has a second consumer or is a graph output, through an
activation, or with non-constant parameters. A BN that cannot fold becomes `Mul` + `Add` by
per-channel constants, so no BatchNormalization is left. With `remarks=true` the pass prints
one line per BN on stderr: where it folded, or why it could not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import FloatAttr, ModuleOp, TensorType, f32
from xdsl.ir import Attribute, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from ember.dialects.dense import numpy_dtype_of
from ember.dialects.onnx import OnnxOp, value_name
from ember.passes.onnx_graph import (
    add_initializer,
    build_onnx,
    constant_array,
    describe,
    erase_dead_constants,
    is_graph_output,
    onnx_producer,
    property_value,
    remark,
    single_user,
    static_shape,
)

_PASS = "fold-batchnorm"


@dataclass(frozen=True)
class _Affine:
    """A BatchNormalization in inference form: `y = scale * x + shift` per channel."""

    scale: np.ndarray
    shift: np.ndarray


def _affine_of(bn: OnnxOp) -> _Affine | str:
    """The BN's per-channel affine map, or why it has none."""
    slots = bn.input_slots()
    params = [constant_array(v) for v in slots[1:5]]
    for value, param in zip(slots[1:5], params):
        if param is None:
            return f"parameter '{value_name(value)}' is not a constant"
    if any(r.uses for r in bn.results[1:]) or property_value(bn, "training_mode", 0):
        return "it is in training mode (its running statistics are used)"
    gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
    if any(p.ndim != 1 or p.shape != gamma.shape for p in (beta, mean, var)) or gamma.ndim != 1:
        return "its parameters are not per-channel vectors"
    scale = gamma / np.sqrt(var + property_value(bn, "epsilon", 1e-5))
    return _Affine(scale, beta - scale * mean)


def _per_channel(array: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """`array` as a length-`channels` vector if it broadcasts along axis 1 only."""
    if array.ndim > rank:
        return None
    shape = (1,) * (rank - array.ndim) + array.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(array.astype(np.float64).reshape(-1), (channels,))


def _sole_consumer_reason(value: SSAValue, reader: str) -> str | None:
    if is_graph_output(value):
        return f"'{value_name(value)}' is also a graph output"
    if value.uses.get_length() != 1:
        return f"'{value_name(value)}' has consumers other than {reader}"
    return None


# --------------------------------------------------------------------------- backward


@dataclass(frozen=True)
class _Backward:
    producer: OnnxOp
    bias_add: OnnxOp | None
    """A constant per-channel Add between the producer and the BN."""
    added: np.ndarray
    """That Add's constant per channel (zeros without one)."""


_BACKWARD = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _backward(bn: OnnxOp, channels: int) -> _Backward | str:
    value = bn.input_slots()[0]
    producer = onnx_producer(value)
    bias_add, added = None, np.zeros(channels)
    if producer is not None and producer.ONNX_TYPE == "Add" and isinstance(value.type, TensorType):
        rank = len(value.type.get_shape())
        for operand, other in ((producer.operands[1], producer.operands[0]), (producer.operands[0], producer.operands[1])):
            constant = constant_array(operand)
            vector = None if constant is None else _per_channel(constant, rank, channels)
            if vector is not None and other.type == value.type and _sole_consumer_reason(value, "the BatchNormalization") is None:
                bias_add, added, value, producer = producer, vector, other, onnx_producer(other)
                break
    if producer is None or producer.ONNX_TYPE not in _BACKWARD:
        source = "a graph input" if producer is None else describe(producer)
        return f"its input comes from {source}, not from Conv, ConvTranspose, Gemm or MatMul"
    if reason := _sole_consumer_reason(value, "the BatchNormalization"):
        return reason
    slots = producer.input_slots()
    weight = constant_array(slots[1])
    if weight is None:
        return f"the weight '{value_name(slots[1])}' of {describe(producer)} is not a constant"
    if len(slots) > 2 and slots[2] is not None and constant_array(slots[2]) is None:
        return f"the bias '{value_name(slots[2])}' of {describe(producer)} is not a constant"
    result_type = producer.results[0].type
    if producer.ONNX_TYPE == "MatMul" and (weight.ndim != 2 or not isinstance(result_type, TensorType) or len(result_type.get_shape()) != 2):
        return f"{describe(producer)} is not a 2-D matrix product"
    if (count := _output_channels(producer, weight)) != channels:
        return f"{describe(producer)} has {count} output channels but the BatchNormalization has {channels}"
    return _Backward(producer, bias_add, added)


def _output_channels(op: OnnxOp, weight: np.ndarray) -> int:
    if op.ONNX_TYPE == "Conv":
        return weight.shape[0]
    if op.ONNX_TYPE == "ConvTranspose":
        return weight.shape[1] * property_value(op, "group", 1)
    if op.ONNX_TYPE == "Gemm" and property_value(op, "transB", 0):
        return weight.shape[0]
    return weight.shape[-1]


def _fold_backward(plan: _Backward, affine: _Affine) -> tuple[str, list[SSAValue | None], dict[str, Attribute], np.ndarray, np.ndarray]:
    """The folded op's type, its data input slots, properties, weight and bias."""
    op = plan.producer
    slots = op.input_slots()
    weight = constant_array(slots[1]).astype(np.float64)
    s, shift = affine.scale, affine.shift + affine.scale * plan.added
    properties = dict(op.properties)
    if op.ONNX_TYPE in ("Conv", "ConvTranspose"):
        bias = constant_array(slots[2]) if len(slots) > 2 else None
        bias = np.zeros(len(s)) if bias is None else bias.astype(np.float64)
        if op.ONNX_TYPE == "Conv":
            new_weight = weight * s.reshape((-1,) + (1,) * (weight.ndim - 1))
        else:
            group = property_value(op, "group", 1)
            per_group = weight.shape[1]
            blocks = weight.reshape((group, weight.shape[0] // group) + weight.shape[1:])
            factors = s.reshape((group, 1, per_group) + (1,) * (weight.ndim - 2))
            new_weight = (blocks * factors).reshape(weight.shape)
        return op.ONNX_TYPE, [slots[0]], properties, new_weight, s * bias + shift
    if op.ONNX_TYPE == "Gemm":
        trans_b = property_value(op, "transB", 0)
        new_weight = weight * (s[:, None] if trans_b else s[None, :])
        c = constant_array(slots[2]) if len(slots) > 2 else None
        c = np.zeros(1) if c is None else c.astype(np.float64) * property_value(op, "beta", 1.0)
        properties["beta"] = FloatAttr(1.0, f32)
        return "Gemm", [slots[0]], properties, new_weight, s * c + shift
    return "Gemm", [slots[0]], {}, weight * s[None, :], shift  # MatMul


class FoldBatchNormBackward(RewritePattern):
    """`BN(Conv | ConvTranspose | Gemm | MatMul (+ constant Add))` -> one op with new weights."""

    def __init__(self, remarks: bool):
        self.remarks = remarks

    @op_type_rewrite_pattern
    def match_and_rewrite(self, bn: OnnxOp, rewriter: PatternRewriter) -> None:
        if bn.ONNX_TYPE != "BatchNormalization" or isinstance(affine := _affine_of(bn), str):
            return
        plan = _backward(bn, len(affine.scale))
        if isinstance(plan, str):
            return
        op_type, data, properties, weight, bias = _fold_backward(plan, affine)
        old_weight = constant_array(plan.producer.input_slots()[1])
        name = value_name(bn.results[0])
        w = add_initializer(rewriter, bn, f"{name}.bnfold_weight", weight.astype(old_weight.dtype))
        b = add_initializer(rewriter, bn, f"{name}.bnfold_bias", bias.astype(old_weight.dtype))
        folded = build_onnx(op_type, [*data, w, b], bn.results[0].type, name, properties, plan.producer.node_name)
        dead = [*plan.producer.operands, *bn.operands, *(plan.bias_add.operands if plan.bias_add else ())]
        rewriter.replace(bn, folded, [folded.results[0], *[None] * (len(bn.results) - 1)])
        if plan.bias_add is not None:
            rewriter.erase(plan.bias_add)
        rewriter.erase(plan.producer)
        erase_dead_constants(rewriter, dead)
        if self.remarks:
            through = f" through {describe(plan.bias_add)}" if plan.bias_add is not None else ""
            remark(_PASS, f"{describe(bn)}: folded into {describe(plan.producer)}{through}")


# --------------------------------------------------------------------------- forward


@dataclass(frozen=True)
class _Forward:
    consumer: OnnxOp
    """The Conv or Gemm that absorbs the BN."""
    reshape: OnnxOp | None
    """A Flatten / Reshape between the BN and a Gemm."""
    repeat: int
    """How many features each channel spans at the Gemm's input."""


def _forward(bn: OnnxOp, affine: _Affine) -> _Forward | str:
    out = bn.results[0]
    if is_graph_output(out):
        return "its output is a graph output"
    user = single_user(out)
    if not isinstance(user, OnnxOp):
        return f"its output '{value_name(out)}' has {out.uses.get_length()} consumers"
    if user.ONNX_TYPE == "Conv":
        slots = user.input_slots()
        if constant_array(slots[1]) is None or (len(slots) > 2 and slots[2] is not None and constant_array(slots[2]) is None):
            return f"the weights of {describe(user)} are not constants"
        if property_value(user, "group", 1) != 1:
            return f"{describe(user)} is grouped"
        pads = property_value(user, "pads", [])
        padded = any(pads) or property_value(user, "auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER")
        if padded and np.any(affine.shift != 0):
            return f"{describe(user)} pads its input and the BN's shift is not zero"
        return _Forward(user, None, 1)
    reshape, value = None, out
    shape = static_shape(bn.input_slots()[0])
    if user.ONNX_TYPE in ("Flatten", "Reshape") and user.operands[0] is out:
        result_shape = static_shape(user.results[0])
        flat = shape is not None and result_shape == [shape[0], int(np.prod(shape[1:]))]
        if not flat:
            return f"{describe(user)} does not flatten to [N, features]"
        reshape, value = user, user.results[0]
        if reason := _sole_consumer_reason(value, "a Gemm"):
            return reason
        user = single_user(value)
    if isinstance(user, OnnxOp) and user.ONNX_TYPE == "Gemm" and shape is not None:
        slots = user.input_slots()
        if slots[0] is not value or property_value(user, "transA", 0):
            return f"the BN feeds {describe(user)} other than as its untransposed A input"
        if constant_array(slots[1]) is None or (len(slots) > 2 and slots[2] is not None and constant_array(slots[2]) is None):
            return f"the weights of {describe(user)} are not constants"
        return _Forward(user, reshape, int(np.prod(shape[2:])))
    return f"its consumer {describe(user) if isinstance(user, OnnxOp) else 'op'} is not Conv or Gemm"


class FoldBatchNormForward(RewritePattern):
    """`Conv(BN(x))` and `Gemm(Flatten(BN(x)))` -> the consumer with new weights."""

    def __init__(self, remarks: bool):
        self.remarks = remarks

    @op_type_rewrite_pattern
    def match_and_rewrite(self, bn: OnnxOp, rewriter: PatternRewriter) -> None:
        if bn.ONNX_TYPE != "BatchNormalization" or isinstance(affine := _affine_of(bn), str):
            return
        plan = _forward(bn, affine)
        if isinstance(plan, str):
            return
        consumer = plan.consumer
        slots = consumer.input_slots()
        weight = constant_array(slots[1])
        dtype = weight.dtype
        weight = weight.astype(np.float64)
        bias = constant_array(slots[2]) if len(slots) > 2 else None
        properties = dict(consumer.properties)
        if consumer.ONNX_TYPE == "Conv":
            factors = affine.scale.reshape((1, -1) + (1,) * (weight.ndim - 2))
            shifts = affine.shift.reshape(factors.shape)
            new_weight = weight * factors
            new_bias = (np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)) + (weight * shifts).sum(axis=tuple(range(1, weight.ndim)))
        else:
            scale = np.repeat(affine.scale, plan.repeat)
            shift = np.repeat(affine.shift, plan.repeat)
            trans_b = property_value(consumer, "transB", 0)
            new_weight = weight * (scale[None, :] if trans_b else scale[:, None])
            moved = (weight @ shift) if trans_b else (shift @ weight)
            c = np.zeros(1) if bias is None else bias.astype(np.float64) * property_value(consumer, "beta", 1.0)
            new_bias = c + property_value(consumer, "alpha", 1.0) * moved
            properties["beta"] = FloatAttr(1.0, f32)
        name = value_name(consumer.results[0])
        w = add_initializer(rewriter, consumer, f"{name}.bnfold_weight", new_weight.astype(dtype))
        b = add_initializer(rewriter, consumer, f"{name}.bnfold_bias", new_bias.astype(dtype))
        data = bn.input_slots()[0]
        if plan.reshape is not None:
            rewriter.replace_all_uses_with(bn.results[0], data)
            data = plan.reshape.results[0]
        folded = build_onnx(consumer.ONNX_TYPE, [data, w, b], consumer.results[0].type, name, properties, consumer.node_name)
        dead = [*consumer.operands, *bn.operands]
        rewriter.replace(consumer, folded)
        rewriter.erase(bn)
        erase_dead_constants(rewriter, dead)
        if self.remarks:
            remark(_PASS, f"{describe(bn)}: folded forward into {describe(consumer)}")


# --------------------------------------------------------------------------- the rest


class BatchNormToAffine(RewritePattern):
    """A BN that cannot fold -> `Add(Mul(x, s), t)` with per-channel constants."""

    def __init__(self, remarks: bool):
        self.remarks = remarks

    @op_type_rewrite_pattern
    def match_and_rewrite(self, bn: OnnxOp, rewriter: PatternRewriter) -> None:
        if bn.ONNX_TYPE != "BatchNormalization":
            return
        affine = _affine_of(bn)
        x = bn.input_slots()[0]
        if isinstance(affine, str) or not isinstance(x.type, TensorType):
            if self.remarks:
                remark(_PASS, f"{describe(bn)}: kept: {affine if isinstance(affine, str) else 'its input rank is unknown'}")
            return
        if self.remarks:
            backward = _backward(bn, len(affine.scale))
            forward = _forward(bn, affine)
            remark(_PASS, f"{describe(bn)}: not folded (backward: {backward}; forward: {forward}); became Mul + Add")
        rank = len(x.type.get_shape())
        dtype = numpy_dtype_of(x.type.element_type)
        shape = (-1,) + (1,) * (rank - 2)
        name = value_name(bn.results[0])
        scale = add_initializer(rewriter, bn, f"{name}.bn_scale", affine.scale.reshape(shape).astype(dtype))
        shift = add_initializer(rewriter, bn, f"{name}.bn_shift", affine.shift.reshape(shape).astype(dtype))
        node = bn.node_name or name
        mul = build_onnx("Mul", [x, scale], x.type, f"{name}.bn_scaled", node_name=f"{node}.scale")
        add = build_onnx("Add", [mul.results[0], shift], bn.results[0].type, name, node_name=f"{node}.shift")
        dead = list(bn.operands)
        rewriter.replace(bn, [mul, add], [add.results[0], *[None] * (len(bn.results) - 1)])
        erase_dead_constants(rewriter, dead)


@dataclass(frozen=True)
class FoldBatchNormPass(ModulePass):
    """Fold BatchNormalization into neighbouring Conv / ConvTranspose / Gemm / MatMul;
    turn the rest into Mul + Add. `remarks=true` explains each BN on stderr."""

    name = "fold-batchnorm"

    remarks: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        fold = GreedyRewritePatternApplier([FoldBatchNormBackward(self.remarks), FoldBatchNormForward(self.remarks)])
        PatternRewriteWalker(fold, apply_recursively=True).rewrite_module(op)
        PatternRewriteWalker(BatchNormToAffine(self.remarks), apply_recursively=False).rewrite_module(op)
