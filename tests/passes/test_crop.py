"""crop: pre -> main -> post under onnxruntime reproduces the original outputs; bad cuts
are refused with the tensors that break them."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ember.frontend.onnx_export import graph_function
from ember.passes.crop import CropPass
from ember.passes.onnx_constant_fold import OnnxConstantFoldPass
from ember.support.diagnostics import EmberError

RNG = np.random.default_rng(11)


def _pipeline_model(kit):
    """uint8 NHWC -> Cast -> Transpose | Conv -> Relu -> Conv | Reshape -> Softmax."""
    inits = {
        "w1": RNG.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "w2": RNG.normal(size=(2, 4, 1, 1)).astype(np.float32),
        "shape": np.array([1, 2, -1], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        helper.make_node("Reshape", ["c2", "shape"], ["flat"], name="reshape"),
        helper.make_node("Softmax", ["flat"], ["y"], axis=-1),
    ]
    return kit.model(nodes, {"x": (TensorProto.UINT8, [1, 6, 6, 3])}, ["y"], inits)


def _feeds(kit):
    return {"x": kit.image(6, 6).transpose(0, 2, 3, 1).astype(np.uint8)}


def test_three_parts_reproduce_the_model(kit):
    model = _pipeline_model(kit)
    module = kit.apply(kit.imported(model), CropPass(inputs="t", outputs="c2"))
    assert kit.op_types(module, "pre") == {"Cast": 1, "Transpose": 1}
    assert kit.op_types(module, "main") == {"Conv": 2, "Relu": 1}
    assert kit.op_types(module, "post") == {"Reshape": 1, "Softmax": 1}
    assert [op.attributes["onnx.part"].data for op in module.ops] == ["main", "pre", "post"]
    main = kit.export(module)
    assert [i.name for i in main.graph.input] == ["t"] and [o.name for o in main.graph.output] == ["c2"]
    feeds = _feeds(kit)
    expected = kit.run(model, feeds)
    kit.assert_close({"y": kit.run_parts(module, feeds)["y"]}, expected)


def test_config_file_and_no_pre(kit, tmp_path):
    config = tmp_path / "crop.json"
    config.write_text(json.dumps({"inputs": ["x"], "outputs": ["r1"]}))
    model = _pipeline_model(kit)
    module = kit.apply(kit.imported(model), CropPass(config=str(config)))
    assert {op.attributes["onnx.part"].data for op in module.ops} == {"main", "post"}
    assert kit.op_types(module) == {"Cast": 1, "Transpose": 1, "Conv": 1, "Relu": 1}
    feeds = _feeds(kit)
    kit.assert_close({"y": kit.run_parts(module, feeds)["y"]}, kit.run(model, feeds))


def test_outputs_only_start_at_the_graph_inputs(kit):
    module = kit.apply(kit.imported(_pipeline_model(kit)), CropPass(outputs="c2"))
    assert module.attributes["onnx.crop"].data["inputs"].data[0].data == "x"


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ("t", "nope", "crop: tensor 'nope' is not a non-constant tensor of the graph; check the name in the IR (ember-opt model.onnx --elide-weights)"),
        ("r1", "c2,c1", "crop: the cut does not separate the graph: the main part also reads 'x', which the crop inputs do not cover; add them to inputs or move the cut"),
        ("t,f", "c2", "crop: input 'f' does not lead to any crop output; remove it or move the cut"),
    ],
)
def test_bad_cuts(kit, inputs, outputs, message):
    module = kit.imported(_pipeline_model(kit))
    with pytest.raises(EmberError) as err:
        CropPass(inputs=inputs, outputs=outputs).apply(None, module)
    assert str(err.value) == message


def test_post_reading_inside_main_is_refused(kit):
    """A side branch reading a value inside main breaks the cut until that value is an output."""
    inits = {"w": RNG.normal(size=(3, 3, 1, 1)).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w"], ["c"]),
        helper.make_node("Sigmoid", ["a"], ["side"], name="side_branch"),
    ]
    model = kit.model(nodes, {"x": [1, 3, 4, 4]}, ["c", "side"], inits)
    with pytest.raises(EmberError) as err:
        CropPass(outputs="c").apply(None, kit.imported(model))
    assert str(err.value) == "crop: the post-processing node 'side_branch' reads 'a', computed inside the cropped parts; add it to outputs (or inputs) or move the cut"
    module = kit.apply(kit.imported(model), CropPass(outputs="c,a"))
    feeds = {"x": RNG.normal(size=(1, 3, 4, 4)).astype(np.float32)}
    values = kit.run_parts(module, feeds)
    kit.assert_close({k: values[k] for k in ("c", "side")}, kit.run(model, feeds))


def test_config_errors(kit, tmp_path):
    module = kit.imported(_pipeline_model(kit))
    bad = tmp_path / "bad.json"
    bad.write_text("{inputs: 1}")
    with pytest.raises(EmberError, match=r"bad.json: not valid JSON \(Expecting property name enclosed in double quotes at line 1\)"):
        CropPass(config=str(bad)).apply(None, module)
    with pytest.raises(EmberError, match="crop: give either config=FILE or inputs=/outputs=, not both"):
        CropPass(config=str(bad), outputs="c2").apply(None, module)
    with pytest.raises(EmberError, match="cannot read the crop config"):
        CropPass(config=str(tmp_path / "missing.json")).apply(None, module)


def test_real_detector_cli_writes_the_parts(kit, tmp_path):
    out = tmp_path / "det.onnx"
    done = subprocess.run(
        [
            "ember-opt",
            str(kit.shared / "models" / "ppocrv4_det.onnx"),
            "--input-shape",
            "x=1,3,320,320",
            "-p",
            'onnx-constant-fold,crop{outputs="p2o.Add.281"}',
            "-t",
            "onnx",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx", "det_crop.json", "det_post.onnx"]
    assert json.loads((tmp_path / "det_crop.json").read_text()) == {"inputs": ["x"], "outputs": ["p2o.Add.281"]}
    main, post = onnx.load(str(out)), onnx.load(str(tmp_path / "det_post.onnx"))
    assert [n.op_type for n in post.graph.node] == ["Sigmoid"]
    x = kit.image(320, 320) / 127.5 - 1.0
    logits = kit.run(main, {"x": x})
    kit.assert_close(kit.run(post, logits), kit.run(kit.load("ppocrv4_det.onnx"), {"x": x}))


def test_cropping_twice_is_refused(kit):
    module = kit.apply(kit.imported(_pipeline_model(kit)), OnnxConstantFoldPass(), CropPass(outputs="c2"))
    with pytest.raises(EmberError, match="crop: the module is already cropped; crop the original model"):
        CropPass(outputs="c2").apply(None, module)
    assert graph_function(module, "post") is not None
