"""onnx -> quant: calibrated float ops become int8 `quant` ops, pattern by pattern.

Like BrainChip's QuantizeML, the conversion is driven by a table of op sequences, each
mapping a chain of ONNX nodes to one quantized op (or a short fixed sequence of them):

    Conv, then per-channel affine ops folded into weights/bias, then an activation chain
        -> quant.conv2d with a fused clamp (Relu, Clip/ReLU6) or a 256-entry table
           (HardSigmoid, HardSwish = x*HardSigmoid(x), SiLU = x*Sigmoid(x), Tanh, ...)
    ConvTranspose with stride == kernel, same tail -> quant.conv_transpose
    Gemm / MatMul (constant weights), same tail  -> quant.fully_connected
    Add / Mul of two tensors, then a clamp       -> quant.add / quant.mul (+ quant.lut)
    a chain of elementwise ops of one tensor     -> quant.lut
    pooling, resize, concat, layout ops          -> their quant op

A sequence is a tuple of elements; an element is an ONNX op type (`"Conv"`), alternatives
(`"Gemm|MatMul"`) or a class (`"@eltw"`: an elementwise op whose other operands are
scalar constants or earlier values of the chain; `"@affine"`: Add/Sub/Mul/Div by a
per-channel constant, or BatchNormalization; `"@add"` / `"@mul"`: an Add / Mul whose
operand shapes the NPU's ELTW unit takes, `capabilities.eltw_shapes_reason`), optionally
suffixed `?`, `*` or `+`. Each op after the first reads the previous op's result; no
intermediate result may be used outside the chain. At every node the longest matching
sequence wins (ties: patterns registered by the user first, then the table order); a
lowering that finds the match unquantizable raises `NotQuantizable` and the next
candidate is tried.

Users extend the table from Python without editing Ember:

    from ember.lowering.onnx_to_quant import QuantPattern, register_pattern, extra_patterns
    register_pattern(QuantPattern("my_gelu", ("Div", "Erf", "Add", "Mul", "Mul"), lower_lut))
    with extra_patterns(QuantPattern(...)):   # only for the conversions in this block
        QuantizePass().apply(ctx, module)

Numbers: weights int8 symmetric per output channel, activations int8 asymmetric with the
calibrated ranges (`ember.passes.calibrate`), biases int32 with scale `s_in * s_w[c]`,
requantization multipliers from `ember.target.requant.quantize_multiplier`
(`ember.dialects.quant_params`). Convolutions named in `int16_nodes` (names or glob
patterns) get int16 symmetric results (and table inputs, with 513-entry interpolated
tables), when every reader of the result takes int16 (`INT16_READERS`): a convolution
(the NPU's CONV reads int16 tiles and its POST writes them), a GlobalAveragePool (POOL
sums int16 tiles) or a Mul of it by a computed int8 tensor (ELTW mul reads an int16
operand); the NPU's other units are int8. The others stay int8 and are listed in
`Lowering.int16_refused`. An int16 tensor is quantized over its observed extremes
(`observed`) rather than its calibrated range: with 65536 levels, clipping outliers
costs more than the rounding it saves. A graph input named there
is quantized to int16 under the same rule (PREPROC writes it in int16 on the NPU); for
an image model whose first layer is a convolution this removes the input's own int8
rounding, which is coarser than the pixels it comes from. Tables are built in float64 by evaluating the matched
ONNX nodes themselves (ONNX's reference evaluator), so any elementwise chain of one
tensor becomes an exact table.

What no pattern matches stays float: the `onnx` ops remain, reading `quant.dequantize`
results and feeding `quant.quantize`; one warning lists them. The graph's inputs and
outputs stay float (quantize at entry, dequantize at exit).

Every quant op keeps the ONNX names: `onnx_outputs` (the tensor it computes, so
`value_name` works on quant values), `onnx_node` (the fused nodes, comma separated) and
`quant.pattern` (the pattern's name); a conv with a table also names the tensor the table
reads (`quant.lut_input`).
"""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import math
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper
from xdsl.dialects.builtin import ArrayAttr, DenseIntOrFPElementsAttr, Float32Type, IntegerType, ModuleOp, StringAttr, TensorType, i32
from xdsl.dialects.func import FuncOp
from xdsl.ir import Block, BlockArgument, Operation, OpResult, SSAValue, Use
from xdsl.rewriter import InsertPoint, Rewriter

from ember.dialects import quant
from ember.dialects.dense import dense_from_numpy, numpy_from_dense
from ember.dialects.onnx import NODE_NAME, OUTPUT_NAMES, InitializerOp, OnnxOp, attribute_value, opset_version, value_name
from ember.dialects.quant import UniformQuantizedType, quant_type_of
from ember.dialects.quant_params import (
    activation16_params,
    activation_params,
    add_multipliers,
    bias_weight_scales,
    conv_multipliers,
    global_avg_pool_multiplier,
    mul_multiplier,
    quantize_bias,
    quantize_weights,
    rescale_multiplier,
    resize_multiplier,
)
from ember.dialects.quant_tables import build_table, build_table16
from ember.frontend.onnx_export import graph_function
from ember.frontend.types import attribute_to_onnx
from ember.passes.gptq import gptq_round
from ember.support.diagnostics import EmberError
from ember.target.capabilities import conv_transpose_reason, eltw_shapes_reason

PATTERN_ATTR = "quant.pattern"
LUT_INPUT_ATTR = "quant.lut_input"
"""On a conv/fully-connected with a table: the ONNX name of the tensor the table reads."""
Range = tuple[float, float]
INT16_READERS = ("Conv", "ConvTranspose", "GlobalAveragePool", "Mul")
"""The ONNX ops whose quantized form reads an int16 input: the data of a convolution
(CONV), global average pooling (POOL sum), and one computed, full-shaped operand of a
product (ELTW mul; a squeeze-excitation block's features times its gate)."""
INT16_SUM_PIXELS = 1 << 16
"""GlobalAveragePool sums int16 values in int32: fewer than 2^16 pixels cannot overflow."""
ACCUMULATOR_LIMIT = 1 << 31


class NotQuantizable(Exception):
    """Raised by a lowering: this match cannot be quantized (the reason is the message)."""


class QuantizationWarning(UserWarning):
    """Nodes stayed float."""


# =============================================================================== patterns


@dataclass(frozen=True)
class QuantPattern:
    """An op sequence and the lowering that turns a match of it into quant ops.

    `lower(match, lowering)` builds the quant ops through `lowering` and returns the
    quantized value of the match's output (the last op's first result)."""

    name: str
    sequence: tuple[str, ...]
    lower: Callable[[Match, Lowering], SSAValue]

    def __post_init__(self):
        for element in self.sequence:
            _Element.parse(element)
        if not self.sequence or _Element.parse(self.sequence[0]).low == 0:
            raise ValueError(f"pattern {self.name}: the first element must match exactly one op")


