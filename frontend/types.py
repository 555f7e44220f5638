"""ONNX types and attributes <-> xDSL types and properties."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, TypeProto, numpy_helper
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    BFloat16Type,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    NoneType,
    StringAttr,
    TensorType,
    UnrankedTensorType,
    f32,
    i64,
)
from xdsl.ir import Attribute

from ember.dialects.dense import dense_from_numpy, element_type_of, numpy_from_dense, numpy_dtype_of
from ember.dialects.onnx import OnnxProtoAttr, OpaqueType, StringType
from ember.support.diagnostics import EmberError

UNKNOWN_TYPE = NoneType()
"""The type of a value whose ONNX type shape inference could not tell."""


def element_type_from_onnx(elem_type: int) -> Attribute | None:
    """The xDSL element type of an ONNX tensor element type, or None if Ember has none."""
    if elem_type == TensorProto.STRING:
        return StringType()
    if elem_type == TensorProto.BFLOAT16:
        return BFloat16Type()
    try:
        return element_type_of(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return None


def element_type_to_onnx(element_type: Attribute) -> int:
    """The ONNX tensor element type of an xDSL element type."""
    if isinstance(element_type, StringType):
        return TensorProto.STRING
    if isinstance(element_type, BFloat16Type):
        return TensorProto.BFLOAT16
    return onnx.helper.np_dtype_to_tensor_dtype(numpy_dtype_of(element_type))


def type_from_onnx(type_proto: TypeProto | None) -> Attribute:
    """An xDSL type for an ONNX value type; dynamic dimensions are `?`."""
    if type_proto is None or type_proto.WhichOneof("value") is None:
        return UNKNOWN_TYPE
    if type_proto.WhichOneof("value") != "tensor_type":
        return OpaqueType(type_proto.SerializeToString())
    tensor = type_proto.tensor_type
    elem = element_type_from_onnx(tensor.elem_type) if tensor.elem_type else None
    if elem is None:
        return UNKNOWN_TYPE if not tensor.elem_type else OpaqueType(type_proto.SerializeToString())
    if not tensor.HasField("shape"):
        return UnrankedTensorType(elem)
    # Some exporters write -1 for a dynamic dimension.
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else DYNAMIC_INDEX for d in tensor.shape.dim]
    return TensorType(elem, dims)


def type_to_onnx(attr: Attribute) -> TypeProto | None:
    """The ONNX type for an xDSL type, or None when it is unknown."""
    if isinstance(attr, OpaqueType):
        proto = TypeProto()
        proto.ParseFromString(attr.data)
        return proto
    if isinstance(attr, TensorType):
        dims = [d if d != DYNAMIC_INDEX else None for d in attr.get_shape()]
        return onnx.helper.make_tensor_type_proto(element_type_to_onnx(attr.element_type), dims)
    if isinstance(attr, UnrankedTensorType):
        return onnx.helper.make_tensor_type_proto(element_type_to_onnx(attr.element_type), None)
    return None


def tensor_from_onnx(tensor: TensorProto, base_dir: str = "") -> Attribute:
    """A dense attribute for an ONNX tensor, or the opaque proto for kinds without one."""
    if element_type_from_onnx(tensor.data_type) is None or tensor.data_type in (TensorProto.STRING, TensorProto.BFLOAT16):
        return OnnxProtoAttr(tensor.SerializeToString())
    array = numpy_helper.to_array(tensor, base_dir)
    return dense_from_numpy(array)


def tensor_to_onnx(value: Attribute, name: str) -> TensorProto:
    """The ONNX tensor for an initializer value or TENSOR attribute."""
    if isinstance(value, OnnxProtoAttr):
        tensor = TensorProto()
        tensor.ParseFromString(value.data)
        tensor.name = name
        return tensor
    assert isinstance(value, DenseIntOrFPElementsAttr)
    return numpy_helper.from_array(np.array(numpy_from_dense(value), order="C"), name)


def attribute_from_onnx(attr: AttributeProto, base_dir: str = "") -> Attribute:
    """The property for an ONNX node attribute."""
    kind = attr.type
    if kind == AttributeProto.INT:
        return IntegerAttr(attr.i, i64)
    if kind == AttributeProto.FLOAT:
        return FloatAttr(attr.f, f32)
    if kind == AttributeProto.STRING:
        try:
            return StringAttr(attr.s.decode("utf-8"))
        except UnicodeDecodeError:
            return OnnxProtoAttr(attr.SerializeToString())
    if kind == AttributeProto.INTS:
        return DenseArrayBase.from_list(i64, list(attr.ints))
    if kind == AttributeProto.FLOATS:
        return DenseArrayBase.from_list(f32, list(attr.floats))
    if kind == AttributeProto.STRINGS:
        try:
            return ArrayAttr([StringAttr(s.decode("utf-8")) for s in attr.strings])
        except UnicodeDecodeError:
            return OnnxProtoAttr(attr.SerializeToString())
    if kind == AttributeProto.TENSOR:
        value = tensor_from_onnx(attr.t, base_dir)
        # An opaque property holds a whole AttributeProto, not the TensorProto inside it.
        return value if isinstance(value, DenseIntOrFPElementsAttr) else OnnxProtoAttr(attr.SerializeToString())
    return OnnxProtoAttr(attr.SerializeToString())


def attribute_to_onnx(name: str, value: Attribute) -> AttributeProto:
    """The ONNX node attribute for a property."""
    attr = AttributeProto()
    attr.name = name
    if isinstance(value, OnnxProtoAttr):
        attr.ParseFromString(value.data)
        attr.name = name
    elif isinstance(value, IntegerAttr):
        attr.type, attr.i = AttributeProto.INT, value.value.data
    elif isinstance(value, FloatAttr):
        attr.type, attr.f = AttributeProto.FLOAT, value.value.data
    elif isinstance(value, StringAttr):
        attr.type, attr.s = AttributeProto.STRING, value.data.encode("utf-8")
    elif isinstance(value, DenseArrayBase):
        values = value.get_values()
        if isinstance(value.elt_type, IntegerType):
            attr.type = AttributeProto.INTS
            attr.ints.extend(int(v) for v in values)
        else:
            attr.type = AttributeProto.FLOATS
            attr.floats.extend(float(v) for v in values)
    elif isinstance(value, ArrayAttr):
        attr.type = AttributeProto.STRINGS
        attr.strings.extend(s.data.encode("utf-8") for s in value.data if isinstance(s, StringAttr))
    elif isinstance(value, DenseIntOrFPElementsAttr):
        attr.type = AttributeProto.TENSOR
        attr.t.CopyFrom(tensor_to_onnx(value, ""))
    elif isinstance(value, DenseResourceAttr):
        raise EmberError(f"attribute '{name}' holds weights printed with --elide-weights; re-import the model from its .onnx file")
    else:
        raise TypeError(f"attribute {name}: no ONNX form for {value}")
    return attr
