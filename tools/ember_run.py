"""`ember-run`: run a compiled model: pre ONNX -> NPU (simulator) -> post ONNX.

    ember-run OUTDIR --input NAME=FILE(.npy|image) ... --output-dir DIR [--reference]

OUTDIR is what ember-compile wrote. An `.npy` is passed as it is (float NCHW, or for a
raw-frame input the uint8 frame). An image (PNG/JPEG/BMP) is read with Pillow as RGB and
resized (bilinear) to the input's H x W; for a raw-frame input it becomes the uint8 frame in
the binary's pixel format, otherwise it is normalized as the model was compiled and laid out
NCHW. `--reference` runs the NPU part with the quant reference interpreter instead of the
simulator. Writes one `<output name>.npy` per model output ('/' in a name becomes '_'),
atomically; a failing run writes nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ember.support.diagnostics import EmberError, run_tool


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ember-run", description="Run a model compiled by ember-compile.")
    parser.add_argument("folder", type=Path, help="the output folder of ember-compile")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE", help="an input (.npy or image), repeatable")
    parser.add_argument("--output-dir", required=True, type=Path, help="where to write <output name>.npy")
    parser.add_argument("--reference", action="store_true", help="run the NPU part on the quant reference interpreter")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    return parser


def output_file_name(name: str) -> str:
    """The file an output is written to."""
    return name.replace("/", "_") + ".npy"


def read_input(accl, name: str, path: Path) -> np.ndarray:
    """The array `Accelerator.run` takes for input `name` from a file."""
    from ember.frontend.samples import IMAGE_SUFFIXES, Normalization, np_load

    known = set(accl.model_inputs) | {d["name"] for d in accl.npu_inputs}
    if name not in known:
        raise EmberError(f"--input {name}=...: the model has no input '{name}'; its inputs are {', '.join(sorted(known))}")
    if not path.is_file():
        raise EmberError(f"--input {name}={path}: file not found")
    if path.suffix.lower() == ".npy":
        return np_load(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise EmberError(f"--input {name}={path}: expected a .npy or an image (.png/.jpg/.bmp)")
    frame_desc = next((d for d in accl.npu_inputs if d["name"] == name and d["pixel_format"] != "none"), None)
    shape = accl.model_inputs.get(name)
    if frame_desc is not None:
        h = frame_desc["shape"][1] * 2 // 3 if frame_desc["pixel_format"] == "nv12" else frame_desc["shape"][1]
        w = frame_desc["shape"][-1] if frame_desc["pixel_format"] == "nv12" else frame_desc["shape"][2]
    elif shape is not None and len(shape) == 4 and shape[1] == 3:
        h, w = shape[2], shape[3]
    else:
        raise EmberError(f"--input {name}={path}: input '{name}' does not take images; pass a .npy")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB").resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise EmberError(f"--input {name}={path}: not a readable image ({err})") from None
    if frame_desc is not None:
        from ember.runtime.frames import frame_from_rgb

        return frame_from_rgb(rgb, frame_desc["pixel_format"])
    norm = accl.normalization or {"mean": [0.0], "std": [1.0]}
    pixels = rgb.astype(np.float32).transpose(2, 0, 1)[None]
    return Normalization(tuple(norm["mean"]), tuple(norm["std"])).apply(pixels)


def _main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    from ember.runtime.accelerator import Accelerator
    from ember.support.atomic_output import atomic_output

    accl = Accelerator(args.folder, reference=args.reference)
    inputs = {}
    for spec in args.input:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise EmberError(f"--input '{spec}': expected NAME=FILE")
        if name in inputs:
            raise EmberError(f"--input '{name}': given twice")
        inputs[name] = read_input(accl, name, Path(file))
    outputs = accl.run(inputs)
    for name, value in outputs.items():
        with atomic_output(args.output_dir / output_file_name(name), "wb") as handle:
            np.save(handle, value)
    for name, value in outputs.items():
        flat = value.ravel()
        top = f" = {np.array2string(flat, precision=4)}" if flat.size <= 10 else ""
        print(f"{name}: {'x'.join(map(str, value.shape))} {value.dtype}{top} -> {args.output_dir / output_file_name(name)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("ember-run", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