@dataclass(frozen=True)
class Match:
    """A chain of ONNX ops matching a pattern; `elements[i]` holds the ops matched by
    sequence element i (empty for an absent optional one)."""

    pattern: QuantPattern
    elements: tuple[tuple[OnnxOp, ...], ...]

    @property
    def ops(self) -> tuple[OnnxOp, ...]:
        return tuple(op for group in self.elements for op in group)

    @property
    def anchor(self) -> OnnxOp:
        return self.ops[0]

    @property
    def output(self) -> SSAValue:
        return self.ops[-1].results[0]


ClassPredicate = Callable[[OnnxOp, "ChainState", "Lowering"], bool]


@dataclass(frozen=True)
class ChainState:
    """What an element class sees: the chain's anchor and the values the current element's
    run may read (its input and the results of the ops it matched so far)."""

    anchor: OnnxOp
    run_values: tuple[SSAValue, ...]


@dataclass(frozen=True)
class _Element:
    types: frozenset[str] | None
    cls: str | None
    low: int
    high: float

    @classmethod
    def parse(cls, text: str) -> _Element:
        low, high = {"?": (0, 1), "*": (0, np.inf), "+": (1, np.inf)}.get(text[-1:], (1, 1))
        body = text[:-1] if text[-1:] in "?*+" else text
        if body.startswith("@"):
            if body[1:] not in ELEMENT_CLASSES:
                raise ValueError(f"unknown op class {body}; known: {', '.join('@' + c for c in ELEMENT_CLASSES)}")
            return cls(None, body[1:], low, high)
        return cls(frozenset(body.split("|")), None, low, high)

    def accepts(self, op: OnnxOp, state: ChainState, lowering: Lowering) -> bool:
        if self.types is not None:
            return op.ONNX_TYPE in self.types
        return ELEMENT_CLASSES[self.cls](op, state, lowering)


_registered: list[QuantPattern] = []
_scoped: contextvars.ContextVar[tuple[QuantPattern, ...]] = contextvars.ContextVar("quant_patterns", default=())


def register_pattern(pattern: QuantPattern) -> None:
    """Add a pattern to every later conversion (tried before the built-in table)."""
    _registered.append(pattern)


@contextlib.contextmanager
def extra_patterns(*patterns: QuantPattern) -> Iterator[None]:
    """Add patterns for the conversions run inside this `with` block only."""
    token = _scoped.set(_scoped.get() + patterns)
    try:
        yield
    finally:
        _scoped.reset(token)


def active_patterns() -> list[QuantPattern]:
    """Scoped patterns, then registered ones, then the built-in table."""
    return [*_scoped.get(), *reversed(_registered), *BUILTIN_PATTERNS]


# ========================================================================= op classes

ELEMENTWISE = frozenset(
    "Relu Clip LeakyRelu PRelu HardSigmoid HardSwish Sigmoid Tanh Elu Selu Celu Softplus Softsign Mish Gelu Erf "
    "Exp Log Abs Neg Sqrt Reciprocal Pow ThresholdedRelu Add Sub Mul Div Max Min".split()
)
"""Op types an `@eltw` element accepts (with scalar constants as other operands)."""

CLAMPS = frozenset({"Relu", "Clip"})


def _is_eltw(op: OnnxOp, state: ChainState, lowering: Lowering) -> bool:
    if op.ONNX_TYPE not in ELEMENTWISE or len(op.results) != 1 or not _is_f32(op.results[0]):
        return False
    for value in op.input_slots():
        if value is None or value in state.run_values:
            continue
        const = lowering.constant(value)
        if const is None or const.size != 1:
            return False
    return any(v in state.run_values for v in op.input_slots() if v is not None)


def _is_affine(op: OnnxOp, state: ChainState, lowering: Lowering) -> bool:
    """Per-channel affine op after a conv/fully-connected anchor: foldable into its weights."""
    slots = op.input_slots()
    if op.ONNX_TYPE == "BatchNormalization":
        return len(op.results) == 1 and all(lowering.constant(v) is not None for v in slots[1:5])
    if op.ONNX_TYPE not in ("Add", "Sub", "Mul", "Div") or len(slots) != 2:
        return False
    first_is_chain = slots[0] in state.run_values
    other = slots[1] if first_is_chain else slots[0]
    if op.ONNX_TYPE in ("Sub", "Div") and not first_is_chain:
        return False
    const = lowering.constant(other)
    return const is not None and per_channel(const, op.results[0], _channel_axis(state.anchor)) is not None


def _eltw_binary(op_type: str) -> ClassPredicate:
    """An `op_type` node of two static-shaped operands that ELTW computes as they are.
    Matching only these (rather than refusing in the lowering) lets `quantizable_nodes`
    foresee it, so `autocrop` sends the others to the host. A per-channel constant after a
    convolution is not affected: the convolution's chain folds it (`@affine`) before the
    walk reaches it as an anchor."""

    def accepts(op: OnnxOp, state: ChainState, lowering: Lowering) -> bool:
        if op.ONNX_TYPE != op_type or len(op.operands) != 2:
            return False
        values = [*op.operands, op.results[0]]
        if not all(isinstance(v.type, TensorType) and all(d >= 0 for d in v.type.get_shape()) for v in values):
            return False
        return eltw_shapes_reason(*(v.type.get_shape() for v in values)) is None

    return accepts


ELEMENT_CLASSES: dict[str, ClassPredicate] = {
    "eltw": _is_eltw,
    "affine": _is_affine,
    "add": _eltw_binary("Add"),
    "mul": _eltw_binary("Mul"),
}
"""`@name` classes usable in sequences; extend it to add a class."""


def _channel_axis(anchor: OnnxOp) -> int:
    return 1 if anchor.ONNX_TYPE in ("Conv", "ConvTranspose") else -1


def per_channel(const: np.ndarray, result: SSAValue, axis: int) -> np.ndarray | None:
    """`const` as one value per channel of `result` (along `axis`), or None if it varies
    along another axis or does not broadcast."""
    shape = result.type.get_shape()
    c = np.asarray(const, dtype=np.float64)
    if c.ndim > len(shape):
        return None
    c = c.reshape((1,) * (len(shape) - c.ndim) + c.shape)
    axis %= len(shape)
    if any(c.shape[d] != 1 for d in range(len(shape)) if d != axis) or c.shape[axis] not in (1, shape[axis]):
        return None
    return np.broadcast_to(c.reshape(-1), (shape[axis],)).copy()


def _is_f32(value: SSAValue) -> bool:
    return isinstance(value.type, TensorType) and isinstance(value.type.element_type, Float32Type)


# =========================================================================== lowering


@dataclass(frozen=True)
class Activation:
    """How a chain's tail is applied: types and the clamp / table of the producing op."""

    output_type: UniformQuantizedType
    act_min: int = -128
    act_max: int = 127
    lut: np.ndarray | None = None
    lut_input_type: UniformQuantizedType | None = None

    @property
    def requant_type(self) -> UniformQuantizedType:
        """The type requantization targets (the table's input, if there is a table)."""
        return self.lut_input_type or self.output_type


