"""Quantization accuracy: Ember's int8 models against onnxruntime's `quantize_static`.

    python benchmarks/quant_accuracy.py [--models cls det] [--methods minmax percentile mse entropy]

For both shared PaddleOCR models, calibrate on a fixed half of ../shared/images and
evaluate on the other half: the mean cosine similarity of the final output to the float
model's (onnxruntime float32). Ember: `calibrate` + `quantize`, run by the reference
interpreter (`MixedRunner`). onnxruntime: `quantize_static` (QDQ, per-channel weights,
MinMax and Percentile calibration, the same images; the detector converted to opset 13
first, which onnxruntime's quantizer needs). For a model ending in Sigmoid the cosine of
its input (the logits) is reported too: on photographs without text the detector's
probability map is ~0 everywhere, and its cosine measures rounding of near-zero values.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from xdsl.context import Context

from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model, load_onnx
from ember.frontend.samples import InputSpec, Normalization, load_samples
from ember.interpreters.accuracy_report import cosine
from ember.interpreters.mixed_runner import MixedRunner
from ember.lowering.onnx_to_quant import QuantizationWarning, convert
from ember.passes.calibrate import calibrate, input_specs
from ember.passes.fold_batchnorm import FoldBatchNormPass
from ember.passes.onnx_constant_fold import OnnxConstantFoldPass
from ember.passes.onnx_shape_inference import OnnxShapeInferencePass

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CALIBRATION = ["astronaut.png", "camera.png", "coins.png", "grass.png", "hubble_deep_field.jpg", "logo.png", "page.png", "rocket.jpg"]
EVALUATION = ["brick.png", "chelsea.png", "color.png", "gravel.png", "ihc.png", "moon.png", "retina.jpg", "text.png"]
IMAGENET = Normalization((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))


@dataclass(frozen=True)
class Model:
    key: str
    file: str
    shape: tuple[int, ...]
    normalization: Normalization


MODELS = {
    "cls": Model("cls", "ppocr_mobile_v2_cls.onnx", (1, 3, 48, 192), Normalization((127.5,), (127.5,))),
    "det": Model("det", "ppocrv4_det.onnx", (1, 3, 320, 320), IMAGENET),
}


def static_model(path: Path, shape: tuple[int, ...], logits: bool) -> onnx.ModelProto:
    """The model with a static input shape and, if `logits`, the final Sigmoid's input as
    an extra graph output."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, extent in zip(dims, shape):
        dim.Clear()
        dim.dim_value = extent
    if logits and (name := logits_name(model)):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return onnx.shape_inference.infer_shapes(model)


def logits_name(model: onnx.ModelProto) -> str | None:
    outputs = {o.name for o in model.graph.output}
    return next((n.input[0] for n in model.graph.node if n.op_type == "Sigmoid" and n.output[0] in outputs), None)


def mean_cosines(reference: list[dict], results: list[dict], names: list[str]) -> list[float]:
    return [float(np.mean([cosine(r[n], q[n]) for r, q in zip(reference, results)])) for n in names]


def ember(model: onnx.ModelProto, spec: Model, method: str, calibration, evaluation) -> list[dict]:
    module = import_model(model, {"x": list(spec.shape)}, source=spec.file)
    ctx = Context()
    for ember_pass in (OnnxConstantFoldPass(), FoldBatchNormPass(), OnnxShapeInferencePass()):
        ember_pass.apply(ctx, module)
    result = calibrate(module, calibration, method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        convert(module, result.ranges)
    runner = MixedRunner(module)
    outputs = [runner.run(sample) for sample in evaluation]
    return outputs


def onnxruntime_static(model: onnx.ModelProto, method: str, calibration, evaluation) -> list[dict]:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(list(calibration))

        def get_next(self):
            return next(self.samples, None)

    if model.opset_import[0].version < 13:
        model = onnx.version_converter.convert_version(model, 13)
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        onnx.save(model, source)
        quantize_static(
            str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[method],
        )  # fmt: skip
        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(None, sample))) for sample in evaluation]


def main(argv: list[str]) -> int:
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantizer warns per tensor
    ort.set_default_logger_severity(3)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=["minmax", "percentile", "mse", "entropy"])
    args = parser.parse_args(argv)
    print("| model | quantizer | final output cosine | logits cosine | per-image (final output) |")
    print("|---|---|---|---|---|")
    for key in args.models:
        spec = MODELS[key]
        path = SHARED / "models" / spec.file
        model = static_model(path, spec.shape, logits=True)
        names = [o.name for o in model.graph.output]
        inputs = [InputSpec("x", spec.shape)]
        calibration = load_samples(SHARED / "images", inputs, spec.normalization, files=CALIBRATION)
        evaluation = list(load_samples(SHARED / "images", inputs, spec.normalization, files=EVALUATION))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        reference = [dict(zip(names, session.run(None, sample))) for sample in evaluation]

        def row(label: str, results: list[dict]) -> None:
            per_image = [cosine(r[names[0]], q[names[0]]) for r, q in zip(reference, results)]
            final, *rest = mean_cosines(reference, results, names)
            logits = f"{rest[0]:.4f}" if rest else "-"
            print(f"| {key} | {label} | {final:.4f} | {logits} | {' '.join(f'{c:.3f}' for c in per_image)} |", flush=True)

        for method in args.methods:
            results = ember(model, spec, method, calibration, evaluation)
            row(f"Ember {method}", results)
        for method in ("minmax", "percentile"):
            row(f"onnxruntime {method}", onnxruntime_static(model, method, calibration, evaluation))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
