"""Real models and real exporters' idioms round-trip exactly through import -> export.

- The two PaddleOCR models of ../shared/models on real photographs (preprocessed as
  ../shared/models/README.md says) and on random data: onnxruntime outputs identical.
- `onnx-constant-fold` on the PP-OCRv4 detector with a static input shape leaves no
  `Constant` node and gives every value a static shape, and changes no output bit.
- MLIR text print -> parse -> export is exact too.
- Opsets 7 to 17 and the old idioms of real exporters (Upsample, Slice-1, Pad-2,
  BatchNormalization-7, Dropout-7, IR 3 initializers listed as inputs, Constant and
  ConstantOfShape weights, external data, If reading outer-scope tensors, com.microsoft
  and custom-domain nodes): exact under onnxruntime, or onnx's reference evaluator for
  what onnxruntime cannot run.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp, TensorType
from xdsl.dialects.func import Func
from xdsl.parser import Parser
from xdsl.printer import Printer

from ember.dialects.onnx import ONNX, CustomOp, OnnxOp
from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model, load_onnx
from ember.passes.onnx_constant_fold import OnnxConstantFoldPass
from ember.passes.onnx_shape_inference import OnnxShapeInferencePass

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MODELS = SHARED / "models"
IMAGES = SHARED / "images"
DETECTOR = MODELS / "ppocrv4_det.onnx"
CLASSIFIER = MODELS / "ppocr_mobile_v2_cls.onnx"
IR_VERSION = 8
"""For hand-built models: onnx.helper stamps its newest IR version, which onnxruntime may not know yet."""

needs_models = pytest.mark.skipif(
    not DETECTOR.is_file() or not CLASSIFIER.is_file(), reason=f"the shared real models are not in {MODELS}"
)


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def assert_identical(want: list[np.ndarray], got: list[np.ndarray]) -> None:
    assert len(want) == len(got)
    for a, b in zip(want, got):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=True), f"max difference {np.max(np.abs(a.astype(np.float64) - b))}"


def with_static_input(model: onnx.ModelProto, name: str, shape: list[int]) -> onnx.ModelProto:
    """`model` with the dimensions of input `name` set, nothing else changed: the
    reference for a model imported with `--input-shape`, because onnxruntime itself may
    pick other kernels for static shapes (the classifier's softmax moves by one ulp)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    dims = next(i for i in model.graph.input if i.name == name).type.tensor_type.shape.dim
    for dim, extent in zip(dims, shape):
        dim.Clear()
        dim.dim_value = extent
    return model


def round_trip(model: onnx.ModelProto, **input_shapes: list[int]) -> onnx.ModelProto:
    exported = export_model(import_model(model, input_shapes, source="test"))
    onnx.checker.check_model(exported)
    return exported


def photo(name: str, height: int, width: int) -> np.ndarray:
    """An RGB photograph resized to height x width, as float32 HWC in [0, 1]."""
    image = Image.open(IMAGES / name).convert("RGB").resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def detector_input(name: str = "page.png", size: int = 320) -> np.ndarray:
    """ImageNet mean/std normalization, NCHW (shared/models/README.md)."""
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    return ((photo(name, size, size) - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)


def classifier_input(name: str = "text.png") -> np.ndarray:
    """(pixel/255 - 0.5) / 0.5 on a 48x192 text crop, NCHW (shared/models/README.md)."""
    return ((photo(name, 48, 192) - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)


# --------------------------------------------------------------------------- the real models


@needs_models
def test_detector_round_trips_exactly_on_a_photograph() -> None:
    original = load_onnx(DETECTOR)
    x = detector_input()
    want = run(original, {"x": x})
    assert (want[0] > 0.3).mean() > 0.05, "the detector should find the text of the scanned page"
    assert_identical(want, run(round_trip(original), {"x": x}))
    static = with_static_input(original, "x", [1, 3, 320, 320])
    exported = round_trip(original, x=[1, 3, 320, 320])
    assert_identical(run(static, {"x": x}), run(exported, {"x": x}))
    noise = np.random.default_rng(1).standard_normal((1, 3, 320, 320)).astype(np.float32)
    assert_identical(run(static, {"x": noise}), run(exported, {"x": noise}))


@needs_models
def test_classifier_round_trips_exactly_on_photographs() -> None:
    original = load_onnx(CLASSIFIER)
    exported = round_trip(original)
    batch = np.concatenate([classifier_input("text.png"), classifier_input("page.png"), classifier_input("coins.png")])
    want = run(original, {"x": batch})
    np.testing.assert_allclose(want[0].sum(axis=1), 1.0, rtol=1e-5)  # a softmax over the two directions
    assert_identical(want, run(exported, {"x": batch}))


@needs_models
def test_constant_fold_leaves_the_detector_static_and_constant_free() -> None:
    original = load_onnx(DETECTOR)
    assert sum(n.op_type == "Constant" for n in original.graph.node) > 300
    module = import_model(original, {"x": [1, 3, 320, 320]}, source=DETECTOR.name)
    OnnxConstantFoldPass().apply(Context(), module)
    module.verify()
    ops = list(module.walk())
    assert not [op for op in ops if isinstance(op, OnnxOp) and op.ONNX_TYPE == "Constant"]
    assert not [op for op in ops if isinstance(op, CustomOp)]
    dynamic = [
        (op.name, str(r.type)) for op in ops for r in op.results if not (isinstance(r.type, TensorType) and all(d >= 0 for d in r.type.get_shape()))
    ]
    assert dynamic == []
    folded = export_model(module)
    assert not [n for n in folded.graph.node if n.op_type in ("Constant", "Shape")]
    x = detector_input("astronaut.png")
    assert_identical(run(with_static_input(original, "x", [1, 3, 320, 320]), {"x": x}), run(folded, {"x": x}))


@needs_models
@pytest.mark.parametrize("path", [CLASSIFIER, DETECTOR], ids=["classifier", "detector"])
def test_mlir_text_round_trip_is_exact(path: Path) -> None:
    original = load_onnx(path)
    shapes = {"x": [1, 3, 320, 320]} if path == DETECTOR else {"x": [1, 3, 48, 192]}
    text = print_module(import_model(original, shapes, source=path.name))
    reparsed = parse_module(text)
    assert print_module(reparsed) == text
    x = detector_input() if path == DETECTOR else classifier_input()
    assert_identical(run(with_static_input(original, "x", shapes["x"]), {"x": x}), run(export_model(reparsed), {"x": x}))


def print_module(module: ModuleOp) -> str:
    stream = io.StringIO()
    Printer(stream=stream).print_op(module)
    return stream.getvalue()


def parse_module(text: str) -> ModuleOp:
    ctx = Context()
    for dialect in (Builtin, Func, ONNX):
        ctx.load_dialect(dialect)
    return Parser(ctx, text).parse_module()


# --------------------------------------------------------------------------- opsets and idioms


def small_convnet() -> onnx.ModelProto:
    """Conv-BN-Relu-Pool, a residual Add, Dropout, a Gemm head: an opset-7 model."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "s", "o", "m", "v"], ["bn"], epsilon=1e-3, name="bn1"),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=2),
        helper.make_node("Add", ["c2", "r1"], ["res"]),
        helper.make_node("MaxPool", ["res"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Dropout", ["p"], ["d"], ratio=0.25),
        helper.make_node("GlobalAveragePool", ["d"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"]),
    ]
    var = numpy_helper.from_array(rng.uniform(0.5, 2.0, 4).astype(np.float32), "v")
    inits = [weight("w1", 4, 3, 3, 3), weight("b1", 4), weight("s", 4), weight("o", 4), weight("m", 4), var, weight("w2", 4, 2, 3, 3), weight("wf", 5, 4), weight("bf", 5)]
    graph = helper.make_graph(
        nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)], ir_version=4)


def image_batch(shape=(2, 3, 8, 8)) -> np.ndarray:
    return np.random.default_rng(7).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("opset", [7, 9, 11, 13, 17])
def test_convnet_at_each_opset(opset: int) -> None:
    model = small_convnet()
    if opset != 7:
        model = onnx.version_converter.convert_version(model, opset)
    assert model.opset_import[0].version == opset
    exported = round_trip(model)
    assert exported.opset_import[0].version == opset
    assert_identical(run(model, {"x": image_batch()}), run(exported, {"x": image_batch()}))


def old_style_model(opset: int) -> onnx.ModelProto:
    """Old idioms: Upsample (scales as an attribute at opset 7, as a Constant input at 9),
    Slice-1 and Pad-2 with their parameters as attributes, a Reshape whose shape comes
    from a Constant node, and a weight from a Constant node (opset 7) or made by
    ConstantOfShape from a Constant shape (opset 9, where ConstantOfShape appeared)."""
    const = helper.make_tensor
    if opset == 7:
        upsample = [helper.make_node("Upsample", ["x"], ["up"], scales=[1.0, 1.0, 2.0, 2.0], mode="nearest")]
        weight = [helper.make_node("Constant", [], ["w"], value=const("wv", TensorProto.FLOAT, [3, 3, 1, 1], np.linspace(-1, 1, 9)))]
    else:
        upsample = [
            helper.make_node("Constant", [], ["scales"], value=const("sv", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])),
            helper.make_node("Upsample", ["x", "scales"], ["up"], mode="nearest"),
        ]
        weight = [
            helper.make_node("Constant", [], ["wshape"], value=const("ws", TensorProto.INT64, [4], [3, 3, 1, 1])),
            helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=const("one", TensorProto.FLOAT, [1], [0.25])),
        ]
    nodes = [
        *upsample,
        helper.make_node("Slice", ["up"], ["sl"], starts=[1, 0], ends=[15, 14], axes=[2, 3]),
        helper.make_node("Pad", ["sl"], ["pad"], pads=[0, 0, 1, 2, 0, 0, 1, 0], mode="constant", value=0.5),
        *weight,
        helper.make_node("Conv", ["pad", "w"], ["conv"]),
        helper.make_node("Constant", [], ["shape"], value=const("shape_value", TensorProto.INT64, [2], [2, -1])),
        helper.make_node("Reshape", ["conv", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 768])]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=3)


@pytest.mark.parametrize("opset", [7, 9])
def test_old_style_nodes(opset: int) -> None:
    model = old_style_model(opset)
    onnx.checker.check_model(model)
    exported = round_trip(model)
    assert [n.op_type for n in exported.graph.node] == [n.op_type for n in model.graph.node]
    assert_identical(run(model, {"x": image_batch()}), run(exported, {"x": image_batch()}))
    # With the constants folded, Constant and ConstantOfShape weights become initializers.
    module = import_model(model, source="old")
    OnnxConstantFoldPass().apply(Context(), module)
    OnnxShapeInferencePass().apply(Context(), module)
    assert all(isinstance(r.type, TensorType) and r.type.has_static_shape() for op in module.walk() for r in op.results)
    folded = export_model(module)
    assert {n.op_type for n in folded.graph.node} == {"Upsample", "Slice", "Pad", "Conv", "Reshape"}
    assert_identical(run(model, {"x": image_batch()}), run(folded, {"x": image_batch()}))


def test_ir3_initializers_listed_as_inputs() -> None:
    model = small_convnet()
    model.ir_version = 3
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in model.graph.initializer)
    onnx.checker.check_model(model)
    module = import_model(model, source="ir3")
    assert len(module.body.block.first_op.args) == 1  # only x is a real input
    exported = round_trip(model)
    assert [i.name for i in exported.graph.input] == ["x"]
    assert_identical(run(model, {"x": image_batch()}), run(exported, {"x": image_batch()}))


def test_external_data(tmp_path: Path) -> None:
    model = onnx.version_converter.convert_version(small_convnet(), 13)
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").stat().st_size > 0
    loaded = load_onnx(path)
    exported = round_trip(loaded)
    assert all(not t.external_data for t in exported.graph.initializer)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": image_batch()})
    assert_identical(want, run(exported, {"x": image_batch()}))


def test_missing_external_data_is_one_clear_error(tmp_path: Path) -> None:
    from ember.support.diagnostics import EmberError

    path = tmp_path / "model.onnx"
    onnx.save_model(small_convnet(), str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(EmberError, match=r"model.onnx: cannot read external data .*; keep the data files beside the model"):
        load_onnx(path)


def if_model() -> onnx.ModelProto:
    """An If whose branches read `x` and the weight `w` of the enclosing graph."""
    then_graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["t"])], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3])]
    )
    else_graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 3])]
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["branch"], then_branch=then_graph, else_branch=else_graph, name="if0"),
        helper.make_node("Relu", ["branch"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w"), numpy_helper.from_array(np.array(0, dtype=np.float32), "zero")]
    graph = helper.make_graph(
        nodes, "if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=IR_VERSION)


def test_if_reading_outer_scope_tensors() -> None:
    model = if_model()
    module = import_model(model, source="if")
    node = next(op for op in module.walk() if isinstance(op, CustomOp) and op.op_type.data == "If")
    assert len(node.operands) == 3  # the condition, then the captured x and w
    # The captured weight stays alive through the passes that delete unread values.
    OnnxConstantFoldPass().apply(Context(), module)
    exported = export_model(module)
    onnx.checker.check_model(exported)
    assert "w" in {t.name for t in exported.graph.initializer}
    for x in (np.ones((2, 3), np.float32), -np.ones((2, 3), np.float32)):
        assert_identical(run(model, {"x": x}), run(exported, {"x": x}))


def test_com_microsoft_node() -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Gelu", ["h"], ["g"], domain="com.microsoft"),
        helper.make_node("FusedMatMul", ["g", "w2"], ["y"], domain="com.microsoft", alpha=0.5, transB=1),
    ]
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w"), numpy_helper.from_array(rng.standard_normal((5, 6)).astype(np.float32), "w2")]
    graph = helper.make_graph(
        nodes, "ms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=IR_VERSION)
    module = import_model(model, source="ms")
    assert [op.op_type.data for op in module.walk() if isinstance(op, CustomOp)] == ["Gelu", "FusedMatMul"]
    exported = round_trip(model)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert_identical(run(model, {"x": x}), run(exported, {"x": x}))


def test_custom_domain_node_under_the_reference_evaluator() -> None:
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class Scale(OpRun):
        op_domain = "ember.test"

        def _run(self, x, factor=None):
            return (x * np.float32(factor),)

    nodes = [
        helper.make_node("Scale", ["x"], ["s"], domain="ember.test", factor=3.0, name="scale"),
        helper.make_node("Sub", ["s", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ember.test", 1)])
    exported = export_model(import_model(model, source="custom"))
    assert exported.graph.node[0].domain == "ember.test" and exported.graph.node[0].name == "scale"
    x = np.array([1, -2, 0.5, 4], dtype=np.float32)
    want = ReferenceEvaluator(model, new_ops=[Scale]).run(None, {"x": x})
    got = ReferenceEvaluator(exported, new_ops=[Scale]).run(None, {"x": x})
    assert_identical(want, got)
    np.testing.assert_array_equal(got[0], 2 * x)