class Lowering:
    """The state of one onnx -> quant conversion, and the helpers lowerings use."""

    def __init__(
        self,
        module: ModuleOp,
        ranges: dict[str, Range],
        float_nodes: Sequence[str] = (),
        hessians: Mapping[str, np.ndarray] | None = None,
        int16_nodes: Sequence[str] = (),
        observed: Mapping[str, Range] | None = None,
    ):
        self.module = module
        self.int16_nodes = tuple(int16_nodes)
        self.int16_refused: dict[str, str] = {}
        """Node -> why its result stayed int8 although `int16_nodes` named it."""
        self.hessians = hessians or {}
        self.function: FuncOp = graph_function(module)
        self.block: Block = self.function.body.block
        self.ranges = ranges
        self.observed = observed or {}
        """ONNX tensor name -> its observed extremes: the range of an int16 tensor."""
        self.float_nodes = set(float_nodes)
        self.opset = opset_version(module)
        self.qvalues: dict[SSAValue, SSAValue] = {}
        self.matched: list[OnnxOp] = []
        self._consumed: set[Operation] = set()
        self._created: list[Operation] = []
        self._insert_before: Operation | None = None
        self._match: Match | None = None

    # ------------------------------------------------------------------ queries

    def constant(self, value: SSAValue | None) -> np.ndarray | None:
        """The value of an initializer, or None."""
        if isinstance(value, OpResult) and isinstance(value.op, InitializerOp):
            if isinstance(value.op.value, DenseIntOrFPElementsAttr):
                return numpy_from_dense(value.op.value)
        return None

    def range_of(self, value: SSAValue) -> Range:
        name = value_name(value)
        if name not in self.ranges:
            raise EmberError(f"tensor '{name}' has no calibration range; calibrate the same model before quantizing")
        return self.ranges[name]

    def act_type(self, value: SSAValue, int16: bool = False) -> UniformQuantizedType:
        """The int8 (or symmetric int16) activation type of a float value, from its
        calibrated range (an int16 one from its observed extremes, when calibration
        recorded them)."""
        lo, hi = self.range_of(value)
        if int16:
            lo, hi = self.observed.get(value_name(value), (lo, hi))
            scale, _ = activation16_params(lo, hi, value_name(value))
            return UniformQuantizedType(IntegerType(16), scale, 0)
        scale, zero_point = activation_params(lo, hi, value_name(value))
        return UniformQuantizedType(IntegerType(8), scale, zero_point)

    def wants_int16(self, name: str, out: SSAValue) -> bool:
        """Whether `out` (computed by node `name`, or the graph input `name`) is int16:
        `name` is named in `int16_nodes` and every reader takes int16 (`INT16_READERS`)."""
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.int16_nodes):
            return False
        for use in out.uses:
            if (why := self._int16_refusal(use)) is not None:
                self.int16_refused[name] = f"'{value_name(out)}' {why}"
                return False
        return True

    def _int16_refusal(self, use: Use) -> str | None:
        """Why the reader of `use` cannot take an int16 value there, or None."""
        reader, value = use.operation, use.operation.operands[use.index]
        what = reader.ONNX_TYPE if isinstance(reader, OnnxOp) else "the model's output"
        int8 = f"is read by {what}, which the NPU runs in int8"
        if not isinstance(reader, OnnxOp) or reader.ONNX_TYPE not in INT16_READERS:
            return int8
        if reader.ONNX_TYPE == "Mul":
            other = reader.operands[1 - use.index]
            if other is value or self.constant(other) is not None:
                return "is multiplied by itself or a constant, which the NPU does in int8"
            if value.type.get_shape() != reader.results[0].type.get_shape():
                return "is the broadcast operand of Mul, which the NPU reads in int8"
            if other in self.qvalues and quant_type_of(self.qvalues[other]).storage_max > 127:
                return "meets another int16 operand in Mul; the NPU multiplies int16 by int8"
            return None
        if use.index != 0:
            return int8
        if reader.ONNX_TYPE == "GlobalAveragePool" and math.prod(value.type.get_shape()[2:]) >= INT16_SUM_PIXELS:
            return f"is averaged over {math.prod(value.type.get_shape()[2:])} pixels; an int16 sum of 2^16 or more can overflow"
        return None

    @staticmethod
    def tensor(value: SSAValue, element: UniformQuantizedType) -> TensorType:
        """A quantized tensor type of `value`'s shape."""
        return TensorType(element, value.type.get_shape())

    # ------------------------------------------------------------------ building

    def emit(self, op: Operation, named: SSAValue | None = None) -> Operation:
        """Insert a quant op at the current point; `named` gives its result that ONNX name."""
        if self._insert_before is None:
            raise AssertionError("emit outside a lowering")
        Rewriter.insert_op(op, InsertPoint.before(self._insert_before))
        self._created.append(op)
        if named is not None:
            op.attributes[OUTPUT_NAMES] = ArrayAttr([StringAttr(value_name(named))])
        return op

    def quantized(self, value: SSAValue) -> SSAValue:
        """The int8 form of a float value: the quant op that computes it, a
        `quant.quantize` at the float boundary, or a `quant.constant`."""
        if value in self.qvalues:
            return self.qvalues[value]
        const = self.constant(value)
        if const is not None:
            if not np.all(np.isfinite(const)):
                raise EmberError(f"constant '{value_name(value)}' contains NaN or Inf; fix the model")
            scale, zero_point = activation_params(float(const.min(initial=0.0)), float(const.max(initial=0.0)), value_name(value))
            qtype = UniformQuantizedType(IntegerType(8), scale, zero_point)
            stored = np.clip(np.rint(const / np.float32(scale)) + zero_point, -128, 127).astype(np.int8)
            op = self.emit(quant.ConstantOp(dense_from_numpy(stored), self.tensor(value, qtype)), named=value)
        else:
            if not _is_f32(value) or any(d < 0 for d in value.type.get_shape()):
                raise NotQuantizable(f"'{value_name(value)}' is not a float32 tensor of static shape")
            int16 = isinstance(value, BlockArgument) and self.wants_int16(value_name(value), value)
            op = quant.QuantizeOp(value, self.tensor(value, self.act_type(value, int16)))
            op.attributes[OUTPUT_NAMES] = ArrayAttr([StringAttr(value_name(value))])
            where = InsertPoint.at_start(self.block) if isinstance(value, BlockArgument) else InsertPoint.after(value.owner)
            Rewriter.insert_op(op, where)
            self._created.append(op)
        self.qvalues[value] = op.results[0]
        return op.results[0]

    def activation(
        self,
        tail: Sequence[OnnxOp],
        pre: SSAValue,
        out: SSAValue,
        input_type: UniformQuantizedType | None = None,
        int16: bool = False,
    ) -> Activation:
        """How to apply the elementwise `tail` that turns `pre` into `out`: nothing, a
        clamp (Relu/Clip), or a table from `input_type` (default: `pre`'s calibrated type).
        `int16`: `pre` and `out` are int16 (the table is the interpolated 513-entry one)."""
        out_type = self.act_type(out, int16)
        low, high = out_type.storage_min, out_type.storage_max
        if not tail:
            return Activation(out_type, low, high)
        if all(op.ONNX_TYPE in CLAMPS for op in tail) and all(
            tail[i].input_slots()[0] is tail[i - 1].results[0] for i in range(1, len(tail))
        ):
            lo, hi = -np.inf, np.inf
            for op in tail:
                op_lo, op_hi = self._clamp_bounds(op)
                lo, hi = max(lo, op_lo), min(hi, op_hi)
            qlo = low if lo == -np.inf else int(np.clip(np.rint(lo / out_type.scale) + out_type.zero_point, low, high))
            qhi = high if hi == np.inf else int(np.clip(np.rint(hi / out_type.scale) + out_type.zero_point, low, high))
            return Activation(out_type, qlo, max(qlo, qhi))
        lut_in = input_type or self.act_type(pre, int16)
        function = elementwise_function(tail, pre, self.constant, self.opset)
        if int16:
            table = build_table16(function, lut_in.scale, out_type.scale)
        else:
            table = build_table(function, lut_in.scale, lut_in.zero_point, out_type.scale, out_type.zero_point)
        return Activation(out_type, lut_in.storage_min, lut_in.storage_max, lut=table, lut_input_type=lut_in)

    def _clamp_bounds(self, op: OnnxOp) -> Range:
        if op.ONNX_TYPE == "Relu":
            return 0.0, np.inf
        if self.opset < 11:
            lo, hi = attribute_value(op, "min", self.opset), attribute_value(op, "max", self.opset)
            return (-np.inf if lo is None else lo), (np.inf if hi is None else hi)
        slots = op.input_slots() + [None, None]
        bounds = []
        for value, default in ((slots[1], -np.inf), (slots[2], np.inf)):
            const = self.constant(value) if value is not None else None
            if value is not None and const is None:
                raise NotQuantizable("Clip with non-constant bounds")
            bounds.append(default if const is None else float(const.reshape(-1)[0]))
        return bounds[0], bounds[1]

    # ------------------------------------------------------------------ the walk

    def run(self) -> list[OnnxOp]:
        """Convert every matched chain; return the nodes that stay float."""
        patterns = _parsed_patterns()
        for op in list(self.block.ops):
            if self._is_anchor(op):
                self._convert(op, patterns)
        return self._finish()

    def plan(self, host: Collection[Operation] = ()) -> set[OnnxOp]:
        """The nodes `run` would take into quant ops if the `host` nodes stayed float: the
        same walk and matching, without lowering (no IR is built, no ranges are read).
        The best match at each anchor is taken as lowered, so what a lowering refuses
        with `NotQuantizable` is not foreseen."""
        self._consumed.update(host)
        patterns = _parsed_patterns()
        taken: set[OnnxOp] = set()
        for op in self.block.ops:
            if self._is_anchor(op) and (candidates := self._candidates(op, patterns)):
                taken.update(candidates[0].ops)
                self._consumed.update(candidates[0].ops)
        return taken

    def _is_anchor(self, op: Operation) -> bool:
        """A float node of the graph that no earlier chain took."""
        if not isinstance(op, OnnxOp) or isinstance(op, InitializerOp) or op in self._consumed:
            return False
        return op.node_name not in self.float_nodes and bool(op.results) and _is_f32(op.results[0])

    def _candidates(self, anchor: OnnxOp, patterns) -> list[Match]:
        """The matches at `anchor`, in the order they are tried: longest, then table order."""
        candidates = []
        for order, (pattern, elements) in enumerate(patterns):
            for groups in self._matches(anchor, elements):
                candidates.append((-sum(map(len, groups)), order, Match(pattern, groups)))
        candidates.sort(key=lambda c: (c[0], c[1]))
        return [match for _, _, match in candidates]

    def _convert(self, anchor: OnnxOp, patterns) -> None:
        for match in self._candidates(anchor, patterns):
            if self._try_lower(match):
                return

    def _try_lower(self, match: Match) -> bool:
        saved = dict(self.qvalues)
        self._created, self._insert_before, self._match = [], match.ops[-1], match
        try:
            result = match.pattern.lower(match, self)
        except NotQuantizable:
            for op in reversed(self._created):
                Rewriter.erase_op(op, safe_erase=False)
            self.qvalues = saved
            return False
        finally:
            self._insert_before = None
        nodes = ",".join(op.node_name or op.ONNX_TYPE for op in match.ops)
        for op in self._created:
            if not isinstance(op, quant.QuantizeOp | quant.ConstantOp):
                op.attributes[NODE_NAME] = StringAttr(nodes)
                op.attributes[PATTERN_ATTR] = StringAttr(match.pattern.name)
        result.owner.attributes[OUTPUT_NAMES] = ArrayAttr([StringAttr(value_name(match.output))])
        self.qvalues[match.output] = result
        self._consumed.update(match.ops)
        self.matched.extend(match.ops)
        return True

    def _matches(self, anchor: OnnxOp, elements: list[_Element]) -> Iterator[tuple[tuple[OnnxOp, ...], ...]]:
        """Every way the chain from `anchor` matches `elements`, longest runs first."""
        sources = [v for v in anchor.input_slots() if v is not None and self.constant(v) is None]
        if not sources or not elements[0].accepts(anchor, ChainState(anchor, (sources[0],)), self):
            return

        def users(op: OnnxOp) -> list[OnnxOp]:
            found = []
            for use in op.results[0].uses:
                user = use.operation
                if isinstance(user, OnnxOp) and user.parent is self.block and user not in self._consumed and user not in found:
                    if user.node_name not in self.float_nodes:
                        found.append(user)
            return sorted(found, key=self.block.get_operation_index)

        def visit(index: int, groups: list[list[OnnxOp]], last: OnnxOp, run_values: tuple[SSAValue, ...]):
            if index == len(elements):
                yield tuple(tuple(g) for g in groups)
                return
            element, group = elements[index], groups[index]
            if len(group) < element.high:
                state = ChainState(anchor, run_values)
                for user in users(last):
                    if element.accepts(user, state, self):
                        group.append(user)
                        yield from visit(index, groups, user, run_values + tuple(user.results))
                        group.pop()
            if len(group) >= element.low:
                yield from visit(index + 1, groups, last, (last.results[0],))

        first = [[anchor]] + [[] for _ in elements[1:]]
        for groups in visit(1, first, anchor, (anchor.results[0],)):
            if self._closed(groups):
                yield groups

    def _closed(self, groups) -> bool:
        """No result of the chain but the last one's first is used outside it."""
        ops = [op for g in groups for op in g]
        inside = set(ops)
        for op in ops:
            for result in op.results:
                if result is ops[-1].results[0]:
                    continue
                if any(use.operation not in inside for use in result.uses):
                    return False
        return True

    def _finish(self) -> list[OnnxOp]:
        """Float users read dequantized values; matched ops go; the float rest is reported."""
        dequantized: dict[SSAValue, SSAValue] = {}
        for value, qvalue in list(self.qvalues.items()):
            if isinstance(qvalue.owner, quant.QuantizeOp | quant.ConstantOp):
                continue
            for use in list(value.uses):
                if use.operation in self._consumed:
                    continue
                if value not in dequantized:
                    op = quant.DequantizeOp(qvalue, value.type)
                    Rewriter.insert_op(op, InsertPoint.after(qvalue.owner))
                    dequantized[value] = op.results[0]
                use.operation.operands[use.index] = dequantized[value]
        for op in reversed(self.matched):
            Rewriter.erase_op(op, safe_erase=False)
        for op in list(self.block.ops):
            if isinstance(op, InitializerOp) and not op.output.uses:
                Rewriter.erase_op(op)
        return [
            op
            for op in self.block.ops
            if isinstance(op, OnnxOp) and not isinstance(op, InitializerOp) and any(_is_f32(r) for r in op.results)
        ]


