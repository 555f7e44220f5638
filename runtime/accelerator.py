"""The host runtime: pre ONNX (onnxruntime) -> NPU -> post ONNX (onnxruntime).

    accl = Accelerator("out/")                       # the folder ember-compile wrote
    outputs = accl.run({"x": frame})                 # direct: one inference

    accl = Accelerator("out/")                       # streaming, in the spirit of MemryX's AsyncAccl
    accl.connect_input(next_frame)                   # () -> {name: array}, or None at the end
    accl.connect_output(consume)                     # (outputs) -> None
    accl.wait()

The NPU boundary follows the binary's IODESC: a PREPROC input takes the raw uint8 frame
(`[1, H, W, 3]` rgb/bgr, or `[1, H*3/2, W]` nv12; `[H, W, 3]` is accepted too); any other
input takes float NCHW that the runtime quantizes (ONNX QuantizeLinear, to the IODESC
dtype: int8, or int16 for an input that only convolutions read) and lays out NHWC.
Outputs are dequantized and laid back out NCHW. The NPU is the simulator, or with
`reference=True` the quant reference interpreter on `<p>_quantized.mlir`; the two agree
bit for bit at the integer boundary.

Values flow by ONNX tensor name: graph inputs feed the pre part (when there is one), its
outputs and the graph inputs feed the NPU, and everything so far feeds the post part. The
result holds the model's outputs, in the model's order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ember.interpreters.quant_reference import dequantize, quantize
from ember.support.diagnostics import EmberError
from ember.target import ebin as ebin_file
from ember.target.ebin import Ebin
from ember.target.simulator import Simulator

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Artifacts:
    """The files of one compiled model in an ember-compile output folder."""

    folder: Path
    stem: str

    @classmethod
    def find(cls, folder: str | Path) -> Artifacts:
        root = Path(folder)
        if not root.is_dir():
            raise EmberError(f"{root}: not a folder; pass the output folder of ember-compile")
        binaries = sorted(root.glob("*.ebin"))
        if len(binaries) != 1:
            raise EmberError(f"{root}: expected one .ebin written by ember-compile, found {len(binaries)}")
        return cls(root, binaries[0].stem)

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.stem}{suffix}"


def _session(model: onnx.ModelProto | str | Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else Path(model).read_bytes()
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        source = "the host part" if isinstance(model, onnx.ModelProto) else str(model)
        proto = model if isinstance(model, onnx.ModelProto) else onnx.ModelProto.FromString(data)
        custom = next((n for n in proto.graph.node if n.domain not in ("", "ai.onnx")), None)
        if custom is not None:
            raise EmberError(
                f"{source}: node '{custom.name}' ({custom.domain}:{custom.op_type}) is a custom op onnxruntime does not know;"
                " run this part with a runtime that registers it"
            ) from None
        raise EmberError(f"{source}: onnxruntime cannot load it ({str(err).strip().splitlines()[0]})") from None


class _ReferenceNpu:
    """The quant reference interpreter behind the same integer boundary as the simulator."""

    def __init__(self, mlir_path: Path, ebin: Ebin):
        from xdsl.dialects.builtin import ModuleOp

        from ember.lowering.quant_to_npu import main_function
        from ember.tools.ember_opt import EmberOptMain

        if not mlir_path.exists():
            raise EmberError(f"{mlir_path}: missing; --reference runs the quantized MLIR that ember-compile writes")
        with open(mlir_path, "rb") as stream:
            module = EmberOptMain([str(mlir_path)]).parse_chunk(stream, "mlir")
        assert module is not None
        self.module = ModuleOp([main_function(module).clone()])
        self.ebin = ebin

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        from ember.interpreters.quant_reference import run_quant_module

        from ember.dialects import quant
        from ember.lowering.quant_to_npu import main_function

        floats = {}
        for desc in self.ebin.iodesc["inputs"]:
            q = npu_input(desc, inputs[desc["name"]])
            floats[desc["name"]] = dequantize(q.transpose(0, 3, 1, 2) if q.ndim == 4 else q, desc["scale"], desc["zero_point"])
        captured: dict[Any, np.ndarray] = {}

        def observe(op, results) -> None:
            for result, value in zip(op.results, results):
                captured[result] = value

        run_quant_module(self.module, floats, observe)
        function = main_function(self.module)
        returned = function.body.block.last_op.operands
        names = [d["name"] for d in self.ebin.iodesc["outputs"]]
        out = {}
        for name, value in zip(names, returned, strict=True):
            if isinstance(value.owner, quant.DequantizeOp):
                value = value.owner.input
            q = np.asarray(captured[value])
            out[name] = np.ascontiguousarray(q.transpose(0, 2, 3, 1)) if q.ndim == 4 else q
        return out


def npu_input(desc: Mapping[str, Any], value: np.ndarray) -> np.ndarray:
    """The int8 (or int16) NHWC tensor the NPU computes on for an input value as `run_npu`
    takes it (through the PREPROC tables for a raw-frame input)."""
    if desc["pixel_format"] == "none":
        return value
    from ember.frontend.samples import Normalization
    from ember.passes.npu_preproc import preproc_tables
    from ember.target import kernels
    from ember.target.isa import ChannelOrder, PixelFormat

    norm = desc["normalization"]
    tables = preproc_tables(Normalization(tuple(norm["mean"]), tuple(norm["std"])), desc["scale"], desc["zero_point"],
                            desc.get("normalized_dtype", "int8"))
    fmt = PixelFormat[desc["pixel_format"].upper()]
    frame = value[0]
    if fmt == PixelFormat.NV12:
        h = frame.shape[0] * 2 // 3
        y = kernels.preproc(frame[:h], frame[h:].reshape(h // 2, -1, 2), fmt, ChannelOrder.RGB, tables)
    else:
        y = kernels.preproc(frame, None, fmt, ChannelOrder.RGB, tables)
    return y[None]


class Accelerator:
    """A compiled model ready to run: host parts on onnxruntime, the main part on the NPU.

    `folder`: what ember-compile wrote. `reference=True` runs the main part with the quant
    reference interpreter instead of the simulator."""

    def __init__(self, folder: str | Path, reference: bool = False):
        self.artifacts = Artifacts.find(folder)
        ebin_path = self.artifacts.path(".ebin")
        self.ebin = ebin_file.load(ebin_path)
        self.simulator = Simulator(self.ebin, str(ebin_path))
        self.reference = _ReferenceNpu(self.artifacts.path("_quantized.mlir"), self.ebin) if reference else None
        deploy = self.ebin.meta.get("options", {}).get("deploy", {})
        self.model_inputs: dict[str, list[int]] = {i["name"]: i["shape"] for i in deploy.get("inputs", [])}
        self.model_outputs: list[str] = list(deploy.get("outputs", []))
        self.normalization: dict | None = deploy.get("normalization")
        self._pre = self._post = None
        for part in ("pre", "post"):
            path = self.artifacts.path(f"_{part}.onnx")
            if path.exists():
                self._set_part(part, path)
        self._input_callback: Callable[[], Mapping[str, np.ndarray] | None] | None = None
        self._output_callbacks: list[Callable[[Arrays], None]] = []
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    # --------------------------------------------------------------- host parts

    def _set_part(self, part: str, model: onnx.ModelProto | str | Path | None) -> None:
        setattr(self, f"_{part}", None if model is None else _session(model))

    def set_preprocessing_model(self, model: onnx.ModelProto | str | Path | None) -> None:
        """The ONNX model run on the host before the NPU (ember-compile's `_pre.onnx`)."""
        self._set_part("pre", model)

    def set_postprocessing_model(self, model: onnx.ModelProto | str | Path | None) -> None:
        """The ONNX model run on the host after the NPU (ember-compile's `_post.onnx`)."""
        self._set_part("post", model)

    # --------------------------------------------------------------------- NPU

    @property
    def npu_inputs(self) -> list[dict[str, Any]]:
        """IODESC of the binary's inputs."""
        return self.ebin.iodesc["inputs"]

    def _to_npu(self, desc: Mapping[str, Any], value: np.ndarray) -> np.ndarray:
        name, shape = desc["name"], list(desc["shape"])
        value = np.asarray(value)
        if desc["pixel_format"] != "none":
            if list(value.shape) == shape[1:]:
                value = value[None]
            if value.dtype != np.uint8 or list(value.shape) != shape:
                raise EmberError(
                    f"input '{name}': the NPU takes raw {desc['pixel_format']} uint8 frames of shape {shape},"
                    f" got {list(value.shape)} {value.dtype}"
                )
            return np.ascontiguousarray(value)
        logical = [shape[0], shape[3], shape[1], shape[2]] if desc["layout"] == "NHWC" else shape
        if list(value.shape) != logical or not np.issubdtype(value.dtype, np.floating):
            raise EmberError(f"input '{name}': expected float32 of shape {logical}, got {list(value.shape)} {value.dtype}")
        if not np.isfinite(value).all():
            raise EmberError(f"input '{name}': contains NaN or Inf; the NPU quantizes finite values only")
        info = np.iinfo(desc["dtype"])  # int8, or int16 for an input only convolutions read
        q = quantize(value, desc["scale"], desc["zero_point"], None, info.min, info.max)
        return np.ascontiguousarray(q.transpose(0, 2, 3, 1)) if desc["layout"] == "NHWC" else q

    def run_npu(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """The NPU alone at its integer boundary: IODESC-shaped arrays in and out."""
        return self.reference.run(inputs) if self.reference else self.simulator.run(inputs)

    # --------------------------------------------------------------------- run

    def run(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """One inference: the model's outputs by name."""
        known = set(self.model_inputs) or {d["name"] for d in self.npu_inputs}
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise EmberError(f"input '{unknown[0]}': the model has no such input; its inputs are {', '.join(sorted(known))}")
        values: Arrays = dict(inputs)
        if self._pre is not None:
            values.update(self._run_session(self._pre, values))
        npu_in = {}
        for desc in self.npu_inputs:
            if desc["name"] not in values:
                raise EmberError(f"input '{desc['name']}': missing; the model's inputs are {', '.join(sorted(known))}")
            npu_in[desc["name"]] = self._to_npu(desc, values[desc["name"]])
        for desc, (name, q) in zip(self.ebin.iodesc["outputs"], self.run_npu(npu_in).items(), strict=True):
            real = dequantize(q, desc["scale"], desc["zero_point"])
            values[name] = real.transpose(0, 3, 1, 2) if desc["layout"] == "NHWC" else real
        if self._post is not None:
            values.update(self._run_session(self._post, values))
        names = self.model_outputs or [d["name"] for d in self.ebin.iodesc["outputs"]]
        return {name: values[name] for name in names}

    @staticmethod
    def _run_session(session, values: Mapping[str, np.ndarray]) -> Arrays:
        feed = {i.name: values[i.name] for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed)))

    # --------------------------------------------------------------- streaming

    def connect_input(self, callback: Callable[[], Mapping[str, np.ndarray] | None]) -> None:
        """Stream inputs: `callback()` returns the next inputs, or None when done. Inference
        starts at once on a worker thread; results go to the connected output callbacks."""
        self._input_callback = callback
        thread = threading.Thread(target=self._stream, name="ember-accelerator", daemon=True)
        self._threads.append(thread)
        thread.start()

    def connect_output(self, callback: Callable[[Arrays], None]) -> None:
        """Receive each inference's outputs, in input order. Connect before `connect_input`."""
        self._output_callbacks.append(callback)

    def _stream(self) -> None:
        try:
            assert self._input_callback is not None
            while (inputs := self._input_callback()) is not None:
                outputs = self.run(inputs)
                for callback in self._output_callbacks:
                    callback(outputs)
        except BaseException as err:  # noqa: BLE001 - re-raised in wait()
            self._errors.append(err)

    def wait(self) -> None:
        """Block until the input callback returned None; re-raise a streaming error."""
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self._errors:
            raise self._errors.pop(0)
