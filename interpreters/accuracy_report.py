"""The per-layer accuracy report of a quantized model (in the style of Horizon's).

For every node of the quantized module — each quant op (NPU) and each onnx op left float
(host) — and for every model output, over the same samples:
- `cos_calibrated`: the float model with every quantized tensor passed through
  QuantizeLinear/DequantizeLinear with its type (activation quantization only: what
  calibration alone costs), against float;
- `cos_quantized`: the quantized module run by `MixedRunner` (integer reference
  semantics), dequantized, against float.
Cosines are averaged over samples; two all-zero tensors count as equal (1.0), a zero
against a non-zero tensor as 0.0. The report names the first node whose quantized cosine
falls below `threshold`: where accuracy is lost.

The reference interpreter and the cosines run with OpenBLAS on one thread: their matmuls
and dot products are small enough that its threads do not pay off, and on shared cores
their spinning made the detector's report 10x slower (24 s -> 2 s at 320x320, same
figures).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation

from ember.dialects import quant
from ember.dialects.onnx import NODE_NAME, InitializerOp, OnnxOp, value_name
from ember.dialects.quant import UniformQuantizedType, quant_type_of
from ember.frontend.onnx_export import graph_function
from ember.interpreters.mixed_runner import QUANT_OPS, MixedRunner
from ember.interpreters.quant_reference import dequantize
from ember.passes.calibrate import observing_session, progress, run_observed
from ember.support.atomic_output import atomic_output
from ember.support.blas import single_threaded_blas

FAKE_SUFFIX = "__fakequant"
CSV_FIELDS = ("node", "type", "runs_on", "output", "range_min", "range_max", "threshold", "cos_calibrated", "cos_quantized", "dtype")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two tensors (1.0 for two zero tensors, 0.0 for one)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


@dataclass
class Row:
    node: str
    type: str
    runs_on: str
    output: str
    range: tuple[float, float] | None
    dtype: str
    cos_calibrated: list[float] = field(default_factory=list)
    cos_quantized: list[float] = field(default_factory=list)

    @property
    def calibrated(self) -> float:
        return float(np.mean(self.cos_calibrated)) if self.cos_calibrated else float("nan")

    @property
    def quantized(self) -> float:
        return float(np.mean(self.cos_quantized)) if self.cos_quantized else float("nan")

    def csv_row(self) -> dict:
        lo, hi = self.range if self.range else (float("nan"), float("nan"))
        return {
            "node": self.node,
            "type": self.type,
            "runs_on": self.runs_on,
            "output": self.output,
            "range_min": f"{lo:.6g}",
            "range_max": f"{hi:.6g}",
            "threshold": f"{max(abs(lo), abs(hi)):.6g}",
            "cos_calibrated": f"{self.calibrated:.6f}",
            "cos_quantized": f"{self.quantized:.6f}",
            "dtype": self.dtype,
        }


@dataclass
class AccuracyReport:
    nodes: list[Row]
    outputs: list[Row]
    threshold: float

    @property
    def first_drop(self) -> Row | None:
        """The first node (in execution order) whose quantized cosine is below threshold."""
        return next((row for row in self.nodes if row.quantized < self.threshold), None)

    def write_csv(self, path: str | Path) -> None:
        """Per-node rows, then the model outputs (`runs_on` = "output")."""
        with atomic_output(path) as handle:
            writer = csv.DictWriter(handle, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(row.csv_row() for row in [*self.nodes, *self.outputs])

    def print(self, console=None) -> None:
        """The table, on a rich console."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        table = Table(title="quantization accuracy (cosine vs float)")
        for column in ("node", "type", "runs on", "threshold", "calibrated", "quantized", "dtype"):
            table.add_column(column, overflow="fold")
        drop = self.first_drop
        for row in [*self.nodes, *self.outputs]:
            csv_row = row.csv_row()
            style = "bold red" if row is drop else ("bold" if row.runs_on == "output" else None)
            label = row.node if row.runs_on != "NPU" or "," not in row.node else row.node.split(",")[0] + " (+fused)"
            table.add_row(
                label, row.type, row.runs_on, csv_row["threshold"], csv_row["cos_calibrated"], csv_row["cos_quantized"], row.dtype, style=style
            )
        console.print(table)
        if drop is not None:
            console.print(f"first node below {self.threshold}: {drop.node} ({drop.type}), cosine {drop.quantized:.4f}")