def _parsed_patterns() -> list[tuple[QuantPattern, list[_Element]]]:
    return [(p, [_Element.parse(e) for e in p.sequence]) for p in active_patterns()]


def quantizable_nodes(module: ModuleOp, host: Collection[Operation] = ()) -> set[OnnxOp]:
    """The nodes of `module`'s graph that `convert` would turn into quant ops when the
    `host` nodes stay float (`Lowering.plan`). `autocrop` asks this so that what it keeps
    on the NPU is what `quantize` quantizes: every other node would stay float."""
    return Lowering(module, {}).plan(host)


def convert(
    module: ModuleOp,
    ranges: dict[str, Range],
    float_nodes: Sequence[str] = (),
    hessians: Mapping[str, np.ndarray] | None = None,
    int16_nodes: Sequence[str] = (),
    observed: Mapping[str, Range] | None = None,
) -> list[OnnxOp]:
    """Quantize `module` in place with `ranges` (ONNX tensor name -> [min, max]; an int16
    tensor's range is its extremes in `observed`, when given). Nodes
    named in `float_nodes` stay float. Weighted nodes named in `hessians` (their input
    statistics, `ember.passes.gptq.weight_hessians`) get GPTQ-rounded weights, the others
    nearest rounding. Convolutions matching `int16_nodes` (names or glob patterns) get
    int16 results where every reader takes int16; a warning lists those that cannot.
    Returns the nodes that stay float and warns once listing them."""
    lowering = Lowering(module, ranges, float_nodes, hessians, int16_nodes, observed)
    left = lowering.run()
    if lowering.int16_refused:
        listed = "; ".join(f"{node}: {why}" for node, why in lowering.int16_refused.items())
        warnings.warn(f"quantize: {len(lowering.int16_refused)} node(s) stay int8: {listed}", QuantizationWarning, stacklevel=2)
    if left:
        listed = ", ".join(f"{op.node_name or '?'} ({op.ONNX_TYPE})" for op in left)
        warnings.warn(f"quantize: {len(left)} node(s) stay float and run on the host: {listed}", QuantizationWarning, stacklevel=2)
    return left


