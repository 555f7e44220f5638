"""Simulator speed: Ember's NPU simulator against onnxruntime float32 on the same model part.

    python benchmarks/sim_speed.py [--models det640 det320 cls] [--repeat 7] [--out FILE.md]

For each case, compiles the shared PaddleOCR model with the project's own pipeline
(fold-batchnorm, extract-normalization, constant folding, shape inference, the crop, then
calibrate on two shared photographs, quantize, compile_to_ebin) and exports the float
main part the binary implements (after the same graph passes and crop, before
quantization). One photograph (`chelsea.png`, resized to the model input) feeds both: the
normalized float tensor goes to onnxruntime, its int8 quantization (IODESC scale and zero
point, NHWC) to the simulator. In the same process, after one warm-up run each, the
engines run in turn `--repeat` times; the table gives the median wall-clock ms per
inference of each (and the simulator's CPU time, which other processes on the machine
disturb less), the ratio, the model part's MACs, and the cosine of the dequantized
simulator output to the float output (a sanity figure: int8 against float32).

onnxruntime runs with its default session options (intra-op threads = one per physical
core), and for reference with one intra-op thread. The simulator is single-threaded: it
runs BLAS on one thread (see `ember.support.blas.single_threaded_blas`).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from xdsl.context import Context

from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model, load_onnx, parse_input_shapes
from ember.frontend.samples import InputSpec, Normalization, load_samples
from ember.lowering.npu_to_ebin import compile_to_ebin
from ember.passes.autocrop import AutocropPass
from ember.passes.calibrate import CalibratePass
from ember.passes.crop import CropPass
from ember.passes.extract_normalization import ExtractNormalizationPass
from ember.passes.fold_batchnorm import FoldBatchNormPass
from ember.passes.onnx_constant_fold import OnnxConstantFoldPass
from ember.passes.onnx_shape_inference import OnnxShapeInferencePass
from ember.passes.quantize import QuantizePass
from ember.target.ebin import parse, to_bytes
from ember.target.simulator import Simulator

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHOTO = "chelsea.png"
IMAGENET = Normalization((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
SETTLE_S = 0.1
"""Pause before each timed run: onnxruntime's idle pool threads spin for a while after a
run and would otherwise compete for the cores with (and bill CPU time to) the next run."""


@dataclass(frozen=True)
class Case:
    key: str
    file: str
    shape: tuple[int, int, int, int]
    normalization: Normalization
    crop: str
    """The crop's output tensor, or "" for autocrop."""


CASES = {
    "det640": Case("det640", "ppocrv4_det.onnx", (1, 3, 640, 640), IMAGENET, "batch_norm_0.tmp_4"),
    "det320": Case("det320", "ppocrv4_det.onnx", (1, 3, 320, 320), IMAGENET, "batch_norm_0.tmp_4"),
    "cls": Case("cls", "ppocr_mobile_v2_cls.onnx", (1, 3, 48, 192), Normalization((127.5,), (127.5,)), ""),
}


def compile_case(case: Case) -> tuple[bytes, bytes]:
    """(the `.ebin`, the float main part as ONNX bytes)."""
    path = SHARED / "models" / case.file
    module = import_model(load_onnx(str(path)), parse_input_shapes(["x=" + ",".join(map(str, case.shape))]), source=str(path))
    ctx = Context()
    cut = CropPass(outputs=case.crop) if case.crop else AutocropPass(remarks=False)
    for p in (FoldBatchNormPass(), ExtractNormalizationPass(remarks=False), OnnxConstantFoldPass(), OnnxShapeInferencePass(), cut):
        p.apply(ctx, module)
    float_main = export_model(module, "main").SerializeToString()
    n = case.normalization
    for p in (CalibratePass(data=str(SHARED / "images"), limit=2, mean=n.mean, std=n.std), QuantizePass()):
        p.apply(ctx, module)
    return to_bytes(compile_to_ebin(module)), float_main


def quantize_input(x: np.ndarray, desc: dict) -> np.ndarray:
    """The int8 tensor the host hands the NPU for the float input `x` (NCHW)."""
    q = np.clip(np.round(x / np.float32(desc["scale"])) + desc["zero_point"], -128, 127).astype(np.int8)
    return np.ascontiguousarray(q.transpose(0, 2, 3, 1)) if desc["layout"] == "NHWC" else q


