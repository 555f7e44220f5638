"""int16 activations (a16w8, `precision(..., int16)`): parameters, interpolated tables,
verification, and the real detector with its image input and first convolutions in int16:
closer to float than int8, and its QDQ export equal to the reference interpreter."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper
from xdsl.context import Context
from xdsl.dialects.builtin import IntegerType, TensorType
from xdsl.utils.exceptions import VerifyException

from ember.dialects import quant
from ember.dialects import quant_params as qp
from ember.dialects import quant_tables as qt
from ember.dialects.dense import numpy_from_dense
from ember.dialects.onnx import value_name
from ember.dialects.quant import UniformQuantizedType, quant_type_of
from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model, load_onnx
from ember.frontend.qdq_export import export_qdq
from ember.frontend.samples import Normalization, load_samples
from ember.interpreters.accuracy_report import cosine
from ember.interpreters.mixed_runner import MixedRunner
from ember.interpreters.quant_reference import dequantize
from ember.lowering.onnx_to_quant import QuantizationWarning, convert
from ember.passes.calibrate import CalibratePass, calibrate, input_specs
from ember.passes.fold_batchnorm import FoldBatchNormPass
from ember.passes.onnx_constant_fold import OnnxConstantFoldPass
from ember.passes.onnx_shape_inference import OnnxShapeInferencePass
from ember.passes.quantize import QuantizePass
from tests.quant.quantize_helpers import model, samples

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
IMAGENET = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
STEM = "x,p2o.Conv.?,p2o.Conv.1?,p2o.Conv.2[0-3]"
"""The detector's image input and backbone through its first squeeze-excitation (Conv.0 ..
Conv.23; Conv.23's result is that block's gate)."""


def test_int16_params_are_symmetric():
    scale, zero_point = qp.activation16_params(-3.0, 5.0)
    assert zero_point == 0 and scale == float(np.float32(5.0 / 32767))
    assert qp.activation16_params(0.0, 0.0) == (1.0, 0)
    with pytest.raises(Exception, match="t: calibration range \\[2.0, 1.0\\] is inverted"):
        qp.activation16_params(2.0, 1.0, "t")


def test_int16_table_is_exact_at_knots_and_close_between():
    s_in, s_out = 8.0 / 32767, 8.0 / 32767
    table = qt.build_table16(qt.hard_swish, s_in, s_out)
    assert table.dtype == np.int16 and table.shape == (513,)
    knots = np.arange(-32768, 32768, 128)
    assert np.array_equal(qt.lookup16(knots, table), table[:512])
    x = np.arange(-32768, 32768)
    exact = np.rint(qt.hard_swish(x * s_in) / s_out)
    # hard-swish's curvature 1/3 over a 128-step chord: at most (128 s_in)^2 / 24 off, plus rounding
    bound = (128 * s_in) ** 2 / 24 / s_out + 1
    assert np.abs(qt.lookup16(x, table) - exact).max() <= bound


def test_lookup16_rounds_and_floors_like_the_formula():
    table = np.zeros(513, dtype=np.int16)
    table[256], table[257] = 0, -3  # decreasing: (-3 * f + 64) >> 7 floors toward -inf
    for f, expected in ((0, 0), (21, 0), (22, -1), (64, -1), (106, -2), (107, -3), (127, -3)):
        assert qt.lookup16(np.array([f]), table)[0] == expected, f
        assert expected == (-3 * f + 64) >> 7


def _tensor(shape, storage: int, scale: float, zero_point: int = 0) -> TensorType:
    return TensorType(UniformQuantizedType(IntegerType(storage), scale, zero_point), shape)


def _conv(in_type: TensorType, out_type: TensorType, **kwargs) -> quant.Conv2DOp:
    x = quant.ConstantOp(np.zeros((1, 2, 4, 4), np.int16 if in_type.element_type.storage_type.width.data == 16 else np.int8), in_type)
    w = quant.ConstantOp(np.ones((2, 2, 1, 1), np.int8), _tensor((2, 2, 1, 1), 8, 0.1))
    return quant.Conv2DOp(x.results[0], w.results[0], None, out_type, multiplier=[1 << 30] * 2, shift=[31] * 2, **kwargs)


def test_verifier_states_the_int16_rules():
    good = _conv(_tensor((1, 2, 4, 4), 16, 0.01), _tensor((1, 2, 4, 4), 16, 0.01), act_min=-32768, act_max=32767)
    good.verify()
    with pytest.raises(VerifyException, match="quant.conv2d: an int16 input must be symmetric \\(zero point 0\\)"):
        _conv(_tensor((1, 2, 4, 4), 16, 0.01, 3), _tensor((1, 2, 4, 4), 8, 0.01)).verify()
    with pytest.raises(VerifyException, match="quant.conv2d: 'lut' must hold 513 i16 values"):
        _conv(
            _tensor((1, 2, 4, 4), 8, 0.01), _tensor((1, 2, 4, 4), 16, 0.01), act_min=-32768, act_max=32767,
            lut=np.zeros(256, np.int16), lut_input_type=UniformQuantizedType(IntegerType(16), 0.01, 0),
        ).verify()  # fmt: skip
    with pytest.raises(VerifyException, match="quant.conv2d: the table's input and the result must have the same storage type"):
        _conv(
            _tensor((1, 2, 4, 4), 8, 0.01), _tensor((1, 2, 4, 4), 16, 0.01), act_min=-128, act_max=127,
            lut=np.zeros(513, np.int16), lut_input_type=UniformQuantizedType(IntegerType(8), 0.01, 0),
        ).verify()  # fmt: skip


@pytest.mark.parametrize("reader, int16", [("Conv", True), ("Relu", False)])
def test_graph_input_is_int16_only_when_convolutions_read_it(reader: str, int16: bool):
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    nodes.append(helper.make_node("Conv", ["x", "w"], ["d"], pads=[1, 1, 1, 1]) if reader == "Conv" else helper.make_node("Relu", ["x"], ["d"]))
    proto = model([*nodes, helper.make_node("Concat", ["c", "d"], ["y"], axis=1)], [("x", (1, 3, 8, 8))], [("y", None)], [("w", w)])
    module = import_model(proto)
    ranges = calibrate(module, samples({"x": (1, 3, 8, 8)})).ranges
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QuantizationWarning)
        convert(module, ranges, int16_nodes=["x"])
    (entry,) = [op for op in module.walk() if isinstance(op, quant.QuantizeOp)]
    assert quant_type_of(entry.output).storage_dtype == (np.int16 if int16 else np.int8)
    refused = [str(w.message) for w in caught if "stay int8" in str(w.message)]
    assert refused == ([] if int16 else ["quantize: 1 node(s) stay int8: x: 'x' is read by Relu, which the NPU runs in int8"])


def _squeeze_excitation(mul_inputs: tuple[str, str], side: int = 12):
    """x -> Conv "c" -> GlobalAveragePool -> Conv -> HardSigmoid "gate"; Mul of
    `mul_inputs` (names among c, gate) -> Conv "y": a squeeze-excitation block."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c"], name="conv_c", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"], name="pool"),
        helper.make_node("Conv", ["g", "w1"], ["s"], name="conv_s"),
        helper.make_node("HardSigmoid", ["s"], ["gate"], name="conv_gate"),
        helper.make_node("Mul", list(mul_inputs), ["m"], name="mul"),
        helper.make_node("Conv", ["m", "w2"], ["y"], name="conv_y"),
    ]
    weights = [("w0", rng.standard_normal((8, 3, 3, 3))), ("w1", rng.standard_normal((8, 8, 1, 1))), ("w2", rng.standard_normal((4, 8, 1, 1)))]
    return model(nodes, [("x", (1, 3, side, side))], [("y", None)], weights)


