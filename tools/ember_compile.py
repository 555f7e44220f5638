"""`ember-compile`: ONNX model in, NPU binary, host parts and a report out.

    ember-compile MODEL.onnx -o OUTDIR [--input-shape NAME=D,D,..]... [--calib PATH]
        [--autocrop | --inputs T,.. --outputs T,.. | --crop-config FILE.json]
        [--script FILE] [--arch NAME] [--input-type rgb|bgr|nv12|float] [--equalize] [--bias-correction]
        [--weight-rounding nearest|gptq]

Writes, for the model file's stem `<p>`: `<p>_original_float.onnx`, `<p>_optimized_float.onnx`,
`<p>_quant_info.json`, `<p>_quantized.mlir`, `<p>_quantized.onnx` (QDQ), `<p>_node_info.csv`,
`<p>.ebin`, `<p>_pre.onnx` / `<p>_post.onnx` / `<p>_crop.json` when the model is cropped,
`<p>_report.html` and `compile.log` (the flow: `ember.driver.compile`). Everything is
written into a temporary folder beside OUTDIR and moved into OUTDIR only when every stage
succeeded: a failing compilation leaves no file behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ember.support.diagnostics import EmberError, run_tool


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ember-compile",
        description="Compile an ONNX model for the Ember NPU: binary, host pre/post ONNX parts, report.",
    )
    parser.add_argument("model", type=Path, help="the ONNX model")
    parser.add_argument("-o", "--output-dir", required=True, type=Path, help="folder for the artifacts")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=D,D,...",
                        help="static shape for a graph input with dynamic dimensions (repeatable)")  # fmt: skip
    parser.add_argument("--calib", metavar="PATH",
                        help="calibration data: a folder of images or .npy files, or an .npz (default: generated data,"
                             " accuracy unmeasured)")  # fmt: skip
    crop = parser.add_mutually_exclusive_group()
    crop.add_argument("--autocrop", action="store_true", help="keep host pre/post-processing off the NPU automatically")
    crop.add_argument("--crop-config", metavar="FILE.json", help='crop points {"inputs": [...], "outputs": [...]}')
    parser.add_argument("--inputs", metavar="T,..", help="crop: tensors where the NPU part starts")
    parser.add_argument("--outputs", metavar="T,..", help="crop: tensors where the NPU part ends")
    parser.add_argument("--script", metavar="FILE", help="model script (normalization, input conversion, crop, quantization)")
    parser.add_argument("--arch", default="ember16", help="NPU arch preset (default: ember16)")
    parser.add_argument("--input-type", choices=("rgb", "bgr", "nv12", "float"),
                        help="runtime input: raw frames normalized on the NPU, or float normalized on the host")  # fmt: skip
    parser.add_argument("--equalize", action="store_true",
                        help="cross-layer equalization after batch-norm folding (helps PP-OCR detectors, not every model)")  # fmt: skip
    parser.add_argument("--bias-correction", action="store_true",
                        help="correct each layer's int32 bias by its mean quantization error on the calibration samples")  # fmt: skip
    parser.add_argument("--weight-rounding", choices=("nearest", "gptq"),
                        help="int8 weight rounding: nearest (default) or GPTQ on the calibration samples' input statistics")  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    return parser


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def _move_into(staging: Path, outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    moved = []
    for item in sorted(staging.iterdir()):
        target = outdir / item.name
        os.replace(item, target)
        moved.append(target)
    return moved


def _main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    from rich.console import Console

    from ember.driver.compile import CompileOptions, Compiler, Stage
    from ember.driver.report import compile_log, stage_table, write_report

    if (args.inputs or args.outputs) and (args.autocrop or args.crop_config):
        raise EmberError("--inputs/--outputs, --autocrop and --crop-config are alternatives; give one")
    options = CompileOptions(
        model=args.model, input_shapes=args.input_shape, calib=args.calib, autocrop=args.autocrop,
        crop_inputs=_names(args.inputs), crop_outputs=_names(args.outputs), crop_config=args.crop_config,
        script=args.script, arch=args.arch, input_type=args.input_type, equalize=args.equalize,
        bias_correction=args.bias_correction, weight_rounding=args.weight_rounding,
    )  # fmt: skip
    # progress goes to a terminal's stderr; the summary to stdout; an error is then the only line on stderr
    progress = Console(stderr=True, highlight=False, quiet=not sys.stderr.isatty())
    console = Console(highlight=False)
    outdir: Path = args.output_dir
    if outdir.exists() and not outdir.is_dir():
        raise EmberError(f"{outdir}: exists and is not a folder")
    outdir.absolute().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.absolute().parent))
    try:

        def on_stage(stage: Stage) -> None:
            progress.print(f"[green]✓[/] {stage.name:<10} {stage.seconds:7.2f} s  {' '.join(stage.artifacts)}")

        progress.print(f"[bold]ember-compile[/] {args.model} -> {outdir}/")
        summary = Compiler(options, staging, on_stage).run()
        report = write_report(summary, staging / f"{summary.stem}_report.html")
        (staging / "compile.log").write_text(compile_log(summary))
        moved = _move_into(staging, outdir)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
    for line in summary.messages:
        console.print(f"[dim]{line}[/]", overflow="fold")
    console.print(stage_table(summary))
    for name, value in summary.final_cosines.items():
        console.print(f"final output '{name}': cosine to float {value:.4f} (simulator, {len(summary.accuracy.outputs[0].cos_quantized)} samples)")
    if summary.calibration_generated:
        console.print("[bold red]WARNING: calibrated on GENERATED data (no --calib): accuracy is unmeasured.[/]")
    console.print(f"[bold]{len(moved)} artifacts in {outdir}/[/]; report: {outdir / report.name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("ember-compile", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
