"""`quantize`: convert the calibrated `onnx` module to the int8 `quant` dialect.

    calibrate{data="images/" mean=127.5 std=127.5},quantize
    quantize{quant_info="model_quant_info.json" float_nodes="Sigmoid_0,Softmax_1"}

The conversion itself (pattern table, user patterns, numbers) is
`ember.lowering.onnx_to_quant`. Ranges come from the module (`calibrate` records them
as `ember.calibration`) or from a `*_quant_info.json` file (`quant_info`). Nodes named
in `float_nodes` (comma separated) stay float on the host, like every node no pattern
matches; one warning lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from ember.lowering.onnx_to_quant import convert
from ember.passes.calibrate import load_quant_info, recorded_ranges


@dataclass(frozen=True)
class QuantizePass(ModulePass):
    """onnx -> quant with per-channel int8 weights and calibrated int8 activations."""

    name = "quantize"

    quant_info: str = ""
    float_nodes: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        ranges = load_quant_info(self.quant_info) if self.quant_info else recorded_ranges(op)
        convert(op, ranges, [n.strip() for n in self.float_nodes.split(",") if n.strip()])