def dequantize_output(y: np.ndarray, desc: dict, shape: tuple[int, ...]) -> np.ndarray:
    real = (y.astype(np.float32) - desc["zero_point"]) * np.float32(desc["scale"])
    return (real.transpose(0, 3, 1, 2) if desc["layout"] == "NHWC" else real).reshape(shape)


def measure(case: Case, repeat: int) -> dict:
    """Compile, then time both engines alternately in this process."""
    start = time.perf_counter()
    data, float_main = compile_case(case)
    compile_s = time.perf_counter() - start
    sim = Simulator(parse(data, f"{case.key}.ebin"))
    session = ort.InferenceSession(float_main, providers=["CPUExecutionProvider"])
    single = ort.SessionOptions()
    single.intra_op_num_threads = 1
    session_1t = ort.InferenceSession(float_main, single, providers=["CPUExecutionProvider"])
    (ort_input,) = session.get_inputs()
    (x_desc,) = sim.ebin.iodesc["inputs"]
    (y_desc,) = sim.ebin.iodesc["outputs"]
    photo = load_samples(SHARED / "images", [InputSpec(ort_input.name, case.shape)], case.normalization, files=[PHOTO])
    (x,) = next(iter(photo)).values()
    feed_sim = {x_desc["name"]: quantize_input(x, x_desc)}
    feed_ort = {ort_input.name: x}

    (reference,) = session.run(None, feed_ort)
    simulated = dequantize_output(sim.run(feed_sim)[y_desc["name"]], y_desc, reference.shape)
    cosine = float(np.dot(reference.ravel(), simulated.ravel()) / (np.linalg.norm(reference) * np.linalg.norm(simulated)))
    session_1t.run(None, feed_ort)
    runs = {"sim": lambda: sim.run(feed_sim), "ort": lambda: session.run(None, feed_ort),
            "ort_1t": lambda: session_1t.run(None, feed_ort)}  # fmt: skip
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: list[float] = []
    for _ in range(repeat):
        for key, run in runs.items():
            time.sleep(SETTLE_S)
            t, c = time.perf_counter(), time.process_time()
            run()
            wall[key].append(time.perf_counter() - t)
            if key == "sim":
                cpu.append(time.process_time() - c)
    stats = sim.stats()
    ms = {k: 1000 * float(np.median(v)) for k, v in wall.items()}
    return dict(
        case=case.key, input="x".join(map(str, case.shape)), compile_s=compile_s, macs=stats.macs,
        instructions=sum(stats.instructions.values()), sim_ms=ms["sim"], sim_cpu_ms=1000 * float(np.median(cpu)),
        ort_ms=ms["ort"], ort_1t_ms=ms["ort_1t"], cosine=cosine,
    )  # fmt: skip


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    threads = ort.SessionOptions().intra_op_num_threads
    return (
        f"{platform.node() or 'host'}: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}; "
        f"Python {platform.python_version()}, numpy {np.__version__}, onnxruntime {ort.__version__} "
        f"(intra_op_num_threads {threads} = default, i.e. one per physical core); "
        f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )


def table(rows: list[dict]) -> str:
    lines = [
        "| model part | input | MMACs | instructions | simulator ms (CPU ms) | onnxruntime ms | ratio |"
        " onnxruntime 1 thread ms | ratio to 1 thread | cosine |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['input']} | {r['macs'] / 1e6:.0f} | {r['instructions']} |"
            f" {r['sim_ms']:.1f} ({r['sim_cpu_ms']:.1f}) | {r['ort_ms']:.1f} | **{r['sim_ms'] / r['ort_ms']:.2f}x** |"
            f" {r['ort_1t_ms']:.1f} | {r['sim_ms'] / r['ort_1t_ms']:.2f}x | {r['cosine']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(CASES), default=["det640", "det320", "cls"])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs of each engine (median reported)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # calibration / quantization remarks are not the point here
    rows = []
    for key in args.models:
        rows.append(measure(CASES[key], args.repeat))
        r = rows[-1]
        print(f"{key}: compiled in {r['compile_s']:.1f} s; simulator {r['sim_ms']:.1f} ms, onnxruntime {r['ort_ms']:.1f} ms",
              flush=True)  # fmt: skip
    report = f"{machine()}\n\nmedian of {args.repeat} runs each, taking turns, one process\n\n{table(rows)}"
    print(report, end="")
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