def _convert16(proto, int16_nodes: list[str], method: str = "minmax"):
    """Calibrate `proto` on random samples and quantize it with `int16_nodes`: the module,
    the calibration and the quantizer's warnings."""
    module = import_model(proto)
    shape = tuple(d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim)
    calibration = calibrate(module, samples({"x": shape}), method)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QuantizationWarning)
        convert(module, calibration.ranges, int16_nodes=int16_nodes, observed=calibration.observed)
    module.verify()
    return module, calibration, [str(w.message) for w in caught]


def _refusals(messages: list[str]) -> list[str]:
    return [m for m in messages if "stay int8" in m]


def test_squeeze_excitation_reads_int16_features():
    """Global average pooling and the product with the gate read the int16 features (the
    NPU's POOL sum and ELTW mul); the gate and the product stay int8."""
    module, _, messages = _convert16(_squeeze_excitation(("c", "gate")), ["conv_c"])
    assert _refusals(messages) == []
    (pool,) = [op for op in module.walk() if isinstance(op, quant.GlobalAvgPoolOp)]
    (mul,) = [op for op in module.walk() if isinstance(op, quant.MulOp)]
    assert quant_type_of(pool.input).storage_dtype == np.int16 and quant_type_of(pool.output).storage_dtype == np.int8
    assert quant_type_of(mul.lhs).storage_dtype == np.int16
    assert quant_type_of(mul.rhs).storage_dtype == np.int8 and quant_type_of(mul.output).storage_dtype == np.int8


