"""Quantization accuracy: Ember's int8 models against onnxruntime's `quantize_static`.

    python benchmarks/quant_accuracy.py [--models cls det] [--sizes 320 640]
        [--methods percentile mse output_mse] [--cle both|on|off] [--bias-correction both|on|off]
        [--per-sample]

The evaluation protocol (benchmarks/RESULTS.md explains it):
- 16 images in ../shared/images. Two carry text: `page.png` (a printed page) and
  `text.png` (handwriting); the other 14 are photographs without readable text.
- Calibration (`CALIBRATION`), one of two sets that never see an evaluation pixel:
  "photos" (the classifier's): 7 photographs and the LEFT square of each text image
  (`page.png` x 0..191, `text.png` x 0..172, full height); "text" (the detector's): 4 of
  those photographs and, from each left square, the square and five half-size windows in
  it (`text_windows`): the detector's domain is text.
- Evaluation: the photographs EVALUATION_PHOTOS and the RIGHT square of each text image
  (`page.png` x 193..384, `text.png` x 276..448): regions no calibration sample contains.
  Squares keep the text's aspect ratio when resized to the detector's square input.
- Every sample is resized (bilinear) to the model's input: classifier 1x3x48x192 with
  `(p/255-0.5)/0.5`, detector 1x3x320x320 and 1x3x640x640 with ImageNet mean/std.
- Reported: mean cosine to onnxruntime float32 of the final output and, for the detector,
  of the logits (the final Sigmoid's input), over all evaluation samples and over the
  text-bearing subset (the two right squares); two all-zero tensors count as equal.

Ember: `onnx-constant-fold, fold-batchnorm, [cross-layer-equalize,] onnx-shape-inference,
calibrate{method}, quantize[{bias_correction=true}]` (bias correction on the calibration
samples), run by the quant reference interpreter (`MixedRunner`, float
islands by onnxruntime): the integer semantics the NPU executes. onnxruntime:
`quantize_static` (QDQ, per-channel weights, MinMax and Percentile, the same calibration
samples; the detector converted to opset 13 first, which its quantizer needs).
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
from PIL import Image
from xdsl.context import Context

from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model
from ember.frontend.samples import Normalization, SampleSet
from ember.interpreters.accuracy_report import cosine
from ember.interpreters.mixed_runner import MixedRunner
from ember.lowering.onnx_to_quant import QuantizationWarning, convert
from ember.passes.bias_correct import correct_biases
from ember.passes.calibrate import calibrate
from ember.passes.cross_layer_equalize import CrossLayerEqualizePass
from ember.passes.fold_batchnorm import FoldBatchNormPass
from ember.passes.onnx_constant_fold import OnnxConstantFoldPass
from ember.passes.onnx_shape_inference import OnnxShapeInferencePass

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IMAGES = SHARED / "images"
EVALUATION_PHOTOS = ["brick.png", "chelsea.png", "color.png", "gravel.png", "ihc.png", "moon.png", "retina.jpg"]


@dataclass(frozen=True)
class Region:
    """An image file, optionally cropped to a box."""

    file: str
    box: tuple[int, int, int, int] | None = None

    @property
    def name(self) -> str:
        return self.file if self.box is None else f"{self.file}[x {self.box[0]}..{self.box[2]}, y {self.box[1]}..{self.box[3]}]"


def text_windows(file: str, side: int, left: int = 0) -> list[Region]:
    """The `side` x `side` square of a text image at column `left` (default: its left
    square) and five half-size windows in it (four corners, centre), boxes as PIL's
    (left, top, right, bottom). With only two text
    images, windows at a second scale give calibration more text of the detector's domain:
    on the 640x640 detector, 4 photographs + these 12 crops gave text-square logits 0.9973
    where 7 photographs + the 2 squares gave 0.9899 (benchmarks/RESULTS.md)."""
    half, quarter = side // 2, side // 4
    corners = [(x, y) for y in (0, side - half) for x in (0, side - half)]
    windows = [(left + x, y, left + x + half, y + half) for x, y in [*corners, (quarter, quarter)]]
    return [Region(file, box) for box in [(left, 0, left + side, side), *windows]]


CALIBRATION = {
    "photos": [
        *map(Region, ["astronaut.png", "camera.png", "coins.png", "grass.png", "hubble_deep_field.jpg", "logo.png", "rocket.jpg"]),
        Region("page.png", (0, 0, 191, 191)),
        Region("text.png", (0, 0, 172, 172)),
    ],
    "text": [
        *map(Region, ["astronaut.png", "camera.png", "logo.png", "rocket.jpg"]),
        *text_windows("page.png", 191),
        *text_windows("text.png", 172),
    ],
}
EVALUATION_TEXT = [("page.png", (193, 0, 384, 191)), ("text.png", (276, 0, 448, 172))]
"""Text regions as PIL boxes (left, top, right, bottom): left squares calibrate, right squares evaluate."""
EVALUATION_TEXT_WINDOWS = [w for f, (left, _, right, _) in EVALUATION_TEXT for w in text_windows(f, right - left, left)[1:]]
"""The five half-size windows of each held-out square, as calibration has them of the left
squares: with the squares, 12 text samples at two scales, so that differences of a few
thousandths are not one sample's luck."""
IMAGENET = Normalization((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))


@dataclass(frozen=True)
class Model:
    key: str
    file: str
    normalization: Normalization
    sizes: tuple[tuple[int, int], ...]
    calibration: str
    """The key of its calibration set in `CALIBRATION`."""


