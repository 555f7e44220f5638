"""cross-layer-equalize: exact in float (onnxruntime before and after, real models and
small graphs), equal ranges after, and no pair through a non-homogeneous activation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from ember.dialects.onnx import InitializerOp
from ember.frontend.onnx_export import graph_function
from ember.passes.cross_layer_equalize import CrossLayerEqualizePass
from ember.passes.fold_batchnorm import FoldBatchNormPass
from ember.passes.onnx_constant_fold import OnnxConstantFoldPass

RNG = np.random.default_rng(11)


def _close(kit, actual, expected) -> None:
    """Equal to 1e-5 relative to the largest output magnitude (the detector's logits: its
    Sigmoid output moves by at most a quarter of what its input does)."""
    largest = max(float(np.abs(value).max()) for value in expected.values())
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=1e-5, atol=1e-5 * largest, err_msg=name)


def _weights(module) -> dict[str, np.ndarray]:
    from ember.dialects.dense import numpy_from_dense

    return {op.tensor_name: numpy_from_dense(op.value) for op in graph_function(module).body.block.ops if isinstance(op, InitializerOp)}


def _with_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    model.graph.output.append(helper.make_tensor_value_info(sigmoid.input[0], onnx.TensorProto.FLOAT, None))
    return model


@pytest.mark.parametrize(
    ("name", "shape", "pairs", "image"),
    [("ppocr_mobile_v2_cls.onnx", [1, 3, 48, 192], 15, "page.png"), ("ppocrv4_det.onnx", [1, 3, 160, 160], 20, "page.png")],
)
def test_real_models_are_unchanged_in_float(kit, capsys, name, shape, pairs, image):
    model = kit.load(name)
    if "det" in name:
        model = _with_logits(model)
    x = kit.image(shape[2], shape[3], image) / 127.5 - 1.0
    module = kit.apply(kit.imported(model, {"x": shape}), OnnxConstantFoldPass(), FoldBatchNormPass())
    before = kit.run(kit.export(module), {"x": x})
    kit.apply(module, CrossLayerEqualizePass(remarks=True))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == pairs
    assert not any("HardSwish" in line or "Clip" in line or "Sigmoid" in line for line in lines)
    _close(kit, kit.run(kit.export(module), {"x": x}), before)


def test_depthwise_pointwise_through_scalar_affine(kit, capsys):
    """A stride-2 depthwise conv, PP-LCNet's scalar Mul/Add, a pointwise conv: both
    ranges become sqrt(r1 r2) (r1 counting the Mul's gain); the scalar Add becomes
    one shift per channel."""
    dw = (RNG.normal(size=(4, 1, 3, 3)) * np.array([0.01, 1.0, 10.0, 0.5]).reshape(4, 1, 1, 1)).astype(np.float32)
    inits = {
        "dw": dw, "dwb": RNG.normal(size=4).astype(np.float32), "pw": RNG.normal(size=(6, 4, 1, 1)).astype(np.float32),
        "pwb": RNG.normal(size=6).astype(np.float32), "a": np.array(-1.5, np.float32), "b": np.array(0.25, np.float32),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "dw", "dwb"], ["d"], group=4, strides=[2, 2], pads=[1, 1, 1, 1], name="dw"),
        helper.make_node("Mul", ["a", "d"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "b"], ["s"], name="add"),
        helper.make_node("Conv", ["s", "pw", "pwb"], ["y"], pads=[0, 0, 0, 0], name="pw"),
    ]
    model = kit.model(nodes, {"x": [1, 4, 9, 9]}, ["y"], inits)
    x = RNG.normal(size=(1, 4, 9, 9)).astype(np.float32)
    before = kit.run(model, {"x": x})
    module = kit.apply(kit.imported(model), CrossLayerEqualizePass(remarks=True))
    assert "Conv 'dw' -> Conv 'pw' through Mul 'mul', Add 'add': 4 channels" in capsys.readouterr().err
    _close(kit, kit.run(kit.export(module), {"x": x}), before)
    weights = _weights(module)
    r1 = np.abs(weights["d.cle_weight"]).reshape(4, -1).max(axis=1) * 1.5
    r2 = np.abs(weights["y.cle_weight"]).max(axis=(0, 2, 3))
    np.testing.assert_allclose(r1, r2, rtol=1e-6)
    assert weights["s.cle_shift"].shape == (4, 1, 1)
    assert "dw" not in weights and "b" not in weights  # replaced constants are erased


@pytest.mark.parametrize("group", [1, 2])
def test_conv_relu_grouped_conv_and_conv_transpose(kit, group):
    inits = {
        "w1": RNG.normal(size=(4, 3, 3, 3)).astype(np.float32) * np.array([5.0, 0.1, 1.0, 2.0], np.float32).reshape(4, 1, 1, 1),
        "w2": RNG.normal(size=(6, 4 // group, 3, 3)).astype(np.float32),
        "w3": RNG.normal(size=(6, 2, 2, 2)).astype(np.float32), "b3": RNG.normal(size=2).astype(np.float32),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=group),
        helper.make_node("LeakyRelu", ["c2"], ["r2"], alpha=0.1),
        helper.make_node("ConvTranspose", ["r2", "w3", "b3"], ["y"], strides=[2, 2]),
    ]
    model = kit.model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    before = kit.run(model, {"x": x})
    module = kit.apply(kit.imported(model), CrossLayerEqualizePass())
    weights = _weights(module)
    assert {"c1.cle_weight", "c2.cle_weight", "y.cle_weight"} <= set(weights)
    _close(kit, kit.run(kit.export(module), {"x": x}), before)


@pytest.mark.parametrize("between", ["hardswish", "clip", "two_users"])
def test_no_pair_through_non_homogeneous_ops_or_shared_values(kit, between):
    inits = {"w1": RNG.normal(size=(4, 3, 1, 1)).astype(np.float32), "w2": RNG.normal(size=(2, 4, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"])]
    outputs = ["y"]
    if between == "hardswish":
        nodes.append(helper.make_node("HardSwish", ["c1"], ["a"]))
    elif between == "clip":
        inits.update(lo=np.array(0.0, np.float32), hi=np.array(6.0, np.float32))
        nodes.append(helper.make_node("Clip", ["c1", "lo", "hi"], ["a"]))
    else:
        nodes.append(helper.make_node("Relu", ["c1"], ["a"]))
        outputs.append("a")
    nodes.append(helper.make_node("Conv", ["a", "w2"], ["y"]))
    model = kit.model(nodes, {"x": [1, 3, 4, 4]}, outputs, inits)
    module = kit.apply(kit.imported(model), CrossLayerEqualizePass())
    assert not any(name.endswith(".cle_weight") for name in _weights(module))
