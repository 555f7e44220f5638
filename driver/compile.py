"""The one-shot compilation flow behind `ember-compile`: stages, decisions, artifacts.

    import -> optimize (constant folding, shape inference, batch-norm folding, optional
    cross-layer equalization, normalization extraction) -> crop -> calibrate -> quantize -> accuracy -> lower
    (lower-quant-to-npu, npu-preproc, npu-allocate, npu-schedule, emit) -> simulate -> report

`Compiler(options, folder).run()` writes every artifact into `folder` (ember-compile passes
a temporary folder and moves the files into place only when every stage succeeded) and
returns the `Summary` the report and the log are made of. Each stage is timed.

Options come from the command line and the model script; where both say something the
command line wins (`--autocrop` / `--inputs` / `--outputs` / `--crop-config` replace the
script's crop, `--input-type` its `input_conversion`).

The NPU's input: when a normalization is known (extracted from the model, or the script's
`normalization(...)`, which wins) and the main part reads a 1x3xHxW graph input, the binary
takes raw uint8 frames (pixel format: `--input-type`, else the script's
`input_conversion`, else rgb) and PREPROC normalizes on the NPU. `--input-type float`
keeps the host normalizing and quantizing instead.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.dialects.func import FuncOp
from xdsl.printer import Printer

from ember.dialects.onnx import OnnxOp, value_name
from ember.frontend.model_script import ModelScript, load_model_script
from ember.frontend.onnx_export import export_model, graph_function, write_host_parts
from ember.frontend.onnx_import import import_model, load_onnx, parse_input_shapes
from ember.frontend.samples import InputSpec, Normalization, SampleSet, load_samples
from ember.support.atomic_output import atomic_output, write_bytes_atomic
from ember.support.diagnostics import EmberError

INPUT_TYPES = ("rgb", "bgr", "nv12", "float")
DEFAULT_METHOD, DEFAULT_PERCENTILE = "output_mse", 99.99
"""The calibration docs/quantize.md recommends (the best measured on both shared models)."""
GENERATED_SAMPLES = 8
REPORT_SAMPLES = 4
"""Samples the accuracy report and the end-to-end check run (the first calibration samples)."""


@dataclass
class CompileOptions:
    """What the user asked for (the command line of ember-compile)."""

    model: Path
    input_shapes: list[str] = field(default_factory=list)
    calib: str | None = None
    autocrop: bool = False
    crop_inputs: list[str] | None = None
    crop_outputs: list[str] | None = None
    crop_config: str | None = None
    script: str | None = None
    arch: str = "ember16"
    input_type: str | None = None
    equalize: bool = False
    """Cross-layer equalization after batch-norm folding (else the script's `equalization`)."""
    bias_correction: bool = False
    """Empirical bias correction after quantization (else the script's `bias_correction`)."""
    weight_rounding: str | None = None
    """nearest | gptq (None: the script's `weight_rounding`, else nearest)."""


@dataclass
class Stage:
    name: str
    seconds: float
    artifacts: list[str]
    note: str = ""


@dataclass
class Summary:
    """Everything the report and compile.log show."""

    model: str
    stem: str
    arch: str
    stages: list[Stage] = field(default_factory=list)
    decisions: list[tuple[str, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    placement: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """pre / NPU / post -> (node, type) in program order."""
    accuracy: Any = None
    stats: Any = None
    layer_macs: dict[str, int] = field(default_factory=dict)
    layer_compute_cycles: dict[str, int] = field(default_factory=dict)
    final_cosines: dict[str, float] = field(default_factory=dict)
    calibration_generated: bool = False
    iodesc: dict = field(default_factory=dict)


def _script_for(options: CompileOptions) -> ModelScript:
    return load_model_script(options.script) if options.script else ModelScript()


def _print_module(module: ModuleOp) -> str:
    stream = io.StringIO()
    Printer(stream).print_op(module)
    stream.write("\n")
    return stream.getvalue()


def _node_list(function: FuncOp) -> list[tuple[str, str]]:
    nodes = []
    for op in function.body.block.ops:
        if isinstance(op, OnnxOp) and op.ONNX_TYPE not in ("Constant",) and op.name != "onnx.initializer":
            nodes.append((op.node_name or (value_name(op.results[0]) if op.results else op.ONNX_TYPE), op.ONNX_TYPE))
    return nodes


class Compiler:
    """One compilation into `folder`; `on_stage(stage)` is called as each stage ends."""

    def __init__(self, options: CompileOptions, folder: Path, on_stage: Callable[[Stage], None] | None = None):
        self.options = options
        self.folder = folder
        self.on_stage = on_stage or (lambda stage: None)
        self.stem = options.model.stem
        self.summary = Summary(options.model.name, self.stem, options.arch)
        self.ctx = Context()

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.stem}{suffix}"

    def note(self, message: str) -> None:
        self.summary.messages.append(message)

    @contextlib.contextmanager
    def stage(self, name: str, *artifacts: str):
        """Time a stage; remarks on stderr and warnings it raises go to the log."""
        start = time.perf_counter()
        stderr = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr):
            warnings.simplefilter("always")
            yield
        for line in stderr.getvalue().splitlines():
            self.note(line)
        for warning in caught:
            text = str(warning.message)  # the quantizer's own warnings already name their stage
            self.note(text if text.startswith(f"{name}:") else f"{name}: {text}")
        stage = Stage(name, time.perf_counter() - start, [f"{self.stem}{a}" for a in artifacts])
        self.summary.stages.append(stage)
        self.on_stage(stage)

    # ------------------------------------------------------------------ the flow

    def run(self) -> Summary:
        options, summary = self.options, self.summary
        script = _script_for(options)
        if not options.model.is_file():
            raise EmberError(f"{options.model}: model file not found")
        if options.input_type is not None and options.input_type not in INPUT_TYPES:
            raise EmberError(f"--input-type must be one of {', '.join(INPUT_TYPES)}, not '{options.input_type}'")
        with self.stage("import", "_original_float.onnx"):
            module = import_model(load_onnx(options.model), parse_input_shapes(options.input_shapes), str(options.model))
            write_bytes_atomic(self.path("_original_float.onnx"), export_model(module).SerializeToString())
        module = self.optimize(module, options.equalize or script.equalize)
        from ember.passes.calibrate import input_specs

        specs = input_specs(module)
        model_outputs = [o.name for o in export_model(module).graph.output]
        normalization = self.normalization(module, script)
        module = self.crop(module, script)
        float_module = module.clone()
        main = graph_function(module)
        main_inputs = [value_name(a) for a in main.args]
        preproc = self.preproc_choice(script, normalization, specs, main_inputs)
        calibration_samples, samples, frames = self.calibrate(module, script, specs, normalization)
        self.quantize(module, script, calibration_samples)
        self.accuracy(float_module, module, samples)
        deploy = {
            "inputs": [{"name": s.name, "shape": list(s.shape)} for s in specs],
            "outputs": model_outputs,
            "normalization": None if normalization is None else {"mean": list(normalization.mean), "std": list(normalization.std)},
        }
        self.lower(module, float_module, preproc, normalization, deploy, script)
        self.simulate(float_module, samples, frames, preproc)
        return summary

    def optimize(self, module: ModuleOp, equalize: bool) -> ModuleOp:
        from ember.passes.cross_layer_equalize import CrossLayerEqualizePass
        from ember.passes.extract_normalization import ExtractNormalizationPass
        from ember.passes.fold_batchnorm import FoldBatchNormPass
        from ember.passes.onnx_constant_fold import OnnxConstantFoldPass
        from ember.passes.onnx_shape_inference import OnnxShapeInferencePass

        with self.stage("optimize", "_optimized_float.onnx"):
            passes = [OnnxConstantFoldPass(), OnnxShapeInferencePass(), FoldBatchNormPass()]
            # equalization needs the batch norms folded into the convolutions it rescales
            passes += [CrossLayerEqualizePass()] if equalize else []
            for p in (*passes, ExtractNormalizationPass(remarks=False)):
                p.apply(self.ctx, module)
            write_bytes_atomic(self.path("_optimized_float.onnx"), export_model(module).SerializeToString())
        self.summary.decisions.append(("equalization", "cross-layer equalization after batch-norm folding" if equalize else "none"))
        return module

    def normalization(self, module: ModuleOp, script: ModelScript) -> Normalization | None:
        from ember.passes.calibrate import recorded_normalization

        extracted = recorded_normalization(module)
        given = script.normalizations[0] if script.normalizations else None
        if given is not None:
            self.summary.decisions.append(("normalization", f"{given.script_line()} (model script)"))
            return Normalization(given.mean, given.std)
        if extracted is not None:
            line = f"normalization([{', '.join(f'{v:g}' for v in extracted.mean)}], [{', '.join(f'{v:g}' for v in extracted.std)}])"
            self.summary.decisions.append(("normalization", f"{line} (extracted from the model)"))
            return extracted
        self.summary.decisions.append(("normalization", "none: the model takes its input as given"))
        return None

    def crop(self, module: ModuleOp, script: ModelScript) -> ModuleOp:
        from ember.passes.autocrop import AutocropPass
        from ember.passes.crop import CropPass

        o = self.options
        cli = o.autocrop or o.crop_inputs is not None or o.crop_outputs is not None or o.crop_config is not None
        if cli:
            auto, inputs, outputs, config, source = o.autocrop, o.crop_inputs, o.crop_outputs, o.crop_config, "command line"
        else:
            auto, inputs, outputs, config, source = script.autocrop, script.crop_inputs, script.crop_outputs, None, "model script"
        with self.stage("crop"):
            if auto:
                AutocropPass().apply(self.ctx, module)
                how = f"autocrop ({source})"
            elif inputs is not None or outputs is not None or config is not None:
                CropPass(inputs=",".join(inputs or []), outputs=",".join(outputs or []), config=config or "").apply(self.ctx, module)
                how = f"crop ({source})"
            else:
                how = "none: the whole model runs on the NPU"
        boundary = module.attributes.get("onnx.crop")
        if isinstance(boundary, DictionaryAttr):
            parts = {k: ", ".join(n.data for n in v.data) for k, v in boundary.data.items() if isinstance(v, ArrayAttr)}
            how += f"; NPU inputs: {parts.get('inputs') or '-'}; NPU outputs: {parts.get('outputs') or '-'}"
        self.summary.decisions.append(("crop", how))
        for function in module.ops:
            if isinstance(function, FuncOp):
                part = function.attributes.get("onnx.part")
                name = part.data if isinstance(part, StringAttr) else "main"
                self.summary.placement[{"main": "NPU"}.get(name, name)] = _node_list(function)
        return module

    def preproc_choice(self, script: ModelScript, normalization: Normalization | None, specs: list[InputSpec],
                       main_inputs: list[str]) -> tuple[str, str] | None:
        """(input, pixel format) when the NPU normalizes raw frames itself, else None."""
        requested = self.options.input_type
        source = "--input-type"
        if requested is None and script.conversions:
            requested, source = script.conversions[0].pixel_format, "model script"
        by_name = {s.name: s for s in specs}
        image_inputs = [n for n in main_inputs if n in by_name and len(by_name[n].shape) == 4 and by_name[n].shape[:2] == (1, 3)]
        why = ""
        if requested == "float":
            why = "--input-type float"
        elif normalization is None and requested is None:
            why = "no normalization is known (give one in a model script)"
        elif len(main_inputs) != 1 or not image_inputs:
            why = "the NPU part does not read one 1x3xHxW graph input"
        if why:
            self.summary.decisions.append(("NPU input", f"int8 NHWC quantized on the host ({why})"))
            return None
        fmt = requested or "rgb"
        self.summary.decisions.append(
            ("NPU input", f"raw uint8 {fmt} frames of '{image_inputs[0]}'; PREPROC converts and normalizes on the NPU"
                          f" ({source if requested else 'default pixel format'})")
        )  # fmt: skip
        return image_inputs[0], fmt

    def calibrate(self, module: ModuleOp, script: ModelScript, specs: list[InputSpec], normalization: Normalization | None):
        """Calibrate; returns (all calibration samples, the report's samples as floats, their
        uint8 frames when they are images)."""
        from ember.passes.calibrate import calibrate, input_specs, record, write_quant_info

        method = script.calibration_method or DEFAULT_METHOD
        percentile = script.percentile or DEFAULT_PERCENTILE
        limit = script.calibration_size or 0
        main_specs = input_specs(module)
        with self.stage("calibrate", "_quant_info.json"):
            if self.options.calib:
                samples = load_samples(self.options.calib, main_specs, normalization, limit)
                source = f"{self.options.calib} ({len(samples)} samples)"
            else:
                samples = _generated_samples(main_specs, normalization, limit or GENERATED_SAMPLES)
                self.summary.calibration_generated = True
                source = f"GENERATED random data ({len(samples)} samples): accuracy is unmeasured; pass --calib"
            calibration = calibrate(module, samples, method, percentile)
            record(module, calibration)
            write_quant_info(self.path("_quant_info.json"), calibration)
        self.summary.decisions.append(("calibration", f"{method}" + (f" {percentile}" if method == "percentile" else "") + f" on {source}"))
        chosen = [sample for _, sample in zip(range(REPORT_SAMPLES), samples)]
        frames = None
        if normalization is not None and all(len(s.shape) == 4 and s.shape[1] == 3 for s in main_specs):
            frames = [{k: _to_frame(v, normalization) for k, v in sample.items()} for sample in chosen]
            # the frames are RGB; the binary takes them in its pixel format
        return samples, chosen, frames

    def quantize(self, module: ModuleOp, script: ModelScript, samples) -> None:
        from ember.frontend.qdq_export import export_qdq
        from ember.passes.calibrate import recorded_observed, recorded_ranges
        from ember.passes.quantize import quantize_module

        with self.stage("quantize", "_quantized.mlir", "_quantized.onnx"):
            correct = self.options.bias_correction or script.bias_correction
            gptq = (self.options.weight_rounding or script.weight_rounding or "nearest") == "gptq"
            # the samples are the ones calibration read, normalized as the script or model says
            quantize_module(
                module, recorded_ranges(module), script.float_nodes, samples, gptq, correct, script.int16_nodes,
                recorded_observed(module),
            )  # fmt: skip
            with atomic_output(self.path("_quantized.mlir")) as handle:
                handle.write(_print_module(module))
            write_bytes_atomic(self.path("_quantized.onnx"), export_qdq(module).SerializeToString())
        self.summary.decisions.append(("weight rounding", "GPTQ, on the calibration samples" if gptq else "nearest"))
        self.summary.decisions.append(("bias correction", "empirical, on the calibration samples" if correct else "none"))
        if script.float_nodes:
            self.summary.decisions.append(("precision", f"kept in float on the host: {', '.join(script.float_nodes)} (model script)"))
        if script.int16_nodes:
            self.summary.decisions.append(("precision", f"int16 results: {', '.join(script.int16_nodes)} (model script)"))

    def accuracy(self, float_module: ModuleOp, module: ModuleOp, samples: list[dict[str, np.ndarray]]) -> None:
        from ember.interpreters.accuracy_report import accuracy_report
        from ember.passes.calibrate import recorded_ranges

        with self.stage("accuracy", "_node_info.csv"):
            report = accuracy_report(export_model(float_module), module, samples, recorded_ranges(module))
            report.write_csv(self.path("_node_info.csv"))
        self.summary.accuracy = report

    def lower(self, module: ModuleOp, float_module: ModuleOp, preproc: tuple[str, str] | None,
              normalization: Normalization | None, deploy: dict, script: ModelScript) -> None:
        from ember.lowering.npu_to_ebin import ebin_from_module
        from ember.lowering.quant_to_npu import LowerQuantToNpuPass
        from ember.passes.npu_allocate import NpuAllocatePass
        from ember.passes.npu_preproc import NpuPreprocPass
        from ember.passes.npu_schedule import NpuSchedulePass
        from ember.target.ebin import to_bytes

        host = [f"_{p}.onnx" for p in ("pre", "post") if p in self.summary.placement]
        with self.stage("lower", ".ebin", *host):
            passes = [LowerQuantToNpuPass(self.options.arch)]
            if preproc is not None:
                norm = normalization or Normalization()
                passes.append(NpuPreprocPass(input=preproc[0], format=preproc[1], mean=norm.mean, std=norm.std))
            for p in (*passes, NpuAllocatePass(), NpuSchedulePass()):
                p.apply(self.ctx, module)
            options = {"arch": self.options.arch, "model": self.options.model.name, "deploy": deploy}
            ebin = ebin_from_module(module, options)
            write_bytes_atomic(self.path(".ebin"), to_bytes(ebin))
            write_host_parts(float_module, self.path(".onnx"))
        self.summary.iodesc = ebin.iodesc

    def simulate(self, float_module: ModuleOp, samples, frames, preproc) -> None:
        """Static figures of the binary, and the final outputs' cosine to float through
        pre -> NPU (simulator) -> post on the report samples."""
        from ember.interpreters.accuracy_report import cosine
        from ember.passes.calibrate import observing_session
        from ember.runtime.accelerator import Accelerator
        from ember.runtime.frames import frame_from_rgb
        from ember.target.cost import macs

        with self.stage("simulate"):
            accl = Accelerator(self.folder)
            sim = accl.simulator
            self.summary.stats = sim.stats()
            engines, cost = sim.schedule.engines, sim.schedule.cost
            for i, (insn, (_, node)) in enumerate(zip(sim.program, sim.ebin.debug)):
                node = node or "(none)"
                self.summary.layer_macs[node] = self.summary.layer_macs.get(node, 0) + macs(insn)
                if engines[i] == 1:
                    self.summary.layer_compute_cycles[node] = self.summary.layer_compute_cycles.get(node, 0) + int(cost[i])
            float_model = onnx_model(self.path("_optimized_float.onnx"))
            session = observing_session(float_model, [])
            names = [o.name for o in session.get_outputs()]
            totals: dict[str, list[float]] = {n: [] for n in accl.model_outputs}
            feeds = samples
            if preproc is not None:
                feeds = [{k: frame_from_rgb(v, preproc[1]) for k, v in f.items()} for f in frames]
            for sample, feed in zip(samples, feeds):
                expected = dict(zip(names, session.run(names, sample)))
                got = accl.run(feed)
                for name in totals:
                    totals[name].append(cosine(expected[name], got[name]))
            self.summary.final_cosines = {n: float(np.mean(v)) for n, v in totals.items()}


def onnx_model(path: Path):
    import onnx

    return onnx.load(str(path))


def _to_frame(x: np.ndarray, normalization: Normalization) -> np.ndarray:
    """The uint8 RGB frame [1, H, W, 3] an image sample was normalized from."""
    mean = np.broadcast_to(np.asarray(normalization.mean, dtype=np.float64), (3,)).reshape(1, 3, 1, 1)
    std = np.broadcast_to(np.asarray(normalization.std, dtype=np.float64), (3,)).reshape(1, 3, 1, 1)
    pixels = np.clip(np.rint(x.astype(np.float64) * std + mean), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def _generated_samples(specs: list[InputSpec], normalization: Normalization | None, count: int) -> SampleSet:
    """Random uint8 images through the normalization for image inputs, else N(0, 1)."""
    rng = np.random.default_rng(0)
    arrays = []
    for _ in range(count):
        sample = {}
        for spec in specs:
            if normalization is not None and len(spec.shape) == 4:
                sample[spec.name] = normalization.apply(rng.integers(0, 256, size=spec.shape).astype(np.float32))
            else:
                sample[spec.name] = rng.standard_normal(spec.shape).astype(np.float32)
        arrays.append(sample)
    return SampleSet("generated", arrays, lambda sample: sample)