# ====================================================================== table functions


def elementwise_function(
    ops: Sequence[OnnxOp], input_value: SSAValue, constant: Callable[[SSAValue], np.ndarray | None], opset: int
) -> Callable[[np.ndarray], np.ndarray]:
    """The float64 function `input -> last op's result` of a chain of elementwise ONNX
    ops, evaluated by ONNX's reference evaluator (so every op means what the spec says)."""
    from onnx.reference import ReferenceEvaluator

    names: dict[SSAValue, str] = {input_value: "x"}
    initializers, nodes = [], []
    for op in ops:
        inputs = []
        for value in op.input_slots():
            if value is not None and value not in names:
                names[value] = f"c{len(names)}"
                const = np.asarray(constant(value))
                initializers.append(numpy_helper.from_array(const.astype(np.float64) if const.dtype.kind == "f" else const, names[value]))
            inputs.append("" if value is None else names[value])
        outputs = []
        for result in op.results:
            names[result] = f"t{len(names)}"
            outputs.append(names[result])
        node = onnx.helper.make_node(op.ONNX_TYPE, inputs, outputs)
        node.attribute.extend(attribute_to_onnx(k, v) for k, v in op.properties.items() if not k.endswith("SegmentSizes"))
        nodes.append(node)
    double = onnx.TensorProto.DOUBLE
    graph = onnx.helper.make_graph(
        nodes,
        "table",
        [onnx.helper.make_tensor_value_info("x", double, [None])],
        [onnx.helper.make_tensor_value_info(names[ops[-1].results[0]], double, None)],
        initializers,
    )
    evaluator = ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)]))

    def function(x: np.ndarray) -> np.ndarray:
        (y,) = evaluator.run(None, {"x": np.asarray(x, dtype=np.float64)})
        return np.asarray(y, dtype=np.float64).reshape(-1)

    return function


# ========================================================================= lowerings


