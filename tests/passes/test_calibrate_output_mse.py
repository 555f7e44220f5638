"""calibrate{method=output_mse}: a table input's range follows the table's function
(HardSwish is flat below -3), and the quantized model loses less than with `mse`."""

from __future__ import annotations

import numpy as np
from onnx import helper

from ember.frontend.onnx_import import import_model
from ember.passes.calibrate import TensorStats, calibrate, table_functions, table_input_range
from tests.quant.quantize_helpers import model, quantize_and_compare, samples


def _conv_hardswish_conv():
    rng = np.random.default_rng(3)
    w1 = rng.normal(size=(8, 3, 1, 1)) * 20.0  # wide pre-activations, mostly far below -3
    w1[:, :, 0, 0] -= 30.0
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["pre"]),
        helper.make_node("HardSigmoid", ["pre"], ["gate"], alpha=1.0 / 6.0, beta=0.5),
        helper.make_node("Mul", ["pre", "gate"], ["act"]),
        helper.make_node("Conv", ["act", "w2"], ["y"]),
    ]
    inits = [("w1", w1), ("w2", rng.normal(size=(4, 8, 1, 1)))]
    return model(nodes, [("x", [1, 3, 8, 8])], [("y", None)], inits)


def test_table_range_skips_the_flat_side() -> None:
    stats = TensorStats(-100.0, 10.0)
    values = np.random.default_rng(0).uniform(-100.0, 10.0, 100_000)
    stats.observe_histogram(values, 2048)
    lo, hi = table_input_range(stats, lambda x: np.maximum(x, 0.0))  # ReLU: nothing below 0 matters
    assert -1.0 < lo <= 0.0 and hi > 9.0


def test_hardswish_input_range_and_accuracy() -> None:
    proto = _conv_hardswish_conv()
    module = import_model(proto)
    assert set(table_functions(module)) == {"pre"}
    shapes = {"x": (1, 3, 8, 8)}
    ranges = {method: calibrate(import_model(proto), samples(shapes), method).ranges for method in ("mse", "output_mse")}
    observed = calibrate(import_model(proto), samples(shapes), "minmax").ranges["pre"]
    assert observed[0] < -50.0 and -4.5 < ranges["output_mse"]["pre"][0] < -2.0
    assert ranges["output_mse"]["act"] == ranges["mse"]["act"]  # a conv input: mse's range
    _, cos_mse, _ = quantize_and_compare(proto, shapes, "mse")
    _, cos_output, _ = quantize_and_compare(proto, shapes, "output_mse")
    assert cos_output > cos_mse
