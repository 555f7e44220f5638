"""What the Ember NPU runs: the ONNX op types and attribute limits, in one place.

`autocrop` reads this table to decide which nodes stay on the accelerator, and compilation
calls `require_npu_support` so that an op the NPU cannot run is named with the way out.

The limits follow the instruction set (docs: DESIGN.md section 5):
- CONV computes one output tile from a `k x k` window of every input channel in the tile.
  Kernels up to 7x7 cover the stems of the usual classifiers and detectors (ResNet's 7x7,
  MobileNet's 3x3 / 5x5 depthwise) while one tile's input window still fits the input
  buffer; strides up to 4 (patchify stems), dilations up to 4. Groups: 1, depthwise, or any
  grouping whose channels divide evenly.
- ConvTranspose runs when it does not overlap (kernel == stride, no padding, groups that
  divide the channels): that is a 1x1 CONV to `k*k*Cout` channels stored by a strided DMA
  as a depth-to-space (`conv_transpose_reason`, which `quantize` uses too).
- POOL: max / average windows with the same kernel and stride limits, and global averages.
- ELTW: Add / Sub / Mul of two tensors or by constants, Div by a constant (a Mul). It
  streams the result's pixels, so one operand has the result's shape and the other the
  same shape or one value per channel (`eltw_shapes_reason`, which the lowering and
  `quantize` use too); a per-channel constant after a convolution folds into its POST.
- POST lookup tables: Sigmoid, HardSigmoid, HardSwish, Tanh, LeakyRelu; Relu and Clip are
  its clamp; SiLU is `x * Sigmoid(x)` (two supported ops).
- RESIZE: 2-D nearest or bilinear (`linear`) on the spatial axes.
- Concat along the channel axis; Gemm / MatMul with constant weights (a 1x1 CONV);
  BatchNormalization (folded by `fold-batchnorm`, or a per-channel Mul + Add);
  Flatten / Reshape only where no data moves (`[N, C, 1, 1] -> [N, C]`).
Everything else (Softmax, TopK, NonMaxSuppression, GatherND, Gather, Split, Slice,
Transpose, general Reshape, Cast, Shape arithmetic, ...) runs on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from xdsl.dialects.builtin import Float16Type, Float32Type, TensorType
from xdsl.dialects.func import FuncOp
from xdsl.ir import Operation, OpResult, SSAValue

from ember.dialects.onnx import InitializerOp, OnnxOp, python_value
from ember.support.diagnostics import EmberError

MAX_KERNEL = 7
MAX_STRIDE = 4
MAX_DILATION = 4
RESIZE_MODES = ("nearest", "linear")
LOOKUP_ACTIVATIONS = ("Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu")
CLAMP_ACTIVATIONS = ("Relu", "Clip")
ELEMENTWISE = ("Add", "Sub", "Mul")
PASS_THROUGH = ("Identity", "Dropout", "BatchNormalization")
ANCHORS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""The compute ops a head ends with: `autocrop` ends the main part at them."""


def _attr(op: OnnxOp, name: str, default):
    attr = op.properties.get(name)
    return default if attr is None else python_value(attr)


def _constant(value: SSAValue | None) -> np.ndarray | None:
    owner = value.op if isinstance(value, OpResult) else None
    if isinstance(owner, InitializerOp):
        return python_value(owner.value)
    if isinstance(owner, OnnxOp) and owner.ONNX_TYPE == "Constant":
        return _attr(owner, "value", None)
    return None


def _window(op: OnnxOp, kernel: list[int]) -> str | None:
    if len(kernel) != 2:
        return f"{len(kernel)}-D windows (the NPU runs 2-D ones)"
    if max(kernel) > MAX_KERNEL:
        return f"kernel {'x'.join(map(str, kernel))} is larger than {MAX_KERNEL}x{MAX_KERNEL}"
    if max(_attr(op, "strides", [1, 1])) > MAX_STRIDE:
        return f"stride {_attr(op, 'strides', [])} is larger than {MAX_STRIDE}"
    if max(_attr(op, "dilations", [1, 1])) > MAX_DILATION:
        return f"dilation {_attr(op, 'dilations', [])} is larger than {MAX_DILATION}"
    return None