def _weighted_params(anchor: OnnxOp, lowering: Lowering) -> tuple[np.ndarray, np.ndarray, dict]:
    """Float64 weights (OIHW or [N, K]) and bias of a Conv/ConvTranspose/Gemm/MatMul, and
    conv attributes."""
    slots = anchor.input_slots()
    weight = lowering.constant(slots[1])
    if weight is None:
        raise NotQuantizable(f"{anchor.ONNX_TYPE} with non-constant weights")
    weight = weight.astype(np.float64)
    opset = lowering.opset
    if anchor.ONNX_TYPE == "Conv":
        if weight.ndim != 4 or len(anchor.results[0].type.get_shape()) != 4:
            raise NotQuantizable("only 2-D convolutions are quantized")
        bias = lowering.constant(slots[2]) if len(slots) > 2 and slots[2] is not None else np.zeros(weight.shape[0])
        if bias is None:
            raise NotQuantizable("Conv with a non-constant bias")
        pads = attribute_value(anchor, "pads", opset) or [0, 0, 0, 0]
        auto_pad = attribute_value(anchor, "auto_pad", opset) or "NOTSET"
        if auto_pad not in ("NOTSET", "VALID"):
            raise NotQuantizable(f"Conv auto_pad={auto_pad}")
        attrs = {
            "strides": attribute_value(anchor, "strides", opset) or [1, 1],
            "pads": [pads[0], pads[1], pads[2], pads[3]] if auto_pad == "NOTSET" else [0, 0, 0, 0],
            "dilations": attribute_value(anchor, "dilations", opset) or [1, 1],
            "group": attribute_value(anchor, "group", opset) or 1,
        }
        return weight, bias.astype(np.float64), attrs
    if anchor.ONNX_TYPE == "ConvTranspose":
        # the NPU's capability check decides which ConvTranspose nodes are quantized
        if (reason := conv_transpose_reason(anchor)) is not None:
            raise NotQuantizable(reason)
        group = attribute_value(anchor, "group", opset) or 1
        in_channels, group_out, kh, kw = weight.shape
        # ONNX [Cin, Cout/g, kh, kw] -> OIHW [Cout, Cin/g, kh, kw]: output channels on axis 0
        weight = (
            weight.reshape(group, in_channels // group, group_out, kh, kw)
            .transpose(0, 2, 1, 3, 4)
            .reshape(group * group_out, in_channels // group, kh, kw)
        )
        bias = lowering.constant(slots[2]) if len(slots) > 2 and slots[2] is not None else np.zeros(weight.shape[0])
        if bias is None:
            raise NotQuantizable("ConvTranspose with a non-constant bias")
        return weight, bias.astype(np.float64), {"group": group}
    if anchor.ONNX_TYPE == "MatMul":
        if weight.ndim != 2:
            raise NotQuantizable("MatMul with a non-2-D constant")
        return weight.T, np.zeros(weight.shape[1]), {}
    # Gemm: y = alpha * A' B' + beta * C
    if attribute_value(anchor, "transA", opset):
        raise NotQuantizable("Gemm with transA")
    weight = weight if attribute_value(anchor, "transB", opset) else weight.T
    alpha = attribute_value(anchor, "alpha", opset)
    beta = attribute_value(anchor, "beta", opset)
    weight = weight * (1.0 if alpha is None else alpha)
    bias = np.zeros(weight.shape[0])
    if len(slots) > 2 and slots[2] is not None:
        const = lowering.constant(slots[2])
        channel = None if const is None else per_channel(const, anchor.results[0], -1)
        if channel is None:
            raise NotQuantizable("Gemm with a bias that is not one value per output")
        bias = channel * (1.0 if beta is None else beta)
    return weight, bias, {}


def _absorb(op: OnnxOp, weight: np.ndarray, bias: np.ndarray, anchor: OnnxOp, lowering: Lowering):
    """Fold one per-channel affine op into the weights and bias."""
    axis = _channel_axis(anchor)
    slots = op.input_slots()
    shape = (-1,) + (1,) * (weight.ndim - 1)
    if op.ONNX_TYPE == "BatchNormalization":
        gamma, beta, mean, var = (lowering.constant(v).astype(np.float64).reshape(-1) for v in slots[1:5])
        epsilon = attribute_value(op, "epsilon", lowering.opset)
        scale = gamma / np.sqrt(var + (1e-5 if epsilon is None else epsilon))
        return weight * scale.reshape(shape), (bias - mean) * scale + beta
    const_slot = 1 if lowering.constant(slots[1]) is not None else 0
    c = per_channel(lowering.constant(slots[const_slot]), op.results[0], axis)
    if op.ONNX_TYPE == "Add":
        return weight, bias + c
    if op.ONNX_TYPE == "Sub":
        return weight, bias - c
    if op.ONNX_TYPE == "Mul":
        return weight * c.reshape(shape), bias * c
    if np.any(c == 0):
        raise NotQuantizable("division by zero")
    return weight / c.reshape(shape), bias / c


def lower_weighted(match: Match, lowering: Lowering) -> SSAValue:
    """Conv / ConvTranspose / Gemm / MatMul, per-channel affine ops folded in, then a clamp
    or a table: one `quant.conv2d`, `quant.conv_transpose` or `quant.fully_connected`."""
    anchor_group, affine, tail = match.elements
    anchor = anchor_group[0]
    weight, bias, attrs = _weighted_params(anchor, lowering)
    for op in affine:
        weight, bias = _absorb(op, weight, bias, anchor, lowering)
    pre = (affine[-1] if affine else anchor).results[0]
    name = anchor.node_name or anchor.ONNX_TYPE
    x = lowering.quantized(anchor.input_slots()[0])
    in_type = quant_type_of(x)
    int16 = anchor.ONNX_TYPE == "Conv" and lowering.wants_int16(anchor.node_name or "", match.output)
    activation = lowering.activation(tail, pre, match.output, int16=int16)
    q_weight, w_scales = quantize_weights(weight, 0, f"{name} weights", bias_weight_scales(bias, in_type.scale))
    if (hessian := lowering.hessians.get(anchor.node_name)) is not None and anchor.ONNX_TYPE != "ConvTranspose":
        q_weight = gptq_round(weight, hessian, w_scales, in_type.scale)
    q_bias = quantize_bias(bias, in_type.scale, w_scales, f"{name} bias")
    if in_type.storage_type == IntegerType(16):
        _check_accumulator(q_weight, q_bias, _int16_bounds(x), name)
    multiplier, shift = conv_multipliers(in_type.scale, w_scales, activation.requant_type.scale, name)
    w_type = UniformQuantizedType(IntegerType(8), w_scales, 0, axis=0)
    b_type = UniformQuantizedType(i32, in_type.scale * w_scales, 0, axis=0)
    w = lowering.emit(quant.ConstantOp(dense_from_numpy(q_weight), TensorType(w_type, q_weight.shape))).results[0]
    b = lowering.emit(quant.ConstantOp(dense_from_numpy(q_bias), TensorType(b_type, q_bias.shape))).results[0]
    common = dict(
        multiplier=multiplier,
        shift=shift,
        act_min=activation.act_min,
        act_max=activation.act_max,
        lut=activation.lut,
        lut_input_type=activation.lut_input_type,
    )
    result_type = lowering.tensor(match.output, activation.output_type)
    if anchor.ONNX_TYPE == "Conv":
        op = quant.Conv2DOp(x, w, b, result_type, **attrs, **common)
    elif anchor.ONNX_TYPE == "ConvTranspose":
        op = quant.ConvTransposeOp(x, w, b, result_type, **attrs, **common)
    else:
        op = quant.FullyConnectedOp(x, w, b, result_type, **common)
    if activation.lut is not None:
        op.attributes[LUT_INPUT_ATTR] = StringAttr(value_name(pre))
    return lowering.emit(op).results[0]


def _int16_bounds(x: SSAValue) -> tuple[int, int]:
    """The values an int16 tensor can hold: its producer's table's (an interpolated lookup
    stays between two entries) or its clamp's; all of int16 for a graph input."""
    producer = x.owner
    if isinstance(producer, quant.Conv2DOp):
        table = producer.table()
        if table is not None:
            return int(table.min()), int(table.max())
        return producer.act_min.value.data, producer.act_max.value.data
    info = np.iinfo(np.int16)
    return int(info.min), int(info.max)


def _check_accumulator(q_weight: np.ndarray, q_bias: np.ndarray, x_bounds: tuple[int, int], name: str) -> None:
    """Warn when an int16 input can overflow the int32 accumulator: with inputs in
    `x_bounds` = [lo, hi], output channel c's sum lies within `sum_i min(w_i lo, w_i hi)`
    and `sum_i max(w_i lo, w_i hi)` (the NPU wraps, as the reference does; POST adds the
    bias in int64). A HardSwish result, nearly non-negative, has about half the bound of
    2^15 * sum |w|."""
    w = q_weight.astype(np.int64).reshape(len(q_weight), -1)
    lo, hi = x_bounds
    high, low = np.maximum(w * lo, w * hi).sum(axis=1), np.minimum(w * lo, w * hi).sum(axis=1)
    bound = np.maximum(high, -low)
    if bound.max() >= ACCUMULATOR_LIMIT:
        warnings.warn(
            f"quantize: {name}: an int16 input can overflow the int32 accumulator (bound {int(bound.max())});"
            " keep its producer int8 if results wrap",
            QuantizationWarning,
            stacklevel=2,
        )



def _with_tail(
    lowering: Lowering, tail: Sequence[OnnxOp], pre: SSAValue, out: SSAValue, build: Callable[[Activation], Operation]
) -> SSAValue:
    """Build an op that can clamp its result but has no table: a clamp tail fuses, any
    other tail becomes a `quant.lut` after it."""
    activation = lowering.activation(tail, pre, out)
    if activation.lut is None:
        return lowering.emit(build(activation)).results[0]
    produced = lowering.emit(build(Activation(activation.lut_input_type)), named=pre).results[0]
    return lowering.emit(quant.LutOp(produced, lowering.tensor(out, activation.output_type), table=activation.lut)).results[0]


def _binary_operands(match: Match, lowering: Lowering) -> tuple[SSAValue, SSAValue]:
    slots = match.anchor.input_slots()
    if any((c := lowering.constant(v)) is not None and c.size == 1 for v in slots):
        raise NotQuantizable("a scalar constant operand is a table's job")
    return lowering.quantized(slots[0]), lowering.quantized(slots[1])


def lower_add(match: Match, lowering: Lowering) -> SSAValue:
    """Add of two tensors (TFLite's scheme), clamp fused, other tails as a table."""
    lhs, rhs = _binary_operands(match, lowering)
    pre = match.anchor.results[0]
    name = match.anchor.node_name or "Add"

    def build(activation: Activation) -> Operation:
        out = activation.output_type
        in_m, in_s, m, s = add_multipliers(quant_type_of(lhs).scale, quant_type_of(rhs).scale, out.scale, name)
        return quant.AddOp(
            lhs, rhs, lowering.tensor(pre, out), input_multipliers=in_m, input_shifts=in_s, multiplier=m, shift=s,
            act_min=activation.act_min, act_max=activation.act_max,
        )  # fmt: skip

    return _with_tail(lowering, match.elements[1], pre, match.output, build)


def lower_mul(match: Match, lowering: Lowering) -> SSAValue:
    """Product of two tensors, requantized once; clamp fused, other tails as a table."""
    lhs, rhs = _binary_operands(match, lowering)
    pre = match.anchor.results[0]
    name = match.anchor.node_name or "Mul"

    def build(activation: Activation) -> Operation:
        out = activation.output_type
        m, s = mul_multiplier(quant_type_of(lhs).scale, quant_type_of(rhs).scale, out.scale, name)
        return quant.MulOp(lhs, rhs, lowering.tensor(pre, out), multiplier=m, shift=s, act_min=activation.act_min, act_max=activation.act_max)

    return _with_tail(lowering, match.elements[1], pre, match.output, build)


def lower_lut(match: Match, lowering: Lowering) -> SSAValue:
    """A chain of elementwise ops of one tensor: one `quant.lut`."""
    ops = match.ops
    source = next(v for v in ops[0].input_slots() if v is not None and lowering.constant(v) is None)
    if source not in lowering.qvalues and isinstance(source, OpResult) and isinstance(source.op, OnnxOp):
        # A float op on the host computed this tensor: quantizing it only to look up a
        # table would add error and two boundary ops.
        raise NotQuantizable("elementwise ops of a host tensor stay on the host")
    x = lowering.quantized(source)
    activation = lowering.activation(ops, source, match.output, input_type=quant_type_of(x))
    if activation.lut is None:  # a pure clamp: its table is exact too
        function = elementwise_function(ops, source, lowering.constant, lowering.opset)
        in_type, out_type = quant_type_of(x), activation.output_type
        table = build_table(function, in_type.scale, in_type.zero_point, out_type.scale, out_type.zero_point)
    else:
        table = activation.lut
    return lowering.emit(quant.LutOp(x, lowering.tensor(match.output, activation.output_type), table=table)).results[0]


def _pool_window(op: OnnxOp, lowering: Lowering) -> dict:
    opset = lowering.opset
    if attribute_value(op, "ceil_mode", opset):
        raise NotQuantizable("pooling with ceil_mode")
    auto_pad = attribute_value(op, "auto_pad", opset) or "NOTSET"
    if auto_pad not in ("NOTSET", "VALID"):
        raise NotQuantizable(f"pooling auto_pad={auto_pad}")
    kernel = attribute_value(op, "kernel_shape", opset)
    if kernel is None or len(kernel) != 2:
        raise NotQuantizable("only 2-D pooling is quantized")
    pads = attribute_value(op, "pads", opset) or [0, 0, 0, 0]
    return {
        "kernel": kernel,
        "strides": attribute_value(op, "strides", opset) or [1, 1],
        "pads": pads if auto_pad == "NOTSET" else [0, 0, 0, 0],
    }


def lower_max_pool(match: Match, lowering: Lowering) -> SSAValue:
    """MaxPool: exact on int8, so the result keeps the input's type."""
    op = match.anchor
    if len(op.results) > 1 and op.results[1].uses:
        raise NotQuantizable("MaxPool indices are used")
    x = lowering.quantized(op.input_slots()[0])
    window = _pool_window(op, lowering)
    dilations = attribute_value(op, "dilations", lowering.opset) or [1, 1]
    result_type = lowering.tensor(op.results[0], quant_type_of(x))
    return lowering.emit(quant.MaxPoolOp(x, result_type, dilations=dilations, **window)).results[0]


def lower_avg_pool(match: Match, lowering: Lowering) -> SSAValue:
    op = match.anchor
    x = lowering.quantized(op.input_slots()[0])
    out = lowering.act_type(op.results[0])
    m, s = rescale_multiplier(quant_type_of(x).scale, out.scale, op.node_name)
    include_pad = bool(attribute_value(op, "count_include_pad", lowering.opset))
    return lowering.emit(
        quant.AvgPoolOp(x, lowering.tensor(op.results[0], out), multiplier=m, shift=s, count_include_pad=include_pad, **_pool_window(op, lowering))
    ).results[0]


def lower_global_avg_pool(match: Match, lowering: Lowering) -> SSAValue:
    op = match.anchor
    x = lowering.quantized(op.input_slots()[0])
    shape = x.type.get_shape()
    if len(shape) != 4:
        raise NotQuantizable("GlobalAveragePool of a non-4-D tensor")
    out = lowering.act_type(op.results[0])
    m, s = global_avg_pool_multiplier(quant_type_of(x).scale, out.scale, shape[2] * shape[3], op.node_name)
    return lowering.emit(quant.GlobalAvgPoolOp(x, lowering.tensor(op.results[0], out), multiplier=m, shift=s)).results[0]


def lower_resize(match: Match, lowering: Lowering) -> SSAValue:
    """Resize of H and W; nearest keeps the input's type (it only copies values)."""
    op = match.anchor
    opset = lowering.opset
    x = lowering.quantized(op.input_slots()[0])
    in_shape, out_shape = x.type.get_shape(), op.results[0].type.get_shape()
    if len(in_shape) != 4 or in_shape[:2] != out_shape[:2] or any(d < 0 for d in out_shape):
        raise NotQuantizable("Resize other than of H and W of a static NCHW tensor")
    mode = {"nearest": "nearest", "linear": "bilinear"}.get(attribute_value(op, "mode", opset) or "nearest")
    if mode is None:
        raise NotQuantizable("Resize mode other than nearest or linear")
    if opset < 11:  # Upsample-style Resize: asymmetric coordinates, floor for nearest
        coordinates, nearest = "asymmetric", "floor"
    else:
        coordinates = attribute_value(op, "coordinate_transformation_mode", opset) or "half_pixel"
        nearest = attribute_value(op, "nearest_mode", opset) or "round_prefer_floor"
    if coordinates not in quant.COORDINATE_MODES or nearest not in quant.NEAREST_MODES:
        raise NotQuantizable(f"Resize coordinate mode {coordinates}")
    in_type = quant_type_of(x)
    out = in_type if mode == "nearest" else lowering.act_type(op.results[0])
    m, s = resize_multiplier(in_type.scale, out.scale, mode, op.node_name)
    return lowering.emit(
        quant.ResizeOp(
            x, lowering.tensor(op.results[0], out), mode=mode, multiplier=m, shift=s,
            coordinate_transformation_mode=coordinates, nearest_mode=nearest,
        )
    ).results[0]  # fmt: skip


def lower_concat(match: Match, lowering: Lowering) -> SSAValue:
    op = match.anchor
    inputs = [lowering.quantized(v) for v in op.input_slots() if v is not None]
    out = lowering.act_type(op.results[0])
    pairs = [rescale_multiplier(quant_type_of(v).scale, out.scale, op.node_name) for v in inputs]
    axis = attribute_value(op, "axis", lowering.opset) % len(op.results[0].type.get_shape())
    return lowering.emit(
        quant.ConcatOp(inputs, lowering.tensor(op.results[0], out), axis=axis, multipliers=[m for m, _ in pairs], shifts=[s for _, s in pairs])
    ).results[0]


def lower_reshape(match: Match, lowering: Lowering) -> SSAValue:
    """Reshape, Flatten, Squeeze, Unsqueeze: a reshape to the static result shape."""
    op = match.anchor
    x = lowering.quantized(op.input_slots()[0])
    if any(d < 0 for d in op.results[0].type.get_shape()):
        raise NotQuantizable("reshape to a dynamic shape")
    return lowering.emit(quant.ReshapeOp(x, lowering.tensor(op.results[0], quant_type_of(x)))).results[0]


def lower_transpose(match: Match, lowering: Lowering) -> SSAValue:
    op = match.anchor
    x = lowering.quantized(op.input_slots()[0])
    perm = attribute_value(op, "perm", lowering.opset) or list(reversed(range(len(x.type.get_shape()))))
    return lowering.emit(quant.TransposeOp(x, lowering.tensor(op.results[0], quant_type_of(x)), perm=perm)).results[0]


def lower_pad(match: Match, lowering: Lowering) -> SSAValue:
    """Constant padding with 0 (the zero point represents it exactly)."""
    op = match.anchor
    slots = op.input_slots() + [None, None]
    if (attribute_value(op, "mode", lowering.opset) or "constant") != "constant" or (len(slots) > 4 and slots[3] is not None):
        raise NotQuantizable("Pad other than constant padding of all axes")
    pads = attribute_value(op, "pads", lowering.opset) if lowering.opset < 11 else lowering.constant(slots[1])
    value = attribute_value(op, "value", lowering.opset) if lowering.opset < 11 else lowering.constant(slots[2])
    if pads is None or np.any(np.asarray(pads) < 0) or (value is not None and np.any(np.asarray(value) != 0)):
        raise NotQuantizable("Pad with non-constant, negative or non-zero padding")
    x = lowering.quantized(op.input_slots()[0])
    return lowering.emit(quant.PadOp(x, lowering.tensor(op.results[0], quant_type_of(x)), pads=[int(p) for p in np.asarray(pads).reshape(-1)])).results[0]


def lower_slice(match: Match, lowering: Lowering) -> SSAValue:
    op = match.anchor
    x = lowering.quantized(op.input_slots()[0])
    shape = x.type.get_shape()
    if lowering.opset < 10:
        starts, ends = attribute_value(op, "starts"), attribute_value(op, "ends")
        axes, steps = attribute_value(op, "axes"), None
    else:
        slots = op.input_slots() + [None, None, None]
        starts, ends, axes, steps = (lowering.constant(v) if v is not None else None for v in slots[1:5])
        if starts is None or ends is None or any(v is not None and lowering.constant(v) is None for v in slots[1:5]):
            raise NotQuantizable("Slice with non-constant bounds")
    axes = list(range(len(starts))) if axes is None else [int(a) % len(shape) for a in np.asarray(axes).reshape(-1)]
    steps = [1] * len(axes) if steps is None else [int(s) for s in np.asarray(steps).reshape(-1)]
    begin, end, stride = [0] * len(shape), list(shape), [1] * len(shape)
    for axis, start, stop, step in zip(axes, np.asarray(starts).reshape(-1), np.asarray(ends).reshape(-1), steps):
        if step < 1:
            raise NotQuantizable("Slice with a negative step")
        begin[axis], end[axis], stride[axis] = slice(int(start), int(min(stop, 2**62)), step).indices(shape[axis])
        end[axis] = max(end[axis], begin[axis])
    return lowering.emit(
        quant.SliceOp(x, lowering.tensor(op.results[0], quant_type_of(x)), starts=begin, ends=end, steps=stride)
    ).results[0]


BUILTIN_PATTERNS: list[QuantPattern] = [
    QuantPattern("conv", ("Conv", "@affine*", "@eltw*"), lower_weighted),
    QuantPattern("conv_transpose", ("ConvTranspose", "@affine*", "@eltw*"), lower_weighted),
    QuantPattern("fully_connected", ("Gemm|MatMul", "@affine*", "@eltw*"), lower_weighted),
    QuantPattern("add", ("@add", "@eltw*"), lower_add),
    QuantPattern("mul", ("@mul", "@eltw*"), lower_mul),
    QuantPattern("lut", ("@eltw", "@eltw*"), lower_lut),
    QuantPattern("max_pool", ("MaxPool",), lower_max_pool),
    QuantPattern("avg_pool", ("AveragePool",), lower_avg_pool),
    QuantPattern("global_avg_pool", ("GlobalAveragePool",), lower_global_avg_pool),
    QuantPattern("resize", ("Resize|Upsample",), lower_resize),
    QuantPattern("concat", ("Concat",), lower_concat),
    QuantPattern("reshape", ("Reshape|Flatten|Squeeze|Unsqueeze",), lower_reshape),
    QuantPattern("transpose", ("Transpose",), lower_transpose),
    QuantPattern("pad", ("Pad",), lower_pad),
    QuantPattern("slice", ("Slice",), lower_slice),
]
"""The built-in table. Conv/Gemm + Relu, + Clip (ReLU6), + HardSigmoid, + HardSwish
(Mul(x, HardSigmoid(x)) or x*Clip(x+3, 0, 6)/6), + SiLU (x*Sigmoid(x)) are all the first
two entries: the tail after the folded affine ops is a clamp or a table."""
