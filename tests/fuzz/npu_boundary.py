"""The bit-exactness check at the NPU's int8 boundary, shared by the quantized fuzz property
and the lowering tests: the binary runs on random int8 inputs, the quant reference on the
float inputs the host would quantize to exactly those, and both are read as int8."""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from ember.dialects import quant
from ember.interpreters.quant_reference import dequantize, run_quant_module
from ember.lowering.quant_to_npu import main_function
from ember.target.ebin import parse
from ember.target.simulator import Simulator


def assert_simulator_matches_reference(quant_part: ModuleOp, binary: bytes, seed: int, source: str = "test.ebin") -> None:
    """`quant_part` is the quantized main function as compiled into `binary`."""
    sim = Simulator(parse(binary, source), source)
    rng = np.random.default_rng(seed)
    int8 = {d["name"]: rng.integers(-128, 128, size=d["shape"]).astype(np.int8) for d in sim.ebin.iodesc["inputs"]}
    got = sim.run(int8)
    floats = {}
    for d in sim.ebin.iodesc["inputs"]:
        q = int8[d["name"]]
        floats[d["name"]] = dequantize(q.transpose(0, 3, 1, 2) if d["layout"] == "NHWC" else q, d["scale"], d["zero_point"])
    captured: dict = {}
    run_quant_module(quant_part, floats, lambda op, results: captured.update(zip(op.results, results)))
    returned = main_function(quant_part).body.block.last_op.operands
    for d, value in zip(sim.ebin.iodesc["outputs"], returned, strict=True):
        # the reference is read where its output DequantizeOp reads: the int8 value
        if isinstance(value.owner, quant.DequantizeOp):
            value = value.owner.input
        expected = np.asarray(captured[value])
        if d["layout"] == "NHWC":
            expected = expected.transpose(0, 2, 3, 1)
        actual = got[d["name"]]
        assert actual.shape == expected.shape, f"{d['name']}: shape {actual.shape} != {expected.shape}"
        differ = np.flatnonzero(actual != expected)
        assert differ.size == 0, f"{d['name']}: {differ.size} of {expected.size} int8 values differ from the reference"