def _conv(op: OnnxOp) -> str | None:
    weight = _constant(op.operands[1])
    if weight is None:
        return "its weights are not constants"
    if (reason := _window(op, list(weight.shape[2:]))) is not None:
        return reason
    group = _attr(op, "group", 1)
    if weight.shape[0] % group:
        return f"group {group} does not divide its {weight.shape[0]} output channels"
    return None


def conv_transpose_reason(op: OnnxOp) -> str | None:
    """Why a ConvTranspose is not the depth-to-space deconvolution the NPU runs, or None.

    It runs when stride == kernel, without padding, output padding or dilation, and its
    groups divide the channels: every input pixel then writes its own `kh x kw` block of
    the result (a 1x1 CONV to `kh*kw*Cout` channels whose STORE scatters the blocks).
    `autocrop` places nodes with this check and `quantize` converts exactly these nodes to
    `quant.conv_transpose`, so the two always agree."""
    weight = _constant(op.operands[1])
    if weight is None:
        return "its weights are not constants"
    if weight.ndim != 4:
        return f"{weight.ndim - 2}-D windows (the NPU runs 2-D ones)"
    kernel = list(weight.shape[2:])
    strides = list(_attr(op, "strides", [1, 1]))
    if kernel != strides:
        return f"kernel {'x'.join(map(str, kernel))} != stride {'x'.join(map(str, strides))}; only kernel == stride runs, as a depth-to-space"
    if any(d != 1 for d in _attr(op, "dilations", [1, 1])):
        return "it is dilated; only an undilated deconvolution runs"
    if any(_attr(op, "pads", [])) or any(_attr(op, "output_padding", [])):
        return "it pads or crops its output; only an unpadded deconvolution runs"
    group = _attr(op, "group", 1)
    if weight.shape[0] % group:
        return f"group {group} does not divide its {weight.shape[0]} input channels"
    before, after = op.operands[0].type.get_shape(), op.results[0].type.get_shape()
    if tuple(after[2:]) != (before[2] * kernel[0], before[3] * kernel[1]):
        return f"its output shape {list(after)} is not the input's H x W times the kernel"
    return _window(op, kernel)


def _pool(op: OnnxOp) -> str | None:
    return _window(op, _attr(op, "kernel_shape", []))


def _resize(op: OnnxOp) -> str | None:
    mode = _attr(op, "mode", "nearest")
    if mode not in RESIZE_MODES:
        return f"mode '{mode}' (the NPU resizes with nearest or linear)"
    if len(op.results[0].type.get_shape()) != 4:
        return "it is not a 2-D resize of an NCHW tensor"
    before, after = op.operands[0].type.get_shape(), op.results[0].type.get_shape()
    if tuple(before[:2]) != tuple(after[:2]):
        return "it resizes the batch or channel axis"
    return None


def _concat(op: OnnxOp) -> str | None:
    rank = len(op.results[0].type.get_shape())
    axis = _attr(op, "axis", 1)
    return None if rank == 4 and axis % rank == 1 else f"it concatenates along axis {axis}, not the channel axis of an NCHW tensor"


def eltw_shapes_reason(a: Sequence[int], b: Sequence[int], result: Sequence[int]) -> str | None:
    """Why ELTW cannot compute an elementwise op of operands shaped `a` and `b` into
    `result`, or None when it can.

    ELTW walks the result's pixels with both operands in the same layout, so one operand
    must have the result's shape; the other has it too, or holds one value per channel
    (`[1, C, 1, 1]` for a `[N, C, H, W]` result), which it loads once and repeats over the
    pixels (`broadcast_b`). Any other broadcast would need a copy per pixel. The NPU
    lowering refuses what this refuses, and `quantize` does not make `quant.add` /
    `quant.mul` of these shapes, so `autocrop` sends them to the host."""
    a, b, result = tuple(a), tuple(b), tuple(result)
    if a != result:
        a, b = b, a
    if a != result:
        return f"neither operand has the result's shape {list(result)}"
    per_channel = len(result) == 4 and len(b) == 4 and b[0] == 1 and b[1] == result[1] and b[2:] == (1, 1)
    if b == result or per_channel:
        return None
    return f"it broadcasts {list(b)} to {list(result)}; the NPU broadcasts only one value per channel ([1, C, 1, 1])"


