"""Empirical bias correction of a quantized module (Nagel et al. 2019, AIMET's empirical variant).

    quantize{bias_correction=true}

Rounding the weights and the activations shifts the mean of a convolution's result: the
int8 model's pre-activation of channel c is on average off by `e[c]` from the float one,
and every later layer inherits the shift. With the calibration samples, each
`quant.conv2d` / `quant.conv_transpose` / `quant.fully_connected` in program order gets

    bias[c] -= rint(e[c] / (s_in * s_w[c]))

where `e[c]` is the mean over samples and positions of `s_in * s_w[c] * (acc + bias[c])`
(the quantized pre-activation in real units, before clamp/table/requantization) minus the
float pre-activation. The quantized side is the module itself run on the samples with the
biases of the layers before already corrected, so `e` also removes the mean error those
layers' inputs carry. Only the int32 biases change: the program stays bit-exact on the NPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.dialects.func import ReturnOp
from xdsl.ir import Operation, SSAValue

from ember.dialects import quant
from ember.dialects.dense import dense_from_numpy
from ember.dialects.onnx import NODE_NAME
from ember.dialects.quant import array_values, quant_type_of
from ember.frontend.onnx_export import graph_function
from ember.interpreters.mixed_runner import MixedRunner
from ember.interpreters.quant_reference import INT32_MAX, INT32_MIN, conv2d_accumulate
from ember.lowering.onnx_to_quant import CLAMPS, LUT_INPUT_ATTR
from ember.passes.calibrate import observing_session, progress, run_observed
from ember.support.blas import single_threaded_blas
from ember.support.diagnostics import EmberError

WEIGHTED = (quant.Conv2DOp, quant.ConvTransposeOp, quant.FullyConnectedOp)


def pre_activation(op: Operation, outputs: Mapping[str, tuple[str, str]]) -> str:
    """The ONNX tensor a weighted op requantizes: the table's input if it has a table,
    else the result of its last fused node that is not a clamp (a clamp tail is applied
    after the bias, so the bias must match the float tensor before it).
    `outputs` maps node names to (op type, first output)."""
    lut_input = op.attributes.get(LUT_INPUT_ATTR)
    if isinstance(lut_input, StringAttr):
        return lut_input.data
    nodes = op.attributes.get(NODE_NAME)
    if not isinstance(nodes, StringAttr):
        raise EmberError(f"bias correction: '{op.name}' does not record the ONNX nodes it computes")
    fused = [outputs[name] for name in nodes.data.split(",")]
    return next(output for op_type, output in reversed(fused) if op_type not in CLAMPS)


def channel_means(x: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel mean over every other axis, in float64."""
    return np.moveaxis(np.asarray(x, dtype=np.float64), axis, 0).reshape(x.shape[axis], -1).mean(axis=1)


def mean_accumulator(op: Operation, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-output-channel mean of the op's int32 accumulator (before bias) for input `x`."""
    x_zp = int(quant_type_of(op.operands[0]).zero_point)
    if isinstance(op, quant.FullyConnectedOp):
        return (channel_means(x, -1) - x_zp) @ weight.astype(np.float64).T
    group = int(op.group.value.data)
    if isinstance(op, quant.ConvTransposeOp):
        # each kernel tap is a 1x1 convolution filling an equal share of the output
        kh, kw = weight.shape[2:]
        taps = [conv2d_accumulate(x, x_zp, weight[:, :, i : i + 1, j : j + 1], group=group) for i in range(kh) for j in range(kw)]
        return np.mean([channel_means(t, 1) for t in taps], axis=0)
    acc = conv2d_accumulate(
        x, x_zp, weight, strides=array_values(op.strides), pads=array_values(op.pads),
        dilations=array_values(op.dilations), group=group,
    )  # fmt: skip
    return channel_means(acc, 1)


def correct_biases(module: ModuleOp, float_model: onnx.ModelProto, samples: Iterable[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Correct the int32 bias of every weighted quant op of `module` in place, in program
    order, on `samples` (float inputs by name) against `float_model` (the model `module`
    was quantized from). Returns, per corrected op (its output's ONNX name), the largest
    correction in units of its output's int8 step, for reports."""
    samples = list(samples)
    function = graph_function(module)
    ops = list(function.body.block.ops)
    outputs = {node.name: (node.op_type, node.output[0]) for node in float_model.graph.node if node.name}
    targets = {op: pre_activation(op, outputs) for op in ops if isinstance(op, WEIGHTED) and len(op.operands) > 2}
    float_means = _float_means(float_model, targets, samples)
    last_use = {value: index for index, op in enumerate(ops) for value in op.operands}
    runner = MixedRunner(module)
    envs = [runner.bind(sample) for sample in samples]
    shifts: dict[str, float] = {}
    bar, task = progress("bias correction", len(ops))
    with bar, single_threaded_blas():
        for index, op in enumerate(ops):
            if isinstance(op, ReturnOp):
                break
            if op in targets:
                shifts[targets[op]] = _correct(op, envs, float_means[targets[op]])
                bias = op.operands[2].owner.numpy()
                for env in envs:  # the bias constant ran before its user: refresh it
                    env[op.operands[2]] = bias
            for env in envs:
                env.update(zip(op.results, runner.step(op, env)))
                for value in op.operands:  # keep memory at the live tensors of every sample
                    if last_use[value] == index:
                        env.pop(value, None)
            bar.advance(task)
    return shifts


def _float_means(float_model: onnx.ModelProto, targets: Mapping[Operation, str], samples: list) -> dict[str, np.ndarray]:
    """Per-channel means of the float pre-activations over all samples (each sample has
    the same shape, so the mean of the per-sample means is the overall mean)."""
    axes = {name: (-1 if isinstance(op, quant.FullyConnectedOp) else 1) for op, name in targets.items()}
    session = observing_session(float_model, axes)
    sums = {name: 0.0 for name in axes}
    for sample in samples:
        for name, x in run_observed(session, sample, axes).items():
            sums[name] = sums[name] + channel_means(x, axes[name])
    return {name: total / len(samples) for name, total in sums.items()}


def _correct(op: Operation, envs: list[dict[SSAValue, Any]], float_mean: np.ndarray) -> float:
    """Shift one op's bias by its mean pre-activation error over the samples; the
    largest shift in output steps."""
    weight_op, bias_op = op.operands[1].owner, op.operands[2].owner
    assert isinstance(weight_op, quant.ConstantOp) and isinstance(bias_op, quant.ConstantOp)
    weight, bias = weight_op.numpy(), bias_op.numpy().astype(np.int64)
    bias_scale = quant_type_of(op.operands[2]).scale_array().astype(np.float64)
    accumulated = np.mean([mean_accumulator(op, env[op.operands[0]], weight) for env in envs], axis=0)
    error = bias_scale * (accumulated + bias) - float_mean
    corrected = np.clip(bias - np.rint(error / bias_scale).astype(np.int64), INT32_MIN, INT32_MAX).astype(np.int32)
    bias_op.value = dense_from_numpy(corrected)
    out_type = op.lut_input_type or quant_type_of(op.results[0])
    return float(np.max(np.abs(error)) / out_type.scale)
