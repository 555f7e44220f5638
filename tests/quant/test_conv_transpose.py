"""`quant.conv_transpose` (stride = kernel): the reference against onnxruntime's float
ConvTranspose within 1 LSB, `quantize` on ONNX ConvTranspose nodes, and the capability
table and the quantize pattern agreeing on which nodes the NPU runs."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper
from xdsl.dialects.builtin import IntegerType, TensorType
from xdsl.utils.exceptions import VerifyException

from ember.dialects import quant
from ember.dialects import quant_params as qp
from ember.dialects.dense import dense_from_numpy
from ember.dialects.quant import UniformQuantizedType
from ember.frontend.onnx_export import graph_function
from ember.frontend.onnx_import import import_model
from ember.interpreters import quant_reference as ref
from ember.lowering.onnx_to_quant import QuantizationWarning, convert
from ember.passes.calibrate import calibrate
from ember.target.capabilities import npu_unsupported_reason
from tests.quant.quantize_helpers import model, op_names, quantize_and_compare, samples

RNG = np.random.default_rng(20250101)


def to_onnx_layout(w: np.ndarray, group: int) -> np.ndarray:
    """OIHW [Cout, Cin/g, kh, kw] -> ONNX ConvTranspose [Cin, Cout/g, kh, kw]."""
    oc, cg, kh, kw = w.shape
    return w.reshape(group, oc // group, cg, kh, kw).transpose(0, 2, 1, 3, 4).reshape(group * cg, oc // group, kh, kw)


def ort_conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray, group: int) -> np.ndarray:
    kernel = list(w.shape[2:])
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=kernel, group=group)
    proto = model([node], [("x", list(x.shape))], [("y", None)], [("w", w), ("b", b)])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})[0]


CASES = {
    "2x2": dict(c=6, oc=5, k=(2, 2), group=1),
    "4x4": dict(c=3, oc=7, k=(4, 4), group=1),
    "2x3": dict(c=4, oc=3, k=(2, 3), group=1),
    "grouped": dict(c=8, oc=6, k=(2, 2), group=2),
    "depthwise": dict(c=5, oc=5, k=(2, 2), group=5),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_reference_against_onnxruntime(case):
    c, oc, (kh, kw), group = case["c"], case["oc"], case["k"], case["group"]
    s_in, zp_in, s_out, zp_out = 0.05, -7, 0.06, 4
    x = RNG.integers(-128, 128, size=(2, c, 5, 7)).astype(np.int8)
    w, s_w = qp.quantize_weights(RNG.normal(0, 0.3, size=(oc, c // group, kh, kw)))
    b = qp.quantize_bias(RNG.normal(0, 0.5, size=oc), s_in, s_w)
    m, s = qp.conv_multipliers(s_in, s_w, s_out)
    y = ref.conv_transpose(x, zp_in, w, b, m, s, zp_out, group=group)
    assert y.shape == (2, oc, 5 * kh, 7 * kw)

    # onnxruntime on the dequantized operands: only the final rounding differs
    real_x = (x.astype(np.float64) - zp_in) * s_in
    real_w = to_onnx_layout(w * s_w[:, None, None, None], group)
    real = ort_conv_transpose(real_x, real_w, b * s_in * s_w, group).astype(np.float64)
    expected = np.clip(np.rint(real / s_out) + zp_out, -128, 127)
    diff = np.abs(y.astype(np.int64) - expected)
    assert diff.max() <= 1, f"max error {diff.max()} LSB"
    assert np.mean(diff == 0) >= 0.9


def test_verifier_checks_the_result_shape():
    s_w = np.full(4, 0.1)
    w = quant.ConstantOp(
        dense_from_numpy(np.ones((4, 3, 2, 2), np.int8)),
        TensorType(UniformQuantizedType(IntegerType(8), s_w, 0, axis=0), [4, 3, 2, 2]),
    )
    x = quant.ConstantOp(dense_from_numpy(np.zeros((1, 3, 5, 5), np.int8)), TensorType(UniformQuantizedType(IntegerType(8), 0.1, 0), [1, 3, 5, 5]))
    m, s = qp.conv_multipliers(0.1, s_w, 0.2)
    out = TensorType(UniformQuantizedType(IntegerType(8), 0.2, 0), [1, 4, 9, 9])  # 5 * 2 = 10, not 9
    op = quant.ConvTransposeOp(x.output, w.output, None, out, multiplier=m, shift=s)
    with pytest.raises(VerifyException, match="result shape"):
        op.verify()


def head(group: int = 1, **attrs):
    """ConvTranspose (+ bias Add, BatchNormalization, Relu), the PP-OCR detector's head."""
    w = RNG.standard_normal((4, 6 // group, 2, 2)) * 0.4
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["t"], group=group, **{"strides": [2, 2], **attrs}),
        helper.make_node("Add", ["t", "b"], ["a"]),
        helper.make_node("BatchNormalization", ["a", "g", "be", "m", "v"], ["n"]),
        helper.make_node("Relu", ["n"], ["y"]),
    ]
    c = 6
    inits = [("w", w), ("b", RNG.standard_normal((1, c, 1, 1)) * 0.1), ("g", RNG.uniform(0.5, 2, c)),
             ("be", RNG.standard_normal(c)), ("m", RNG.standard_normal(c) * 0.1), ("v", RNG.uniform(0.5, 2, c))]  # fmt: skip
    return model(nodes, [("x", [1, 4, 8, 8])], [("y", None)], inits)


