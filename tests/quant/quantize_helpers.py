"""Small ONNX graphs for the quantization tests, and the calibrate -> quantize -> run path."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model
from ember.frontend.samples import SampleSet
from ember.interpreters.accuracy_report import cosine
from ember.interpreters.mixed_runner import MixedRunner
from ember.lowering.onnx_to_quant import QuantizationWarning, convert
from ember.passes.calibrate import calibrate


def model(nodes, inputs, outputs, initializers=(), opset: int = 13) -> onnx.ModelProto:
    """A model from nodes; `inputs`/`outputs` are (name, shape) float tensors, shapes None
    for outputs left to shape inference."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(_typed(a), n) for n, a in initializers],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8))


def _typed(array) -> np.ndarray:
    array = np.asarray(array)
    return array if array.dtype.kind in "iu" else array.astype(np.float32)


def samples(shapes: dict[str, tuple[int, ...]], count: int = 4, seed: int = 0) -> SampleSet:
    rng = np.random.default_rng(seed)
    data = [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()} for _ in range(count)]
    return SampleSet("random", list(range(count)), lambda i: data[i])


def quantize_and_compare(proto: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], method: str = "minmax"):
    """Calibrate and quantize `proto`; return (module, mean cosine of the quantized output
    vs onnxruntime float on fresh samples, nodes left float)."""
    module = import_model(proto)
    calibration = calibrate(module, samples(shapes), method)
    float_model = export_model(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        left = convert(module, calibration.ranges)
    module.verify()
    session = ort.InferenceSession(float_model.SerializeToString(), providers=["CPUExecutionProvider"])
    runner = MixedRunner(module)
    cosines = []
    for sample in samples(shapes, 3, seed=1):
        expected = session.run(None, sample)[0]
        cosines.append(cosine(expected, next(iter(runner.run(sample).values()))))
    return module, float(np.mean(cosines)), left


def op_names(module) -> list[str]:
    from ember.frontend.onnx_export import graph_function

    return [op.name for op in graph_function(module).body.block.ops]
