"""GPTQ weight rounding (passes/gptq.py): on the statistics it is given, its int8 weights
have a smaller layer-output error than nearest rounding, on the same per-channel scales;
through `quantize{weight_rounding=gptq}` the real classifier stays accurate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from xdsl.context import Context

from ember.dialects import quant
from ember.dialects.quant_params import quantize_weights
from ember.frontend.onnx_export import export_model, graph_function
from ember.frontend.onnx_import import import_model, load_onnx, parse_input_shapes
from ember.frontend.samples import InputSpec, Normalization, load_samples
from ember.interpreters.accuracy_report import cosine
from ember.interpreters.mixed_runner import MixedRunner
from ember.passes.autocrop import AutocropPass
from ember.passes.calibrate import CalibratePass, observing_session
from ember.passes.fold_batchnorm import FoldBatchNormPass
from ember.passes.gptq import gptq_round, weight_hessians
from ember.passes.quantize import QuantizePass
from ember.support.diagnostics import EmberError

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def layer_error(w: np.ndarray, q: np.ndarray, x: np.ndarray) -> float:
    """Mean squared output error of weights q against w on input rows x [P, K]."""
    return float(np.mean(((w - q) @ x.T) ** 2))


@pytest.mark.parametrize("groups", [1, 4])
def test_gptq_beats_nearest_on_imbalanced_inputs(groups):
    """Inputs whose channels differ by 100x in magnitude, correlated: GPTQ's output error
    on those inputs is below nearest rounding's, with the nearest rounding's scales and
    every value on the int8 grid; an input no sample activates does not disturb it."""
    rng = np.random.default_rng(groups)
    k, oc = 24, 8 * groups
    mixing = rng.standard_normal((k, k)) * np.logspace(0, 2, k)[None, :]
    x = rng.standard_normal((4000, groups, k)) @ mixing.T
    x[:, :, 5] = 0.0  # a dead input
    w = rng.standard_normal((oc, k)) / np.logspace(0, 2, k)[None, :]
    q_nearest, scales = quantize_weights(w, 0)
    hessian = np.einsum("pgi,pgj->gij", x, x) / len(x)
    q = gptq_round(w, hessian, scales, input_step=0.0)
    assert q.dtype == np.int8 and q.shape == w.shape and np.abs(q).max() <= 127
    ocg = oc // groups
    for g in range(groups):
        rows = slice(g * ocg, (g + 1) * ocg)
        gptq_error = layer_error(w[rows], q[rows] * scales[rows, None], x[:, g])
        assert gptq_error < 0.5 * layer_error(w[rows], q_nearest[rows] * scales[rows, None], x[:, g])
    assert np.array_equal(q[:, 5], q_nearest[:, 5])  # no error is fed into the dead input


def test_input_noise_makes_gptq_tend_to_nearest():
    """An input step far above the inputs' spread: the layer's inputs will be mostly
    quantization noise, so GPTQ leaves the nearest rounding (almost) as it is."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2000, 16)) @ (rng.standard_normal((16, 16)) * np.logspace(0, 2, 16)[None, :]).T
    w = rng.standard_normal((6, 16))
    q_nearest, scales = quantize_weights(w, 0)
    hessian = (x.T @ x / len(x))[None]
    moved = np.abs(gptq_round(w, hessian, scales, input_step=0.0).astype(int) - q_nearest).sum()
    damped = np.abs(gptq_round(w, hessian, scales, input_step=1e4).astype(int) - q_nearest).sum()
    assert moved > 0 and damped < moved / 4


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_quantize_with_gptq_on_the_real_classifier():
    """The shared classifier quantized with GPTQ rounding (its convolutions, depthwise
    included, and its fully-connected layer): the weights differ from nearest rounding,
    the scales do not, and the quantized model stays close to float on a photograph."""
    path = SHARED / "models" / "ppocr_mobile_v2_cls.onnx"
    modules = {}
    for rounding in ("nearest", "gptq"):
        module = import_model(load_onnx(str(path)), parse_input_shapes(["x=1,3,48,192"]), source=str(path))
        for p in (FoldBatchNormPass(), AutocropPass(remarks=False), CalibratePass(data=str(SHARED / "images"), limit=2, mean=(127.5,), std=(127.5,))):
            p.apply(Context(), module)
        float_model = export_model(module)
        QuantizePass(weight_rounding=rounding).apply(Context(), module)
        modules[rounding] = module
    weights = {
        rounding: [op.operands[1].owner for op in graph_function(m).body.block.ops if isinstance(op, quant.Conv2DOp | quant.FullyConnectedOp)]
        for rounding, m in modules.items()
    }
    changed = [not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(weights["nearest"], weights["gptq"])]
    assert len(changed) == len(weights["gptq"]) > 10 and sum(changed) > len(changed) // 2
    assert all(a.results[0].type == b.results[0].type for a, b in zip(weights["nearest"], weights["gptq"]))
    normalization = Normalization((127.5,), (127.5,))
    (sample,) = load_samples(str(SHARED / "images"), [InputSpec("x", (1, 3, 48, 192))], normalization, files=["brick.png"])
    session = observing_session(float_model, [])
    reference = session.run(None, sample)[0]
    got = next(iter(MixedRunner(modules["gptq"]).run(sample).values()))
    assert cosine(reference, got) > 0.99


def test_hessians_have_one_matrix_per_group():
    path = SHARED / "models" / "ppocr_mobile_v2_cls.onnx"
    module = import_model(load_onnx(str(path)), parse_input_shapes(["x=1,3,48,192"]), source=str(path))
    float_model = export_model(module)
    samples = load_samples(str(SHARED / "images"), [InputSpec("x", (1, 3, 48, 192))], None, files=["brick.png"])
    hessians = weight_hessians(float_model, samples)
    weights = {t.name: tuple(t.dims) for t in float_model.graph.initializer}
    for node in float_model.graph.node:
        if node.name in hessians and node.op_type == "Conv":
            _, icg, kh, kw = weights[node.input[1]]
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            assert hessians[node.name].shape == (groups, icg * kh * kw, icg * kh * kw)
            assert np.allclose(hessians[node.name], hessians[node.name].transpose(0, 2, 1))


def test_unknown_weight_rounding_is_refused():
    with pytest.raises(EmberError, match=r"quantize\{weight_rounding=adaround\}: use nearest or gptq"):
        QuantizePass(weight_rounding="adaround").apply(Context(), None)