def _elementwise(op: OnnxOp) -> str | None:
    # With a constant operand the op may fold into the POST of the convolution before it,
    # which takes any per-channel constant; whether it does is `quantize`'s matching.
    if len(op.operands) != 2 or any(_constant(v) is not None for v in op.operands):
        return None
    a, b = (v.type.get_shape() for v in op.operands)
    return eltw_shapes_reason(a, b, op.results[0].type.get_shape())


def _div(op: OnnxOp) -> str | None:
    return None if _constant(op.operands[1]) is not None else "it divides by a tensor (only division by a constant runs, as a Mul)"


def _matmul(op: OnnxOp) -> str | None:
    weight = _constant(op.operands[1])
    if weight is None or weight.ndim != 2:
        return "its weight is not a constant 2-D matrix"
    if len(op.operands[0].type.get_shape()) != 2:
        return "its input is not 2-D"
    return None


def _gemm(op: OnnxOp) -> str | None:
    if _constant(op.operands[1]) is None or _attr(op, "transA", 0):
        return "its B input is not a constant or its A input is transposed"
    return None


def _flatten(op: OnnxOp) -> str | None:
    shape = list(op.operands[0].type.get_shape())
    result = list(op.results[0].type.get_shape())
    if len(shape) == 4 and shape[2:] == [1, 1] and result == shape[:2]:
        return None
    return f"it moves data ({shape} -> {result}); only [N, C, 1, 1] -> [N, C] runs"


def _always(op: OnnxOp) -> str | None:
    return None


CAPABILITIES: dict[str, Callable[[OnnxOp], str | None]] = {
    "Conv": _conv,
    "ConvTranspose": conv_transpose_reason,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _always,
    "GlobalMaxPool": _always,
    "Resize": _resize,
    "Concat": _concat,
    "Div": _div,
    **{t: _elementwise for t in ELEMENTWISE},
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Flatten": _flatten,
    "Reshape": _flatten,
    **{t: _always for t in (*LOOKUP_ACTIVATIONS, *CLAMP_ACTIVATIONS, *PASS_THROUGH)},
}
"""ONNX op type -> a check giving why the NPU cannot run a node of that type (None: it can)."""


def _float_static(value: SSAValue) -> bool:
    return (
        isinstance(value.type, TensorType)
        and isinstance(value.type.element_type, Float32Type | Float16Type)
        and all(d >= 0 for d in value.type.get_shape())
    )


def npu_unsupported_reason(op: Operation) -> str | None:
    """Why the Ember NPU cannot run `op`, or None when it can."""
    if not isinstance(op, OnnxOp):
        return f"'{op.name}' is not a standard ONNX op"
    check = CAPABILITIES.get(op.ONNX_TYPE)
    if check is None:
        return f"{op.ONNX_TYPE} is not in the NPU's capability table"
    data = [v for v in op.operands if _constant(v) is None]
    if not all(_float_static(v) for v in [*data, *op.results]):
        return "it works on non-float tensors or tensors without a static shape"
    return check(op)


def require_npu_support(func: FuncOp) -> None:
    """Raise a one-line error naming the first node of `func` the NPU cannot run.

    `func` is an `onnx` graph or, after `quantize`, quant ops (which `quantize` made for the
    NPU) around the float nodes it left; those float nodes are checked."""
    for op in func.body.block.ops:
        if isinstance(op, InitializerOp) or (isinstance(op, OnnxOp) and op.ONNX_TYPE == "Constant") or op.name == "func.return":
            continue
        if op.dialect_name() == "quant":
            continue
        reason = npu_unsupported_reason(op)
        if reason is not None:
            name = op.node_name if isinstance(op, OnnxOp) and op.node_name else op.name
            kind = op.ONNX_TYPE if isinstance(op, OnnxOp) else op.name
            raise EmberError(
                f"{kind} '{name}': the Ember NPU cannot run it ({reason}); move it to the host with -p autocrop (ember-compile --autocrop)"
            )
