"""Compile time per stage on generated graphs of growing size, and its growth exponent.

    python benchmarks/compile_scaling.py [--nodes 1000 5000 20000] [--profile STAGE] [--memory]

The graph is a ladder of residual blocks `Conv -> BatchNormalization -> Relu -> Add` with
exporter-style shape arithmetic (`Shape -> Gather -> Concat -> Reshape`) every other
block, behind a `Sub/Div` input normalization; tensors are small (1x8x8x8) so the time
is the compiler's, not the weights'. Each stage runs once per size, in pipeline order:
import, every graph pass, export, MLIR print and parse; then two stress stages: import of
the same graph with its nodes in reverse order (files are not always sorted) and export
of the module with every value's name removed (values that passes create are unnamed).
Times are CPU time of this process (`time.process_time`), which other jobs on a shared
machine disturb far less than wall time. The exponent of a stage is the log-log slope of
its time between consecutive sizes (1.0 is linear).

`--profile STAGE` prints the cProfile of that stage at the largest size. `--memory`
measures the peak memory of import + passes + export on the PP-OCRv4 detector instead.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.parser import Parser
from xdsl.passes import PassPipeline
from xdsl.universe import Universe

from ember.dialects.onnx import OUTPUT_NAMES
from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model, load_onnx

PASSES = ["onnx-constant-fold", "onnx-shape-inference", "canonicalize", "fold-batchnorm{remarks=false}", "extract-normalization{remarks=false}"]
CHANNELS, SPATIAL = 8, 8
DETECTOR = Path(__file__).resolve().parents[2] / "shared" / "models" / "ppocrv4_det.onnx"


def ladder(nodes: int, seed: int = 0) -> onnx.ModelProto:
    """A residual ladder with about `nodes` nodes (see the module docstring)."""
    rng = np.random.default_rng(seed)
    shape = [1, CHANNELS, SPATIAL, SPATIAL]
    mean = numpy_helper.from_array(np.full((1, CHANNELS, 1, 1), 0.5, np.float32), "mean")
    std = numpy_helper.from_array(np.full((1, CHANNELS, 1, 1), 0.25, np.float32), "std")
    initializers = [mean, std]
    graph_nodes = [helper.make_node("Sub", ["x", "mean"], ["centered"]), helper.make_node("Div", ["centered", "std"], ["b0"])]
    block = 0
    while len(graph_nodes) < nodes:
        x, p = f"b{block}", f"blk{block}"
        weight = (rng.normal(size=(CHANNELS, CHANNELS, 3, 3)) * 0.1).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"{p}.w"),
            numpy_helper.from_array(np.ones(CHANNELS, np.float32), f"{p}.gamma"),
            numpy_helper.from_array(np.zeros(CHANNELS, np.float32), f"{p}.beta"),
            numpy_helper.from_array(np.zeros(CHANNELS, np.float32), f"{p}.mean"),
            numpy_helper.from_array(np.ones(CHANNELS, np.float32), f"{p}.var"),
        ]
        graph_nodes += [
            helper.make_node("Conv", [x, f"{p}.w"], [f"{p}.conv"], name=f"{p}/conv", pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", [f"{p}.conv", f"{p}.gamma", f"{p}.beta", f"{p}.mean", f"{p}.var"], [f"{p}.bn"], name=f"{p}/bn"),
            helper.make_node("Relu", [f"{p}.bn"], [f"{p}.relu"], name=f"{p}/relu"),
            helper.make_node("Add", [x, f"{p}.relu"], [f"{p}.add"], name=f"{p}/add"),
        ]
        out = f"{p}.add"
        if block % 2:
            initializers += [numpy_helper.from_array(np.array([0, 1, 2], np.int64), f"{p}.idx"), numpy_helper.from_array(np.array([-1], np.int64), f"{p}.rest")]
            graph_nodes += [
                helper.make_node("Shape", [out], [f"{p}.shape"], name=f"{p}/shape"),
                helper.make_node("Gather", [f"{p}.shape", f"{p}.idx"], [f"{p}.head"], name=f"{p}/gather", axis=0),
                helper.make_node("Concat", [f"{p}.head", f"{p}.rest"], [f"{p}.target"], name=f"{p}/concat", axis=0),
                helper.make_node("Reshape", [out, f"{p}.target"], [f"{p}.reshaped"], name=f"{p}/reshape"),
            ]
            out = f"{p}.reshaped"
        block += 1
        graph_nodes.append(helper.make_node("Identity", [out], [f"b{block}"], name=f"{p}/out"))
    graph = helper.make_graph(
        graph_nodes,
        "ladder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(f"b{block}", TensorProto.FLOAT, shape)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _context() -> Context:
    ctx = Context()
    for name, dialect in Universe.get_multiverse().all_dialects.items():
        ctx.register_dialect(name, dialect)
    return ctx


def stages(model: onnx.ModelProto) -> list[tuple[str, Callable[[dict], None]]]:
    """The pipeline as (name, step) pairs; each step reads and writes the shared state."""

    def importing(state: dict) -> None:
        state["module"] = import_model(model, source="ladder")

    def one_pass(spec: str) -> Callable[[dict], None]:
        def run(state: dict) -> None:
            PassPipeline.parse_spec(Universe.get_multiverse().all_passes, spec).apply(state["ctx"], state["module"])

        return run

    def exporting(state: dict) -> None:
        state["onnx"] = export_model(state["module"]).SerializeToString()

    def printing(state: dict) -> None:
        state["text"] = str(state["module"])

    def importing_reversed(state: dict) -> None:
        reversed_model = onnx.ModelProto()
        reversed_model.CopyFrom(model)
        del reversed_model.graph.node[:]
        reversed_model.graph.node.extend(reversed(model.graph.node))
        state["module"] = import_model(reversed_model, source="ladder")

    def exporting_unnamed(state: dict) -> None:
        for op in state["module"].walk():
            if OUTPUT_NAMES in op.attributes:
                op.attributes[OUTPUT_NAMES] = ArrayAttr([StringAttr("")] * len(op.results))
        export_model(state["module"])

    def parsing(state: dict) -> None:
        module = Parser(state["ctx"], state["text"]).parse_module()
        assert isinstance(module, ModuleOp)

    steps = [("import", importing)]
    steps += [(spec.split("{")[0], one_pass(spec)) for spec in PASSES if spec.split("{")[0] in Universe.get_multiverse().all_passes]
    steps += [("export", exporting), ("mlir-print", printing), ("mlir-parse", parsing)]
    steps += [("import-reversed", importing_reversed), ("export-unnamed", exporting_unnamed)]
    return steps


def measure(nodes: int, profile: str | None) -> tuple[int, dict[str, float]]:
    model = ladder(nodes)
    state: dict = {"ctx": _context()}
    times: dict[str, float] = {}
    for name, step in stages(model):
        profiler = cProfile.Profile() if name == profile else None
        start = time.process_time()
        if profiler:
            profiler.enable()
        step(state)
        if profiler:
            profiler.disable()
        times[name] = time.process_time() - start
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
            print(out.getvalue())
    return len(model.graph.node), times


def scaling(sizes: list[int], profile: str | None) -> None:
    results = []
    for size in sizes:
        count, times = measure(size, profile if size == sizes[-1] else None)
        results.append((count, times))
        print(f"{count} nodes: " + ", ".join(f"{k} {v:.2f}s" for k, v in times.items()) + f" (total {sum(times.values()):.1f}s)", flush=True)
    names = list(results[0][1])
    header = "| stage | " + " | ".join(f"{n} nodes (s)" for n, _ in results) + " | " + " | ".join(f"exponent {a}->{b}" for (a, _), (b, _) in zip(results, results[1:])) + " |"
    print("\n" + header)
    print("|" + "---|" * (1 + 2 * len(results) - 1))
    for name in names:
        cells = [f"{t[name]:.3f}" for _, t in results]
        slopes = [
            f"{math.log(max(t1[name], 1e-4) / max(t0[name], 1e-4)) / math.log(n1 / n0):.2f}"
            for (n0, t0), (n1, t1) in zip(results, results[1:])
        ]
        print(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(slopes) + " |")
    totals = [sum(t.values()) for _, t in results]
    slopes = [f"{math.log(b / a) / math.log(n1 / n0):.2f}" for (n0, _), (n1, _), a, b in zip(results, results[1:], totals, totals[1:])]
    print("| total | " + " | ".join(f"{t:.3f}" for t in totals) + " | " + " | ".join(slopes) + " |")


def memory() -> None:
    """Peak memory of import + passes + export on the PP-OCRv4 detector at 640x640."""
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    model = load_onnx(DETECTOR)
    state: dict = {"ctx": _context()}
    for name, step in stages(model):
        if name == "import":
            state["module"] = import_model(model, {"x": [1, 3, 640, 640]}, source=str(DETECTOR))
        elif name in ("mlir-print", "mlir-parse", "import-reversed", "export-unnamed"):
            continue
        else:
            step(state)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = DETECTOR.stat().st_size
    print(f"{DETECTOR.name} ({size / 2**20:.1f} MiB, {len(model.graph.node)} nodes), x=1x3x640x640: import + {len(PASSES)} passes + export in {elapsed:.1f} s")
    print(f"  peak Python allocations (tracemalloc): {peak / 2**20:.1f} MiB ({peak / size:.1f}x the file)")
    print(f"  peak RSS (getrusage ru_maxrss): {maxrss / 1024:.1f} MiB (process before loading: {base / 1024:.1f} MiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--profile", metavar="STAGE", help="cProfile this stage at the largest size")
    parser.add_argument("--memory", action="store_true", help="peak memory on the PP-OCRv4 detector instead")
    args = parser.parse_args(argv)
    if args.memory:
        memory()
    else:
        scaling(sorted(args.nodes), args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
