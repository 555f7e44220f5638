"""The `quant` dialect: int8 tensors with uniform quantization, and the ops the NPU runs.

Element types follow MLIR's quant dialect:

    !quant.uniform<i8:f32, 0.0235:-3>             per tensor: real = 0.0235 * (q - (-3))
    !quant.uniform<i8:f32:0, {0.1, 0.2, 0.05}>    per axis 0: one scale (and zero point) per slice

xDSL's `TensorType` takes any attribute as element type, so quantized tensors are plain
`tensor<1x16x24x96x!quant.uniform<i8:f32, 0.0235:-3>>`.

Conventions (the reference interpreter, `ember.interpreters.quant_reference`, defines the
integer arithmetic; `docs/quant.md` writes it out):
- Tensors are NCHW, the ONNX layout; the NPU lowering converts to NHWC.
- Activations are int8 with a zero point; weights are int8 symmetric per output channel
  (axis 0, zero points 0); biases are int32 with scale `s_in * s_w[c]` and zero point 0.
- Zero points come from the types. The integer requantization parameters (multiplier `M`,
  shift `S`, clamp bounds, tables) are properties: they are what the hardware executes, and
  the types only say what the integers mean.
- Weights and biases are `quant.constant` operands, so their per-channel scales stay in
  their types.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import (
    I32,
    I64,
    AnyFloat,
    AnyFloatConstr,
    ArrayAttr,
    BytesAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    Float32Type,
    FloatData,
    IntAttr,
    IntegerAttr,
    IntegerType,
    NoneAttr,
    Signedness,
    StringAttr,
    TensorType,
    i8,
    i16,
    i32,
    i64,
)
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.parser import AttrParser, Parser
from xdsl.printer import Printer
from xdsl.traits import ConstantLike, Pure
from xdsl.utils.exceptions import VerifyException

from ember.dialects.dense import numpy_from_dense, print_dense_fast
from ember.target.isa import ELTW_ADD_LEFT_SHIFT, LUT8_ENTRIES, LUT16_ENTRIES

# --------------------------------------------------------------------------- types


def _format_scale(value: float) -> str:
    """The shortest text that parses back to exactly `value` (xDSL floats need a '.')."""
    text = repr(float(value))
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + ("e" + exponent if exponent else "")


@irdl_attr_definition
class UniformQuantizedType(ParametrizedAttribute, TypeAttribute):
    """A uniform quantized element type: `real = scale * (stored - zero_point)`.

    One class serves both MLIR spellings (`quant.uniform` names one attribute in a
    dialect): `axis` is `NoneAttr` per tensor, or the quantized dimension per axis, with one
    scale and zero point per slice of that dimension.
    """

    name = "quant.uniform"

    storage_type: IntegerType
    expressed_type: AnyFloat
    scales: ArrayAttr[FloatData]
    zero_points: ArrayAttr[IntAttr]
    axis: IntAttr | NoneAttr

    def __init__(
        self,
        storage_type: IntegerType,
        scales: Sequence[float] | float,
        zero_points: Sequence[int] | int = 0,
        axis: int | None = None,
        expressed_type: AnyFloat = Float32Type(),
    ):
        scale_list = [float(s) for s in np.atleast_1d(scales)]
        zp_list = [int(z) for z in np.atleast_1d(zero_points)]
        if len(zp_list) == 1 and len(scale_list) > 1:
            zp_list *= len(scale_list)
        super().__init__(
            storage_type,
            expressed_type,
            ArrayAttr(FloatData(s) for s in scale_list),
            ArrayAttr(IntAttr(z) for z in zp_list),
            NoneAttr() if axis is None else IntAttr(axis),
        )

    @property
    def is_per_axis(self) -> bool:
        return isinstance(self.axis, IntAttr)

    @property
    def quantized_dimension(self) -> int:
        assert isinstance(self.axis, IntAttr), "per-tensor type has no quantized dimension"
        return self.axis.data

    @property
    def scale(self) -> float:
        """The scale of a per-tensor type."""
        assert not self.is_per_axis, "per-axis type has no single scale"
        return self.scales.data[0].data

    @property
    def zero_point(self) -> int:
        """The zero point of a per-tensor type."""
        assert not self.is_per_axis, "per-axis type has no single zero point"
        return self.zero_points.data[0].data

    def scale_array(self) -> np.ndarray:
        return np.array([s.data for s in self.scales.data], dtype=np.float64)

    def zero_point_array(self) -> np.ndarray:
        return np.array([z.data for z in self.zero_points.data], dtype=np.int64)

    @property
    def storage_min(self) -> int:
        return -(1 << (self.storage_type.width.data - 1))

    @property
    def storage_max(self) -> int:
        return (1 << (self.storage_type.width.data - 1)) - 1

    @property
    def storage_dtype(self) -> np.dtype:
        return np.dtype(f"int{self.storage_type.width.data}")

    def verify(self) -> None:
        width = self.storage_type.width.data
        if width not in (8, 16, 32) or self.storage_type.signedness.data == Signedness.UNSIGNED:
            raise VerifyException(f"quant.uniform storage must be i8, i16 or i32, got {self.storage_type}")
        scales = self.scale_array()
        if not scales.size or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise VerifyException("quant.uniform scales must be finite and positive")
        if len(self.zero_points.data) != scales.size:
            raise VerifyException("quant.uniform needs one zero point per scale")
        zps = self.zero_point_array()
        if np.any(zps < self.storage_min) or np.any(zps > self.storage_max):
            raise VerifyException(f"quant.uniform zero point out of range of {self.storage_type}")
        if not self.is_per_axis and scales.size != 1:
            raise VerifyException("per-tensor quant.uniform has exactly one scale")

    def print_parameters(self, printer: Printer) -> None:
        def scale_zp(scale: FloatData, zp: IntAttr) -> str:
            return _format_scale(scale.data) + (f":{zp.data}" if zp.data else "")

        with printer.in_angle_brackets():
            printer.print_attribute(self.storage_type)
            printer.print_string(":")
            printer.print_attribute(self.expressed_type)
            pairs = [scale_zp(s, z) for s, z in zip(self.scales.data, self.zero_points.data)]
            if isinstance(self.axis, IntAttr):
                printer.print_string(f":{self.axis.data}, {{{', '.join(pairs)}}}")
            else:
                printer.print_string(f", {pairs[0]}")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        def parse_scale_zp() -> tuple[float, int]:
            scale = float(parser.parse_number())
            zp = parser.parse_integer(allow_boolean=False) if parser.parse_optional_punctuation(":") else 0
            return scale, zp

        with parser.in_angle_brackets():
            storage = parser.parse_type()
            if not isinstance(storage, IntegerType):
                parser.raise_error("quant.uniform storage type must be an integer type")
            parser.parse_punctuation(":")
            expressed = parser.parse_type()
            if not AnyFloatConstr.verifies(expressed):
                parser.raise_error("quant.uniform expressed type must be a float type")
            axis = parser.parse_integer(allow_boolean=False) if parser.parse_optional_punctuation(":") else None
            parser.parse_punctuation(",")
            if axis is None:
                pairs = [parse_scale_zp()]
            else:
                pairs = parser.parse_comma_separated_list(parser.Delimiter.BRACES, parse_scale_zp)
        return (
            storage,
            expressed,
            ArrayAttr(FloatData(s) for s, _ in pairs),
            ArrayAttr(IntAttr(z) for _, z in pairs),
            NoneAttr() if axis is None else IntAttr(axis),
        )


QuantTensor = TensorType[UniformQuantizedType]


def quant_type_of(value: SSAValue | Attribute) -> UniformQuantizedType:
    """The quantized element type of a value or tensor type (asserts it has one)."""
    tensor = value.type if isinstance(value, SSAValue) else value
    assert isinstance(tensor, TensorType) and isinstance(tensor.element_type, UniformQuantizedType)
    return tensor.element_type


# --------------------------------------------------------------- integer properties


def int_array(values: Sequence[int] | np.ndarray, element_type: IntegerType = i32) -> DenseArrayBase:
    """A `DenseArrayBase` built from numpy bytes (never element by element)."""
    dtype = np.dtype(f"<i{element_type.width.data // 8}")
    return DenseArrayBase(element_type, BytesAttr(np.asarray(values, dtype=dtype).tobytes()))


def array_values(attr: DenseArrayBase) -> np.ndarray:
    """The integers of a `DenseArrayBase` as an int64 array."""
    width = attr.elt_type.width.data
    return np.frombuffer(attr.data.data, dtype=f"<i{width // 8}").astype(np.int64)


def _i32(value: int) -> IntegerAttr:
    return IntegerAttr(int(value), i32)


def _check_len(op: IRDLOperation, name: str, attr: DenseArrayBase, length: int) -> np.ndarray:
    values = array_values(attr)
    if values.size != length:
        raise VerifyException(f"{op.name}: '{name}' needs {length} values, got {values.size}")
    return values


def _check_requant(op: IRDLOperation, multiplier: np.ndarray, shift: np.ndarray) -> None:
    """Multipliers are 0 (flushed) or in [2^30, 2^31); shifts in [1, 62]."""
    ok_m = (multiplier == 0) | ((multiplier >= 1 << 30) & (multiplier < 1 << 31))
    if not np.all(ok_m) or np.any(shift < 1) or np.any(shift > 62):
        raise VerifyException(f"{op.name}: multiplier must be 0 or in [2^30, 2^31) and shift in [1, 62]")


def _check_same_quant(op: IRDLOperation, a: SSAValue, b: SSAValue) -> None:
    if quant_type_of(a) != quant_type_of(b):
        raise VerifyException(f"{op.name}: input and result must have the same quantized type")


def _check_act(op: IRDLOperation, act_min: IntegerAttr, act_max: IntegerAttr, out: UniformQuantizedType) -> None:
    lo, hi = act_min.value.data, act_max.value.data
    if not out.storage_min <= lo <= hi <= out.storage_max:
        raise VerifyException(f"{op.name}: need {out.storage_min} <= act_min <= act_max <= {out.storage_max}")


ADD_LEFT_SHIFT = ELTW_ADD_LEFT_SHIFT
"""`quant.add` scales each centred input by 2^20 before rescaling it (TFLite's scheme, the
NPU's ELTW add): 255 * 2^20 < 2^28 leaves room for the sum."""


def window_output_size(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> int:
    """Output length of a convolution/pooling window along one axis (floor mode)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


# ------------------------------------------------------------------------------ ops


@irdl_op_definition
class QuantizeOp(IRDLOperation):
    """Float -> quantized at the model boundary (ONNX QuantizeLinear)."""

    name = "quant.quantize"
    input = operand_def(TensorType[AnyFloat])
    output = result_def(QuantTensor)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"

    def __init__(self, input: SSAValue, result_type: TensorType):
        super().__init__(operands=[input], result_types=[result_type])


@irdl_op_definition
class DequantizeOp(IRDLOperation):
    """Quantized -> float at the model boundary (ONNX DequantizeLinear)."""

    name = "quant.dequantize"
    input = operand_def(QuantTensor)
    output = result_def(TensorType[AnyFloat])
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"

    def __init__(self, input: SSAValue, result_type: TensorType):
        super().__init__(operands=[input], result_types=[result_type])


@irdl_op_definition
class ConstantOp(IRDLOperation):
    """A quantized constant (weights, biases): `value` holds the stored integers."""

    name = "quant.constant"
    value = prop_def(DenseIntOrFPElementsAttr)
    output = result_def(QuantTensor)
    traits = traits_def(Pure(), ConstantLike())

    def __init__(self, value: DenseIntOrFPElementsAttr, result_type: TensorType):
        super().__init__(properties={"value": value}, result_types=[result_type])

    def print(self, printer: Printer) -> None:
        # Weights print from their bytes (hex), never element by element.
        printer.print_string(" ")
        print_dense_fast(printer, self.value, literals=True)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.output.type)

    @classmethod
    def parse(cls, parser: Parser) -> ConstantOp:
        value = parser.parse_attribute()
        if not isinstance(value, DenseIntOrFPElementsAttr):
            parser.raise_error("quant.constant: expected a dense attribute")
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        op = cls(value, parser.parse_type())
        op.attributes.update(attributes)
        return op

    def verify_(self) -> None:
        qtype = quant_type_of(self.output)
        assert isinstance(self.output.type, TensorType)
        if self.value.get_element_type() != IntegerType(qtype.storage_type.width.data):
            raise VerifyException(f"quant.constant: value must hold {qtype.storage_type} integers")
        if self.value.get_shape() != self.output.type.get_shape():
            raise VerifyException("quant.constant: value and result shapes differ")

    def numpy(self) -> np.ndarray:
        """The stored integers (a read-only view of the attribute's bytes)."""
        return numpy_from_dense(self.value)


class _RequantizingOp(IRDLOperation):
    """An int32 accumulation followed by the POST stage: per-output-channel requantization
    (`multiplier`, `shift`), clamp to [act_min, act_max] (fused ReLU/Clip) and an optional
    table. With a table, requantization targets `lut_input_type` (the type of the value
    before the fused activation) and the table maps it to the result type: 256 i8 entries
    for int8, 513 interpolated i16 entries (`quant_tables.lookup16`) for int16.

    The input may be int8 or int16 (symmetric, zero point 0); the result and the table's
    input have the same storage type."""

    input = operand_def(QuantTensor)
    weight = operand_def(QuantTensor)
    bias = opt_operand_def(QuantTensor)
    multiplier = prop_def(DenseArrayBase[I32])
    shift = prop_def(DenseArrayBase[I32])
    act_min = prop_def(IntegerAttr[I32])
    act_max = prop_def(IntegerAttr[I32])
    lut = opt_prop_def(DenseArrayBase[IntegerType])
    lut_input_type = opt_prop_def(UniformQuantizedType)
    output = result_def(QuantTensor)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)

    def _requant_properties(
        self,
        multiplier: Sequence[int] | np.ndarray,
        shift: Sequence[int] | np.ndarray,
        act_min: int,
        act_max: int,
        lut: np.ndarray | None,
        lut_input_type: UniformQuantizedType | None,
    ) -> dict[str, Attribute]:
        props: dict[str, Attribute] = {
            "multiplier": int_array(multiplier),
            "shift": int_array(shift),
            "act_min": _i32(act_min),
            "act_max": _i32(act_max),
        }
        if lut is not None:
            props["lut"] = int_array(lut, i16 if np.asarray(lut).dtype == np.int16 else i8)
        if lut_input_type is not None:
            props["lut_input_type"] = lut_input_type
        return props

    def requant_zero_point(self) -> int:
        """The zero point requantization adds: the table input's, or the result's."""
        return (self.lut_input_type or quant_type_of(self.output)).zero_point

    def table(self) -> np.ndarray | None:
        """The fused table in the result's storage type (int8 [256] or int16 [513]), or None."""
        return None if self.lut is None else array_values(self.lut).astype(quant_type_of(self.output).storage_dtype)

    def _verify_requant(self, channels: int) -> None:
        weight_type = quant_type_of(self.weight)
        if weight_type.storage_type.width.data != 8 or np.any(weight_type.zero_point_array() != 0):
            raise VerifyException(f"{self.name}: weights must be int8 and symmetric (zero points 0)")
        if weight_type.is_per_axis and (
            weight_type.quantized_dimension != 0 or weight_type.scale_array().size != channels
        ):
            raise VerifyException(f"{self.name}: weights must be quantized per output channel (axis 0)")
        if self.bias is not None:
            bias_type = quant_type_of(self.bias)
            assert isinstance(self.bias.type, TensorType)
            if bias_type.storage_type.width.data != 32 or self.bias.type.get_shape() != (channels,):
                raise VerifyException(f"{self.name}: bias must be i32 of shape [{channels}]")
        multiplier = _check_len(self, "multiplier", self.multiplier, channels)
        shift = _check_len(self, "shift", self.shift, channels)
        _check_requant(self, multiplier, shift)
        if (self.lut is None) != (self.lut_input_type is None):
            raise VerifyException(f"{self.name}: 'lut' and 'lut_input_type' go together")
        in_type, out_type = quant_type_of(self.input), quant_type_of(self.output)
        if in_type.storage_type == i16 and in_type.zero_point != 0:
            raise VerifyException(f"{self.name}: an int16 input must be symmetric (zero point 0)")
        if out_type.storage_type not in (i8, i16) or (out_type.storage_type == i16 and out_type.zero_point != 0):
            raise VerifyException(f"{self.name}: the result must be int8, or int16 with zero point 0")
        if self.lut is not None:
            if self.lut_input_type.storage_type != out_type.storage_type:
                raise VerifyException(f"{self.name}: the table's input and the result must have the same storage type")
            entries = (LUT8_ENTRIES, i8) if out_type.storage_type == i8 else (LUT16_ENTRIES, i16)
            if self.lut.elt_type != entries[1] or array_values(self.lut).size != entries[0]:
                raise VerifyException(f"{self.name}: 'lut' must hold {entries[0]} {entries[1]} values")
        _check_act(self, self.act_min, self.act_max, self.lut_input_type or quant_type_of(self.output))


@irdl_op_definition
class Conv2DOp(_RequantizingOp):
    """2-D convolution, NCHW input, OIHW weights (I = input channels per group).

    Covers grouped and depthwise (`group` = input channels) convolutions, dilation, stride
    and padding `pads = [top, left, bottom, right]`; padding takes the input zero point, so
    padded taps add nothing."""

    name = "quant.conv2d"
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    group = prop_def(IntegerAttr[I64])
    assembly_format = "$input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)"

    def __init__(
        self,
        input: SSAValue,
        weight: SSAValue,
        bias: SSAValue | None,
        result_type: TensorType,
        *,
        multiplier: Sequence[int] | np.ndarray,
        shift: Sequence[int] | np.ndarray,
        strides: Sequence[int] = (1, 1),
        pads: Sequence[int] = (0, 0, 0, 0),
        dilations: Sequence[int] = (1, 1),
        group: int = 1,
        act_min: int = -128,
        act_max: int = 127,
        lut: np.ndarray | None = None,
        lut_input_type: UniformQuantizedType | None = None,
    ):
        props = self._requant_properties(multiplier, shift, act_min, act_max, lut, lut_input_type)
        props |= {
            "strides": int_array(strides, i64),
            "pads": int_array(pads, i64),
            "dilations": int_array(dilations, i64),
            "group": IntegerAttr(group, i64),
        }
        super().__init__(
            operands=[input, weight, bias], properties=props, result_types=[result_type]
        )

    def verify_(self) -> None:
        in_shape = self.input.type.get_shape()
        w_shape = self.weight.type.get_shape()
        out_shape = self.output.type.get_shape()
        if len(in_shape) != 4 or len(w_shape) != 4 or len(out_shape) != 4:
            raise VerifyException("quant.conv2d: input, weight and result must be 4-D (NCHW, OIHW)")
        group = self.group.value.data
        strides = _check_len(self, "strides", self.strides, 2)
        pads = _check_len(self, "pads", self.pads, 4)
        dilations = _check_len(self, "dilations", self.dilations, 2)
        if group < 1 or in_shape[1] % group or w_shape[0] % group or w_shape[1] * group != in_shape[1]:
            raise VerifyException(
                f"quant.conv2d: {in_shape[1]} input channels, weight {w_shape} and group {group} do not fit"
            )
        if np.any(strides < 1) or np.any(dilations < 1) or np.any(pads < 0):
            raise VerifyException("quant.conv2d: strides and dilations must be >= 1, pads >= 0")
        expected = (in_shape[0], w_shape[0]) + tuple(
            window_output_size(in_shape[2 + i], w_shape[2 + i], strides[i], dilations[i], pads[i], pads[i + 2])
            for i in range(2)
        )
        if out_shape != expected:
            raise VerifyException(f"quant.conv2d: result shape {out_shape}, expected {expected}")
        self._verify_requant(w_shape[0])


@irdl_op_definition
class ConvTransposeOp(_RequantizingOp):
    """2-D transposed convolution whose stride equals its kernel (no overlap, no padding):
    every input pixel writes its own `kh x kw` block of the result,

        acc[n, o, kh*y + i, kw*x + j] = sum_c (x[n, g*Cg + c, y, x] - zp) * w[o, c, i, j]

    then POST per output channel `o`. Weights are OIHW like `quant.conv2d` (O = output
    channels, I = input channels per group), so per-channel scales sit on axis 0; ONNX's
    `[Cin, Cout/group, kh, kw]` is regrouped by `quantize`. This is a 1x1 convolution to
    `kh*kw*O` channels followed by a depth-to-space, which the NPU lowering does in the
    STORE's strided DMA."""

    name = "quant.conv_transpose"
    group = prop_def(IntegerAttr[I64])
    assembly_format = "$input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)"

    def __init__(
        self,
        input: SSAValue,
        weight: SSAValue,
        bias: SSAValue | None,
        result_type: TensorType,
        *,
        multiplier: Sequence[int] | np.ndarray,
        shift: Sequence[int] | np.ndarray,
        group: int = 1,
        act_min: int = -128,
        act_max: int = 127,
        lut: np.ndarray | None = None,
        lut_input_type: UniformQuantizedType | None = None,
    ):
        props = self._requant_properties(multiplier, shift, act_min, act_max, lut, lut_input_type)
        props["group"] = IntegerAttr(group, i64)
        super().__init__(operands=[input, weight, bias], properties=props, result_types=[result_type])

    def verify_(self) -> None:
        in_shape = self.input.type.get_shape()
        w_shape = self.weight.type.get_shape()
        out_shape = self.output.type.get_shape()
        if len(in_shape) != 4 or len(w_shape) != 4 or len(out_shape) != 4:
            raise VerifyException("quant.conv_transpose: input, weight and result must be 4-D (NCHW, OIHW)")
        group = self.group.value.data
        if group < 1 or in_shape[1] % group or w_shape[0] % group or w_shape[1] * group != in_shape[1]:
            raise VerifyException(
                f"quant.conv_transpose: {in_shape[1]} input channels, weight {w_shape} and group {group} do not fit"
            )
        expected = (in_shape[0], w_shape[0], in_shape[2] * w_shape[2], in_shape[3] * w_shape[3])
        if out_shape != expected:
            raise VerifyException(f"quant.conv_transpose: result shape {out_shape}, expected {expected}")
        self._verify_requant(w_shape[0])


@irdl_op_definition
class FullyConnectedOp(_RequantizingOp):
    """Fully connected layer / matmul with a constant right-hand side:
    `y[..., n] = sum_k x[..., k] * w[n, k] + b[n]` (weights [N, K], per-channel on N)."""

    name = "quant.fully_connected"
    assembly_format = "$input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)"

    def __init__(
        self,
        input: SSAValue,
        weight: SSAValue,
        bias: SSAValue | None,
        result_type: TensorType,
        *,
        multiplier: Sequence[int] | np.ndarray,
        shift: Sequence[int] | np.ndarray,
        act_min: int = -128,
        act_max: int = 127,
        lut: np.ndarray | None = None,
        lut_input_type: UniformQuantizedType | None = None,
    ):
        props = self._requant_properties(multiplier, shift, act_min, act_max, lut, lut_input_type)
        super().__init__(
            operands=[input, weight, bias], properties=props, result_types=[result_type]
        )

    def verify_(self) -> None:
        in_shape = self.input.type.get_shape()
        w_shape = self.weight.type.get_shape()
        out_shape = self.output.type.get_shape()
        if len(w_shape) != 2 or not in_shape or in_shape[-1] != w_shape[1]:
            raise VerifyException(f"quant.fully_connected: input {in_shape} and weight {w_shape} do not fit")
        if out_shape != in_shape[:-1] + (w_shape[0],):
            raise VerifyException(f"quant.fully_connected: result shape {out_shape} does not fit")
        self._verify_requant(w_shape[0])


class _BinaryOp(IRDLOperation):
    """Elementwise op on two quantized tensors with numpy broadcasting: int8, or for
    `quant.mul` one full-shaped int16 operand (the NPU's ELTW `a_i16`)."""

    lhs = operand_def(QuantTensor)
    rhs = operand_def(QuantTensor)
    act_min = prop_def(IntegerAttr[I32])
    act_max = prop_def(IntegerAttr[I32])
    output = result_def(QuantTensor)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)"

    def _verify_binary(self) -> None:
        try:
            shape = np.broadcast_shapes(self.lhs.type.get_shape(), self.rhs.type.get_shape())
        except ValueError:
            raise VerifyException(f"{self.name}: operand shapes do not broadcast") from None
        if tuple(shape) != self.output.type.get_shape():
            raise VerifyException(f"{self.name}: result shape must be the broadcast shape {tuple(shape)}")
        _check_act(self, self.act_min, self.act_max, quant_type_of(self.output))


@irdl_op_definition
class AddOp(_BinaryOp):
    """`lhs + rhs`, TFLite-style: each centred input shifted left by `ADD_LEFT_SHIFT` and
    rescaled to a common intermediate scale (`input_multipliers`, `input_shifts`), summed,
    then requantized to the result (`multiplier`, `shift`)."""

    name = "quant.add"
    input_multipliers = prop_def(DenseArrayBase[I32])
    input_shifts = prop_def(DenseArrayBase[I32])
    multiplier = prop_def(IntegerAttr[I32])
    shift = prop_def(IntegerAttr[I32])

    def __init__(
        self,
        lhs: SSAValue,
        rhs: SSAValue,
        result_type: TensorType,
        *,
        input_multipliers: Sequence[int] | np.ndarray,
        input_shifts: Sequence[int] | np.ndarray,
        multiplier: int,
        shift: int,
        act_min: int = -128,
        act_max: int = 127,
    ):
        props = {
            "input_multipliers": int_array(input_multipliers),
            "input_shifts": int_array(input_shifts),
            "multiplier": _i32(multiplier),
            "shift": _i32(shift),
            "act_min": _i32(act_min),
            "act_max": _i32(act_max),
        }
        super().__init__(operands=[lhs, rhs], properties=props, result_types=[result_type])

    def verify_(self) -> None:
        self._verify_binary()
        multipliers = _check_len(self, "input_multipliers", self.input_multipliers, 2)
        shifts = _check_len(self, "input_shifts", self.input_shifts, 2)
        _check_requant(
            self,
            np.append(multipliers, self.multiplier.value.data),
            np.append(shifts, self.shift.value.data),
        )


@irdl_op_definition
class MulOp(_BinaryOp):
    """`lhs * rhs`: the product of the zero-point-corrected inputs, requantized once with
    `multiplier`, `shift` (real multiplier `s_lhs * s_rhs / s_out`)."""

    name = "quant.mul"
    multiplier = prop_def(IntegerAttr[I32])
    shift = prop_def(IntegerAttr[I32])

    def __init__(
        self,
        lhs: SSAValue,
        rhs: SSAValue,
        result_type: TensorType,
        *,
        multiplier: int,
        shift: int,
        act_min: int = -128,
        act_max: int = 127,
    ):
        props = {
            "multiplier": _i32(multiplier),
            "shift": _i32(shift),
            "act_min": _i32(act_min),
            "act_max": _i32(act_max),
        }
        super().__init__(operands=[lhs, rhs], properties=props, result_types=[result_type])

    def verify_(self) -> None:
        self._verify_binary()
        _check_requant(self, np.array([self.multiplier.value.data]), np.array([self.shift.value.data]))


@irdl_op_definition
class ConcatOp(IRDLOperation):
    """Concatenation along `axis`; input i is requantized to the result with
    `multipliers[i]`, `shifts[i]` (real multiplier `s_i / s_out`)."""

    name = "quant.concat"
    inputs = var_operand_def(QuantTensor)
    axis = prop_def(IntegerAttr[I64])
    multipliers = prop_def(DenseArrayBase[I32])
    shifts = prop_def(DenseArrayBase[I32])
    output = result_def(QuantTensor)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$inputs attr-dict `:` functional-type(operands, results)"

    def __init__(
        self,
        inputs: Sequence[SSAValue],
        result_type: TensorType,
        *,
        axis: int,
        multipliers: Sequence[int] | np.ndarray,
        shifts: Sequence[int] | np.ndarray,
    ):
        props = {
            "axis": IntegerAttr(axis, i64),
            "multipliers": int_array(multipliers),
            "shifts": int_array(shifts),
        }
        super().__init__(operands=[inputs], properties=props, result_types=[result_type])

    def verify_(self) -> None:
        count = len(self.inputs)
        if not count:
            raise VerifyException("quant.concat: needs at least one input")
        _check_requant(
            self,
            _check_len(self, "multipliers", self.multipliers, count),
            _check_len(self, "shifts", self.shifts, count),
        )
        shapes = [value.type.get_shape() for value in self.inputs]
        out_shape = self.output.type.get_shape()
        axis = self.axis.value.data
        if not 0 <= axis < len(out_shape):
            raise VerifyException(f"quant.concat: axis {axis} out of range (must be non-negative)")
        for shape in shapes:
            if len(shape) != len(out_shape) or shape[:axis] + shape[axis + 1 :] != out_shape[:axis] + out_shape[axis + 1 :]:
                raise VerifyException(f"quant.concat: input shape {shape} does not fit result {out_shape}")
        if sum(shape[axis] for shape in shapes) != out_shape[axis]:
            raise VerifyException("quant.concat: result size along axis is not the sum of the inputs'")


class _PoolOp(IRDLOperation):
    """A 2-D window over NCHW: `kernel` [kh, kw], `strides`, `pads` [top, left, bottom, right]."""

    input = operand_def(QuantTensor)
    kernel = prop_def(DenseArrayBase[I64])
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    output = result_def(QuantTensor)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` functional-type(operands, results)"

    def _verify_window(self, dilations: np.ndarray) -> None:
        in_shape = self.input.type.get_shape()
        out_shape = self.output.type.get_shape()
        kernel = _check_len(self, "kernel", self.kernel, 2)
        strides = _check_len(self, "strides", self.strides, 2)
        pads = _check_len(self, "pads", self.pads, 4)
        if len(in_shape) != 4 or np.any(kernel < 1) or np.any(strides < 1) or np.any(pads < 0):
            raise VerifyException(f"{self.name}: needs a 4-D input, kernel and strides >= 1, pads >= 0")
        if np.any(pads[:2] >= kernel) or np.any(pads[2:] >= kernel):
            raise VerifyException(f"{self.name}: padding must be smaller than the kernel")
        expected = in_shape[:2] + tuple(
            window_output_size(in_shape[2 + i], kernel[i], strides[i], dilations[i], pads[i], pads[i + 2])
            for i in range(2)
        )
        if out_shape != expected:
            raise VerifyException(f"{self.name}: result shape {out_shape}, expected {expected}")


@irdl_op_definition
class MaxPoolOp(_PoolOp):
    """Max pooling; padding never wins (it takes the storage minimum). Same type in and out."""

    name = "quant.max_pool"
    dilations = prop_def(DenseArrayBase[I64])

    def __init__(
        self,
        input: SSAValue,
        result_type: TensorType,
        *,
        kernel: Sequence[int],
        strides: Sequence[int] = (1, 1),
        pads: Sequence[int] = (0, 0, 0, 0),
        dilations: Sequence[int] = (1, 1),
    ):
        props = {
            "kernel": int_array(kernel, i64),
            "strides": int_array(strides, i64),
            "pads": int_array(pads, i64),
            "dilations": int_array(dilations, i64),
        }
        super().__init__(operands=[input], properties=props, result_types=[result_type])

    def verify_(self) -> None:
        dilations = _check_len(self, "dilations", self.dilations, 2)
        if np.any(dilations < 1):
            raise VerifyException("quant.max_pool: dilations must be >= 1")
        self._verify_window(dilations)
        _check_same_quant(self, self.input, self.output)


@irdl_op_definition
class AvgPoolOp(_PoolOp):
    """Average pooling, as the NPU's POOL: the window sum `s` of `x - zp_in` is divided by
    its element count `n` rounding half up, `floor((2 s + n) / (2 n))`, then requantized
    with `multiplier`, `shift` (real multiplier `s_in / s_out`). `n` is kh*kw with
    `count_include_pad`, else the number of window elements inside the input."""

    name = "quant.avg_pool"
    count_include_pad = prop_def(IntegerAttr[IntegerType])
    multiplier = prop_def(IntegerAttr[I32])
    shift = prop_def(IntegerAttr[I32])

    def __init__(
        self,
        input: SSAValue,
        result_type: TensorType,
        *,
        kernel: Sequence[int],
        multiplier: int,
        shift: int,
        strides: Sequence[int] = (1, 1),
        pads: Sequence[int] = (0, 0, 0, 0),
        count_include_pad: bool = False,
    ):
        props = {
            "kernel": int_array(kernel, i64),
            "strides": int_array(strides, i64),
            "pads": int_array(pads, i64),
            "count_include_pad": IntegerAttr(int(count_include_pad), IntegerType(1)),
            "multiplier": _i32(multiplier),
            "shift": _i32(shift),
        }
        super().__init__(operands=[input], properties=props, result_types=[result_type])

    def verify_(self) -> None:
        self._verify_window(np.ones(2, dtype=np.int64))
        _check_requant(self, np.array([self.multiplier.value.data]), np.array([self.shift.value.data]))


@irdl_op_definition
class GlobalAvgPoolOp(IRDLOperation):
    """Mean over H and W of NCHW with a single rounding: the sum of `x - zp_in` over H*W
    requantized with `multiplier`, `shift` (real multiplier `s_in / (s_out * H * W)`);
    result N x C x 1 x 1. (The NPU runs it as POOL sum + POST; POOL avg's rounded
    division would round twice.)"""

    name = "quant.global_avg_pool"
    input = operand_def(QuantTensor)
    multiplier = prop_def(IntegerAttr[I32])
    shift = prop_def(IntegerAttr[I32])
    output = result_def(QuantTensor)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue, result_type: TensorType, *, multiplier: int, shift: int):
        props = {"multiplier": _i32(multiplier), "shift": _i32(shift)}
        super().__init__(operands=[input], properties=props, result_types=[result_type])

    def verify_(self) -> None:
        in_shape = self.input.type.get_shape()
        if len(in_shape) != 4 or self.output.type.get_shape() != in_shape[:2] + (1, 1):
            raise VerifyException("quant.global_avg_pool: needs NCHW input and an N x C x 1 x 1 result")
        _check_requant(self, np.array([self.multiplier.value.data]), np.array([self.shift.value.data]))


RESIZE_MODES = ("nearest", "bilinear")
COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@irdl_op_definition
class ResizeOp(IRDLOperation):
    """Resize of H and W of NCHW to the result's size, with ONNX Resize's coordinate
    transformation (scale = output size / input size) on Q16 fixed-point coordinates,
    then requantized with `multiplier`, `shift` (real multiplier `s_in / s_out`, times
    2^-20 for bilinear, whose interpolation weights are Q10 per axis)."""

    name = "quant.resize"
    input = operand_def(QuantTensor)
    mode = prop_def(StringAttr)
    coordinate_transformation_mode = prop_def(StringAttr)
    nearest_mode = prop_def(StringAttr)
    multiplier = prop_def(IntegerAttr[I32])
    shift = prop_def(IntegerAttr[I32])
    output = result_def(QuantTensor)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` functional-type(operands, results)"

    def __init__(
        self,
        input: SSAValue,
        result_type: TensorType,
        *,
        mode: str,
        multiplier: int,
        shift: int,
        coordinate_transformation_mode: str = "half_pixel",
        nearest_mode: str = "round_prefer_floor",
    ):
        props = {
            "multiplier": _i32(multiplier),
            "shift": _i32(shift),
            "mode": StringAttr(mode),
            "coordinate_transformation_mode": StringAttr(coordinate_transformation_mode),
            "nearest_mode": StringAttr(nearest_mode),
        }
        super().__init__(operands=[input], properties=props, result_types=[result_type])

    def verify_(self) -> None:
        for attr, allowed in (
            (self.mode, RESIZE_MODES),
            (self.coordinate_transformation_mode, COORDINATE_MODES),
            (self.nearest_mode, NEAREST_MODES),
        ):
            if attr.data not in allowed:
                raise VerifyException(f"quant.resize: '{attr.data}' is not one of {', '.join(allowed)}")
        in_shape = self.input.type.get_shape()
        out_shape = self.output.type.get_shape()
        if len(in_shape) != 4 or len(out_shape) != 4 or in_shape[:2] != out_shape[:2]:
            raise VerifyException("quant.resize: resizes H and W of a 4-D NCHW tensor only")
        _check_requant(self, np.array([self.multiplier.value.data]), np.array([self.shift.value.data]))


@irdl_op_definition
class LutOp(IRDLOperation):
    """Elementwise 256-entry table: `y = table[x + 128]` (Sigmoid, SiLU, HardSwish, ...)."""

    name = "quant.lut"
    input = operand_def(QuantTensor)
    table = prop_def(DenseArrayBase[IntegerType])
    output = result_def(QuantTensor)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue, result_type: TensorType, *, table: np.ndarray):
        super().__init__(operands=[input], properties={"table": int_array(table, i8)}, result_types=[result_type])

    def verify_(self) -> None:
        _check_len(self, "table", self.table, 256)
        if self.table.elt_type != i8:
            raise VerifyException("quant.lut: table must be i8")
        if self.input.type.get_shape() != self.output.type.get_shape():
            raise VerifyException("quant.lut: input and result shapes differ")
        if quant_type_of(self.input).storage_type != i8 or quant_type_of(self.output).storage_type != i8:
            raise VerifyException("quant.lut: input and result must be int8")


