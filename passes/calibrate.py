"""`calibrate`: run the float model on samples and record a range for every float tensor.

    calibrate{data="images/" method=percentile percentile=99.99 mean=127.5 std=127.5 output="m_quant_info.json"}

The module is exported to ONNX with every float tensor (graph inputs and the float
results of every node) added as a graph output, and onnxruntime runs it over the samples
(`ember.frontend.samples`: `.npy` folder, `.npz`, or images normalized with `mean`/`std`,
by default the normalization `extract-normalization` recorded on the input).

Range estimators (`method`), all on the observed distribution of each tensor:
- `minmax`: the observed minimum and maximum;
- `percentile`: the `100 - percentile` and `percentile` quantiles (two-sided);
- `mse`: the range `a * [min, max]`, a in (0, 1], whose int8 quantization has the least
  mean squared error over the observed histogram;
- `entropy`: the same family, least KL divergence between the histogram and its
  255-level quantization (TensorRT's criterion);
- `output_mse`: the range whose quantization least disturbs what the tensor's consumer
  computes. For a tensor read only by a chain of elementwise ops of itself (what `quantize`
  turns into a 256-entry table, e.g. the pre-activation of a HardSwish), the range
  `[a * min, b * max]` with the least MSE of the chain's float64 output over the histogram:
  HardSwish is 0 below -3, so its input range need not reach -96; other tensors feed
  linear ops, and take `mse`'s range.
Percentile, MSE, entropy and output_mse use a second run over the samples that fills a histogram of
`bins` bins over each tensor's observed [min, max].

Where the ranges live: the module attribute `ember.calibration`, a dictionary with
`method`, `data` (the sample source), `ranges`, which maps ONNX tensor names to
`array<f64: min, max>`, and `observed`, the observed extremes in the same form (the range
of a tensor `quantize` makes int16: with 65536 levels, clipping costs more than the
rounding it saves). `quantize` reads it. With `output=...` the same ranges, with the
observed extremes, are written as JSON (`*_quant_info.json`).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, DictionaryAttr, Float32Type, ModuleOp, StringAttr, TensorType, f64
from xdsl.passes import ModulePass

from ember.dialects.dense import numpy_from_dense
from ember.dialects.onnx import NODE_NAME, CustomOp, InitializerOp, OnnxOp, value_name
from ember.frontend.onnx_export import NORMALIZATION, export_model, graph_function
from ember.interpreters.mixed_runner import ORT_IR_VERSION
from ember.frontend.samples import InputSpec, Normalization, SampleSet, load_samples
from ember.support.atomic_output import atomic_output
from ember.support.diagnostics import EmberError

CALIBRATION_ATTR = "ember.calibration"
METHODS = ("minmax", "percentile", "mse", "entropy", "output_mse")
Range = tuple[float, float]


# ------------------------------------------------------------------------- the model


def input_specs(module: ModuleOp) -> list[InputSpec]:
    """The graph inputs with their static shapes (an error for a dynamic one)."""
    specs = []
    for arg in graph_function(module).args:
        name = value_name(arg)
        shape = arg.type.get_shape() if isinstance(arg.type, TensorType) else ()
        if not isinstance(arg.type, TensorType) or any(d < 0 for d in shape):
            raise EmberError(f"input '{name}': calibration needs a static shape; give one with --input-shape {name}=...")
        if 0 in shape:
            raise EmberError(f"input '{name}': shape {'x'.join(map(str, shape))} has no elements; give a shape with --input-shape {name}=...")
        specs.append(InputSpec(name, tuple(shape)))
    return specs


def recorded_normalization(module: ModuleOp) -> Normalization | None:
    """The normalization `extract-normalization` recorded on the first graph input."""
    function = graph_function(module)
    entry = function.arg_attrs.data[0] if function.arg_attrs is not None and function.arg_attrs.data else None
    record = entry.data.get(NORMALIZATION) if isinstance(entry, DictionaryAttr) else None
    if not isinstance(record, DictionaryAttr):
        return None
    mean, std = (tuple(float(v.value.data) for v in record.data[key].data) for key in ("mean", "std"))
    return Normalization(mean, std)


def float_tensors(module: ModuleOp) -> list[str]:
    """ONNX names of the float32 tensors the quantized model holds: graph inputs and
    the results of every node (initializers are weights, not activations)."""
    function = graph_function(module)
    names = [value_name(a) for a in function.args if _is_f32(a.type)]
    for op in function.body.block.ops:
        if isinstance(op, OnnxOp) and not isinstance(op, InitializerOp):
            names.extend(value_name(r) for r in op.results if _is_f32(r.type) and value_name(r))
    return list(dict.fromkeys(names))


def _is_f32(type_attr) -> bool:
    return isinstance(type_attr, TensorType) and isinstance(type_attr.element_type, Float32Type)


def check_runnable(module: ModuleOp) -> None:
    """Refuse, naming the node, what onnxruntime cannot run for calibration: a custom-domain
    op (its kernel is not registered) and a tensor without elements."""
    for op in graph_function(module).body.block.ops:
        attr = op.attributes.get(NODE_NAME)
        node = attr.data if isinstance(attr, StringAttr) else op.name
        if isinstance(op, CustomOp):
            raise EmberError(
                f"node '{node}' ({op.domain.data}:{op.op_type.data}): a custom-domain op that neither onnxruntime nor the NPU"
                " runs; keep it on the host with --autocrop (or cut it off with --inputs/--outputs)"
            )
        for value in () if isinstance(op, InitializerOp) else op.results:  # an empty weight (Resize's roi) is valid
            if isinstance(value.type, TensorType) and 0 in value.type.get_shape():
                shape = "x".join(map(str, value.type.get_shape()))
                raise EmberError(f"tensor '{value_name(value)}' of node '{node}' has no elements (shape {shape}); remove the node or fix its weights")


def observing_session(model: onnx.ModelProto, tensors: Iterable[str]):
    """An onnxruntime session of `model` whose outputs are its own plus `tensors`."""
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.ir_version = min(model.ir_version, ORT_IR_VERSION)  # newer onnx writes IRs onnxruntime may not read yet
    present = {o.name for o in model.graph.output}
    inputs = {i.name for i in model.graph.input}
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        for name in tensors
        if name not in present and name not in inputs
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise EmberError(f"onnxruntime cannot run the float model: {str(err).splitlines()[0]}") from None


def run_observed(session, sample: Mapping[str, np.ndarray], tensors: Iterable[str]) -> dict[str, np.ndarray]:
    """Run one sample; every observed tensor by name (graph inputs included)."""
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, dict(sample))))
    values.update(sample)
    return {name: values[name] for name in tensors}


def progress(description: str, total: int):
    """A rich progress bar on a terminal; silent otherwise."""
    from rich.progress import Progress

    bar = Progress(transient=True, disable=not sys.stderr.isatty())
    return bar, bar.add_task(description, total=total)


# ---------------------------------------------------------------------- statistics


@dataclass
class TensorStats:
    """The observed extremes and, after the second run, a histogram over them."""

    low: float = np.inf
    high: float = -np.inf
    counts: np.ndarray | None = None

    def observe_range(self, x: np.ndarray, where: str) -> None:
        if not x.size:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise EmberError(f"tensor '{where}': the float model produces NaN or Inf; check its weights and the samples")
        self.low, self.high = min(self.low, lo), max(self.high, hi)

    def observe_histogram(self, x: np.ndarray, bins: int) -> None:
        if self.counts is None:
            self.counts = np.zeros(bins, dtype=np.int64)
        if self.high <= self.low:
            return
        index = ((x.ravel().astype(np.float64) - self.low) * (bins / (self.high - self.low))).astype(np.int64)
        self.counts += np.bincount(np.clip(index, 0, bins - 1), minlength=bins)

    def edges(self) -> np.ndarray:
        assert self.counts is not None
        return np.linspace(self.low, self.high, self.counts.size + 1)


def percentile_range(stats: TensorStats, percentile: float) -> Range:
    """The two-sided `percentile` quantiles of the histogram."""
    counts, edges = stats.counts, stats.edges()
    cdf = np.cumsum(counts) / max(counts.sum(), 1)
    tail = (100.0 - percentile) / 100.0
    lo = edges[np.searchsorted(cdf, tail, side="right")]
    hi = edges[min(np.searchsorted(cdf, 1.0 - tail, side="left") + 1, counts.size)]
    return float(lo), float(hi)


def _candidates(count: int = 100) -> np.ndarray:
    """Candidate clipping factors `a` for the ranges `a * [min, max]`."""
    return np.linspace(1.0 / count, 1.0, count)


def _int8_grid(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    scale = np.maximum((hi - lo) / 255.0, np.finfo(np.float32).tiny)
    return scale, np.clip(np.rint(-128.0 - lo / scale), -128, 127)


def mse_range(stats: TensorStats) -> Range:
    """The range `a * [min, max]` with the least int8 quantization MSE."""
    counts, edges = stats.counts.astype(np.float64), stats.edges()
    centres = (edges[:-1] + edges[1:]) / 2
    factors = _candidates()
    scale, zp = _int8_grid(factors * stats.low, factors * stats.high)
    q = np.clip(np.rint(centres[None] / scale[:, None]) + zp[:, None], -128, 127)
    error = ((centres[None] - (q - zp[:, None]) * scale[:, None]) ** 2 * counts[None]).sum(axis=1)
    best = factors[np.argmin(error)]
    return best * stats.low, best * stats.high


def entropy_range(stats: TensorStats) -> Range:
    """The range `a * [min, max]` whose 255-level quantization loses the least information
    (TensorRT's criterion): the KL divergence between the histogram clipped to the range
    (outliers folded into the edge bins) and the 255-level quantization of the bins inside
    it. Candidates span at least 255 bins."""
    counts, edges = stats.counts.astype(np.float64), stats.edges()
    best, best_kl = 1.0, np.inf
    for factor in np.linspace(min(1.0, 256.0 / counts.size), 1.0, 64):
        lo, hi = factor * stats.low, factor * stats.high
        first = int(np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, counts.size - 1))
        last = int(np.clip(np.searchsorted(edges, hi, side="left"), first + 1, counts.size))
        inside = counts[first:last]
        p = inside.copy()
        p[0] += counts[:first].sum()
        p[-1] += counts[last:].sum()
        groups = np.minimum((np.arange(inside.size) * 255) // inside.size, 254)
        nonzero = inside > 0
        group_mass = np.bincount(groups, weights=inside, minlength=255)
        group_size = np.bincount(groups, weights=nonzero.astype(np.float64), minlength=255)
        q = np.where(nonzero, group_mass[groups] / np.maximum(group_size[groups], 1), 0.0)
        support = p > 0
        pn, qn = p / p.sum(), q / max(q.sum(), 1e-30)
        kl = float(np.sum(pn[support] * np.log(pn[support] / np.maximum(qn[support], 1e-12))))
        if kl < best_kl:
            best, best_kl = factor, kl
    return best * stats.low, best * stats.high


def table_input_range(stats: TensorStats, function, count: int = 48) -> Range:
    """The range `[a * min, b * max]` whose int8 quantization changes the output of the
    elementwise `function` the least (MSE over the histogram). `a`, `b` take `count` even
    steps of (0, 1] and 8 geometric steps down to 1/256: a table's flat side can sit far
    inside the observed range."""
    counts, edges = stats.counts.astype(np.float64), stats.edges()
    centres = (edges[:-1] + edges[1:]) / 2
    factors = np.concatenate([np.geomspace(1.0 / 256.0, 1.0 / count, 8, endpoint=False), _candidates(count)])
    count = factors.size
    lo = np.repeat(factors * stats.low, count)
    hi = np.tile(factors * stats.high, count)
    scale, zp = _int8_grid(lo, hi)
    levels = (np.arange(-128, 128)[None] - zp[:, None]) * scale[:, None]
    table = function(levels.ravel()).reshape(levels.shape)
    exact = function(centres)
    used = counts > 0
    q = np.clip(np.rint(centres[used][None] / scale[:, None]) + zp[:, None], -128, 127).astype(np.int64) + 128
    error = ((np.take_along_axis(table, q, axis=1) - exact[used][None]) ** 2 * counts[used][None]).sum(axis=1)
    best = int(np.argmin(error))
    return float(lo[best]), float(hi[best])


def table_functions(module: ModuleOp) -> dict[str, object]:
    """ONNX tensor name -> the float64 function of the elementwise chain that alone reads
    it (the table `quantize` builds from it), for every such tensor."""
    from ember.lowering.onnx_to_quant import ELEMENTWISE, elementwise_function
    from ember.dialects.onnx import opset_version

    function = graph_function(module)
    ops = [op for op in function.body.block.ops if isinstance(op, OnnxOp) and not isinstance(op, InitializerOp)]
    constants = {op.results[0]: op for op in function.body.block.ops if isinstance(op, InitializerOp)}

    def scalar(value) -> bool:
        init = constants.get(value)
        return init is not None and math.prod(init.results[0].type.get_shape()) == 1

    def constant(value) -> np.ndarray:
        return numpy_from_dense(constants[value].value)

    tables = {}
    candidates = [*function.args, *(r for op in ops for r in op.results)]
    position = {op: i for i, op in enumerate(ops)}
    for start in candidates:
        if not _is_f32(start.type) or not start.uses or not value_name(start):
            continue
        chain, values = [], {start}
        first = 0 if start.owner not in position else position[start.owner] + 1
        for op in ops[first:]:
            slots = [v for v in op.input_slots() if v is not None]
            if not any(v in values for v in slots):
                continue
            if op.ONNX_TYPE not in ELEMENTWISE or len(op.results) != 1 or not all(v in values or scalar(v) for v in slots):
                break
            chain.append(op)
            values.add(op.results[0])
        while chain and not _closed(start, chain):
            chain.pop()
        if chain:
            tables[value_name(start)] = elementwise_function(chain, start, constant, opset_version(module))
    return tables


def _closed(start, chain) -> bool:
    """Whether every value of the chain but its result is read by the chain only."""
    members = set(chain)
    inner = [start, *(op.results[0] for op in chain[:-1])]
    return all(use.operation in members for value in inner for use in value.uses)


# ------------------------------------------------------------------------ the runs


@dataclass
class Calibration:
    """The outcome of a calibration: chosen ranges and observed extremes per tensor."""

    method: str
    data: str
    ranges: dict[str, Range]
    observed: dict[str, Range] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "data": self.data,
            "samples": self.samples,
            "tensors": {
                name: {"min": lo, "max": hi, "observed_min": self.observed[name][0], "observed_max": self.observed[name][1]}
                for name, (lo, hi) in self.ranges.items()
            },
        }


def calibrate(
    module: ModuleOp,
    samples: SampleSet,
    method: str = "minmax",
    percentile: float = 99.99,
    bins: int = 2048,
) -> Calibration:
    """Run the float model over `samples` and estimate a range per float tensor."""
    if method not in METHODS:
        raise EmberError(f"calibrate: unknown method '{method}' (one of {', '.join(METHODS)})")
    if not 0.0 < percentile <= 100.0:
        raise EmberError(f"calibrate: percentile {percentile} must be in (0, 100]")
    if len(samples) == 0:
        raise EmberError(f"{samples.source}: no samples to calibrate on")
    check_runnable(module)
    tensors = float_tensors(module)
    session = observing_session(export_model(module), tensors)
    stats = {name: TensorStats() for name in tensors}
    runs = 1 if method == "minmax" else 2
    bar, task = progress(f"calibrating ({method})", runs * len(samples))
    with bar:
        for run in range(runs):
            for sample in samples:
                values = run_observed(session, sample, tensors)
                for name, x in values.items():
                    if run == 0:
                        stats[name].observe_range(x, name)
                    else:
                        stats[name].observe_histogram(x, bins)
                bar.advance(task)
    observed = {name: (s.low, s.high) for name, s in stats.items()}
    tables = table_functions(module) if method == "output_mse" else {}
    ranges = {
        name: table_input_range(s, tables[name]) if name in tables and s.high > s.low else _estimate(s, method, percentile)
        for name, s in stats.items()
    }
    return Calibration(method, samples.source, ranges, observed, samples.names())


def _estimate(stats: TensorStats, method: str, percentile: float) -> Range:
    if method == "minmax" or stats.high <= stats.low:
        return stats.low, stats.high
    if method == "percentile":
        return percentile_range(stats, percentile)
    if method in ("mse", "output_mse"):
        return mse_range(stats)
    return entropy_range(stats)


# -------------------------------------------------------------------- IR and JSON


def record(module: ModuleOp, calibration: Calibration) -> None:
    """Store the ranges and observed extremes on the module (`ember.calibration`)."""

    def ranges(table: dict[str, Range]) -> DictionaryAttr:
        return DictionaryAttr({name: DenseArrayBase.from_list(f64, [float(lo), float(hi)]) for name, (lo, hi) in table.items()})

    module.attributes[CALIBRATION_ATTR] = DictionaryAttr(
        {
            "method": StringAttr(calibration.method),
            "data": StringAttr(calibration.data),
            "ranges": ranges(calibration.ranges),
            "observed": ranges(calibration.observed),
        }
    )


def _recorded(module: ModuleOp, key: str) -> dict[str, Range] | None:
    entry = module.attributes.get(CALIBRATION_ATTR)
    if not isinstance(entry, DictionaryAttr) or not isinstance(table := entry.data.get(key), DictionaryAttr):
        return None
    return {name: tuple(value.get_values()) for name, value in table.data.items() if isinstance(value, DenseArrayBase)}


def recorded_ranges(module: ModuleOp) -> dict[str, Range]:
    """The ranges `calibrate` stored on the module (an error if it has none)."""
    ranges = _recorded(module, "ranges")
    if ranges is None:
        raise EmberError("the module holds no calibration ranges; run 'calibrate{data=...}' first (or give quant_info=FILE.json)")
    return ranges


def recorded_observed(module: ModuleOp) -> dict[str, Range]:
    """The observed extremes `calibrate` stored on the module (empty if it stored none)."""
    return _recorded(module, "observed") or {}


def load_quant_info(path: str | Path) -> Calibration:
    """The calibration a `*_quant_info.json` file holds."""
    try:
        info = json.loads(Path(path).read_text())
        tensors = info["tensors"]
        ranges = {name: (float(entry["min"]), float(entry["max"])) for name, entry in tensors.items()}
        observed = {
            name: (float(entry["observed_min"]), float(entry["observed_max"])) for name, entry in tensors.items() if "observed_min" in entry
        }
        return Calibration(str(info.get("method", "")), str(info.get("data", "")), ranges, observed, list(info.get("samples", [])))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EmberError(f"{path}: not a readable quant_info JSON file ({err})") from None


def write_quant_info(path: str | Path, calibration: Calibration) -> None:
    with atomic_output(path) as handle:
        json.dump(calibration.to_json(), handle, indent=1)
        handle.write("\n")


@dataclass(frozen=True)
class CalibratePass(ModulePass):
    """Calibrate the float model on samples; record a range per float tensor on the module.

    `data`: a folder of `.npy` files or images, or an `.npz` keyed by input name.
    `method`: minmax | percentile | mse | entropy | output_mse. `mean`/`std`: image normalization on the
    0..255 scale (one value or one per channel); by default the one `extract-normalization`
    recorded on the input, else none. `limit`: use the first N samples only.
    `output`: also write the ranges as JSON."""

    name = "calibrate"

    data: str
    method: str = "minmax"
    percentile: float = 99.99
    bins: int = 2048
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    limit: int = 0
    output: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        normalization = Normalization(tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std))
        if normalization == Normalization():
            normalization = recorded_normalization(op) or normalization
        samples = load_samples(self.data, input_specs(op), normalization, self.limit)
        calibration = calibrate(op, samples, self.method, self.percentile, self.bins)
        record(op, calibration)
        if self.output:
            write_quant_info(self.output, calibration)