@pytest.mark.parametrize(
    "mul_inputs, int16_nodes, why",
    [
        (("c", "gate"), ["conv_s"], "conv_s: 'gate' is the broadcast operand of Mul, which the NPU reads in int8"),
        (("c", "c"), ["conv_c"], "conv_c: 'c' is multiplied by itself or a constant, which the NPU does in int8"),
    ],
)
def test_squeeze_excitation_int16_refusals(mul_inputs, int16_nodes, why):
    _, _, messages = _convert16(_squeeze_excitation(mul_inputs), int16_nodes)
    assert _refusals(messages) == [f"quantize: 1 node(s) stay int8: {why}"]


def test_global_pooling_of_2_16_pixels_stays_int8():
    """POOL sums in int32: 256 x 256 int16 values could overflow it."""
    _, _, messages = _convert16(_squeeze_excitation(("c", "gate"), side=256), ["conv_c"])
    assert _refusals(messages) == ["quantize: 1 node(s) stay int8: conv_c: 'c' is averaged over 65536 pixels; an int16 sum of 2^16 or more can overflow"]


def test_product_of_two_int16_tensors_keeps_one_int8():
    """ELTW multiplies int16 by int8: of two int16 candidates meeting in a Mul, the later stays int8."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3))
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["a", "b"], ["y"], name="mul")]  # fmt: skip
    module, _, messages = _convert16(model(nodes, [("x", (1, 3, 12, 12))], [("y", None)], [("w", w)]), ["conv_*"])
    assert _refusals(messages) == ["quantize: 1 node(s) stay int8: conv_b: 'b' meets another int16 operand in Mul; the NPU multiplies int16 by int8"]
    (mul,) = [op for op in module.walk() if isinstance(op, quant.MulOp)]
    assert [quant_type_of(v).storage_dtype for v in (mul.lhs, mul.rhs)] == [np.int16, np.int8]


def test_int16_tensors_take_the_observed_range():
    """With 65536 levels an int16 tensor is quantized over its observed extremes; int8
    ones keep the calibrated (clipped) range."""
    module, calibration, _ = _convert16(_squeeze_excitation(("c", "gate")), ["conv_c"], method="mse")
    convs = {op.attributes["onnx_node"].data: op for op in module.walk() if isinstance(op, quant.Conv2DOp)}
    lo, hi = calibration.observed["c"]
    assert calibration.ranges["c"] != (lo, hi)  # mse's range clips
    assert quant_type_of(convs["conv_c"].output).scale == float(np.float32(max(-lo, hi) / 32767))
    y_lo, y_hi = calibration.ranges["y"]
    assert quant_type_of(convs["conv_y"].output).scale == pytest.approx((y_hi - y_lo) / 255, rel=1e-6)


@pytest.mark.parametrize("relu", [False, True])
def test_accumulator_overflow_warning_bounds_the_int16_input_by_its_producer(relu: bool):
    """An int16 graph input spans all of int16; a Relu's int16 result is non-negative, so
    the same weights (288 taps of +127 and 288 of -127) cannot overflow after it."""
    signs = np.where(np.arange(64 * 9) % 2 == 0, 1.0, -1.0).reshape(1, 64, 3, 3)
    nodes = [helper.make_node("Conv", ["h" if relu else "x", "w"], ["y"], name="conv_y")]
    weights = [("w", signs)]
    if relu:
        nodes[:0] = [helper.make_node("Conv", ["x", "w0"], ["p"], name="conv_r"), helper.make_node("Relu", ["p"], ["h"], name="relu")]
        weights.append(("w0", np.eye(64).reshape(64, 64, 1, 1)))
    _, _, messages = _convert16(model(nodes, [("x", (1, 64, 5, 5))], [("y", None)], weights), ["conv_r" if relu else "x"])
    overflow = [m for m in messages if "overflow" in m]
    bound = 288 * 127 * 32767 + 288 * 127 * 32768
    assert overflow == ([] if relu else [
        f"quantize: conv_y: an int16 input can overflow the int32 accumulator (bound {bound}); keep its producer int8 if results wrap"
    ])  # fmt: skip


def test_bias_fits_int32_behind_an_int16_input():
    """A channel with tiny weights and a large bias, behind an int16 input (scale ~1e-4):
    at the weights' own scale the int32 bias would saturate; its weight scale is raised
    until the bias fits, and the channel's output stays its bias."""
    w = np.stack([np.ones((3, 1, 1)), np.full((3, 1, 1), 1e-6)])
    proto = model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")], [("x", (1, 3, 4, 4))], [("y", None)],
                  [("w", w), ("b", np.array([0.0, 50.0]))])  # fmt: skip
    module, _, _ = _convert16(proto, ["x"])
    (conv,) = [op for op in module.walk() if isinstance(op, quant.Conv2DOp)]
    bias = numpy_from_dense(conv.bias.owner.value)
    assert quant_type_of(conv.input).storage_dtype == np.int16 and abs(int(bias[1])) <= 2**30
    (sample,) = samples({"x": (1, 3, 4, 4)}, 1, seed=5)
    y = next(iter(MixedRunner(module).run(sample).values()))
    assert np.allclose(y[0, 1], 50.0, atol=quant_type_of(conv.output).scale)


