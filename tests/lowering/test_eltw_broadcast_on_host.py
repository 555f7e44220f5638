"""Add / Mul broadcasts that the ELTW unit cannot do go to the host: `autocrop` places them
with the same shape rule the NPU lowering refuses them with
(`capabilities.eltw_shapes_reason`), and the main part it keeps compiles bit-exactly
(simulator == quant reference). Per-channel constants after a convolution still fold into
its POST. The two graphs are the shapes the quantized fuzzer found."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr

from ember.dialects.onnx import OnnxOp
from ember.frontend.onnx_export import export_model, graph_function
from ember.frontend.onnx_import import import_model
from ember.frontend.samples import SampleSet
from ember.lowering.npu_to_ebin import compile_to_ebin
from ember.lowering.quant_to_npu import main_function
from ember.passes.autocrop import AutocropPass
from ember.passes.calibrate import calibrate, input_specs, record
from ember.passes.quantize import QuantizePass
from ember.target.capabilities import eltw_shapes_reason
from ember.target.ebin import to_bytes
from tests.fuzz.npu_boundary import assert_simulator_matches_reference

RNG = np.random.default_rng(11)


def _model(nodes, inputs: dict, outputs: list[str], weights: dict) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(a.astype(np.float32), n) for n, a in weights.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, feeds: dict) -> dict:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {i.name: feeds[i.name] for i in session.get_inputs()})))


def _parts(module: ModuleOp) -> dict[str, Counter]:
    parts = {}
    for function in module.ops:
        part = function.attributes.get("onnx.part")
        if isinstance(part, StringAttr):
            ops = graph_function(module, part.data).body.block.ops
            parts[part.data] = Counter(op.ONNX_TYPE for op in ops if isinstance(op, OnnxOp) and op.ONNX_TYPE != "Initializer")
    return parts


def _compile_bit_exact(module: ModuleOp, feeds: dict) -> Counter:
    """Calibrate on `feeds`, quantize, compile the main part and check the simulator against
    the quant reference on random int8 inputs; returns the main part's quant ops."""
    tensors = dict(feeds)
    if "pre" in _parts(module):
        tensors.update(_run(export_model(module, "pre"), tensors))
    sample = {spec.name: tensors[spec.name] for spec in input_specs(module)}
    record(module, calibrate(module, SampleSet("test", [sample], lambda s: s), "minmax"))
    QuantizePass().apply(Context(), module)
    quant_part = ModuleOp([main_function(module).clone()])
    assert_simulator_matches_reference(quant_part, to_bytes(compile_to_ebin(module, "ember16")), seed=3)
    return Counter(op.name for op in quant_part.walk() if op.dialect_name() == "quant" and op.name not in ("quant.constant", "quant.dequantize", "quant.quantize"))


@pytest.mark.parametrize(
    ("a", "b", "result", "refused"),
    [
        ((1, 8, 5, 5), (1, 8, 5, 5), (1, 8, 5, 5), False),
        ((1, 8, 1, 1), (1, 8, 5, 5), (1, 8, 5, 5), False),  # squeeze-excitation, either side
        ((1, 3, 1, 2), (1, 1, 1, 2), (1, 3, 1, 2), True),
        ((4,), (1, 2, 14, 4), (1, 2, 14, 4), True),
        ((8, 1, 1), (1, 8, 5, 5), (1, 8, 5, 5), True),  # folds after a conv, but ELTW wants rank 4
        ((1, 1, 13, 1), (1, 2, 13, 1), (1, 2, 13, 1), True),
        ((1, 3, 1, 1), (1, 1, 4, 4), (1, 3, 4, 4), True),
    ],
)
def test_eltw_shape_rule(a, b, result, refused):
    assert (eltw_shapes_reason(a, b, result) is not None) == refused
    assert (eltw_shapes_reason(b, a, result) is not None) == refused


def test_add_broadcast_along_width_runs_on_the_host(capsys):
    """quant.add of (1,3,1,2) with (1,1,1,2): the Add and what reads it go to post."""
    weights = {"w3": RNG.normal(size=(3, 3, 1, 1)), "w1": RNG.normal(size=(1, 3, 1, 1))}
    nodes = [
        helper.make_node("Conv", ["x", "w3"], ["a"], name="conv_a"),
        helper.make_node("Conv", ["x", "w1"], ["b"], name="conv_b"),
        helper.make_node("Add", ["a", "b"], ["s"], name="Add_9"),
        helper.make_node("Relu", ["s"], ["y"], name="relu"),
    ]
    model = _model(nodes, {"x": [1, 3, 1, 2]}, ["y"], weights)
    module = import_model(model, None)
    AutocropPass().apply(Context(), module)
    assert "Add 'Add_9' runs on the host (it broadcasts [1, 1, 1, 2] to [1, 3, 1, 2]" in capsys.readouterr().err
    assert _parts(module) == {"main": {"Conv": 2}, "post": {"Add": 1, "Relu": 1}}
    x = RNG.normal(size=(1, 3, 1, 2)).astype(np.float32)
    assert _compile_bit_exact(module, {"x": x}) == {"quant.conv2d": 2}


def test_mul_by_last_axis_vector_runs_on_the_host():
    """quant.mul of a (4,) constant along the last axis of a 4-D tensor: at the input it
    goes to pre, after the convolution to post; the per-channel scale and shift between
    (a BatchNormalization as Mul + Add) still fold into the convolution on the NPU."""
    weights = {
        "k_in": RNG.uniform(0.5, 2, size=(4,)), "w": RNG.normal(size=(2, 2, 3, 3)),
        "gamma": RNG.uniform(0.5, 2, size=(2, 1, 1)), "beta": RNG.normal(size=(1, 2, 1, 1)),
        "k_out": RNG.uniform(0.5, 2, size=(4,)),
    }  # fmt: skip
    nodes = [
        helper.make_node("Mul", ["x", "k_in"], ["m"], name="Mul_in"),
        helper.make_node("Conv", ["m", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Mul", ["c", "gamma"], ["g"], name="bn_scale"),
        helper.make_node("Add", ["g", "beta"], ["h"], name="bn_shift"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "k_out"], ["y"], name="Mul_3"),
    ]
    model = _model(nodes, {"x": [1, 2, 14, 4]}, ["y"], weights)
    module = import_model(model, None)
    AutocropPass(remarks=False).apply(Context(), module)
    assert _parts(module) == {"pre": {"Mul": 1}, "main": {"Conv": 1, "Mul": 1, "Add": 1, "Relu": 1}, "post": {"Mul": 1}}
    x = RNG.normal(size=(1, 2, 14, 4)).astype(np.float32)
    assert _compile_bit_exact(module, {"x": x}) == {"quant.conv2d": 1}