class _LayoutOp(IRDLOperation):
    """Moves int8 values without changing them: same quantized type in and out."""

    input = operand_def(QuantTensor)
    output = result_def(QuantTensor)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)

    def _verify_layout(self) -> None:
        _check_same_quant(self, self.input, self.output)


@irdl_op_definition
class ReshapeOp(_LayoutOp):
    """Reshape (C order) to the result's static shape."""

    name = "quant.reshape"
    assembly_format = "$input attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue, result_type: TensorType):
        super().__init__(operands=[input], result_types=[result_type])

    def verify_(self) -> None:
        self._verify_layout()
        if math.prod(self.input.type.get_shape()) != math.prod(self.output.type.get_shape()):
            raise VerifyException("quant.reshape: input and result sizes differ")


@irdl_op_definition
class TransposeOp(_LayoutOp):
    """Permutes dimensions: result dim i is input dim `perm[i]`."""

    name = "quant.transpose"
    perm = prop_def(DenseArrayBase[I64])
    assembly_format = "$input attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue, result_type: TensorType, *, perm: Sequence[int]):
        super().__init__(operands=[input], properties={"perm": int_array(perm, i64)}, result_types=[result_type])

    def verify_(self) -> None:
        self._verify_layout()
        in_shape = self.input.type.get_shape()
        perm = _check_len(self, "perm", self.perm, len(in_shape))
        if sorted(perm.tolist()) != list(range(len(in_shape))):
            raise VerifyException("quant.transpose: perm must be a permutation of the dimensions")
        if self.output.type.get_shape() != tuple(in_shape[p] for p in perm):
            raise VerifyException("quant.transpose: result shape does not match perm")


