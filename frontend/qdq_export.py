"""Export a quantized module as an ONNX QDQ model (QuantizeLinear / DequantizeLinear).

Every quant op becomes the float ONNX op it computes, between DequantizeLinear of its
int8 inputs and QuantizeLinear to its result type: the form onnxruntime's own quantizer
writes, which onnxruntime runs (fusing it to integer kernels) and Netron displays.
Weights are int8 initializers with per-axis DequantizeLinear (axis 0), biases int32 with
scale `s_in * s_w[c]`. `quant.conv_transpose` becomes a ConvTranspose whose weights are back
in ONNX's `[Cin, Cout/group, kh, kw]` layout: with one group the int8 initializer is stored
that way and dequantized on axis 1; with several groups a channel's scale depends on both
axes, which per-axis DequantizeLinear cannot say, so the OIHW weights are dequantized on
axis 0 and regrouped in float. Layout ops move int8 tensors directly. Tables (`quant.lut`, and a
conv's fused table) are `Gather` on the 256 int8 entries, so they are exact; an int16
table is its interpolation formula in int32 ops (two Gathers), exact too. Float ops
left on the host are exported as they are. Tensor names: a quantized tensor is
`<onnx name>_q`, its dequantized form the ONNX name itself.

The model uses opset 13 or newer (per-axis DequantizeLinear), 21 when it has int16
activations (int16 QuantizeLinear); a module of an older opset is converted with onnx's
version converter after the graph is built.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.dialects.func import ReturnOp
from xdsl.ir import SSAValue

from ember.dialects import quant
from ember.dialects.onnx import InitializerOp, OnnxOp, opset_version, value_name
from ember.dialects.quant import UniformQuantizedType, array_values, quant_type_of
from ember.frontend.onnx_export import graph_function
from ember.frontend.types import attribute_to_onnx, tensor_to_onnx, type_to_onnx
from ember.support.diagnostics import EmberError

QDQ_OPSET = 13
INT16_QDQ_OPSET = 21
"""The first opset whose QuantizeLinear / DequantizeLinear take int16."""


class _QdqBuilder:
    def __init__(self, module: ModuleOp):
        self.function = graph_function(module)
        self.opset = opset_version(module)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: dict[SSAValue, str] = {}
        self.float_names: dict[SSAValue, str] = {}
        self.taken: set[str] = set()

    # ------------------------------------------------------------------ names

    def fresh(self, base: str) -> str:
        name, counter = base, 0
        while name in self.taken:
            counter += 1
            name = f"{base}_{counter}"
        self.taken.add(name)
        return name

    def name(self, value: SSAValue) -> str:
        """The ONNX name of a value as computed (int8 for quantized values)."""
        if value not in self.names:
            base = value_name(value) or value.name_hint or "t"
            self.names[value] = self.fresh(base + "_q" if _is_quant(value) else base)
        return self.names[value]

    def constant(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def scale_zero(self, qtype: UniformQuantizedType, base: str) -> tuple[str, str]:
        per_axis = qtype.is_per_axis
        scales = qtype.scale_array().astype(np.float32)
        zeros = qtype.zero_point_array().astype(qtype.storage_dtype)
        return (
            self.constant(f"{base}_scale", scales if per_axis else scales.reshape(())),
            self.constant(f"{base}_zero_point", zeros if per_axis else zeros.reshape(())),
        )

    def node(self, op_type: str, inputs: list[str], output: str | None = None, **attributes) -> str:
        output = output or self.fresh(f"{op_type}_out")
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output

    # ------------------------------------------------------------------ boundaries

    def dequantized(self, value: SSAValue) -> str:
        """The float form of a quantized value (one DequantizeLinear per value)."""
        if value not in self.float_names:
            qtype = quant_type_of(value)
            scale, zero = self.scale_zero(qtype, self.name(value))
            # a group-1 conv_transpose weight is stored IOHW: its output channels are axis 1
            axis = {"axis": 1 if _transposed_weight(value) else qtype.quantized_dimension} if qtype.is_per_axis else {}
            base = value_name(value) or "dq"
            self.float_names[value] = self.node("DequantizeLinear", [self.name(value), scale, zero], self.fresh(base), **axis)
        return self.float_names[value]

    def quantize_to(self, float_name: str, result: SSAValue) -> None:
        scale, zero = self.scale_zero(quant_type_of(result), self.name(result))
        self.node("QuantizeLinear", [float_name, scale, zero], self.name(result))

    def clamp(self, float_name: str, op, result_type: UniformQuantizedType) -> str:
        """A fused clamp as a float Clip (only when narrower than the storage range)."""
        lo, hi = op.act_min.value.data, op.act_max.value.data
        if lo == result_type.storage_min and hi == result_type.storage_max:
            return float_name
        scale, zero = result_type.scale, result_type.zero_point
        bounds = [self.constant("clip_min", np.float32((lo - zero) * scale)), self.constant("clip_max", np.float32((hi - zero) * scale))]
        return self.node("Clip", [float_name, *bounds])

    def table(self, int8_name: str, table: np.ndarray, output: str) -> None:
        """`table[x + 128]` with Gather: exact."""
        index = self.node("Cast", [int8_name], to=TensorProto.INT32)
        shifted = self.node("Add", [index, self.constant("lut_offset", np.int32(128))])
        self.node("Gather", [self.constant("lut_table", table.astype(np.int8)), shifted], output)

    def table16(self, int16_name: str, table: np.ndarray, output: str) -> None:
        """The interpolated int16 lookup (`quant_tables.lookup16`) in int32 ops: exact. The
        rounding shift is a division of a number made positive by 2^23 (> |slope * f|)."""
        u = self.node("Add", [self.node("Cast", [int16_name], to=TensorProto.INT32), self.constant("lut_offset", np.int32(32768))])
        step = self.constant("lut_step", np.int32(128))
        i = self.node("Div", [u, step])
        f = self.node("Sub", [u, self.node("Mul", [i, step])])
        entries = self.constant("lut_table", table.astype(np.int32))
        low = self.node("Gather", [entries, i])
        high = self.node("Gather", [entries, self.node("Add", [i, self.constant("one", np.int32(1))])])
        slope_f = self.node("Mul", [self.node("Sub", [high, low]), f])
        biased = self.node("Add", [slope_f, self.constant("lut_round", np.int32(64 + (1 << 23)))])
        delta = self.node("Sub", [self.node("Div", [biased, step]), self.constant("lut_unbias", np.int32(1 << 16))])
        self.node("Cast", [self.node("Add", [low, delta])], output, to=TensorProto.INT16)

    # ------------------------------------------------------------------ ops

    def emit(self, op) -> None:
        if isinstance(op, InitializerOp):
            self.initializers.append(tensor_to_onnx(op.value, self.name(op.output)))
        elif isinstance(op, quant.ConstantOp):
            array = op.numpy()
            if _transposed_weight(op.output):
                array = array.transpose(1, 0, 2, 3)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), self.name(op.output)))
        elif isinstance(op, quant.QuantizeOp):
            self.quantize_to(self.float_input(op.input), op.output)
        elif isinstance(op, quant.DequantizeOp):
            self.float_names[op.output] = self.dequantized(op.input)
        elif isinstance(op, OnnxOp):
            inputs = ["" if v is None else self.float_input(v) for v in op.input_slots()]
            while inputs and inputs[-1] == "":
                inputs.pop()
            outputs = [self.name(r) for r in op.results]
            node = helper.make_node(op.ONNX_TYPE, inputs, outputs, name=op.node_name or None)
            node.attribute.extend(attribute_to_onnx(k, v) for k, v in op.properties.items() if not k.endswith("SegmentSizes"))
            self.nodes.append(node)
        elif isinstance(op, quant.Conv2DOp | quant.ConvTransposeOp | quant.FullyConnectedOp):
            self.weighted(op)
        elif isinstance(op, quant.LutOp):
            self.table(self.name(op.input), array_values(op.table), self.name(op.output))
        elif isinstance(op, quant.ReshapeOp):
            shape = self.constant("shape", np.array(op.output.type.get_shape(), dtype=np.int64))
            self.node("Reshape", [self.name(op.input), shape], self.name(op.output))
        elif isinstance(op, quant.TransposeOp):
            self.node("Transpose", [self.name(op.input)], self.name(op.output), perm=array_values(op.perm).tolist())
        elif isinstance(op, quant.SliceOp):
            bounds = [self.constant(n, array_values(a)) for n, a in (("starts", op.starts), ("ends", op.ends))]
            axes = self.constant("axes", np.arange(len(op.input.type.get_shape()), dtype=np.int64))
            self.node("Slice", [self.name(op.input), *bounds, axes, self.constant("steps", array_values(op.steps))], self.name(op.output))
        else:
            self.quantize_to(self.float_op(op), op.output)

    def float_input(self, value: SSAValue) -> str:
        if value in self.float_names:
            return self.float_names[value]
        return self.dequantized(value) if _is_quant(value) else self.name(value)

    def float_op(self, op) -> str:
        """The float ONNX node of an op whose result is then quantized."""
        x = [self.dequantized(v) for v in op.operands]
        if isinstance(op, quant.AddOp | quant.MulOp):
            value = self.node("Add" if isinstance(op, quant.AddOp) else "Mul", x)
            return self.clamp(value, op, quant_type_of(op.output))
        if isinstance(op, quant.ConcatOp):
            return self.node("Concat", x, axis=op.axis.value.data)
        if isinstance(op, quant.MaxPoolOp | quant.AvgPoolOp):
            window = {"kernel_shape": array_values(op.kernel).tolist(), "strides": array_values(op.strides).tolist(), "pads": array_values(op.pads).tolist()}
            if isinstance(op, quant.MaxPoolOp):
                return self.node("MaxPool", x, dilations=array_values(op.dilations).tolist(), **window)
            return self.node("AveragePool", x, count_include_pad=op.count_include_pad.value.data, **window)
        if isinstance(op, quant.GlobalAvgPoolOp):
            return self.node("GlobalAveragePool", x)
        if isinstance(op, quant.ResizeOp):
            sizes = self.constant("sizes", np.array(op.output.type.get_shape(), dtype=np.int64))
            return self.node(
                "Resize", [x[0], "", "", sizes], mode="nearest" if op.mode.data == "nearest" else "linear",
                coordinate_transformation_mode=op.coordinate_transformation_mode.data, nearest_mode=op.nearest_mode.data,
            )  # fmt: skip
        if isinstance(op, quant.PadOp):
            return self.node("Pad", [x[0], self.constant("pads", array_values(op.pads))])
        raise EmberError(f"QDQ export: no ONNX form for '{op.name}'")

    def weighted(self, op: quant.Conv2DOp | quant.ConvTransposeOp | quant.FullyConnectedOp) -> None:
        x, w = self.dequantized(op.input), self.dequantized(op.weight)
        b = self.dequantized(op.bias) if op.bias is not None else None
        if isinstance(op, quant.Conv2DOp):
            value = self.node(
                "Conv", [x, w, *([b] if b else [])], strides=array_values(op.strides).tolist(),
                pads=array_values(op.pads).tolist(), dilations=array_values(op.dilations).tolist(), group=op.group.value.data,
            )  # fmt: skip
        elif isinstance(op, quant.ConvTransposeOp):
            group = op.group.value.data
            out_channels, group_in, kh, kw = op.weight.type.get_shape()
            if not _transposed_weight(op.weight):
                # OIHW [g*Og, Cg, kh, kw] -> ONNX [g*Cg, Og, kh, kw]
                split = self.node("Reshape", [w, self.constant("shape", np.array([group, out_channels // group, group_in, kh, kw], dtype=np.int64))])
                swapped = self.node("Transpose", [split], perm=[0, 2, 1, 3, 4])
                w = self.node("Reshape", [swapped, self.constant("shape", np.array([group * group_in, out_channels // group, kh, kw], dtype=np.int64))])
            value = self.node("ConvTranspose", [x, w, *([b] if b else [])], strides=[kh, kw], kernel_shape=[kh, kw], group=group)
        else:
            value = self.node("MatMul", [x, self.node("Transpose", [w], perm=[1, 0])])
            if b:
                value = self.node("Add", [value, b])
        if op.lut is None:
            self.quantize_to(self.clamp(value, op, quant_type_of(op.output)), op.output)
            return
        lut_type = op.lut_input_type
        scale, zero = self.scale_zero(lut_type, self.name(op.output) + "_lut_input")
        clamped = self.clamp(value, op, lut_type)
        index = self.node("QuantizeLinear", [clamped, scale, zero])
        if lut_type.storage_dtype == np.int16:
            self.table16(index, array_values(op.lut), self.name(op.output))
        else:
            self.table(index, array_values(op.lut), self.name(op.output))

    # ------------------------------------------------------------------ model

    def build(self) -> onnx.ModelProto:
        block = self.function.body.block
        inputs = []
        for arg in block.args:
            inputs.append(_info(self.name(arg), arg.type))
        outputs = []
        wanted = self.function.attributes.get("onnx.output_names")
        wanted_names = [s.data for s in wanted.data] if wanted is not None else []
        for op in block.ops:
            if isinstance(op, ReturnOp):
                for index, value in enumerate(op.arguments):
                    produced = self.float_input(value)
                    target = wanted_names[index] if index < len(wanted_names) else produced
                    if target != produced:
                        target = self.fresh(target) if target in self.taken else target
                        self.node("Identity", [produced], target)
                    outputs.append(_info(target, value.type))
            else:
                self.emit(op)
        graph = helper.make_graph(self.nodes, self.function.sym_name.data, inputs, outputs, self.initializers)
        int16 = any(_is_quant(v) and quant_type_of(v).storage_dtype == np.int16 for v in self.names)
        opset = max(self.opset, INT16_QDQ_OPSET if int16 else QDQ_OPSET)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=8)
        if self.opset < opset:
            model = onnx.version_converter.convert_version(model, opset)
        model.ir_version = 8
        return model


def _is_quant(value: SSAValue) -> bool:
    return isinstance(value.type, TensorType) and isinstance(value.type.element_type, UniformQuantizedType)


def _transposed_weight(value: SSAValue) -> bool:
    """Whether a constant is the weight of group-1 conv_transposes only (exported IOHW)."""
    uses = [use for use in value.uses]
    return bool(uses) and all(
        isinstance(use.operation, quant.ConvTransposeOp) and use.index == 1 and use.operation.group.value.data == 1 for use in uses
    )


def _info(name: str, type_attr) -> onnx.ValueInfoProto:
    proto = onnx.ValueInfoProto(name=name)
    proto.type.CopyFrom(type_to_onnx(type_attr))
    return proto


def export_qdq(module: ModuleOp) -> onnx.ModelProto:
    """The ONNX QDQ model of a quantized module (see the module docstring)."""
    return _QdqBuilder(module).build()
