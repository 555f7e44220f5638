"""extract-normalization: original(x) == stripped((x - mean) / std) under onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ember.frontend.onnx_export import graph_function
from ember.passes.extract_normalization import ExtractNormalizationPass

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
RNG = np.random.default_rng(3)


def _conv_tail(x: str) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    weight = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
    return [helper.make_node("Conv", [x, "w"], ["y"], pads=[1, 1, 1, 1])], {"w": weight}


def _torch_style(kit):
    tail, inits = _conv_tail("n")
    nodes = [helper.make_node("Sub", ["x", "mean"], ["centered"]), helper.make_node("Div", ["centered", "std"], ["n"]), *tail]
    inits.update(mean=MEAN.reshape(1, 3, 1, 1).astype(np.float32), std=STD.reshape(1, 3, 1, 1).astype(np.float32))
    return kit.model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)


def _keras_style(kit, transpose: bool = True):
    """uint8 NHWC -> Cast -> [Transpose] -> Mul(1/255) -> Add(-mean/255) -> Mul(255/std)."""
    tail, inits = _conv_tail("n")
    channel_shape = (1, 3, 1, 1) if transpose else (3,)
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT)]
    if transpose:
        nodes.append(helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2]))
    nodes += [
        helper.make_node("Mul", ["t" if transpose else "f", "rescale"], ["r"]),
        helper.make_node("Add", ["shift", "r"], ["s"]),
        helper.make_node("Mul", ["s", "inv_std"], ["n"]),
    ]
    if not transpose:
        nodes.append(helper.make_node("Transpose", ["n"], ["nchw"], perm=[0, 3, 1, 2]))
        tail, _ = _conv_tail("nchw")
    inits.update(
        rescale=np.array(1 / 255, dtype=np.float32),
        shift=(-MEAN / 255).reshape(channel_shape).astype(np.float32),
        inv_std=(255 / STD).reshape(channel_shape).astype(np.float32),
    )
    return kit.model([*nodes, *tail], {"x": (TensorProto.UINT8, [1, 8, 8, 3])}, ["y"], inits)


def _record(module) -> dict:
    entry = graph_function(module).arg_attrs.data[0].data["onnx.normalization"]
    return {k: [f.value.data for f in v.data] if k != "axis" else v.value.data for k, v in entry.data.items()}


def _normalized(x: np.ndarray, record: dict) -> np.ndarray:
    shape = [1] * x.ndim
    shape[record["axis"]] = -1
    return ((x - np.reshape(record["mean"], shape)) / np.reshape(record["std"], shape)).astype(np.float32)


def test_torch_sub_div(kit, capsys):
    model = _torch_style(kit)
    module = kit.apply(kit.imported(model), ExtractNormalizationPass())
    assert capsys.readouterr().err == "extract-normalization: normalization1 = normalization([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])\n"
    assert kit.op_types(module) == {"Conv": 1}
    record = _record(module)
    assert record == {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "axis": 1}
    x = kit.image(8, 8)
    stripped = kit.export(module)
    assert json.loads({p.key: p.value for p in stripped.metadata_props}["ember.normalization.x"]) == record
    kit.assert_close(kit.run(stripped, {"x": _normalized(x, record)}), kit.run(model, {"x": x}), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strip_transpose", [False, True])
def test_keras_uint8_nhwc(kit, strip_transpose):
    model = _keras_style(kit)
    module = kit.apply(kit.imported(model), ExtractNormalizationPass(strip_transpose=strip_transpose, remarks=False))
    record = _record(module)
    np.testing.assert_allclose(record["mean"], MEAN, rtol=1e-6)
    np.testing.assert_allclose(record["std"], STD, rtol=1e-6)
    x = kit.image(8, 8).transpose(0, 2, 3, 1).astype(np.uint8)
    arg_type = graph_function(module).body.block.args[0].type
    if strip_transpose:
        assert kit.op_types(module) == {"Conv": 1} and record["axis"] == 1 and arg_type.get_shape() == (1, 3, 8, 8)
        feed = _normalized(x.transpose(0, 3, 1, 2).astype(np.float64), record)
    else:
        assert kit.op_types(module) == {"Transpose": 1, "Conv": 1} and record["axis"] == 3 and arg_type.get_shape() == (1, 8, 8, 3)
        feed = _normalized(x.astype(np.float64), record)
    kit.assert_close(kit.run(kit.export(module), {"x": feed}), kit.run(model, {"x": x}), rtol=1e-4, atol=1e-4)


def test_nhwc_channel_last_constants(kit):
    model = _keras_style(kit, transpose=False)
    module = kit.apply(kit.imported(model), ExtractNormalizationPass(remarks=False))
    record = _record(module)
    assert record["axis"] == 3
    assert kit.op_types(module) == {"Transpose": 1, "Conv": 1}
    x = kit.image(8, 8).transpose(0, 2, 3, 1).astype(np.uint8)
    kit.assert_close(kit.run(kit.export(module), {"x": _normalized(x.astype(np.float64), record)}), kit.run(model, {"x": x}), rtol=1e-4, atol=1e-4)


def test_scalar_chain(kit, capsys):
    tail, inits = _conv_tail("n")
    nodes = [helper.make_node("Div", ["x", "half"], ["d"]), helper.make_node("Sub", ["one", "d"], ["n"]), *tail]
    inits.update(half=np.array(127.5, dtype=np.float32), one=np.array(1.0, dtype=np.float32))
    model = kit.model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    module = kit.apply(kit.imported(model), ExtractNormalizationPass())
    # 1 - x / 127.5 = (x - 127.5) / -127.5
    assert capsys.readouterr().err == "extract-normalization: normalization1 = normalization([127.5], [-127.5])\n"
    x = kit.image(8, 8)
    kit.assert_close(kit.run(kit.export(module), {"x": ((x - 127.5) / -127.5).astype(np.float32)}), kit.run(model, {"x": x}), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "nodes",
    [
        [helper.make_node("Div", ["k", "x"], ["n"])],  # x is a divisor: not affine
        [helper.make_node("Mul", ["x", "x"], ["n"])],  # no constant
        [helper.make_node("Mul", ["x", "plane"], ["n"])],  # varies along two axes
        [helper.make_node("Relu", ["x"], ["n"])],
    ],
    ids=["divisor", "square", "spatial-constant", "no-chain"],
)
def test_not_an_affine_chain_is_kept(kit, capsys, nodes):
    tail, inits = _conv_tail("n")
    inits.update(k=np.array(2.0, dtype=np.float32), plane=RNG.normal(size=(1, 1, 8, 8)).astype(np.float32))
    model = kit.model([*nodes, *tail], {"x": [1, 3, 8, 8]}, ["y"], inits)
    module = kit.apply(kit.imported(model), ExtractNormalizationPass())
    assert capsys.readouterr().err == ""
    assert "onnx.normalization" not in graph_function(module).arg_attrs.data[0].data
    x = kit.image(8, 8) + 1
    kit.assert_close(kit.run(kit.export(module), {"x": x}), kit.run(model, {"x": x}))


def test_chain_stops_at_a_second_consumer(kit):
    """The Sub's output also feeds a graph output: only nothing before it can go."""
    tail, inits = _conv_tail("n")
    nodes = [helper.make_node("Sub", ["x", "mean"], ["centered"]), helper.make_node("Div", ["centered", "std"], ["n"]), *tail]
    inits.update(mean=MEAN.reshape(1, 3, 1, 1).astype(np.float32), std=STD.reshape(1, 3, 1, 1).astype(np.float32))
    model = kit.model(nodes, {"x": [1, 3, 8, 8]}, ["y", "centered"], inits)
    module = kit.apply(kit.imported(model), ExtractNormalizationPass(remarks=False))
    record = _record(module)
    assert record["std"] == [1.0, 1.0, 1.0] and kit.op_types(module) == {"Div": 1, "Conv": 1}
    x = kit.image(8, 8)
    kit.assert_close(kit.run(kit.export(module), {"x": _normalized(x, record)}), kit.run(model, {"x": x}), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "shape"), [("ppocr_mobile_v2_cls.onnx", [1, 3, 48, 192]), ("ppocrv4_det.onnx", [1, 3, 320, 320])])
def test_real_models_carry_no_normalization(kit, capsys, name, shape):
    """PaddleOCR normalizes on the host before the model: nothing to extract."""
    module = kit.apply(kit.imported(kit.load(name), {"x": shape}), ExtractNormalizationPass())
    assert capsys.readouterr().err == ""
    assert "onnx.normalization" not in graph_function(module).arg_attrs.data[0].data