# ---------------------------------------------------------------------- the real detector


def _detector(tmp_path_factory, int16_nodes: str):
    path = SHARED / "models" / "ppocrv4_det.onnx"
    assert path.exists(), f"{path} not present: the tests need ../shared beside the repository"
    module = import_model(load_onnx(path), {"x": [1, 3, 96, 96]}, source=str(path))
    for p in (OnnxConstantFoldPass(), FoldBatchNormPass(), OnnxShapeInferencePass()):
        p.apply(Context(), module)
    float_model = export_model(module)
    folder = tmp_path_factory.mktemp("calibration")
    for name in ("page.png", "text.png", "astronaut.png"):
        (folder / name).symlink_to(SHARED / "images" / name)
    CalibratePass(data=str(folder), mean=IMAGENET[0], std=IMAGENET[1]).apply(Context(), module)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QuantizationWarning)
        QuantizePass(float_nodes="p2o.Sigmoid.0", int16_nodes=int16_nodes).apply(Context(), module)
    module.verify()
    return module, float_model, [str(w.message) for w in caught if "stay int8" in str(w.message)]


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    return {name: _detector(tmp_path_factory, nodes) for name, nodes in (("int8", ""), ("int16", STEM))}


def test_detector_int16_types_and_refusal(detectors):
    module, _, refused = detectors["int16"]
    convs = {op.attributes["onnx_node"].data.split(",")[0]: op for op in module.walk() if isinstance(op, quant.Conv2DOp)}
    wide = sorted(int(n.split(".")[-1]) for n, op in convs.items() if quant_type_of(op.output).storage_dtype == np.int16)
    assert wide == list(range(23))  # Conv.23's result is the gate: ELTW reads its broadcast operand in int8
    assert refused == ["quantize: 1 node(s) stay int8: p2o.Conv.23: 'hardsigmoid_4.tmp_0' is the broadcast operand of Mul, which the NPU reads in int8"]
    # the squeeze-excitation block reads Conv.21's int16 features in its pooling and product
    features = convs["p2o.Conv.21"].output
    readers = {type(use.operation) for use in features.uses}
    assert readers == {quant.GlobalAvgPoolOp, quant.MulOp}
    image = convs["p2o.Conv.0"].input
    assert isinstance(image.owner, quant.QuantizeOp) and quant_type_of(image).storage_dtype == np.int16
    assert quant_type_of(image).zero_point == 0
    assert quant_type_of(convs["p2o.Conv.21"].input).storage_dtype == np.int16
    tabled = convs["p2o.Conv.1"]
    assert tabled.lut is not None and tabled.lut_input_type.storage_dtype == np.int16
    assert tabled.act_min.value.data == -32768 and tabled.act_max.value.data == 32767