def test_quantize_folds_bias_bn_relu_into_one_conv_transpose():
    module, cos, left = quantize_and_compare(head(), {"x": (1, 4, 8, 8)})
    names = op_names(module)
    assert not left and names.count("quant.conv_transpose") == 1, names
    assert not any(n.startswith("onnx.") and n != "onnx.initializer" for n in names), names
    assert cos > 0.999, f"cosine {cos:.5f}"


def test_quantize_grouped_conv_transpose():
    module, cos, left = quantize_and_compare(head(group=2), {"x": (1, 4, 8, 8)})
    assert not left and "quant.conv_transpose" in op_names(module)
    assert cos > 0.999, f"cosine {cos:.5f}"


VARIANTS = {
    "kernel_equals_stride": dict(),
    "overlapping": dict(kernel=3),
    "padded": dict(kernel=4, strides=[2, 2], pads=[1, 1, 1, 1]),
    "output_padding": dict(output_padding=[1, 1]),
    "dilated": dict(dilations=[2, 2]),
    "stride_4": dict(kernel=4, strides=[4, 4]),
    "kernel_8_too_large": dict(kernel=8, strides=[8, 8]),
}


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_capability_table_and_quantize_agree(variant):
    variant = dict(variant)
    k = variant.pop("kernel", 2)
    variant.setdefault("strides", [2, 2])
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="deconv", **variant)
    proto = model([node], [("x", [1, 3, 5, 5])], [("y", None)], [("w", RNG.standard_normal((3, 4, k, k)))])
    module = import_model(proto)
    (deconv,) = [op for op in graph_function(module).body.block.ops if getattr(op, "ONNX_TYPE", "") == "ConvTranspose"]
    runs_on_npu = npu_unsupported_reason(deconv) is None
    ranges = calibrate(module, samples({"x": (1, 3, 5, 5)})).ranges
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        convert(module, ranges)
    assert ("quant.conv_transpose" in op_names(module)) == runs_on_npu
    assert runs_on_npu == (variant == {"strides": [k, k]} and k <= 4)


@pytest.mark.parametrize("group", [1, 2], ids=["one_group", "grouped"])
def test_qdq_export_runs_in_onnxruntime_like_the_reference(group):
    """The QDQ model's ConvTranspose takes ONNX-layout weights (IOHW int8 with axis-1
    scales, or regrouped in float when grouped) and computes what the reference does."""
    from ember.frontend.qdq_export import export_qdq
    from ember.interpreters.accuracy_report import cosine
    from ember.interpreters.mixed_runner import MixedRunner

    module, _, _ = quantize_and_compare(head(group=group), {"x": (1, 4, 8, 8)})
    qdq = export_qdq(module)
    deconv = next(n for n in qdq.graph.node if n.op_type == "ConvTranspose")
    weights = {t.name: t for t in qdq.graph.initializer}
    if group == 1:
        dq = next(n for n in qdq.graph.node if n.output[0] == deconv.input[1])
        assert list(weights[dq.input[0]].dims) == [4, 6, 2, 2] and dq.attribute[0].i == 1
    session = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    runner = MixedRunner(module)
    for sample in samples({"x": (1, 4, 8, 8)}, 3, seed=2):
        assert cosine(session.run(None, sample)[0], next(iter(runner.run(sample).values()))) > 0.99
