"""`cross-layer-equalize`: AIMET's cross-layer equalization of consecutive convolutions.

    cross-layer-equalize{remarks=true}

For a pair `conv1 -> [chain] -> conv2` where `conv2` reads only what `conv1` computes,
output channel `i` of `conv1` is divided by `s_i` and input channel `i` of `conv2` is
multiplied by it. Where the chain between them is positively homogeneous, the model's
outputs are unchanged:

    s_i = sqrt(r1_i * r2_i) / r2_i      (both ranges become sqrt(r1_i * r2_i))

`r1_i` is the largest `|weight|` of output channel `i` of `conv1`, times the gain of the
chain's Mul/Div constants on that channel (the weight the quantizer folds them into);
`r2_i` the largest `|weight|` of `conv2` reading input channel `i`. Dead channels (a range
below 1e-6 of the layer's largest) keep `s_i = 1`. Equal ranges also level the per-channel ranges of the tensor between
the two layers, which int8 quantizes with one scale per tensor.

What the chain may hold (every value in it read by the next op only, none a graph output):
- `Relu`, `LeakyRelu`, `Identity`: `f(x / s) = f(x) / s` for `s > 0`;
- `Mul` / `Div` by a constant (scalar or one value per channel): commutes with the scaling;
- `Add` / `Sub` of such a constant: the constant of channel `i` is divided by `s_i` (a
  scalar becomes one value per channel, which `quantize` folds into the conv's bias).
Nothing else — in particular not HardSwish, Clip (ReLU6 clamps at a fixed 6), Sigmoid or
HardSigmoid, which do not commute with a per-channel scale.

`conv1` is a Conv of any group (depthwise included) or a ConvTranspose with group 1;
`conv2` is a Conv of any group or a ConvTranspose; both have constant weights and bias.
Zero padding of `conv2` pads the scaled tensor with zeros, which stay exact. Pairs are
equalized in program order, so a conv in two pairs (`a -> b -> c`) is rescaled on both of
its sides. Rescaled weights are computed in float64 and stored in the weights' own type, as
new initializers named `<conv output>.cle_weight` / `.cle_bias`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from ember.dialects.dense import dense_from_numpy
from ember.dialects.onnx import InitializerOp, OnnxOp, value_name
from ember.frontend.onnx_export import graph_function
from ember.passes.onnx_graph import constant_array, describe, is_graph_output, property_value, remark, single_user, static_shape

_PASS = "cross-layer-equalize"
HOMOGENEOUS = frozenset({"Relu", "LeakyRelu", "Identity"})
"""Elementwise ops with `f(a x) = a f(x)` for every `a > 0`."""
AFFINE = frozenset({"Mul", "Div", "Add", "Sub"})
DEAD = 1e-6
"""A channel whose weight range is below this fraction of its layer's largest is dead and
keeps `s = 1`: dividing by its tiny `s` would blow up `conv1`'s bias on that channel."""


@dataclass(frozen=True)
class _Pair:
    first: OnnxOp
    chain: tuple[OnnxOp, ...]
    second: OnnxOp
    gain: np.ndarray
    """Per channel: the product of the chain's Mul/Div constants."""