def _node_types(float_model: onnx.ModelProto) -> dict[str, str]:
    return {node.name: node.op_type for node in float_model.graph.node if node.name}


def _quantized_tensors(module: ModuleOp) -> dict[str, UniformQuantizedType]:
    """ONNX tensor name -> the int8 type the quantized module gives it."""
    types: dict[str, UniformQuantizedType] = {}
    for op in graph_function(module).body.block.ops:
        if type(op) in QUANT_OPS and not isinstance(op, quant.ConstantOp | quant.DequantizeOp):
            if name := value_name(op.results[0]):
                types.setdefault(name, quant_type_of(op.results[0]))
            lut_input = op.attributes.get("quant.lut_input")
            if isinstance(lut_input, StringAttr) and isinstance(op, quant.Conv2DOp | quant.FullyConnectedOp):
                types.setdefault(lut_input.data, op.lut_input_type)
    return types


def fake_quant_model(float_model: onnx.ModelProto, types: dict[str, UniformQuantizedType]) -> onnx.ModelProto:
    """`float_model` with each tensor in `types` followed by QuantizeLinear and
    DequantizeLinear (for int16 types, which need opset 21 there, the same in float ops:
    `clip(round(x / s)) * s`); the fake-quantized value is `name + FAKE_SUFFIX`, read by
    every consumer of the tensor."""
    model = onnx.ModelProto.FromString(float_model.SerializeToString())
    graph = model.graph
    produced = {o for node in graph.node for o in node.output} | {i.name for i in graph.input}
    nodes = []
    for name, qtype in types.items():
        if name not in produced:
            continue
        scale, zero = f"{name}__scale", f"{name}__zero_point"
        graph.initializer.append(onnx.numpy_helper.from_array(np.array(qtype.scale, dtype=np.float32), scale))
        if qtype.storage_dtype == np.int16:  # symmetric: zero point 0
            low, high = f"{name}__min", f"{name}__max"
            graph.initializer.extend(
                onnx.numpy_helper.from_array(np.array(v, dtype=np.float32), n)
                for n, v in ((low, qtype.storage_min), (high, qtype.storage_max))
            )
            nodes.append(onnx.helper.make_node("Div", [name, scale], [f"{name}__scaled"]))
            nodes.append(onnx.helper.make_node("Round", [f"{name}__scaled"], [f"{name}__rounded"]))
            nodes.append(onnx.helper.make_node("Clip", [f"{name}__rounded", low, high], [f"{name}__q"]))
            nodes.append(onnx.helper.make_node("Mul", [f"{name}__q", scale], [name + FAKE_SUFFIX]))
        else:
            graph.initializer.append(onnx.numpy_helper.from_array(np.array(qtype.zero_point, dtype=np.int8), zero))
            nodes.append(onnx.helper.make_node("QuantizeLinear", [name, scale, zero], [f"{name}__q"]))
            nodes.append(onnx.helper.make_node("DequantizeLinear", [f"{name}__q", scale, zero], [name + FAKE_SUFFIX]))
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in types and name in produced:
                node.input[i] = name + FAKE_SUFFIX
    for output in graph.output:
        if output.name in types:
            nodes.append(onnx.helper.make_node("Identity", [output.name + FAKE_SUFFIX], [output.name + "__out"]))
            output.name += "__out"
    graph.node.extend(nodes)
    _sort_nodes(graph)
    return model


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Topological order (ONNX requires it; the inserted nodes went to the end)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            ordered.extend(rest)
            break
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _rows(module: ModuleOp, node_types: dict[str, str], ranges: dict[str, tuple[float, float]]) -> dict[Operation, Row]:
    rows: dict[Operation, Row] = {}
    for op in graph_function(module).body.block.ops:
        if isinstance(op, InitializerOp) or not op.results or not isinstance(op.results[0].type, TensorType):
            continue
        name = value_name(op.results[0])
        if type(op) in QUANT_OPS:
            if isinstance(op, quant.ConstantOp | quant.DequantizeOp) or not name:
                continue
            nodes = op.attributes.get(NODE_NAME)
            node = nodes.data if isinstance(nodes, StringAttr) else f"{name} (input)"
            kind = "+".join(node_types.get(n, "?") for n in node.split(",")) if isinstance(nodes, StringAttr) else "Quantize"
            qtype = quant_type_of(op.results[0])
            dtype = np.dtype(qtype.storage_dtype).name
            # an int16 tensor's range is not the calibrated one: it spans the observed extremes
            used = ranges.get(name) if dtype == "int8" else (qtype.scale * qtype.storage_min, qtype.scale * qtype.storage_max)
            rows[op] = Row(node, kind, "NPU", name, used, dtype)
        elif isinstance(op, OnnxOp) and name:
            rows[op] = Row(op.node_name or name, op.ONNX_TYPE, "host", name, ranges.get(name), "float32")
    return rows


