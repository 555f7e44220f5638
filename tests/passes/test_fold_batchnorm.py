"""fold-batchnorm: every fold is checked with onnxruntime before and after."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from ember.passes.fold_batchnorm import FoldBatchNormPass

RNG = np.random.default_rng(7)


def _bn_params(prefix: str, channels: int) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.gamma": RNG.uniform(0.5, 2.0, channels).astype(np.float32),
        f"{prefix}.beta": RNG.normal(size=channels).astype(np.float32),
        f"{prefix}.mean": RNG.normal(size=channels).astype(np.float32),
        f"{prefix}.var": RNG.uniform(0.1, 3.0, channels).astype(np.float32),
    }


def _bn(x: str, y: str, prefix: str = "bn") -> helper.NodeProto:
    return helper.make_node(
        "BatchNormalization", [x, f"{prefix}.gamma", f"{prefix}.beta", f"{prefix}.mean", f"{prefix}.var"], [y], name=prefix, epsilon=1e-3
    )


def _check(kit, model, feeds, expect_types, remarks: bool = False):
    """Fold, check the op types left, compare onnxruntime before and after."""
    before = kit.run(model, feeds)
    module = kit.apply(kit.imported(model), FoldBatchNormPass(remarks=remarks))
    types = kit.op_types(module)
    assert "BatchNormalization" not in types
    assert {t: types[t] for t in expect_types} == expect_types
    kit.assert_close(kit.run(kit.export(module), feeds), before)
    return module


def test_real_mobilenetv3_classifier(kit, capsys):
    model = kit.load("ppocr_mobile_v2_cls.onnx")
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == 35
    x = kit.image(48, 192) / 127.5 - 1.0
    before = kit.run(model, {"x": x})
    module = kit.apply(kit.imported(model, {"x": [1, 3, 48, 192]}), FoldBatchNormPass(remarks=True))
    types = kit.op_types(module)
    assert "BatchNormalization" not in types and "Mul" in types
    assert types["Conv"] == 53
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 35 and all(" folded into Conv " in line for line in lines)
    kit.assert_close(kit.run(kit.export(module), {"x": x}), before, rtol=1e-5, atol=1e-6)


def test_real_ppocrv4_detector(kit, capsys):
    model = kit.load("ppocrv4_det.onnx")
    x = kit.image(320, 320) / 127.5 - 1.0
    before = kit.run(model, {"x": x})
    module = kit.apply(kit.imported(model, {"x": [1, 3, 320, 320]}), FoldBatchNormPass(remarks=True))
    assert "BatchNormalization" not in kit.op_types(module)
    err = capsys.readouterr().err
    assert "fold-batchnorm: BatchNormalization 'p2o.BatchNormalization.2': folded into ConvTranspose 'p2o.ConvTranspose.0' through Add 'p2o.Add.278'" in err
    assert err.count("folded into") == 3
    kit.assert_close(kit.run(kit.export(module), {"x": x}), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_conv_backward(kit, bias):
    inits = {"w": RNG.normal(size=(8, 3, 3, 3)).astype(np.float32), **_bn_params("bn", 8)}
    if bias:
        inits["b"] = RNG.normal(size=8).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"), _bn("c", "y")]
    model = kit.model(nodes, {"x": [1, 3, 10, 10]}, ["y"], inits)
    _check(kit, model, {"x": RNG.normal(size=(1, 3, 10, 10)).astype(np.float32)}, {"Conv": 1})


@pytest.mark.parametrize("group", [1, 2, 4])
def test_grouped_conv_transpose_backward(kit, group):
    channels = 3 * group  # the weight is [Cin, Cout/group, k, k]
    inits = {"w": RNG.normal(size=(4, 3, 2, 2)).astype(np.float32), "b": RNG.normal(size=channels).astype(np.float32), **_bn_params("bn", channels)}
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], strides=[2, 2], group=group), _bn("c", "y")]
    model = kit.model(nodes, {"x": [1, 4, 5, 5]}, ["y"], inits)
    _check(kit, model, {"x": RNG.normal(size=(1, 4, 5, 5)).astype(np.float32)}, {"ConvTranspose": 1})


def test_conv_transpose_with_bias_add(kit, capsys):
    """Paddle writes the ConvTranspose bias as Add(ConvTranspose, c[1, C, 1, 1])."""
    inits = {"w": RNG.normal(size=(4, 3, 2, 2)).astype(np.float32), "c": RNG.normal(size=(1, 3, 1, 1)).astype(np.float32), **_bn_params("bn", 3)}
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["t"], strides=[2, 2], name="up"),
        helper.make_node("Add", ["t", "c"], ["a"], name="bias"),
        _bn("a", "y"),
    ]
    model = kit.model(nodes, {"x": [1, 4, 5, 5]}, ["y"], inits)
    _check(kit, model, {"x": RNG.normal(size=(1, 4, 5, 5)).astype(np.float32)}, {"ConvTranspose": 1, "Add": 0}, remarks=True)
    assert capsys.readouterr().err == "fold-batchnorm: BatchNormalization 'bn': folded into ConvTranspose 'up' through Add 'bias'\n"


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c", [True, False])
def test_gemm_backward(kit, trans_b, with_c):
    weight = RNG.normal(size=(6, 5)).astype(np.float32)
    inits = {"w": weight.T.copy() if trans_b else weight, **_bn_params("bn", 5)}
    inputs = ["x", "w"]
    if with_c:
        inits["c"] = RNG.normal(size=5).astype(np.float32)
        inputs.append("c")
    nodes = [helper.make_node("Gemm", inputs, ["g"], transB=trans_b, alpha=0.5, beta=2.0), _bn("g", "y")]
    model = kit.model(nodes, {"x": [3, 6]}, ["y"], inits)
    _check(kit, model, {"x": RNG.normal(size=(3, 6)).astype(np.float32)}, {"Gemm": 1})


def test_matmul_backward_becomes_gemm(kit):
    inits = {"w": RNG.normal(size=(6, 5)).astype(np.float32), **_bn_params("bn", 5)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), _bn("m", "y")]
    model = kit.model(nodes, {"x": [2, 6]}, ["y"], inits)
    _check(kit, model, {"x": RNG.normal(size=(2, 6)).astype(np.float32)}, {"Gemm": 1, "MatMul": 0})


def test_forward_into_unpadded_conv(kit, capsys):
    inits = {"w": RNG.normal(size=(4, 3, 3, 3)).astype(np.float32), "b": RNG.normal(size=4).astype(np.float32), **_bn_params("bn", 3)}
    nodes = [_bn("x", "n"), helper.make_node("Conv", ["n", "w", "b"], ["y"], name="conv")]
    model = kit.model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    _check(kit, model, {"x": RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)}, {"Conv": 1, "Mul": 0}, remarks=True)
    assert capsys.readouterr().err == "fold-batchnorm: BatchNormalization 'bn': folded forward into Conv 'conv'\n"


@pytest.mark.parametrize("op", ["Flatten", "Reshape", None])
def test_forward_into_gemm(kit, op):
    inits = {"w": RNG.normal(size=(5, 12)).astype(np.float32), "c": RNG.normal(size=5).astype(np.float32), **_bn_params("bn", 3)}
    nodes = [_bn("x", "n")]
    shape = [2, 3, 2, 2] if op else [2, 12]
    if op is None:
        inits.update(_bn_params("bn", 12))
    elif op == "Flatten":
        nodes.append(helper.make_node("Flatten", ["n"], ["f"], axis=1))
    else:
        inits["shape"] = np.array([2, 12], dtype=np.int64)
        nodes.append(helper.make_node("Reshape", ["n", "shape"], ["f"]))
    nodes.append(helper.make_node("Gemm", ["f" if op else "n", "w", "c"], ["y"], transB=1, alpha=1.5, beta=0.5))
    model = kit.model(nodes, {"x": shape}, ["y"], inits)
    _check(kit, model, {"x": RNG.normal(size=shape).astype(np.float32)}, {"Gemm": 1, "Mul": 0})


def _conv_bn_relu(kit, extra_nodes, outputs, pads=(0, 0, 0, 0)):
    inits = {"w": RNG.normal(size=(3, 3, 3, 3)).astype(np.float32), **_bn_params("bn", 3)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=list(pads)), *extra_nodes]
    return kit.model(nodes, {"x": [1, 3, 8, 8]}, outputs, inits)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("second consumer", "backward: 'c' has consumers other than the BatchNormalization"),
        ("graph output", "backward: 'c' is also a graph output"),
        ("activation", "backward: its input comes from Relu 'relu', not from Conv, ConvTranspose, Gemm or MatMul"),
        ("padded forward", "forward: Conv 'conv2' pads its input and the BN's shift is not zero"),
    ],
)
def test_illegal_folds_become_mul_add(kit, capsys, case, reason):
    bn = _bn("c", "y")
    if case == "second consumer":
        model = _conv_bn_relu(kit, [bn, helper.make_node("Relu", ["c"], ["r"])], ["y", "r"])
    elif case == "graph output":
        model = _conv_bn_relu(kit, [bn], ["y", "c"])
    elif case == "activation":
        model = _conv_bn_relu(kit, [helper.make_node("Relu", ["c"], ["r"], name="relu"), _bn("r", "y")], ["y"])
    else:
        model = _conv_bn_relu(kit, [helper.make_node("Relu", ["c"], ["r"], name="relu"), _bn("r", "n"), helper.make_node("Conv", ["n", "w"], ["y"], name="conv2", pads=[1, 1, 1, 1])], ["y"])
    _check(kit, model, {"x": RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)}, {"Mul": 1, "Add": 1}, remarks=True)
    line = capsys.readouterr().err
    assert line.startswith("fold-batchnorm: BatchNormalization 'bn': not folded (backward: ")
    assert reason.split(": ", 1)[1] in line and line.endswith("); became Mul + Add\n")


def test_non_constant_parameters_are_reported(kit, capsys):
    inits = _bn_params("bn", 3)
    gamma = inits.pop("bn.gamma")
    model = kit.model([_bn("x", "y")], {"x": [1, 3, 4, 4], "bn.gamma": [3]}, ["y"], inits)
    module = kit.apply(kit.imported(model), FoldBatchNormPass(remarks=True))
    assert kit.op_types(module)["BatchNormalization"] == 1
    assert capsys.readouterr().err == "fold-batchnorm: BatchNormalization 'bn': kept: parameter 'bn.gamma' is not a constant\n"
    feeds = {"x": RNG.normal(size=(1, 3, 4, 4)).astype(np.float32), "bn.gamma": gamma}
    kit.assert_close(kit.run(kit.export(module), feeds), kit.run(model, feeds))


def test_unranked_matmul_input_is_kept_not_crashed(kit, capsys):
    """Found by the fuzzer: at opset 11 shape inference leaves a Reshape by a computed
    shape unranked, so the MatMul before the BN has no static rank."""
    from onnx import TensorProto, numpy_helper

    inits = [numpy_helper.from_array(RNG.normal(size=(4, 3)).astype(np.float32), "w")]
    inits += [numpy_helper.from_array(v, k) for k, v in _bn_params("bn", 3).items()]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Reshape", ["r", "s"], ["rs"]),
        helper.make_node("MatMul", ["rs", "w"], ["m"]),
        _bn("m", "y"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "k"])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)
    module = kit.apply(kit.imported(model), FoldBatchNormPass(remarks=True))
    assert capsys.readouterr().err == "fold-batchnorm: BatchNormalization 'bn': kept: its input rank is unknown\n"
    feeds = {"x": RNG.normal(size=(2, 4)).astype(np.float32)}
    kit.assert_close(kit.run(kit.export(module), feeds), kit.run(model, feeds))
