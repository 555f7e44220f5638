"""numpy <-> `DenseIntOrFPElementsAttr`, and printing, without touching elements one by one.

Weights are built from numpy bytes and read back with `np.frombuffer`. The per-element
APIs of xDSL (`get_values`, `iter_values`, `is_splat`, `from_list`) turn every element into
a Python object and are far too slow for weights; nothing in Ember calls them on weights.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import numpy as np
from xdsl.dialects.builtin import (
    BytesAttr,
    DenseIntOrFPElementsAttr,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    Signedness,
    TensorType,
)
from xdsl.ir import Attribute
from xdsl.printer import Printer

_NUMPY_TO_XDSL: dict[np.dtype, Attribute] = {
    np.dtype(np.float16): Float16Type(),
    np.dtype(np.float32): Float32Type(),
    np.dtype(np.float64): Float64Type(),
    np.dtype(np.bool_): IntegerType(1),
    np.dtype(np.int8): IntegerType(8),
    np.dtype(np.int16): IntegerType(16),
    np.dtype(np.int32): IntegerType(32),
    np.dtype(np.int64): IntegerType(64),
    np.dtype(np.uint8): IntegerType(8, Signedness.UNSIGNED),
    np.dtype(np.uint16): IntegerType(16, Signedness.UNSIGNED),
    np.dtype(np.uint32): IntegerType(32, Signedness.UNSIGNED),
    np.dtype(np.uint64): IntegerType(64, Signedness.UNSIGNED),
}


def element_type_of(dtype: np.dtype) -> Attribute:
    """The xDSL element type for a numpy dtype (signless ints are signed, as in onnx-mlir)."""
    try:
        return _NUMPY_TO_XDSL[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"no dense element type for numpy dtype {np.dtype(dtype)}") from None


def numpy_dtype_of(element_type: Attribute) -> np.dtype:
    """The numpy dtype for an xDSL element type (inverse of `element_type_of`)."""
    for dtype, attr in _NUMPY_TO_XDSL.items():
        if attr == element_type:
            return dtype
    if isinstance(element_type, IntegerType) and element_type.signedness.data == Signedness.SIGNED:
        return np.dtype(f"int{element_type.width.data}")
    raise ValueError(f"no numpy dtype for element type {element_type}")


def dense_from_numpy(array: np.ndarray, element_type: Attribute | None = None) -> DenseIntOrFPElementsAttr:
    """A dense attribute holding `array`'s bytes (little-endian, C order)."""
    array = np.asarray(array)
    elem = element_type if element_type is not None else element_type_of(array.dtype)
    data = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False).tobytes()
    return DenseIntOrFPElementsAttr(TensorType(elem, array.shape), BytesAttr(data))


def numpy_from_dense(attr: DenseIntOrFPElementsAttr) -> np.ndarray:
    """The array held by a dense attribute, as a read-only view of its bytes."""
    dtype = numpy_dtype_of(attr.get_element_type()).newbyteorder("<")
    shape = attr.get_shape()
    flat = np.frombuffer(attr.data.data, dtype=dtype)
    if flat.size == 1 and int(np.prod(shape)) != 1:
        flat = np.broadcast_to(flat, (int(np.prod(shape)),))  # a splat
    return flat.reshape(shape)


_elide_weights: contextvars.ContextVar[bool] = contextvars.ContextVar("elide_weights", default=False)


@contextlib.contextmanager
def elided_weights() -> Iterator[None]:
    """Within this context, initializers print as `dense_resource<__elided__>`: IR for
    people to read, which cannot be parsed back into a runnable model."""
    token = _elide_weights.set(True)
    try:
        yield
    finally:
        _elide_weights.reset(token)


def print_dense_fast(printer: Printer, value: Attribute, literals: bool = False) -> None:
    """Print a dense attribute from its bytes, never element by element: as hex, or with
    `literals` in xDSL's own form (a splat as one value, up to 100 elements as a list)."""
    if not isinstance(value, DenseIntOrFPElementsAttr):
        printer.print_attribute(value)
        return
    if _elide_weights.get():
        printer.print_string("dense_resource<__elided__> : ")
        printer.print_attribute(value.type)
        return
    data = value.data.data
    count = int(np.prod(value.get_shape()))
    width = len(data) // count if count else 0
    if literals and (count <= 100 or data == data[:width] * count):
        if count > 100:  # a large splat: xDSL would unpack every element to find out
            value = DenseIntOrFPElementsAttr(value.type, BytesAttr(data[:width]))
        printer.print_attribute(value)
        return
    printer.print_string(f'dense<"0x{data.hex().upper()}"> : ')
    printer.print_attribute(value.type)
