"""Deployment accuracy: a model compiled by ember-compile, run through the runtime (raw
uint8 RGB frames -> PREPROC on the NPU -> simulator -> host post part), against
onnxruntime float32 on the original model, on the held-out samples of
benchmarks/quant_accuracy.py's protocol (7 photographs + the right squares of `page.png`
and `text.png`).

    python benchmarks/deploy_accuracy.py --calib-folder DIR [--calibration text|photos]   # write a calibration set as files
    python benchmarks/deploy_accuracy.py OUTDIR MODEL.onnx [--per-sample]

The calibration folder holds one of the protocol's calibration sets (quant_accuracy.py's
`CALIBRATION`): photographs as links, crops of the text images' left squares as PNG
files, for `ember-compile --calib DIR`.
Reported: mean cosine of the final output and, when the model ends in a Sigmoid that runs
on the host, of the logits (the NPU's output, dequantized), over all held-out samples and
over the two text squares; two all-zero tensors count as equal, zero vs non-zero as 0.
For such a detector also the final map over 12 text crops: the two squares and the five
half-size windows of each (`EVALUATION_TEXT_WINDOWS`).
For such a probability map also what DB post-processing sees: the IoU of the text masks
(p > 0.3) on the text squares, and on how many photographs Ember and float agree that
there is no text at all (no pixel above 0.3 in either; their map cosine there compares
values below 1e-4 and says nothing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quant_accuracy import (  # noqa: E402 - the protocol lives beside this script
    CALIBRATION,
    EVALUATION_PHOTOS,
    EVALUATION_TEXT,
    EVALUATION_TEXT_WINDOWS,
    IMAGES,
    Region,
    static_model,
)

from ember.frontend.samples import Normalization  # noqa: E402
from ember.interpreters.accuracy_report import cosine  # noqa: E402
from ember.runtime.accelerator import Accelerator  # noqa: E402
from ember.runtime.frames import frame_from_rgb  # noqa: E402


DB_THRESHOLD = 0.3
"""PaddleOCR's DB post-processing binarizes the probability map at 0.3."""


def write_calibration_folder(folder: Path, calibration: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for region in CALIBRATION[calibration]:
        if region.box is None:
            link = folder / region.file
            if not link.exists():
                link.symlink_to(IMAGES / region.file)
            continue
        with Image.open(IMAGES / region.file) as image:
            crop = image.convert("RGB").crop(region.box)
            crop.save(folder / f"{Path(region.file).stem}_{'_'.join(map(str, region.box))}.png")


def rgb(region: Region, height: int, width: int) -> np.ndarray:
    with Image.open(IMAGES / region.file) as image:
        image = image.convert("RGB")
        if region.box is not None:
            image = image.crop(region.box)
        return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def evaluate(folder: Path, model_path: Path, per_sample: bool) -> dict[str, float]:
    accl = Accelerator(folder)
    if accl.normalization is None or accl.npu_inputs[0]["pixel_format"] == "none":
        raise SystemExit(f"{folder}: the binary does not take raw frames (no normalization known)")
    norm = Normalization(tuple(accl.normalization["mean"]), tuple(accl.normalization["std"]))
    (name, shape), = accl.model_inputs.items()
    model = static_model(model_path, tuple(shape))
    names = [o.name for o in model.graph.output]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    # the runtime returns any value it computed by name: the NPU's outputs (the logits) too
    logits = names[1:] if len(names) > 1 and names[1] in {d["name"] for d in accl.ebin.iodesc["outputs"]} else []
    accl.model_outputs = [*accl.model_outputs, *logits]
    squares = [Region(f, box) for f, box in EVALUATION_TEXT]
    regions = [Region(f) for f in EVALUATION_PHOTOS] + squares + (EVALUATION_TEXT_WINDOWS if logits else [])
    rows, masks = [], []
    for region in regions:
        pixels = rgb(region, shape[2], shape[3])
        expected = dict(zip(names, session.run(None, {name: norm.apply(pixels.astype(np.float32).transpose(2, 0, 1)[None])})))
        got = accl.run({name: frame_from_rgb(pixels, accl.npu_inputs[0]["pixel_format"])})
        rows.append([cosine(expected[n], got[n]) for n in [names[0], *logits]])
        if logits:
            masks.append((expected[names[0]] > DB_THRESHOLD, got[names[0]] > DB_THRESHOLD))
        if per_sample:
            print(region.name, " ".join(f"{c:.4f}" for c in rows[-1]), flush=True)
    table = np.array(rows)
    photo, square = np.array([r.box is None for r in regions]), np.array([r in squares for r in regions])
    held_out = photo | square  # the photographs and the two squares: the protocol's samples
    figures = {"final: all": table[held_out, 0].mean(), "final: text": table[square, 0].mean()}
    if logits:
        figures.update({"logits: all": table[held_out, 1].mean(), "logits: text": table[square, 1].mean()})
        ious = np.array([(a & b).sum() / (a | b).sum() if (a | b).any() else 1.0 for a, b in masks])
        figures["mask IoU: text"] = float(ious[square].mean())
        figures["no text in both: photographs"] = sum(not (a.any() or b.any()) for (a, b), p in zip(masks, photo) if p)
        figures["final: 12 text crops"] = table[~photo, 0].mean()
        figures["mask IoU: 12 text crops"] = float(ious[~photo].mean())
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="what ember-compile wrote")
    parser.add_argument("model", nargs="?", type=Path, help="the original float model")
    parser.add_argument("--calib-folder", type=Path, help="write the protocol's calibration images here and stop")
    parser.add_argument("--calibration", choices=sorted(CALIBRATION), default="text", help="which calibration set (default: text, the detector's)")
    parser.add_argument("--per-sample", action="store_true")
    args = parser.parse_args(argv)
    if args.calib_folder:
        write_calibration_folder(args.calib_folder, args.calibration)
        return 0
    if args.folder is None or args.model is None:
        parser.error("give OUTDIR and MODEL.onnx, or --calib-folder DIR")
    figures = evaluate(args.folder, args.model, args.per_sample)
    print(" | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
