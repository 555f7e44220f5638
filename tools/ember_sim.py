"""`ember-sim`: run an Ember NPU binary on the instruction-level simulator.

    ember-sim model.ebin --input NAME=x.npy --output-dir out/ [--stats] [--repeat N]
              [--trace t.txt] [--dump-dir dumps/] [--arch ember16]

Writes `<output name>.npy` for every model output into the output directory. Inputs must
have exactly the shape and dtype of the binary's IODESC. `--stats` prints instruction
counts, cycles, MAC utilization, DRAM traffic, per-layer cycles, MACs and MAC utilization
and, as its last line, the simulator's wall-clock `N ms per inference` (mean over
`--repeat` runs).
"""

from __future__ import annotations

import argparse
import io
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ember.support.atomic_output import atomic_output
from ember.support.diagnostics import EmberError, run_tool
from ember.target import ebin
from ember.target.arch import load_arch
from ember.target.simulator import Simulator, Stats


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ember-sim", description="Run an Ember NPU binary (.ebin) on the simulator.")
    parser.add_argument("model", help="the .ebin binary")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="a model input (repeatable)")
    parser.add_argument("--output-dir", required=True, type=Path, help="where <output name>.npy files go")
    parser.add_argument("--stats", action="store_true", help="print cycles, utilization, traffic and timing")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="run N inferences (for timing)")
    parser.add_argument("--trace", type=Path, metavar="FILE", help="write one line per executed instruction")
    parser.add_argument("--dump-dir", type=Path, metavar="DIR", help="write every MEMMAP tensor as <name>.npy")
    parser.add_argument("--arch", help="the arch to run (default: the one the binary was built for)")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    return parser


def _read_inputs(specs: Sequence[str]) -> dict[str, np.ndarray]:
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise EmberError(f"--input '{spec}': expected NAME=FILE.npy")
        if name in inputs:
            raise EmberError(f"--input '{name}': given twice")
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
            raise EmberError(f"{path}: cannot read as a .npy array ({reason})") from None
    return inputs


def _file_name(tensor: str) -> str:
    """A tensor name as a file name: path separators and odd characters become '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tensor) + ".npy"


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_output(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def format_stats(stats: Stats, rows: int, cols: int, wall_ms: float, runs: int) -> str:
    """The --stats report; its last line is `<wall_ms> ms per inference ...`."""
    kinds = ", ".join(f"{k} {n}" for k, n in stats.instructions.items())
    busy = ", ".join(f"{k} {v}" for k, v in stats.engine_cycles.items())
    width = max((len(name) for name in stats.layer_cycles), default=0)
    layers = "\n".join(
        f"  {name:<{width}}  {c:>10}  {stats.layer_macs.get(name, 0):>12} MACs  {100 * stats.layer_utilization(name):5.1f}%"
        for name, c in stats.layer_cycles.items()
    )
    return (
        f"instructions: {sum(stats.instructions.values())} ({kinds})\n"
        f"cycles: {stats.total_cycles} total; busy {busy}\n"
        f"MAC utilization: {100 * stats.mac_utilization:.1f}% ({stats.macs} MACs on a {rows}x{cols} array)\n"
        f"DRAM traffic: {stats.dram_read_bytes} bytes read, {stats.dram_write_bytes} bytes written\n"
        f"per-layer cycles (busy, all engines), MACs, MAC utilization (MACs / (compute-engine cycles x array)):\n"
        f"{layers}\n"
        f"estimated NPU latency: {stats.npu_ms:.4f} ms at {stats.clock_mhz} MHz\n"
        f"{wall_ms:.3f} ms per inference (simulator wall clock, mean of {runs} runs)\n"
    )


def _main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.repeat < 1:
        raise EmberError("--repeat must be at least 1")
    arch = load_arch(args.arch) if args.arch else None
    model = ebin.load(args.model, arch)
    sim = Simulator(model, args.model)
    inputs = _read_inputs(args.input)

    trace = io.StringIO() if args.trace else None
    dumps: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    outputs = sim.run(inputs, trace, dumps.__setitem__ if args.dump_dir else None)
    for _ in range(args.repeat - 1):
        sim.run(inputs)
    wall_ms = (time.perf_counter() - start) * 1000 / args.repeat

    for name, array in outputs.items():
        _save(args.output_dir / _file_name(name), array)
    if trace is not None:
        with atomic_output(args.trace) as handle:
            handle.write(trace.getvalue())
    for name, array in dumps.items():
        _save(args.dump_dir / _file_name(name), array)
    if args.stats:
        print(format_stats(sim.stats(), sim.arch.mac_rows, sim.arch.mac_cols, wall_ms, args.repeat), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("ember-sim", _main, argv)
