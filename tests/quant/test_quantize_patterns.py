"""quantize on small graphs: every built-in pattern, compared with float (cosine), the
quant ops it produces, user patterns, and what stays float."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import helper

from ember.lowering.onnx_to_quant import QuantizationWarning, QuantPattern, extra_patterns, lower_lut, register_pattern, _registered
from tests.quant.quantize_helpers import model, op_names, quantize_and_compare

RNG = np.random.default_rng(7)
X = ("x", [1, 4, 8, 8])


def conv(tail_nodes, tail_inits=(), out="y", group=1, channels=6):
    w = RNG.standard_normal((channels, 4 // group, 3, 3)) * 0.3
    b = RNG.standard_normal(channels) * 0.1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=group, name="conv"), *tail_nodes]
    return model(nodes, [X], [(out, None)], [("w", w), ("b", b), *tail_inits])


def scalar(name, value):
    return (name, np.array(value, dtype=np.float32))


CASES = {
    "conv": (conv([], out="c"), ["quant.conv2d"]),
    "conv_relu": (conv([helper.make_node("Relu", ["c"], ["y"])]), ["quant.conv2d"]),
    "conv_relu6": (conv([helper.make_node("Clip", ["c", "lo", "hi"], ["y"])], [scalar("lo", 0.0), scalar("hi", 6.0)]), ["quant.conv2d"]),
    "depthwise_relu_maxpool": (
        conv([helper.make_node("Relu", ["c"], ["r"]), helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], group=4, channels=4),
        ["quant.conv2d", "quant.max_pool"],
    ),
    "conv_hardswish": (
        conv([helper.make_node("HardSigmoid", ["c"], ["h"], alpha=1 / 6), helper.make_node("Mul", ["c", "h"], ["y"])]),
        ["quant.conv2d"],
    ),
    "conv_silu": (conv([helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]), ["quant.conv2d"]),
    "conv_bn_tanh": (
        conv(
            [helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["n"]), helper.make_node("Tanh", ["n"], ["y"])],
            [("g", RNG.uniform(0.5, 2, 6)), ("be", RNG.standard_normal(6)), ("m", RNG.standard_normal(6)), ("v", RNG.uniform(0.5, 2, 6))],
        ),
        ["quant.conv2d"],
    ),
    "hardsigmoid_lut": (conv([helper.make_node("HardSigmoid", ["c"], ["y"])]), ["quant.conv2d"]),
    "add_relu": (
        model(
            [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["x", "r"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
            [X], [("y", None)],
        ),
        ["quant.lut", "quant.add"],
    ),
    "mul_sigmoid_gate": (
        model(
            [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Sigmoid", ["p"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
            [X], [("y", None)],
        ),
        ["quant.global_avg_pool", "quant.lut", "quant.mul"],
    ),
    "gemm_relu": (
        model(
            [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["g"], transB=1), helper.make_node("Relu", ["g"], ["y"])],
            [X], [("y", None)], [("w", RNG.standard_normal((10, 256)) * 0.1), ("b", RNG.standard_normal(10))],
        ),
        ["quant.reshape", "quant.fully_connected"],
    ),
    "matmul": (
        model([helper.make_node("MatMul", ["x", "w"], ["y"])], [X], [("y", None)], [("w", RNG.standard_normal((8, 5)))]),
        ["quant.fully_connected"],
    ),
    "pool_resize_concat_layout": (
        model(
            [
                helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
                helper.make_node("Resize", ["a", "", "scales"], ["u"], mode="nearest"),
                helper.make_node("Concat", ["x", "u"], ["c"], axis=1),
                helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
                helper.make_node("Pad", ["t", "pads"], ["y"]),
            ],
            [X], [("y", None)],
            [("scales", np.array([1.0, 1.0, 2.0, 2.0])), ("pads", np.array([0, 1, 0, 0, 0, 1, 0, 0], dtype=np.int64))],
        ),
        ["quant.avg_pool", "quant.resize", "quant.concat", "quant.transpose", "quant.pad"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pattern_matches_float(case: str) -> None:
    proto, expected_ops = CASES[case]
    module, cos, left = quantize_and_compare(proto, {"x": (1, 4, 8, 8)})
    names = op_names(module)
    assert not left, [op.name for op in left]
    for name in expected_ops:
        assert name in names, names
    assert not any(n.startswith("onnx.") and n != "onnx.initializer" for n in names), names
    assert cos > 0.99, f"{case}: cosine {cos:.4f}"


def test_hardswish_fuses_into_one_conv() -> None:
    module, _, _ = quantize_and_compare(CASES["conv_hardswish"][0], {"x": (1, 4, 8, 8)})
    names = op_names(module)
    assert names.count("quant.conv2d") == 1 and "quant.mul" not in names and "quant.lut" not in names


def test_unquantizable_nodes_stay_float_with_one_warning() -> None:
    proto = model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], ["s"], axis=1), helper.make_node("Relu", ["s"], ["y"])], [X], [("y", None)])
    from ember.frontend.onnx_import import import_model
    from ember.lowering.onnx_to_quant import convert
    from ember.passes.calibrate import calibrate
    from tests.quant.quantize_helpers import samples

    module = import_model(proto)
    ranges = calibrate(module, samples({"x": (1, 4, 8, 8)})).ranges
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        left = convert(module, ranges)
    messages = [str(w.message) for w in caught if issubclass(w.category, QuantizationWarning)]
    assert len(messages) == 1 and "Softmax" in messages[0]
    assert [op.ONNX_TYPE for op in left] == ["Softmax", "Relu"]  # the Relu of a host tensor stays on the host
    names = op_names(module)
    assert names.index("quant.dequantize") < names.index("onnx.Softmax")


def test_user_pattern_scoped_and_registered() -> None:
    """A user pattern wins a tie with the built-in table: scoped for one run, then registered."""
    proto = model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["n"]), helper.make_node("Exp", ["n"], ["y"])], [X], [("y", None)])
    pattern = QuantPattern("neg_exp", ("Relu", "Neg", "Exp"), lower_lut)
    with extra_patterns(pattern):
        module, cos, _ = quantize_and_compare(proto, {"x": (1, 4, 8, 8)})
    assert any(op.attributes.get("quant.pattern") and op.attributes["quant.pattern"].data == "neg_exp" for op in module.ops.first.body.block.ops)
    assert cos > 0.99
    register_pattern(pattern)
    try:
        module, _, _ = quantize_and_compare(proto, {"x": (1, 4, 8, 8)})
        assert any(op.attributes.get("quant.pattern") and op.attributes["quant.pattern"].data == "neg_exp" for op in module.ops.first.body.block.ops)
    finally:
        _registered.remove(pattern)


def test_bad_pattern_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown op class"):
        QuantPattern("bad", ("Conv", "@nothing"), lower_lut)
    with pytest.raises(ValueError, match="first element"):
        QuantPattern("bad", ("Conv?",), lower_lut)