def test_detector_int16_is_closer_to_float(detectors):
    _, float_model, _ = detectors["int8"]
    logits = next(n.input[0] for n in float_model.graph.node if n.op_type == "Sigmoid")
    float_model.graph.output.add().name = logits
    session = ort.InferenceSession(float_model.SerializeToString(), providers=["CPUExecutionProvider"])
    samples = list(load_samples(SHARED / "images", input_specs(detectors["int8"][0]), Normalization(*IMAGENET), files=["page.png", "chelsea.png"]))
    errors: dict[str, list[float]] = {}
    for name, (module, _, _) in detectors.items():
        seen = {}

        def observe(op, results):
            if op.results and value_name(op.results[0]) == logits:
                element = quant_type_of(op.results[0])
                seen["logits"] = dequantize(results[0], element.scale, element.zero_point)

        runner = MixedRunner(module)
        for sample in samples:
            runner.run(sample, observe)
            expected = session.run([logits], sample)[0]
            errors.setdefault(name, []).append(1 - cosine(expected, seen["logits"]))
    assert all(e16 < e8 for e16, e8 in zip(errors["int16"], errors["int8"], strict=True)), errors


def test_detector_int16_qdq_export_matches_reference(detectors):
    """The last int16 tensor (Conv.20's table output) in onnxruntime's QDQ run against the
    reference: float convolutions round differently, the tables and types are the same."""
    module, _, _ = detectors["int16"]
    conv = next(op for op in module.walk() if isinstance(op, quant.Conv2DOp) and op.attributes["onnx_node"].data.startswith("p2o.Conv.20,"))
    name, element = value_name(conv.output), quant_type_of(conv.output)
    assert element.storage_dtype == np.int16 and conv.lut is not None
    qdq = export_qdq(module)
    assert qdq.opset_import[0].version >= 21
    qdq.graph.output.add().name = name
    session = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    (sample,) = load_samples(SHARED / "images", input_specs(module), Normalization(*IMAGENET), files=["page.png"])
    seen = {}
    MixedRunner(module).run(sample, lambda op, results: seen.setdefault("x", results[0]) if op is conv else None)
    expected = dequantize(seen["x"], element.scale, 0)
    assert cosine(session.run([name], sample)[0], expected) > 0.9999
