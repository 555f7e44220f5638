"""autocrop: the capability table places every node; pre -> main -> post reproduces the
original outputs under onnxruntime, on the real models and on a YOLO-style head."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from ember.frontend.onnx_export import graph_function
from ember.passes.autocrop import AutocropPass
from ember.passes.fold_batchnorm import FoldBatchNormPass
from ember.support.diagnostics import EmberError
from ember.target.capabilities import require_npu_support

RNG = np.random.default_rng(5)


def _crop(module) -> dict:
    return {k: [s.data for s in v.data] for k, v in module.attributes["onnx.crop"].data.items()}


def test_real_detector(kit, capsys):
    model = kit.load("ppocrv4_det.onnx")
    module = kit.apply(kit.imported(model, {"x": [1, 3, 320, 320]}), AutocropPass())
    assert _crop(module) == {"inputs": ["x"], "outputs": ["p2o.Add.281"]}
    assert kit.op_types(module, "post") == {"Sigmoid": 1}
    assert kit.op_types(module)["Conv"] == 62 and kit.op_types(module)["ConvTranspose"] == 2
    assert capsys.readouterr().err == (
        "autocrop: main starts at graph input 'x'\n"
        "autocrop: main ends at 'p2o.Add.281' (Add 'p2o.Add.280'): Sigmoid 'p2o.Sigmoid.0' runs on the host "
        "(head decoding after the last convolution)\n"
    )
    x = kit.image(320, 320, "page.png") / 127.5 - 1.0
    kit.assert_close({"sigmoid_0.tmp_0": kit.run_parts(module, {"x": x})["sigmoid_0.tmp_0"]}, kit.run(model, {"x": x}))


@pytest.mark.parametrize("fold", [False, True])
def test_real_classifier(kit, capsys, fold):
    model = kit.load("ppocr_mobile_v2_cls.onnx")
    passes = [FoldBatchNormPass(), AutocropPass()] if fold else [AutocropPass()]
    module = kit.apply(kit.imported(model, {"x": [1, 3, 48, 192]}), *passes)
    assert _crop(module) == {"inputs": ["x"], "outputs": ["linear_1.tmp_1"]}
    assert kit.op_types(module, "post") == {"Softmax": 1, "Identity": 1}
    assert "Softmax 'Softmax@0' runs on the host (Softmax is not in the NPU's capability table)" in capsys.readouterr().err
    x = kit.image(48, 192) / 127.5 - 1.0
    name = "save_infer_model/scale_0.tmp_1"
    kit.assert_close({name: kit.run_parts(module, {"x": x})[name]}, kit.run(model, {"x": x}))


def _yolo_head(kit):
    """uint8 image -> Cast -> /255 -> backbone convs -> box branch with DFL (Reshape, Softmax,
    1x1 Conv with arange weights), Split, anchors, Concat; class branch with Sigmoid."""
    reg, nc, cells = 16, 3, 64
    inits = {
        "scale": np.array(1 / 255, dtype=np.float32),
        "w1": RNG.normal(size=(8, 3, 3, 3)).astype(np.float32) * 0.3,
        "w2": RNG.normal(size=(16, 8, 3, 3)).astype(np.float32) * 0.3,
        "wbox": RNG.normal(size=(4 * reg, 16, 1, 1)).astype(np.float32) * 0.3,
        "wcls": RNG.normal(size=(nc, 16, 1, 1)).astype(np.float32) * 0.3,
        "dfl": np.arange(reg, dtype=np.float32).reshape(1, reg, 1, 1),
        "s1": np.array([1, 4, reg, cells], dtype=np.int64),
        "s2": np.array([1, 4, cells], dtype=np.int64),
        "s3": np.array([1, nc, cells], dtype=np.int64),
        "split": np.array([2, 2], dtype=np.int64),
        "anchors": RNG.uniform(0, 8, size=(1, 2, cells)).astype(np.float32),
        "stride": np.array(4.0, dtype=np.float32),
    }
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["f", "scale"], ["x"], name="rescale"),
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="stem"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="stage"),
        helper.make_node("Sigmoid", ["c2"], ["g2"]),
        helper.make_node("Mul", ["c2", "g2"], ["feat"], name="silu"),
        helper.make_node("Conv", ["feat", "wbox"], ["box"], name="box_conv"),
        helper.make_node("Reshape", ["box", "s1"], ["box4"], name="box_reshape"),
        helper.make_node("Transpose", ["box4"], ["box_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Softmax", ["box_t"], ["prob"], axis=1),
        helper.make_node("Conv", ["prob", "dfl"], ["dist"], name="dfl_conv"),
        helper.make_node("Reshape", ["dist", "s2"], ["dist3"]),
        helper.make_node("Split", ["dist3", "split"], ["lt", "rb"], axis=1),
        helper.make_node("Sub", ["anchors", "lt"], ["xy1"]),
        helper.make_node("Add", ["anchors", "rb"], ["xy2"]),
        helper.make_node("Concat", ["xy1", "xy2"], ["xyxy"], axis=1),
        helper.make_node("Mul", ["xyxy", "stride"], ["boxes"]),
        helper.make_node("Conv", ["feat", "wcls"], ["cls"], name="cls_conv"),
        helper.make_node("Sigmoid", ["cls"], ["scores4"], name="cls_sigmoid"),
        helper.make_node("Reshape", ["scores4", "s3"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["detections"], axis=1, name="heads"),
    ]
    return kit.model(nodes, {"image": (TensorProto.UINT8, [1, 3, 32, 32])}, ["detections"], inits)


def test_yolo_style_head(kit, capsys):
    model = _yolo_head(kit)
    module = kit.apply(kit.imported(model), AutocropPass())
    assert _crop(module) == {"inputs": ["f"], "outputs": ["box", "cls"]}
    assert kit.op_types(module, "pre") == {"Cast": 1}
    assert kit.op_types(module) == {"Mul": 2, "Conv": 4, "Relu": 1, "Sigmoid": 1}
    post = kit.op_types(module, "post")
    assert post["Softmax"] == 1 and post["Split"] == 1 and post["Concat"] == 2 and post["Conv"] == 1 and post["Sigmoid"] == 1
    assert capsys.readouterr().err == (
        "autocrop: main starts at 'f': Cast 'cast' runs on the host (Cast is not in the NPU's capability table)\n"
        "autocrop: main ends at 'box' (Conv 'box_conv'): Reshape 'box_reshape' runs on the host "
        "(it moves data ([1, 64, 8, 8] -> [1, 4, 16, 64]); only [N, C, 1, 1] -> [N, C] runs)\n"
        "autocrop: main ends at 'cls' (Conv 'cls_conv'): Sigmoid 'cls_sigmoid' runs on the host (head decoding after the last convolution)\n"
    )
    feeds = {"image": (kit.image(32, 32)).astype(np.uint8)}
    kit.assert_close({"detections": kit.run_parts(module, feeds)["detections"]}, kit.run(model, feeds), rtol=1e-4, atol=1e-4)


def test_unsupported_op_in_the_middle_sends_the_rest_to_the_host(kit, capsys):
    inits = {"w": RNG.normal(size=(4, 4, 9, 9)).astype(np.float32), "v": RNG.normal(size=(4, 4, 1, 1)).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "v"], ["a"], name="first"),
        helper.make_node("Conv", ["a", "w"], ["b"], pads=[4, 4, 4, 4], name="big"),
        helper.make_node("Conv", ["b", "v"], ["y"], name="after"),
    ]
    model = kit.model(nodes, {"x": [1, 4, 12, 12]}, ["y"], inits)
    module = kit.apply(kit.imported(model), AutocropPass())
    assert kit.op_types(module) == {"Conv": 1} and kit.op_types(module, "post") == {"Conv": 2}
    assert "Conv 'big' runs on the host (kernel 9x9 is larger than 7x7)" in capsys.readouterr().err
    feeds = {"x": RNG.normal(size=(1, 4, 12, 12)).astype(np.float32)}
    kit.assert_close({"y": kit.run_parts(module, feeds)["y"]}, kit.run(model, feeds))


def test_nothing_for_the_npu(kit):
    model = kit.model([helper.make_node("Softmax", ["x"], ["y"], name="sm")], {"x": [1, 4]}, ["y"])
    with pytest.raises(EmberError) as err:
        AutocropPass().apply(None, kit.imported(model))
    assert str(err.value) == "autocrop: no node of the graph can run on the NPU: Softmax 'sm' cannot run (Softmax is not in the NPU's capability table)"


def test_compilation_error_suggests_autocrop(kit):
    model = _yolo_head(kit)
    with pytest.raises(EmberError) as err:
        require_npu_support(graph_function(kit.imported(model)))
    assert str(err.value) == "Cast 'cast': the Ember NPU cannot run it (Cast is not in the NPU's capability table); move it to the host with -p autocrop (ember-compile --autocrop)"
    module = kit.apply(kit.imported(model), AutocropPass(remarks=False))
    require_npu_support(graph_function(module))


def _normalized_classifier(kit):
    """x -> Sub(per-channel mean) -> Div(per-channel std) -> Relu -> Reshape -> MatMul: the
    normalization that `extract-normalization` would strip, left in the graph. `quantize`
    has no pattern for a per-channel Sub / Div without a convolution before it."""
    inits = {
        "mean": RNG.normal(size=(1, 8, 1, 1)).astype(np.float32),
        "std": RNG.uniform(0.25, 2.0, size=(1, 8, 1, 1)).astype(np.float32),
        "shape": np.array([1, 8], dtype=np.int64),
        "w": RNG.normal(size=(8, 5)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centered"], name="sub"),
        helper.make_node("Div", ["centered", "std"], ["scaled"], name="div"),
        helper.make_node("Relu", ["scaled"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "w"], ["y"], name="fc"),
    ]
    return kit.model(nodes, {"x": [1, 8, 1, 1]}, ["y"], inits)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_float_normalization_prefix_goes_to_pre_and_main_compiles(kit, capsys):
    """The nodes `quantize` would leave float go to the host, so the cropped main part
    quantizes completely and compiles; the NPU equals the quant reference bit for bit."""
    from xdsl.dialects.builtin import ModuleOp

    from ember.frontend.samples import SampleSet
    from ember.interpreters.quant_reference import run_quant_module
    from ember.lowering.npu_to_ebin import compile_to_ebin
    from ember.lowering.quant_to_npu import main_function
    from ember.passes.calibrate import calibrate, record
    from ember.passes.quantize import QuantizePass
    from ember.target.ebin import parse, to_bytes
    from ember.target.simulator import Simulator

    model = _normalized_classifier(kit)
    module = kit.apply(kit.imported(model), AutocropPass())
    assert _crop(module) == {"inputs": ["scaled"], "outputs": ["y"]}
    assert kit.op_types(module, "pre") == {"Sub": 1, "Div": 1}
    assert kit.op_types(module) == {"Relu": 1, "Reshape": 1, "MatMul": 1}
    assert "Div 'div' runs on the host (no quantize pattern takes it, so it would stay float)" in capsys.readouterr().err
    feeds = {"x": RNG.normal(size=(1, 8, 1, 1)).astype(np.float32)}
    kit.assert_close({"y": kit.run_parts(module, feeds)["y"]}, kit.run(model, feeds))

    sample = {"scaled": kit.run_parts(module, feeds)["scaled"]}
    record(module, calibrate(module, SampleSet("test", [sample], lambda s: s), "minmax"))
    QuantizePass().apply(None, module)
    quant_part = ModuleOp([main_function(module).clone()])
    assert not [op for op in quant_part.walk() if op.dialect_name() == "onnx"]
    sim = Simulator(parse(to_bytes(compile_to_ebin(module, "ember16")), "test.ebin"))
    (x_desc,) = sim.ebin.iodesc["inputs"]
    (y_desc,) = sim.ebin.iodesc["outputs"]
    x = RNG.integers(-128, 128, size=x_desc["shape"]).astype(np.int8)
    got = sim.run({x_desc["name"]: x})[y_desc["name"]]
    # the reference takes the float input the host would quantize to exactly x
    nchw = x.transpose(0, 3, 1, 2) if x_desc["layout"] == "NHWC" else x
    real = (nchw.astype(np.float32) - x_desc["zero_point"]) * np.float32(x_desc["scale"])
    (expected,) = run_quant_module(quant_part, {x_desc["name"]: real}).values()
    got_real = (got.astype(np.float32) - y_desc["zero_point"]) * np.float32(y_desc["scale"])
    assert np.array_equal(got_real.reshape(expected.shape), expected)