MODELS = {
    "cls": Model("cls", "ppocr_mobile_v2_cls.onnx", Normalization((127.5,), (127.5,)), ((48, 192),), "photos"),
    "det": Model("det", "ppocrv4_det.onnx", IMAGENET, ((320, 320), (640, 640)), "text"),
}


class RegionSamples(SampleSet):
    """Samples read from image regions, named after them."""

    def names(self) -> list[str]:
        return [region.name for region in self._items]


def sample_set(regions: list[Region], shape: tuple[int, ...], normalization: Normalization) -> SampleSet:
    """The regions resized (bilinear) to `shape` and normalized, as the input `x`."""

    def read(region: Region) -> dict[str, np.ndarray]:
        with Image.open(IMAGES / region.file) as image:
            image = image.convert("RGB")
            if region.box is not None:
                image = image.crop(region.box)
            pixels = np.asarray(image.resize((shape[3], shape[2]), Image.Resampling.BILINEAR), dtype=np.float32)
        return {"x": normalization.apply(pixels.transpose(2, 0, 1)[None])}

    return RegionSamples(str(IMAGES), regions, read)


def static_model(path: Path, shape: tuple[int, ...]) -> onnx.ModelProto:
    """The model with a static input shape and, when it ends in a Sigmoid, the Sigmoid's
    input as an extra graph output (the logits)."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, extent in zip(dims, shape):
        dim.Clear()
        dim.dim_value = extent
    if name := logits_name(model):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return onnx.shape_inference.infer_shapes(model)


def logits_name(model: onnx.ModelProto) -> str | None:
    outputs = {o.name for o in model.graph.output}
    return next((n.input[0] for n in model.graph.node if n.op_type == "Sigmoid" and n.output[0] in outputs), None)


def ember(model: onnx.ModelProto, shape: tuple[int, ...], method: str, cle: bool, bias: bool, calibration, evaluation) -> list[dict]:
    module = import_model(model, {"x": list(shape)})
    passes = [OnnxConstantFoldPass(), FoldBatchNormPass(), *([CrossLayerEqualizePass()] if cle else []), OnnxShapeInferencePass()]
    for ember_pass in passes:
        ember_pass.apply(Context(), module)
    result = calibrate(module, calibration, method)
    float_model = export_model(module) if bias else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        convert(module, result.ranges)
    if float_model is not None:
        correct_biases(module, float_model, calibration)
    runner = MixedRunner(module)
    return [runner.run(sample) for sample in evaluation]


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
    parser.add_argument("--sizes", nargs="+", type=int, default=[320, 640], help="detector input sizes")
    parser.add_argument("--methods", nargs="+", default=["percentile", "mse", "output_mse"])
    parser.add_argument("--cle", choices=("both", "on", "off"), default="both")
    parser.add_argument("--bias-correction", choices=("both", "on", "off"), default="off")
    parser.add_argument("--no-onnxruntime", action="store_true")
    parser.add_argument("--per-sample", action="store_true", help="also print each evaluation sample's cosines")
    args = parser.parse_args(argv)
    evaluation_regions = [Region(f) for f in EVALUATION_PHOTOS] + [Region(f, box) for f, box in EVALUATION_TEXT]
    text = np.array([r.box is not None for r in evaluation_regions])
    cle_options = {"both": (False, True), "on": (True,), "off": (False,)}[args.cle]
    bias_options = {"both": (False, True), "on": (True,), "off": (False,)}[args.bias_correction]
    print("| model | input | quantizer | final: all | final: text | logits: all | logits: text |")
    print("|---|---|---|---|---|---|---|")
    for key in args.models:
        spec = MODELS[key]
        sizes = spec.sizes if key == "cls" else tuple((s, s) for s in args.sizes)
        for height, width in sizes:
            shape = (1, 3, height, width)
            model = static_model(SHARED / "models" / spec.file, shape)
            names = [o.name for o in model.graph.output]
            calibration = sample_set(CALIBRATION[spec.calibration], shape, spec.normalization)
            evaluation = list(sample_set(evaluation_regions, shape, spec.normalization))
            session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            reference = [dict(zip(names, session.run(None, sample))) for sample in evaluation]

            def row(label: str, results: list[dict]) -> None:
                table = np.array([[cosine(r[n], q[n]) for n in names] for r, q in zip(reference, results)])
                cells = [f"{table[:, 0].mean():.4f}", f"{table[text, 0].mean():.4f}"]
                cells += [f"{table[:, 1].mean():.4f}", f"{table[text, 1].mean():.4f}"] if len(names) > 1 else ["-", "-"]
                print(f"| {key} | {height}x{width} | {label} | {' | '.join(cells)} |", flush=True)
                if args.per_sample:
                    for region, cosines in zip(evaluation_regions, table):
                        print(f"|   | | {region.name} | {' | '.join(f'{c:.4f}' for c in cosines)} |", flush=True)

            for method in args.methods:
                for cle in cle_options:
                    for bias in bias_options:
                        label = f"Ember {'CLE + ' if cle else ''}{method}{' + bias correction' if bias else ''}"
                        row(label, ember(model, shape, method, cle, bias, calibration, evaluation))
            if not args.no_onnxruntime:
                for method in ("minmax", "percentile"):
                    row(f"onnxruntime {method}", onnxruntime_static(model, method, calibration, evaluation))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
