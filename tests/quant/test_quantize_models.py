"""The shared PaddleOCR models end to end: calibrate on a few photographs, quantize, run
with the reference interpreter, the accuracy report, and the QDQ export in onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from xdsl.context import Context

from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model, load_onnx
from ember.frontend.qdq_export import export_qdq
from ember.dialects.quant import UniformQuantizedType
from ember.frontend.samples import Normalization, load_samples
from ember.interpreters.accuracy_report import accuracy_report, cosine
from ember.interpreters.mixed_runner import MixedRunner
from ember.interpreters.quant_reference import dequantize
from ember.lowering.onnx_to_quant import QuantizationWarning
from ember.passes.calibrate import CalibratePass, input_specs, recorded_ranges
from ember.passes.fold_batchnorm import FoldBatchNormPass
from ember.passes.onnx_constant_fold import OnnxConstantFoldPass
from ember.passes.onnx_shape_inference import OnnxShapeInferencePass
from ember.passes.quantize import QuantizePass

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CALIBRATION = ["astronaut.png", "page.png", "rocket.jpg"]
EVALUATION = ["chelsea.png", "text.png"]
pytestmark = pytest.mark.skipif(not (SHARED / "models").is_dir(), reason="../shared/models not present")


def real(op, result):
    """An observed result as float: quantized activations dequantized with their type."""
    element = op.results[0].type.element_type
    if isinstance(element, UniformQuantizedType) and not element.is_per_axis:
        return dequantize(result, element.scale, element.zero_point)
    return result


def prepared(file: str, shape: list[int]):
    module = import_model(load_onnx(SHARED / "models" / file), {"x": shape}, source=file)
    for ember_pass in (OnnxConstantFoldPass(), FoldBatchNormPass(), OnnxShapeInferencePass()):
        ember_pass.apply(Context(), module)
    return module


def quantized(module, folder, mean, std, float_nodes=""):
    data = folder / "calibration"
    data.mkdir()
    for name in CALIBRATION:
        (data / name).symlink_to(SHARED / "images" / name)
    float_model = export_model(module)
    CalibratePass(data=str(data), method="percentile", mean=mean, std=std, output=str(folder / "m_quant_info.json")).apply(Context(), module)
    ranges = recorded_ranges(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        QuantizePass(float_nodes=float_nodes).apply(Context(), module)
    module.verify()
    evaluation = list(load_samples(SHARED / "images", input_specs(module), Normalization(mean, std), files=EVALUATION))
    return float_model, ranges, evaluation


def test_classifier_end_to_end_report_and_qdq(tmp_path) -> None:
    module = prepared("ppocr_mobile_v2_cls.onnx", [1, 3, 48, 192])
    float_model, ranges, evaluation = quantized(module, tmp_path, (127.5,), (127.5,))
    report = accuracy_report(float_model, module, evaluation, ranges)
    report.write_csv(tmp_path / "cls_node_info.csv")
    (output,) = report.outputs
    assert output.quantized > 0.98, output.quantized
    assert {row.runs_on for row in report.nodes} == {"NPU", "host"}
    assert (tmp_path / "cls_node_info.csv").read_text().count("\n") == len(report.nodes) + 2

    qdq = export_qdq(module)
    assert qdq.opset_import[0].version >= 13
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    runner = MixedRunner(module)
    for sample in evaluation:
        assert cosine(session.run(None, sample)[0], next(iter(runner.run(sample).values()))) > 0.99


def test_detector_end_to_end(tmp_path) -> None:
    module = prepared("ppocrv4_det.onnx", [1, 3, 64, 64])
    # the Sigmoid stays on the host, where autocrop puts it: the logits are the quantized
    # output of the head's last quant.conv_transpose (bias folded in)
    float_model, _, evaluation = quantized(
        module, tmp_path, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375), float_nodes="p2o.Sigmoid.0"
    )
    logits = next(n.input[0] for n in float_model.graph.node if n.op_type == "Sigmoid")
    float_model.graph.output.add().name = logits
    session = ort.InferenceSession(float_model.SerializeToString(), providers=["CPUExecutionProvider"])
    seen = {}
    runner = MixedRunner(module)
    from ember.dialects.onnx import value_name

    for sample in evaluation:
        expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, sample)))
        runner.run(sample, lambda op, results: seen.__setitem__(value_name(op.results[0]), real(op, results[0])) if op.results else None)
        assert cosine(expected[logits], seen[logits]) > 0.98
    assert np.isfinite(seen[logits]).all()

    # the QDQ export (ConvTranspose head with IOHW int8 weights) runs in onnxruntime like the reference
    qdq = ort.InferenceSession(export_qdq(module).SerializeToString(), providers=["CPUExecutionProvider"])
    for sample in evaluation:
        reference = next(iter(runner.run(sample).values()))
        assert cosine(qdq.run(None, sample)[0], reference) > 0.99