def _weights(op: OnnxOp) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Constant weight and bias (None when absent) of a Conv/ConvTranspose, else None."""
    slots = op.input_slots()
    weight = constant_array(slots[1]) if len(slots) > 1 else None
    bias_slot = slots[2] if len(slots) > 2 else None
    bias = constant_array(bias_slot) if bias_slot is not None else None
    if weight is None or (bias_slot is not None and bias is None):
        return None
    return weight, bias


def _channel_constant(op: OnnxOp, value: SSAValue, channels: int) -> np.ndarray | None:
    """The other (constant) operand of a binary op as one float64 value per channel (axis 1
    of `value`), or None when it is not constant or varies along another axis."""
    slots = op.input_slots()
    if len(slots) != 2 or value not in slots:
        return None
    other = slots[1] if slots[0] is value else slots[0]
    const = constant_array(other)
    shape = static_shape(value)
    if const is None or shape is None or len(shape) < 2 or const.ndim > len(shape):
        return None
    c = const.astype(np.float64).reshape((1,) * (len(shape) - const.ndim) + const.shape)
    if any(c.shape[d] != 1 for d in range(len(shape)) if d != 1) or c.shape[1] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,)).copy()


def _pair(first: OnnxOp) -> _Pair | None:
    """The equalizable pair starting at `first`, or None."""
    if first.ONNX_TYPE not in ("Conv", "ConvTranspose") or _weights(first) is None:
        return None
    if first.ONNX_TYPE == "ConvTranspose" and property_value(first, "group", 1) != 1:
        return None
    value = first.results[0]
    shape = static_shape(value)
    if shape is None or len(shape) < 3:
        return None
    channels = shape[1]
    gain = np.ones(channels)
    chain: list[OnnxOp] = []
    while True:
        if is_graph_output(value):
            return None
        user = single_user(value)
        if not isinstance(user, OnnxOp) or len(user.results) != 1:
            return None
        if user.ONNX_TYPE in ("Conv", "ConvTranspose"):
            slots = user.input_slots()
            if slots[0] is not value or _weights(user) is None:
                return None
            return _Pair(first, tuple(chain), user, gain)
        if user.ONNX_TYPE in HOMOGENEOUS and user.input_slots()[0] is value:
            pass
        elif user.ONNX_TYPE in AFFINE and (c := _channel_constant(user, value, channels)) is not None:
            first_operand = user.input_slots()[0] is value
            if user.ONNX_TYPE == "Div" and (not first_operand or np.any(c == 0)):
                return None
            if user.ONNX_TYPE == "Mul":
                gain = gain * c
            elif user.ONNX_TYPE == "Div":
                gain = gain / c
        else:
            return None
        chain.append(user)
        value = user.results[0]


def _output_ranges(op: OnnxOp, weight: np.ndarray) -> np.ndarray:
    """Largest |weight| per output channel."""
    if op.ONNX_TYPE == "Conv":
        return np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
    return np.abs(weight).swapaxes(0, 1).reshape(weight.shape[1], -1).max(axis=1)  # ConvTranspose, group 1


def _input_ranges(op: OnnxOp, weight: np.ndarray, channels: int) -> np.ndarray:
    """Largest |weight| reading each input channel."""
    if op.ONNX_TYPE == "ConvTranspose":
        return np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
    group = property_value(op, "group", 1)
    per_group_out, per_group_in = weight.shape[0] // group, weight.shape[1]
    blocks = np.abs(weight).reshape(group, per_group_out, per_group_in, -1).max(axis=(1, 3))
    return blocks.reshape(channels)


def _scale_outputs(op: OnnxOp, weight: np.ndarray, factors: np.ndarray) -> np.ndarray:
    if op.ONNX_TYPE == "Conv":
        return weight * factors.reshape((-1,) + (1,) * (weight.ndim - 1))
    return weight * factors.reshape((1, -1) + (1,) * (weight.ndim - 2))


def _scale_inputs(op: OnnxOp, weight: np.ndarray, factors: np.ndarray) -> np.ndarray:
    if op.ONNX_TYPE == "ConvTranspose":
        return weight * factors.reshape((-1,) + (1,) * (weight.ndim - 1))
    group = property_value(op, "group", 1)
    per_group_in = weight.shape[1]
    blocks = weight.reshape((group, weight.shape[0] // group) + weight.shape[1:])
    by_group = factors.reshape((group, 1, per_group_in) + (1,) * (weight.ndim - 2))
    return (blocks * by_group).reshape(weight.shape)


def _replace_constant(op: OnnxOp, slot: int, array: np.ndarray, name: str) -> None:
    """Point input `slot` of `op` at a new initializer holding `array`; erase the old
    constant if nothing else reads it."""
    old = op.input_slots()[slot]
    index = list(op.operands).index(old)
    init = InitializerOp(name, dense_from_numpy(array))
    Rewriter.insert_op(init, InsertPoint.before(op))
    op.operands[index] = init.output
    owner = old.owner
    if not old.uses and (isinstance(owner, InitializerOp) or (isinstance(owner, OnnxOp) and owner.ONNX_TYPE == "Constant")):
        Rewriter.erase_op(owner)


def _equalize(pair: _Pair) -> np.ndarray:
    """Rescale the pair in place; return the scales `s`."""
    w1, b1 = _weights(pair.first)
    w2, _ = _weights(pair.second)
    r1 = _output_ranges(pair.first, w1.astype(np.float64)) * np.abs(pair.gain)
    channels = r1.size
    r2 = _input_ranges(pair.second, w2.astype(np.float64), channels)
    live = (r1 > DEAD * r1.max(initial=0.0)) & (r2 > DEAD * r2.max(initial=0.0)) & np.isfinite(r1) & np.isfinite(r2)
    s = np.ones(channels)
    s[live] = np.sqrt(r1[live] * r2[live]) / r2[live]
    name1, name2 = value_name(pair.first.results[0]), value_name(pair.second.results[0])
    new_w1 = _scale_outputs(pair.first, w1.astype(np.float64), 1.0 / s)
    _replace_constant(pair.first, 1, new_w1.astype(w1.dtype), f"{name1}.cle_weight")
    if b1 is not None:
        _replace_constant(pair.first, 2, (b1.astype(np.float64) / s).astype(b1.dtype), f"{name1}.cle_bias")
    value = pair.first.results[0]
    for op in pair.chain:
        if op.ONNX_TYPE in ("Add", "Sub"):
            slots = op.input_slots()
            const_slot = 1 if slots[0] is value else 0
            const = constant_array(slots[const_slot])
            shift = _channel_constant(op, value, channels) / s
            shape = (channels,) + (1,) * (len(static_shape(value)) - 2)
            _replace_constant(op, const_slot, shift.reshape(shape).astype(const.dtype), f"{value_name(op.results[0])}.cle_shift")
        value = op.results[0]
    new_w2 = _scale_inputs(pair.second, w2.astype(np.float64), s)
    _replace_constant(pair.second, 1, new_w2.astype(w2.dtype), f"{name2}.cle_weight")
    return s


@dataclass(frozen=True)
class CrossLayerEqualizePass(ModulePass):
    """Cross-layer equalization of Conv -> (Relu / per-channel affine)* -> Conv pairs
    (AIMET): exact in float, levels per-channel weight and activation ranges for int8.
    `remarks=true` prints each equalized pair and its scale range on stderr."""

    name = "cross-layer-equalize"

    remarks: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for function_op in list(graph_function(op).body.block.ops):
            if not isinstance(function_op, OnnxOp) or function_op.parent is None:
                continue
            pair = _pair(function_op)
            if pair is None:
                continue
            s = _equalize(pair)
            if self.remarks:
                through = f" through {', '.join(describe(c) for c in pair.chain)}" if pair.chain else ""
                remark(
                    _PASS,
                    f"{describe(pair.first)} -> {describe(pair.second)}{through}: {s.size} channels, scales {s.min():.4g}..{s.max():.4g}",
                )