@irdl_op_definition
class PadOp(_LayoutOp):
    """Constant padding with the zero point (real 0). `pads` = [begin_0, ..., begin_{r-1},
    end_0, ..., end_{r-1}], the ONNX order; non-negative."""

    name = "quant.pad"
    pads = prop_def(DenseArrayBase[I64])
    assembly_format = "$input attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue, result_type: TensorType, *, pads: Sequence[int]):
        super().__init__(operands=[input], properties={"pads": int_array(pads, i64)}, result_types=[result_type])

    def verify_(self) -> None:
        self._verify_layout()
        in_shape = self.input.type.get_shape()
        rank = len(in_shape)
        pads = _check_len(self, "pads", self.pads, 2 * rank)
        if np.any(pads < 0):
            raise VerifyException("quant.pad: pads must be non-negative")
        expected = tuple(int(d + pads[i] + pads[i + rank]) for i, d in enumerate(in_shape))
        if self.output.type.get_shape() != expected:
            raise VerifyException(f"quant.pad: result shape must be {expected}")


@irdl_op_definition
class SliceOp(_LayoutOp):
    """Strided slice: along dim i, elements `starts[i], starts[i] + steps[i], ...` below
    `ends[i]`. All values normalized: 0 <= start <= end <= size, step >= 1."""

    name = "quant.slice"
    starts = prop_def(DenseArrayBase[I64])
    ends = prop_def(DenseArrayBase[I64])
    steps = prop_def(DenseArrayBase[I64])
    assembly_format = "$input attr-dict `:` functional-type(operands, results)"

    def __init__(
        self,
        input: SSAValue,
        result_type: TensorType,
        *,
        starts: Sequence[int],
        ends: Sequence[int],
        steps: Sequence[int],
    ):
        props = {"starts": int_array(starts, i64), "ends": int_array(ends, i64), "steps": int_array(steps, i64)}
        super().__init__(operands=[input], properties=props, result_types=[result_type])

    def verify_(self) -> None:
        self._verify_layout()
        in_shape = np.array(self.input.type.get_shape(), dtype=np.int64)
        starts = _check_len(self, "starts", self.starts, in_shape.size)
        ends = _check_len(self, "ends", self.ends, in_shape.size)
        steps = _check_len(self, "steps", self.steps, in_shape.size)
        if np.any(starts < 0) or np.any(ends < starts) or np.any(ends > in_shape) or np.any(steps < 1):
            raise VerifyException("quant.slice: need 0 <= start <= end <= size and step >= 1")
        expected = tuple(int(n) for n in -(-(ends - starts) // steps))
        if self.output.type.get_shape() != expected:
            raise VerifyException(f"quant.slice: result shape must be {expected}")


Quant = Dialect(
    "quant",
    [
        QuantizeOp,
        DequantizeOp,
        ConstantOp,
        Conv2DOp,
        ConvTransposeOp,
        FullyConnectedOp,
        AddOp,
        MulOp,
        ConcatOp,
        MaxPoolOp,
        AvgPoolOp,
        GlobalAvgPoolOp,
        ResizeOp,
        LutOp,
        ReshapeOp,
        TransposeOp,
        PadOp,
        SliceOp,
    ],
    [UniformQuantizedType],
)
