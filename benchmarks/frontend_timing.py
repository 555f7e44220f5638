"""Time the ONNX frontend on the PP-OCRv4 detector and on a 4M-weight model.

    python benchmarks/frontend_timing.py

Prints, for the detector (input x fixed to 1x3x320x320): load, import, export, and
import+export; printing it as MLIR text, with --elide-weights, and parsing the text
back; then printing and parsing one 4M-element float32 initializer (16 MB). Each figure
is the best of a few runs, beside onnxruntime's session creation for scale.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.parser import Parser
from xdsl.printer import Printer

from ember.dialects.dense import elided_weights
from ember.dialects.onnx import ONNX
from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model, load_onnx

DETECTOR = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "ppocrv4_det.onnx"


def best(fn: Callable[[], object], runs: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def print_text(module: ModuleOp) -> str:
    stream = io.StringIO()
    Printer(stream=stream).print_op(module)
    return stream.getvalue()


def parse_text(text: str) -> ModuleOp:
    ctx = Context()
    for dialect in (Builtin, Func, ONNX):
        ctx.load_dialect(dialect)
    return Parser(ctx, text).parse_module()


def big_weight_model(elements: int = 4 * 1024 * 1024) -> onnx.ModelProto:
    side = int(np.sqrt(elements))
    w = np.random.default_rng(0).standard_normal((side, side)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, side])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> int:
    rows: list[tuple[str, float, str]] = []
    if DETECTOR.is_file():
        t_load, model = best(lambda: load_onnx(DETECTOR))
        t_import, module = best(lambda: import_model(model, {"x": [1, 3, 320, 320]}, source=DETECTOR.name))
        t_export, _ = best(lambda: export_model(module))
        t_both, _ = best(lambda: export_model(import_model(model, {"x": [1, 3, 320, 320]}, source=DETECTOR.name)))
        t_print, text = best(lambda: print_text(module))

        def elided() -> str:
            with elided_weights():
                return print_text(module)

        t_elided, short = best(elided)
        t_parse, _ = best(lambda: parse_text(text))
        t_ort, _ = best(lambda: ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]))
        weights = sum(n.attribute[0].t.ByteSize() for n in model.graph.node if n.op_type == "Constant")
        rows += [
            (f"detector: load ({DETECTOR.stat().st_size / 1e6:.1f} MB, {len(model.graph.node)} nodes)", t_load, ""),
            ("detector: import (x=1,3,320,320)", t_import, ""),
            ("detector: export", t_export, ""),
            ("detector: import + export", t_both, f"{t_both / t_ort:.1f}x onnxruntime session creation ({t_ort * 1e3:.0f} ms)"),
            ("detector: print MLIR text", t_print, f"{len(text) / 1e6:.1f} MB of text, weights {weights / 1e6:.1f} MB"),
            ("detector: print with --elide-weights", t_elided, f"{len(short) / 1e3:.0f} kB of text"),
            ("detector: parse MLIR text", t_parse, ""),
        ]
    else:
        print(f"(the detector is not at {DETECTOR}; skipping its figures)")
    big = big_weight_model()
    big_module = import_model(big, source="big")
    t_big_print, big_text = best(lambda: print_text(big_module), runs=2)
    t_big_parse, _ = best(lambda: parse_text(big_text), runs=2)
    rows += [
        (f"4M-element initializer: print ({len(big_text) / 1e6:.0f} MB of hex)", t_big_print, ""),
        ("4M-element initializer: parse", t_big_parse, ""),
    ]
    width = max(len(r[0]) for r in rows)
    for label, seconds, note in rows:
        print(f"{label:<{width}}  {seconds * 1e3:8.1f} ms  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
