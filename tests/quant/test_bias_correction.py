"""Empirical bias correction (passes/bias_correct.py): it removes the mean per-channel error."""

from __future__ import annotations

import warnings

import numpy as np
from onnx import helper

from ember.dialects import quant
from ember.dialects.quant import quant_type_of
from ember.frontend.onnx_export import export_model, graph_function
from ember.frontend.onnx_import import import_model
from ember.interpreters.mixed_runner import MixedRunner
from ember.interpreters.quant_reference import dequantize
from ember.lowering.onnx_to_quant import QuantizationWarning, convert
from ember.passes.bias_correct import channel_means, correct_biases
from ember.passes.calibrate import calibrate, observing_session, run_observed
from tests.quant.quantize_helpers import model, samples

SHAPES = {"x": (1, 3, 8, 8)}


def _two_convs():
    rng = np.random.default_rng(3)
    return model(
        [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], name="conv0"),
         helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
         helper.make_node("Conv", ["r0", "w1", "b1"], ["y"], name="conv1")],
        [("x", SHAPES["x"])], [("y", None)],
        [("w0", rng.standard_normal((6, 3, 3, 3)) * 0.3), ("b0", rng.standard_normal(6) * 0.1),
         ("w1", rng.standard_normal((4, 6, 1, 1)) * 0.3), ("b1", rng.standard_normal(4) * 0.1)],
    )  # fmt: skip


def _channel_error(module, float_model, data) -> np.ndarray:
    """Per-channel mean error (in output steps) of the last conv's output on `data`."""
    (conv,) = [op for op in graph_function(module).body.block.ops if isinstance(op, quant.Conv2DOp)][-1:]
    qtype = quant_type_of(conv.results[0])
    session = observing_session(float_model, ["y"])
    runner, errors = MixedRunner(module), []
    for sample in data:
        seen = {}
        runner.run(sample, lambda op, results: seen.setdefault("y", results[0]) if op is conv else None)
        real = dequantize(seen["y"], qtype.scale, qtype.zero_point)
        errors.append(channel_means(real - run_observed(session, sample, ["y"])["y"], 1) / qtype.scale)
    return np.mean(errors, axis=0)


def test_bias_correction_lowers_the_per_channel_mean_error():
    module = import_model(_two_convs())
    calibration = calibrate(module, samples(SHAPES, 8), "minmax")
    float_model = export_model(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        convert(module, calibration.ranges)
    before = np.abs(_channel_error(module, float_model, samples(SHAPES, 8))).max()
    shifts = correct_biases(module, float_model, samples(SHAPES, 8))
    after = np.abs(_channel_error(module, float_model, samples(SHAPES, 8))).max()
    assert set(shifts) == {"c0", "y"}  # conv0's bias matches the float tensor before the Relu
    assert after < before
    assert after < 0.5 + 1e-6  # what is left is the bias's own rounding (half a step at most)
    module.verify()
