"""GPTQ weight rounding (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization
for Generative Pre-trained Transformers"), for `quantize{weight_rounding=gptq}`.

Rounding each int8 weight to the nearest step minimizes the weights' own error, not the
layer's: the output error is (W - Q) x, and with correlated, unevenly scaled inputs the
rounding errors of different weights add up or cancel depending on the inputs. GPTQ
rounds the weights of one output channel one input column at a time and spreads each
rounding error over the columns not yet rounded, weighted by the inverse of the input's
second-moment matrix `H = mean x x^T` over calibration samples: it minimizes
`E ||(W - Q) x||^2` column by column.
The per-channel scales stay those of nearest rounding, so biases, multipliers and the
program are unchanged in kind; only the int8 values differ.

Measured on the PP-OCRv4 detector at 640x640 (weights quantized, activations float): the
final probability map's cosine to float on the two held-out text squares went from
0.992 / 0.938 (nearest) to 0.991 / 0.996; one 1x1 convolution after a HardSwish
(`p2o.Conv.6`) caused most of the loss (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx

from ember.dialects.quant_params import WEIGHT_MAX
from ember.passes.calibrate import observing_session, progress, run_observed

POSITIONS = 2048
"""Output positions (or matmul rows) sampled per layer and sample for its `H`: enough for
the largest layer's 864 inputs; the seed is fixed, so compilation stays deterministic."""

DAMPING = 0.1
"""`H += DAMPING * mean(diag H) * I` before inversion (0.01 in the paper; 0.1 was better on
the detector: text squares 0.991 / 0.996 against 0.989 / 0.995)."""


def _attribute(node: onnx.NodeProto, name: str, default):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else onnx.helper.get_attribute_value(found)


def _weighted_nodes(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Conv, Gemm and MatMul nodes with a constant weight, by name: the layers whose
    int8 weights GPTQ can round (ConvTranspose keeps nearest rounding)."""
    constants = {t.name: t for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if not node.name or len(node.input) < 2 or node.input[1] not in constants:
            continue
        dims = len(constants[node.input[1]].dims)
        convolution = node.op_type == "Conv" and dims == 4 and _attribute(node, "auto_pad", b"NOTSET") in (b"NOTSET", b"VALID")
        matmul = (node.op_type == "Gemm" and not _attribute(node, "transA", 0)) or (node.op_type == "MatMul" and dims == 2)
        if convolution or matmul:
            found[node.name] = node
    return found


def _conv_columns(x: np.ndarray, node: onnx.NodeProto, kernel: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The im2col rows [P, channels, kh, kw] of input x [1, channels, h, w] at up to
    POSITIONS sampled output positions (the order of an OIHW weight's flattened row)."""
    (kh, kw), (sh, sw) = kernel, _attribute(node, "strides", [1, 1])
    dh, dw = _attribute(node, "dilations", [1, 1])
    top, left, bottom, right = _attribute(node, "pads", [0, 0, 0, 0])
    padded = np.pad(x[0], ((0, 0), (top, bottom), (left, right)))
    oh = (padded.shape[1] - dh * (kh - 1) - 1) // sh + 1
    ow = (padded.shape[2] - dw * (kw - 1) - 1) // sw + 1
    picked = rng.choice(oh * ow, min(POSITIONS, oh * ow), replace=False)
    ys = (picked // ow)[:, None, None] * sh + np.arange(kh)[None, :, None] * dh
    xs = (picked % ow)[:, None, None] * sw + np.arange(kw)[None, None, :] * dw
    return padded[:, ys, xs].transpose(1, 0, 2, 3)


def weight_hessians(float_model: onnx.ModelProto, samples: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per weighted node (by name): `H = mean x x^T` of its input columns over the samples,
    float64 [groups, K, K] with K the inputs of one output channel (`ic/groups * kh * kw`
    for a convolution, the inner dimension for a matmul)."""
    nodes = _weighted_nodes(float_model)
    weights = {t.name: tuple(t.dims) for t in float_model.graph.initializer}
    inputs = sorted({node.input[0] for node in nodes.values()})
    session = observing_session(float_model, inputs)
    rng = np.random.default_rng(0)
    hessians: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    samples = list(samples)
    bar, task = progress("GPTQ statistics", len(samples))
    with bar:
        for sample in samples:
            values = run_observed(session, sample, inputs)
            for name, node in nodes.items():
                x = np.asarray(values[node.input[0]], dtype=np.float64)
                if node.op_type == "Conv":
                    _, icg, kh, kw = weights[node.input[1]]
                    groups = int(_attribute(node, "group", 1))
                    columns = _conv_columns(x, node, (kh, kw), rng)
                    per_group = columns.reshape(len(columns), groups, icg * kh * kw).transpose(1, 0, 2)
                else:
                    matrix = x.reshape(-1, x.shape[-1])
                    per_group = matrix[rng.choice(len(matrix), min(POSITIONS, len(matrix)), replace=False)][None]
                hessians[name] = hessians.get(name, 0) + np.matmul(per_group.transpose(0, 2, 1), per_group)
                counts[name] = counts.get(name, 0) + per_group.shape[1]
            bar.advance(task)
    return {name: h / counts[name] for name, h in hessians.items()}


def gptq_round(weight: np.ndarray, hessian: np.ndarray, scales: np.ndarray, input_step: float) -> np.ndarray:
    """int8 weights for float `weight` [oc, ...] (output channels first, grouped along
    them) with per-channel `scales` [oc], given the input statistics `hessian`
    [groups, K, K]: GPTQ's column-by-column rounding with error feedback, every group at
    once. A column no sample activated (H_jj = 0) is rounded to nearest.

    The layer will see its input quantized with step `input_step`: that adds noise of
    variance step^2 / 12 to every input, so `H` gets it on its diagonal. Without it GPTQ
    moved rounding errors onto inputs that are small in float but mostly quantization
    noise in int8 (detector 640x640: text squares 0.958 instead of 0.973)."""
    groups, k, _ = hessian.shape
    w = np.asarray(weight, dtype=np.float64).reshape(groups, -1, k).copy()
    s = np.asarray(scales, dtype=np.float64).reshape(groups, -1)
    h, index = hessian.copy(), np.arange(k)
    diagonal = h[:, index, index]
    diagonal[diagonal == 0] = 1.0  # a dead input: no error feedback to or from it
    h[:, index, index] = diagonal + DAMPING * diagonal.mean(axis=1, keepdims=True) + input_step**2 / 12
    # the upper Cholesky factor of H^-1: row j holds the feedback of column j's error
    feedback = np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)
    q = np.empty(w.shape, dtype=np.int8)
    for j in range(k):
        q[:, :, j] = np.clip(np.rint(w[:, :, j] / s), -WEIGHT_MAX, WEIGHT_MAX)
        error = (w[:, :, j] - q[:, :, j] * s) / feedback[:, j, j][:, None]
        w[:, :, j + 1 :] -= error[:, :, None] * feedback[:, None, j, j + 1 :]
    return q.reshape(weight.shape)
