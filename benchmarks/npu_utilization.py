"""MAC utilization of the Ember NPU lowering on the PP-OCRv4 detector.

    python benchmarks/npu_utilization.py [--size 640] [--arch ember16] [--top 12] [--check]

Compiles the detector's NPU part (fold-batchnorm, extract-normalization, autocrop, which
keeps everything through the head's two ConvTranspose layers and leaves the final Sigmoid
to the host, calibrate on two of the shared photographs, quantize, lower-quant-to-npu,
npu-allocate, npu-schedule), then reads the simulator's static schedule:

- whole program: MACs / (total cycles x MAC-array size);
- convolutions: the same over the layers that contain a CONV, where a layer's cycles are
  its compute-engine time plus the compute stalls just before its instructions (so the
  per-layer figures add up to the compute timeline);
- per layer: cycles, MACs, utilization and the ideal (the MAC-array passes the cost
  model charges for its CONVs, i.e. the ceiling that channel padding leaves).

`--check` also runs the simulator and the quant reference on one random input and
reports whether they agree bit for bit.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from ember.frontend.onnx_import import import_model, load_onnx, parse_input_shapes
from ember.interpreters.quant_reference import run_quant_module
from ember.lowering.npu_to_ebin import compile_to_ebin
from ember.lowering.quant_to_npu import main_function
from ember.passes.autocrop import AutocropPass
from ember.passes.calibrate import CalibratePass
from ember.passes.extract_normalization import ExtractNormalizationPass
from ember.passes.fold_batchnorm import FoldBatchNormPass
from ember.passes.quantize import QuantizePass
from ember.target.cost import macs
from ember.target.ebin import parse, to_bytes
from ember.target.isa import Engine, Opcode
from ember.target.simulator import Simulator

SHARED = Path(__file__).resolve().parents[2] / "shared"
DETECTOR = SHARED / "models" / "ppocrv4_det.onnx"
IMAGENET = dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))


def compile_detector(size: int, arch: str) -> tuple[bytes, ModuleOp]:
    """The detector's `.ebin` and its quant function (for the reference)."""
    module = import_model(load_onnx(str(DETECTOR)), parse_input_shapes([f"x=1,3,{size},{size}"]), source="det")
    ctx = Context()
    for p in (
        FoldBatchNormPass(), ExtractNormalizationPass(remarks=False), AutocropPass(remarks=False),
        CalibratePass(data=str(SHARED / "images"), limit=2, **IMAGENET), QuantizePass(),
    ):  # fmt: skip
        p.apply(ctx, module)
    quant_part = ModuleOp([main_function(module).clone()])
    return to_bytes(compile_to_ebin(module, arch)), quant_part


def layer_table(sim: Simulator) -> list[dict]:
    """Per ONNX node: compute-timeline cycles, MACs and the cost model's MAC passes."""
    sched = sim.schedule
    arch = sim.arch
    peak = arch.mac_rows * arch.mac_cols
    layers: dict[str, dict] = defaultdict(lambda: dict(cycles=0, busy=0, macs=0, conv_cycles=0, ops=set()))
    compute = sorted((i for i in range(len(sim.program)) if sched.engines[i] == Engine.COMPUTE), key=lambda i: sched.start[i])
    previous_end = 0
    for i in compute:
        node = sim.ebin.debug[i][1] or "(none)"
        entry = layers[node]
        entry["cycles"] += int(sched.end[i]) - previous_end
        entry["busy"] += int(sched.cost[i])
        previous_end = int(sched.end[i])
        insn = sim.program[i]
        entry["ops"].add(insn.format.mnemonic)
        if insn.opcode == Opcode.CONV:
            entry["macs"] += macs(insn)
            entry["conv_cycles"] += int(sched.cost[i])
    rows = []
    for node, entry in layers.items():
        rows.append(dict(node=node, cycles=entry["cycles"], busy=entry["busy"], macs=entry["macs"],
                         ops="+".join(sorted(entry["ops"])),
                         utilization=entry["macs"] / (entry["cycles"] * peak) if entry["cycles"] else 0.0,
                         ideal=entry["macs"] / (entry["conv_cycles"] * peak) if entry["conv_cycles"] else 0.0))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--arch", default="ember16")
    parser.add_argument("--top", type=int, default=12, help="layers to list, by cycles")
    parser.add_argument("--check", action="store_true", help="run simulator and reference, compare bit for bit")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    data, quant_part = compile_detector(args.size, args.arch)
    compile_s = time.perf_counter() - start
    sim = Simulator(parse(data, "det.ebin"))
    stats = sim.stats()
    peak = sim.arch.mac_rows * sim.arch.mac_cols
    rows = layer_table(sim)
    conv_rows = [r for r in rows if r["macs"]]
    conv_macs = sum(r["macs"] for r in conv_rows)
    conv_cycles = sum(r["cycles"] for r in conv_rows)
    print(f"PP-OCRv4 detector {args.size}x{args.size} on {args.arch} (compiled in {compile_s:.1f} s)")
    print(f"instructions: {sum(stats.instructions.values())} {stats.instructions}")
    print(f"total cycles: {stats.total_cycles} ({stats.npu_ms:.2f} ms at {stats.clock_mhz} MHz); engines busy {stats.engine_cycles}")
    print(f"whole program MAC utilization: {100 * stats.mac_utilization:.1f}% ({stats.macs} MACs)")
    conv_busy = sum(r["busy"] for r in conv_rows)
    print(f"convolution layers: {100 * conv_macs / (conv_cycles * peak):.1f}% ({len(conv_rows)} layers, {conv_cycles}"
          f" cycles; {100 * conv_macs / (conv_busy * peak):.1f}% without compute stalls)")
    print(f"{'layer':<24} {'ops':<16} {'cycles':>9} {'stall':>7} {'MACs':>11} {'util':>6} {'ideal':>6}")
    for r in sorted(rows, key=lambda r: -r["cycles"])[: args.top]:
        print(f"{r['node'][:24]:<24} {r['ops']:<16} {r['cycles']:>9} {r['cycles'] - r['busy']:>7} {r['macs']:>11}"
              f" {100 * r['utilization']:>5.1f}%"
              f" {100 * r['ideal']:>5.1f}%")  # fmt: skip
    if args.check:
        desc = sim.ebin.iodesc["inputs"][0]
        x = np.random.default_rng(0).integers(-128, 128, size=desc["shape"]).astype(np.int8)
        got = sim.run({desc["name"]: x})
        real = ((x.transpose(0, 3, 1, 2).astype(np.float32) - desc["zero_point"]) * np.float32(desc["scale"]))
        expected = run_quant_module(quant_part, {desc["name"]: real.astype(np.float32)})
        (ref,) = expected.values()
        out = sim.ebin.iodesc["outputs"][0]
        y = (got[out["name"]].transpose(0, 3, 1, 2).astype(np.float32) - out["zero_point"]) * np.float32(out["scale"])
        print(f"bit-exact vs reference: {bool(np.array_equal(y, ref))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
