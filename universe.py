"""Ember's dialects and passes, registered for `ember-opt` and, through the
`xdsl.universe` entry point, for stock `xdsl-opt`.

Each entry imports its module lazily, so a tool pays only for what it runs.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.ir import Dialect
from xdsl.passes import ModulePass
from xdsl.universe import Universe


def _onnx_dialect() -> Dialect:
    from ember.dialects.onnx import ONNX

    return ONNX


def _quant_dialect() -> Dialect:
    from ember.dialects.quant import Quant

    return Quant


def _npu_dialect() -> Dialect:
    from ember.dialects.npu import NPU

    return NPU


def _constant_fold() -> type[ModulePass]:
    from ember.passes.onnx_constant_fold import OnnxConstantFoldPass

    return OnnxConstantFoldPass


def _shape_inference() -> type[ModulePass]:
    from ember.passes.onnx_shape_inference import OnnxShapeInferencePass

    return OnnxShapeInferencePass


def _fold_batchnorm() -> type[ModulePass]:
    from ember.passes.fold_batchnorm import FoldBatchNormPass

    return FoldBatchNormPass


def _extract_normalization() -> type[ModulePass]:
    from ember.passes.extract_normalization import ExtractNormalizationPass

    return ExtractNormalizationPass


def _crop() -> type[ModulePass]:
    from ember.passes.crop import CropPass

    return CropPass


def _lower_quant_to_npu() -> type[ModulePass]:
    from ember.lowering.quant_to_npu import LowerQuantToNpuPass

    return LowerQuantToNpuPass


def _npu_allocate() -> type[ModulePass]:
    from ember.passes.npu_allocate import NpuAllocatePass

    return NpuAllocatePass


def _npu_schedule() -> type[ModulePass]:
    from ember.passes.npu_schedule import NpuSchedulePass

    return NpuSchedulePass


def _npu_preproc() -> type[ModulePass]:
    from ember.passes.npu_preproc import NpuPreprocPass

    return NpuPreprocPass


def _autocrop() -> type[ModulePass]:
    from ember.passes.autocrop import AutocropPass

    return AutocropPass


def _cross_layer_equalize() -> type[ModulePass]:
    from ember.passes.cross_layer_equalize import CrossLayerEqualizePass

    return CrossLayerEqualizePass


def _calibrate() -> type[ModulePass]:
    from ember.passes.calibrate import CalibratePass

    return CalibratePass


def _quantize() -> type[ModulePass]:
    from ember.passes.quantize import QuantizePass

    return QuantizePass


DIALECTS: dict[str, Callable[[], Dialect]] = {
    "onnx": _onnx_dialect,
    "quant": _quant_dialect,
    "npu": _npu_dialect,
}

PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "onnx-constant-fold": _constant_fold,
    "onnx-shape-inference": _shape_inference,
    "fold-batchnorm": _fold_batchnorm,
    "extract-normalization": _extract_normalization,
    "crop": _crop,
    "autocrop": _autocrop,
    "cross-layer-equalize": _cross_layer_equalize,
    "calibrate": _calibrate,
    "quantize": _quantize,
    "lower-quant-to-npu": _lower_quant_to_npu,
    "npu-preproc": _npu_preproc,
    "npu-allocate": _npu_allocate,
    "npu-schedule": _npu_schedule,
}

EMBER_UNIVERSE = Universe(all_dialects=DIALECTS, all_passes=PASSES)
