"""`quantize`: convert the calibrated `onnx` module to the int8 `quant` dialect.

    calibrate{data="images/" mean=127.5 std=127.5},quantize
    quantize{quant_info="model_quant_info.json" float_nodes="Sigmoid_0,Softmax_1"}
    quantize{int16_nodes="Conv_0,Conv_1*"}
    calibrate{data="images/" method=output_mse},quantize{bias_correction=true}
    calibrate{data="images/"},quantize{weight_rounding=gptq bias_correction=true}

The conversion itself (pattern table, user patterns, numbers) is
`ember.lowering.onnx_to_quant`. Ranges come from the module (`calibrate` records them
as `ember.calibration`) or from a `*_quant_info.json` file (`quant_info`). Nodes named
in `float_nodes` (comma separated) stay float on the host, like every node no pattern
matches; one warning lists them. Convolutions matching `int16_nodes` (comma separated
names or glob patterns) get int16 results where only convolutions read them (a16w8,
`ember.lowering.onnx_to_quant`); a graph input named there is quantized to int16 under
the same rule. `bias_correction=true` then corrects the int32 biases
on the samples `calibrate` recorded (`ember.passes.bias_correct`), normalized as
`calibrate` does by default (the normalization `extract-normalization` recorded).
`weight_rounding=gptq` rounds the int8 weights with GPTQ on the input statistics of the
same samples (`ember.passes.gptq`) instead of to nearest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import DictionaryAttr, ModuleOp, StringAttr
from xdsl.passes import ModulePass

from ember.frontend.onnx_export import export_model
from ember.frontend.samples import load_samples
from ember.lowering.onnx_to_quant import convert
from ember.passes.bias_correct import correct_biases
from ember.passes.calibrate import (
    CALIBRATION_ATTR,
    input_specs,
    load_quant_info,
    recorded_normalization,
    recorded_observed,
    recorded_ranges,
)
from ember.passes.gptq import weight_hessians
from ember.support.diagnostics import EmberError


@dataclass(frozen=True)
class QuantizePass(ModulePass):
    """onnx -> quant with per-channel int8 weights and calibrated int8 activations."""

    name = "quantize"

    quant_info: str = ""
    float_nodes: str = ""
    int16_nodes: str = ""
    bias_correction: bool = False
    weight_rounding: str = "nearest"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.weight_rounding not in ("nearest", "gptq"):
            raise EmberError(f"quantize{{weight_rounding={self.weight_rounding}}}: use nearest or gptq")
        if self.quant_info:
            calibration = load_quant_info(self.quant_info)
            ranges, observed = calibration.ranges, calibration.observed
        else:
            ranges, observed = recorded_ranges(op), recorded_observed(op)
        samples = None
        if self.bias_correction or self.weight_rounding == "gptq":
            entry = op.attributes.get(CALIBRATION_ATTR)
            if not isinstance(entry, DictionaryAttr) or not isinstance(data := entry.data.get("data"), StringAttr):
                option = "bias_correction=true" if self.bias_correction else "weight_rounding=gptq"
                raise EmberError(f"quantize{{{option}}} needs the samples of 'calibrate{{data=...}}' run on this module")
            samples = load_samples(data.data, input_specs(op), recorded_normalization(op))
        float_nodes = [n.strip() for n in self.float_nodes.split(",") if n.strip()]
        int16_nodes = [n.strip() for n in self.int16_nodes.split(",") if n.strip()]
        quantize_module(op, ranges, float_nodes, samples, self.weight_rounding == "gptq", self.bias_correction, int16_nodes, observed)


def quantize_module(
    module: ModuleOp,
    ranges: dict[str, tuple[float, float]],
    float_nodes: Sequence[str],
    samples: Iterable[Mapping[str, np.ndarray]] | None,
    gptq: bool,
    bias_correction: bool,
    int16_nodes: Sequence[str] = (),
    observed: Mapping[str, tuple[float, float]] | None = None,
) -> None:
    """Convert `module` to `quant` (`convert`), its weights GPTQ-rounded and its biases
    corrected on `samples` (float inputs by name) when asked; `QuantizePass` and the
    ember-compile driver both quantize through here. int16 tensors take their `observed`
    extremes as range."""
    # the float model must be taken before conversion replaces it
    float_model = export_model(module) if gptq or bias_correction else None
    hessians = weight_hessians(float_model, samples) if gptq else None
    convert(module, ranges, float_nodes, hessians, int16_nodes, observed)
    if bias_correction:
        correct_biases(module, float_model, samples)
