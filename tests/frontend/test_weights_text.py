"""Weights in MLIR text: printed as hex from their bytes, parsed back from the hex (or
from literals in hand-written IR) without a Python object per element.

The speed itself is measured by benchmarks/frontend_timing.py; these tests check that
the fast paths give exactly the bytes, on a 4M-element weight as well."""

from __future__ import annotations

import io

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError

from ember.dialects.dense import numpy_from_dense
from ember.dialects.onnx import ONNX, InitializerOp
from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model


def parse(text: str) -> ModuleOp:
    ctx = Context()
    for dialect in (Builtin, Func, ONNX):
        ctx.load_dialect(dialect)
    return Parser(ctx, text).parse_module()


def print_module(module: ModuleOp) -> str:
    stream = io.StringIO()
    Printer(stream=stream).print_op(module)
    return stream.getvalue()


def test_four_million_weights_print_and_parse_exactly() -> None:
    w = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2048])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2048])],
        [numpy_helper.from_array(w, "w")],
    )
    text = print_module(import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    assert len(text) > 2 * w.nbytes  # hex, two characters a byte
    exported = export_model(parse(text))
    assert numpy_helper.to_array(exported.graph.initializer[0]).tobytes() == w.tobytes()


def initializer(value: str) -> np.ndarray:
    module = parse(f'"builtin.module"() ({{\n  %w = onnx.initializer "w" = {value}\n}}) : () -> ()')
    op = next(op for op in module.walk() if isinstance(op, InitializerOp))
    return numpy_from_dense(op.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('dense<"0x0000803F00000040"> : tensor<2xf32>', np.array([1, 2], np.float32)),
        ('dense<"0x0000803F"> : tensor<2x2xf32>', np.ones((2, 2), np.float32)),  # hex splat
        ("dense<1.5> : tensor<2x3xf32>", np.full((2, 3), 1.5, np.float32)),
        ("dense<[[1, -2], [3, 4]]> : tensor<2x2xi64>", np.array([[1, -2], [3, 4]], np.int64)),
        ("dense<[true, false]> : tensor<2xi1>", np.array([True, False])),
        ("dense<-7> : tensor<i8>", np.array(-7, np.int8)),
        ("dense<> : tensor<0xf32>", np.zeros((0,), np.float32)),
        ("dense<[0.5, 2.0]> : tensor<2xf16>", np.array([0.5, 2.0], np.float16)),
    ],
)
def test_dense_literals(text: str, expected: np.ndarray) -> None:
    got = initializer(text)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('dense<"0x0000803F00"> : tensor<2xf32>', "dense literal has 5 bytes, tensor<2xf32> needs 8"),
        ('dense<"zz"> : tensor<2xf32>', 'expected dense<"0x..."> with hexadecimal bytes'),
        ("dense<[1.0, 2.0, 3.0]> : tensor<2xf32>", "dense literal of shape [3] for tensor<2xf32>"),
        ("dense<[1.0]> : tensor<?xf32>", "needs a statically shaped tensor type"),
        ("dense<[foo]> : tensor<1xf32>", "expected a number, true/false or a list in a dense literal"),
    ],
)
def test_bad_dense_literals(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message.replace("[", r"\[").replace("?", r"\?")):
        initializer(text)