def accuracy_report(
    float_model: onnx.ModelProto,
    module: ModuleOp,
    samples: Iterable[dict[str, np.ndarray]],
    ranges: dict[str, tuple[float, float]] | None = None,
    threshold: float = 0.99,
) -> AccuracyReport:
    """Compare the quantized `module` with its float `float_model` on `samples`."""
    ranges = ranges or {}
    rows = _rows(module, _node_types(float_model), ranges)
    names = sorted({row.output for row in rows.values()})
    types = _quantized_tensors(module)
    output_names = [o.name for o in float_model.graph.output]
    float_session = observing_session(float_model, names)
    fake_names = [n + FAKE_SUFFIX if n in types else n for n in names]
    fake_session = observing_session(fake_quant_model(float_model, types), fake_names)
    runner = MixedRunner(module)
    outputs = [Row(name, "output", "output", name, ranges.get(name), "float32") for name in output_names]
    samples = list(samples) if not hasattr(samples, "__len__") else samples
    bar, task = progress("accuracy report", len(samples))
    with bar, single_threaded_blas():
        for sample in samples:
            reference = run_observed(float_session, sample, [*names, *output_names])
            fake_all = {o.name: v for o, v in zip(fake_session.get_outputs(), fake_session.run(None, dict(sample)))}
            fake_all.update(sample)
            fake = {name: fake_all[fake_name] for name, fake_name in zip(names, fake_names)}

            def observe(op: Operation, results) -> None:
                row = rows.get(op)
                if row is None:
                    return
                value = results[0]
                if isinstance(op.results[0].type.element_type, UniformQuantizedType):
                    qtype = quant_type_of(op.results[0])
                    axis = qtype.quantized_dimension if qtype.is_per_axis else None
                    value = dequantize(value, qtype.scale_array(), qtype.zero_point_array(), axis)
                row.cos_quantized.append(cosine(reference[row.output], value))
                row.cos_calibrated.append(cosine(reference[row.output], fake[row.output]))

            final = runner.run(sample, observe)
            for row in outputs:
                fake_value = fake_all.get(row.output + "__out", fake_all.get(row.output))
                row.cos_calibrated.append(cosine(reference[row.output], fake_value))
                row.cos_quantized.append(cosine(reference[row.output], final[row.output]))
            bar.advance(task)
    return AccuracyReport(list(rows.values()), outputs, threshold)
