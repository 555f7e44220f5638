"""A hypothesis strategy of random, valid ONNX models over the op set Ember supports.

`models()` draws a `GeneratedModel`: an ONNX model (opset 11..17, float32 weights) and
the input feeds to run it on. The graph is a stream of NCHW blocks — Conv (kernel,
stride, pads, dilation, groups incl. depthwise), ConvTranspose, BatchNormalization,
activations, broadcasting Add/Mul with constants, residual and Concat branches, pooling,
Resize, layout ops, exporter-style shape arithmetic, Identity/Dropout — optionally behind
an input-normalization prefix, and ends in one or more heads (the 4-D tensor itself,
Flatten or shape-computed Reshape into Gemm/MatMul, an intermediate tensor).

Hypothesis draws the structure and every parameter, and a seed from which numpy draws
the weights and inputs: shrinking then removes blocks and simplifies parameters while
the numbers stay reproducible. Every model passes `onnx.checker` with full shape
inference before it is returned, so a failure downstream is never the generator's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

MIN_OPSET, MAX_OPSET = 11, 17
MAX_CHANNELS = 16
MAX_SPATIAL = 24


@dataclass
class GeneratedModel:
    """A generated model with the inputs to run it on."""

    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    blocks: list[str]
    """The block kinds in graph order (what a failing example is made of)."""

    def __repr__(self) -> str:
        opset = self.model.opset_import[0].version
        return f"GeneratedModel(opset={opset}, nodes={len(self.model.graph.node)}, blocks={self.blocks})"


@dataclass
class _Tensor:
    name: str
    shape: list[int]


class _Builder:
    """Accumulates nodes and initializers; every node and tensor gets a unique name."""

    def __init__(self, draw: Callable, rng: np.random.Generator, opset: int):
        self.draw = draw
        self.rng = rng
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, array: np.ndarray, prefix: str = "c") -> str:
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs) -> list[str]:
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.fresh(op_type), **attrs))
        return names

    def weights(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        """He-scaled weights: activations stay near unit size through deep chains, so
        float rounding differences stay within the comparison tolerance."""
        return (self.rng.normal(size=shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)

    def small(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.normal(scale=0.5, size=shape).astype(np.float32)


# --------------------------------------------------------------------------- blocks
# Each block reads the current NCHW tensor and returns the next; `pool` holds earlier
# tensors that residual and Concat blocks may join.


def _out_extent(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> int:
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def _conv_params(b: _Builder, h: int, w: int, allow_dilation: bool = True) -> dict:
    """Kernel, stride, dilation and pads that give an output of at least 1x1."""
    params = {"kernel_shape": [], "strides": [], "dilations": [], "pads": [0, 0, 0, 0]}
    for axis, size in enumerate((h, w)):
        kernel = b.draw(st.integers(1, 5))
        dilation = b.draw(st.integers(1, 2)) if allow_dilation else 1
        stride = b.draw(st.integers(1, 2))
        span = dilation * (kernel - 1) + 1
        pad_begin = b.draw(st.integers(0, span - 1))
        pad_end = b.draw(st.integers(0, span - 1))
        if _out_extent(size, kernel, stride, dilation, pad_begin, pad_end) < 1:
            kernel, dilation, pad_begin, pad_end = 1, 1, 0, 0
        params["kernel_shape"].append(kernel)
        params["strides"].append(stride)
        params["dilations"].append(dilation)
        params["pads"][axis], params["pads"][axis + 2] = pad_begin, pad_end
    return params


def _groups(b: _Builder, channels: int) -> tuple[int, int]:
    """(group, output channels): dense, depthwise (with a multiplier) or grouped."""
    kind = b.draw(st.sampled_from(["dense", "depthwise", "grouped"]))
    if kind == "depthwise":
        group = channels
    elif kind == "grouped":
        group = b.draw(st.sampled_from([d for d in range(1, channels + 1) if channels % d == 0]))
    else:
        group = 1
    per_group = b.draw(st.integers(1, max(1, MAX_CHANNELS // group)))
    return group, group * per_group


def conv(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    n, c, h, w = x.shape
    group, out_channels = _groups(b, c)
    p = _conv_params(b, h, w)
    inputs = [x.name, b.const(b.weights((out_channels, c // group, *p["kernel_shape"]), c // group * int(np.prod(p["kernel_shape"]))), "w")]
    if b.draw(st.booleans()):
        inputs.append(b.const(b.small((out_channels,)), "bias"))
    (y,) = b.node("Conv", inputs, group=group, **p)
    ho = _out_extent(h, p["kernel_shape"][0], p["strides"][0], p["dilations"][0], p["pads"][0], p["pads"][2])
    wo = _out_extent(w, p["kernel_shape"][1], p["strides"][1], p["dilations"][1], p["pads"][1], p["pads"][3])
    return _Tensor(y, [n, out_channels, ho, wo])


def conv_transpose(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    n, c, h, w = x.shape
    group = b.draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
    per_group = b.draw(st.integers(1, max(1, MAX_CHANNELS // group)))
    kernel = [b.draw(st.integers(1, 3)) for _ in range(2)]
    stride = [b.draw(st.integers(1, 2)) if size * 2 <= MAX_SPATIAL else 1 for size in (h, w)]
    out, pads, output_padding = [], [0, 0, 0, 0], [0, 0]
    for axis, size in enumerate((h, w)):
        pads[axis] = b.draw(st.integers(0, kernel[axis] - 1))
        pads[axis + 2] = b.draw(st.integers(0, kernel[axis] - 1))
        output_padding[axis] = b.draw(st.integers(0, stride[axis] - 1))
        extent = stride[axis] * (size - 1) + output_padding[axis] + kernel[axis] - pads[axis] - pads[axis + 2]
        if extent < 1:
            pads[axis] = pads[axis + 2] = 0
            extent = stride[axis] * (size - 1) + output_padding[axis] + kernel[axis]
        out.append(extent)
    weight = b.weights((c, per_group, *kernel), c // group * kernel[0] * kernel[1])
    inputs = [x.name, b.const(weight, "w")]
    if b.draw(st.booleans()):
        inputs.append(b.const(b.small((group * per_group,)), "bias"))
    (y,) = b.node("ConvTranspose", inputs, group=group, kernel_shape=kernel, strides=stride, pads=pads, output_padding=output_padding)
    return _Tensor(y, [n, group * per_group, *out])


def _batchnorm(b: _Builder, x: _Tensor) -> _Tensor:
    c = x.shape[1]
    params = [
        b.rng.uniform(0.5, 2.0, c),
        b.rng.normal(scale=0.5, size=c),
        b.rng.normal(scale=0.5, size=c),
        b.rng.uniform(0.5, 2.0, c),
    ]
    names = [b.const(p.astype(np.float32), kind) for p, kind in zip(params, ("gamma", "beta", "mean", "var"))]
    (y,) = b.node("BatchNormalization", [x.name, *names], epsilon=b.draw(st.sampled_from([1e-5, 1e-3])))
    return _Tensor(y, list(x.shape))


def batchnorm(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    return _batchnorm(b, x)


def conv_bn_act(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    """The exporters' staple, which fold-batchnorm exists for."""
    return activation(b, _batchnorm(b, conv(b, x, pool)), pool)


def activation(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    kinds = ["Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh"] + (["HardSwish"] if b.opset >= 14 else [])
    kind = b.draw(st.sampled_from(kinds))
    if kind == "Clip":
        low = b.draw(st.sampled_from([0.0, -1.0]))
        inputs = [x.name, b.const(np.array(low, np.float32), "min")]
        if b.draw(st.booleans()):
            inputs.append(b.const(np.array(6.0, np.float32), "max"))
        (y,) = b.node("Clip", inputs)
    elif kind == "LeakyRelu":
        (y,) = b.node("LeakyRelu", [x.name], alpha=b.draw(st.sampled_from([0.01, 0.1, 0.2])))
    elif kind == "HardSigmoid":
        (y,) = b.node("HardSigmoid", [x.name], alpha=b.draw(st.sampled_from([0.2, 1 / 6])), beta=0.5)
    else:
        (y,) = b.node(kind, [x.name])
    return _Tensor(y, list(x.shape))


def binary_constant(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    """Add or Mul with a constant of a broadcasting shape, on either side."""
    n, c, h, w = x.shape
    shape = b.draw(st.sampled_from([(), (1,), (c, 1, 1), (1, c, 1, 1), (w,), (1, 1, h, w), (n, c, h, w)]))
    op_type = b.draw(st.sampled_from(["Add", "Mul"]))
    value = b.small(shape) if op_type == "Add" else b.rng.uniform(0.5, 1.5, shape).astype(np.float32)
    constant = b.const(value, "k")
    (y,) = b.node(op_type, [x.name, constant] if b.draw(st.booleans()) else [constant, x.name])
    return _Tensor(y, list(x.shape))


def residual(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    """x + f(x) with a same-shape conv branch, or x (+|*) an earlier same-shape tensor."""
    earlier = [t for t in pool if t.shape == x.shape and t.name != x.name]
    if earlier and b.draw(st.booleans()):
        other = b.draw(st.sampled_from(earlier))
    else:
        c = x.shape[1]
        kernel = b.draw(st.sampled_from([1, 3]))
        w = b.const(b.weights((c, c, kernel, kernel), c * kernel * kernel), "w")
        (branch,) = b.node("Conv", [x.name, w], kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4)
        other = activation(b, _Tensor(branch, list(x.shape)), pool)
    (y,) = b.node(b.draw(st.sampled_from(["Add", "Add", "Mul"])), [x.name, other.name])
    return _Tensor(y, list(x.shape))


def concat(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    """Concat along channels of x, 1x1-conv branches of x and earlier tensors of its size."""
    n, c, h, w = x.shape
    parts = [x]
    for _ in range(b.draw(st.integers(1, 2))):
        out = b.draw(st.integers(1, 4))
        (branch,) = b.node("Conv", [x.name, b.const(b.weights((out, c, 1, 1), c), "w")], kernel_shape=[1, 1])
        parts.append(_Tensor(branch, [n, out, h, w]))
    parts += [t for t in pool if t.shape[0] == n and t.shape[2:] == [h, w] and t not in parts][:1]
    order = b.draw(st.permutations(parts))
    total = sum(t.shape[1] for t in order)
    (y,) = b.node("Concat", [t.name for t in order], axis=b.draw(st.sampled_from([1, -3])))
    result = _Tensor(y, [n, total, h, w])
    if total > MAX_CHANNELS:  # keep the channel count bounded for the blocks after
        (z,) = b.node("Conv", [y, b.const(b.weights((MAX_CHANNELS // 2, total, 1, 1), total), "w")], kernel_shape=[1, 1])
        result = _Tensor(z, [n, MAX_CHANNELS // 2, h, w])
    return result


def pooling(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    n, c, h, w = x.shape
    kind = b.draw(st.sampled_from(["MaxPool", "AveragePool", "GlobalAveragePool"]))
    if kind == "GlobalAveragePool":
        (y,) = b.node(kind, [x.name])
        return _Tensor(y, [n, c, 1, 1])
    kernel, stride, pads, out = [], [], [0, 0, 0, 0], []
    for axis, size in enumerate((h, w)):
        k = b.draw(st.integers(1, min(3, size)))
        s = b.draw(st.integers(1, 2))
        pads[axis] = b.draw(st.integers(0, k - 1))
        pads[axis + 2] = b.draw(st.integers(0, k - 1))
        kernel.append(k)
        stride.append(s)
        out.append(_out_extent(size, k, s, 1, pads[axis], pads[axis + 2]))
    attrs = {"kernel_shape": kernel, "strides": stride, "pads": pads}
    if kind == "AveragePool":
        attrs["count_include_pad"] = int(b.draw(st.booleans()))
    (y,) = b.node(kind, [x.name], **attrs)
    return _Tensor(y, [n, c, *out])


def resize(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    """Upsample by 2 (or by a factor per axis), nearest or bilinear."""
    n, c, h, w = x.shape
    fh = 2 if h * 2 <= MAX_SPATIAL else 1
    fw = b.draw(st.sampled_from([fh, 1])) if w * 2 <= MAX_SPATIAL else 1
    mode = b.draw(st.sampled_from(["nearest", "linear"]))
    attrs = {"mode": mode, "coordinate_transformation_mode": b.draw(st.sampled_from(["asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel"]))}
    if mode == "nearest":
        attrs["nearest_mode"] = b.draw(st.sampled_from(["floor", "round_prefer_floor", "round_prefer_ceil"]))
    # opset 11 requires the roi input; an empty one means "no region".
    inputs = [x.name, b.const(np.zeros(0, np.float32), "roi")]
    if b.draw(st.booleans()):
        inputs.append(b.const(np.array([1, 1, fh, fw], np.float32), "scales"))
    else:
        # Before opset 13 `scales` is required too; an empty one defers to `sizes`.
        scales = b.const(np.zeros(0, np.float32), "scales") if b.opset < 13 else ""
        inputs += [scales, b.const(np.array([n, c, h * fh, w * fw], np.int64), "sizes")]
    (y,) = b.node("Resize", inputs, **attrs)
    return _Tensor(y, [n, c, h * fh, w * fw])


def transpose(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    """A permutation of C, H, W: the result is read as NCHW again by the next block."""
    perm = [0, *b.draw(st.permutations([1, 2, 3]))]
    (y,) = b.node("Transpose", [x.name], perm=perm)
    return _Tensor(y, [x.shape[i] for i in perm])


def reshape(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    """A static Reshape to another factorization of C*H*W (with a -1 or a 0 in it)."""
    n, c, h, w = x.shape
    new = [n, *b.draw(st.permutations([c, h, w]))]
    spec = list(new)
    which = b.draw(st.sampled_from(["plain", "minus_one", "zero"]))
    if which == "minus_one":
        spec[b.draw(st.integers(1, 3))] = -1
    elif which == "zero":
        spec[0] = 0
    (y,) = b.node("Reshape", [x.name, b.const(np.array(spec, np.int64), "shape")])
    return _Tensor(y, new)


def shape_arithmetic(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    """Exporter-style `Shape -> Gather -> Concat -> Reshape` that keeps NCH and infers W."""
    (shape,) = b.node("Shape", [x.name])
    (head,) = b.node("Gather", [shape, b.const(np.array([0, 1, 2], np.int64), "idx")], axis=0)
    (target,) = b.node("Concat", [head, b.const(np.array([-1], np.int64), "rest")], axis=0)
    (y,) = b.node("Reshape", [x.name, target])
    return _Tensor(y, list(x.shape))


def passthrough(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    (y,) = b.node(b.draw(st.sampled_from(["Identity", "Dropout"])), [x.name])
    return _Tensor(y, list(x.shape))


def matmul_last_axis(b: _Builder, x: _Tensor, pool: list[_Tensor]) -> _Tensor:
    """A 4-D MatMul with a constant [W, W'] weight (a linear layer over the last axis)."""
    n, c, h, w = x.shape
    out = b.draw(st.integers(1, 8))
    (y,) = b.node("MatMul", [x.name, b.const(b.weights((w, out), w), "w")])
    return _Tensor(y, [n, c, h, out])


BLOCKS: dict[str, Callable[[_Builder, _Tensor, list[_Tensor]], _Tensor]] = {
    "conv": conv,
    "conv_bn_act": conv_bn_act,
    "conv_transpose": conv_transpose,
    "batchnorm": batchnorm,
    "activation": activation,
    "binary_constant": binary_constant,
    "residual": residual,
    "concat": concat,
    "pooling": pooling,
    "resize": resize,
    "transpose": transpose,
    "reshape": reshape,
    "shape_arithmetic": shape_arithmetic,
    "passthrough": passthrough,
    "matmul_last_axis": matmul_last_axis,
}


def _shrink_if_large(b: _Builder, x: _Tensor) -> _Tensor:
    """Bring H and W back under MAX_SPATIAL with a max pool, and C under MAX_CHANNELS."""
    n, c, h, w = x.shape
    if h > MAX_SPATIAL or w > MAX_SPATIAL:
        kernel = [2 if h > MAX_SPATIAL else 1, 2 if w > MAX_SPATIAL else 1]
        (y,) = b.node("MaxPool", [x.name], kernel_shape=kernel, strides=kernel)
        x = _Tensor(y, [n, c, h // kernel[0], w // kernel[1]])
    return x


# --------------------------------------------------------------------------- heads


def _flatten(b: _Builder, x: _Tensor) -> _Tensor:
    n = x.shape[0]
    features = int(np.prod(x.shape[1:]))
    if b.draw(st.booleans()):
        (y,) = b.node("Flatten", [x.name], axis=1)
    else:
        (shape,) = b.node("Shape", [x.name])
        (batch,) = b.node("Gather", [shape, b.const(np.array([0], np.int64), "idx")], axis=0)
        (target,) = b.node("Concat", [batch, b.const(np.array([-1], np.int64), "rest")], axis=0)
        (y,) = b.node("Reshape", [x.name, target])
    return _Tensor(y, [n, features])


def _linear_head(b: _Builder, x: _Tensor) -> _Tensor:
    if b.draw(st.booleans()):
        (g,) = b.node("GlobalAveragePool", [x.name])
        x = _Tensor(g, [x.shape[0], x.shape[1], 1, 1])
    flat = _flatten(b, x)
    n, k = flat.shape
    m = b.draw(st.integers(1, 10))
    if b.draw(st.booleans()):
        trans_b = int(b.draw(st.booleans()))
        weight = b.weights((m, k) if trans_b else (k, m), k)
        inputs = [flat.name, b.const(weight, "fc")]
        if b.draw(st.booleans()):
            inputs.append(b.const(b.small(b.draw(st.sampled_from([(m,), (1, m)]))), "fc_bias"))
        (y,) = b.node("Gemm", inputs, transB=trans_b, alpha=b.draw(st.sampled_from([1.0, 0.5])))
    else:
        (y,) = b.node("MatMul", [flat.name, b.const(b.weights((k, m), k), "fc")])
    out = _Tensor(y, [n, m])
    if b.draw(st.booleans()):
        out = _batchnorm(b, out)
    return out


# --------------------------------------------------------------------------- prefix


def _normalization_prefix(b: _Builder, kind: str, n: int, h: int, w: int) -> tuple[onnx.ValueInfoProto, np.ndarray, _Tensor]:
    """The graph input and the exporters' normalization chain behind it."""
    mean = np.array([123.675, 116.28, 103.53], np.float32).reshape(1, 3, 1, 1)
    std = np.array([58.395, 57.12, 57.375], np.float32).reshape(1, 3, 1, 1)
    if kind == "torch":
        info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, 3, h, w])
        feed = b.rng.uniform(0, 255, (n, 3, h, w)).astype(np.float32)
        (centered,) = b.node("Sub", ["x", b.const(mean, "mean")])
        (y,) = b.node("Div", [centered, b.const(std, "std")])
    else:  # keras: uint8 NHWC -> Cast -> Transpose -> Mul(1/255) -> Add(-mean/255) -> Mul(255/std)
        info = helper.make_tensor_value_info("x", TensorProto.UINT8, [n, h, w, 3])
        feed = b.rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        (f,) = b.node("Cast", ["x"], to=TensorProto.FLOAT)
        (t,) = b.node("Transpose", [f], perm=[0, 3, 1, 2])
        (r,) = b.node("Mul", [t, b.const(np.array(1 / 255, np.float32), "rescale")])
        (s,) = b.node("Add", [b.const((-mean / 255).astype(np.float32), "shift"), r])
        (y,) = b.node("Mul", [s, b.const((255 / std).astype(np.float32), "inv_std")])
    return info, feed, _Tensor(y, [n, 3, h, w])


# --------------------------------------------------------------------------- the strategy


@st.composite
def models(draw, min_blocks: int = 1, max_blocks: int = 8) -> GeneratedModel:
    """A random valid ONNX model with its input feeds (see the module docstring)."""
    opset = draw(st.integers(MIN_OPSET, MAX_OPSET))
    b = _Builder(draw, np.random.default_rng(draw(st.integers(0, 2**32 - 1))), opset)
    n = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    prefix = draw(st.sampled_from(["none", "none", "torch", "keras"]))
    if prefix == "none":
        c = draw(st.integers(1, 6))
        info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])
        feed = b.rng.normal(size=(n, c, h, w)).astype(np.float32)
        x = _Tensor("x", [n, c, h, w])
    else:
        info, feed, x = _normalization_prefix(b, prefix, n, h, w)
    kinds = draw(st.lists(st.sampled_from(sorted(BLOCKS)), min_size=min_blocks, max_size=max_blocks))
    pool = [x]
    for kind in kinds:
        x = _shrink_if_large(b, BLOCKS[kind](b, x, pool))
        pool.append(x)
    outputs = [x]
    if draw(st.booleans()):
        outputs[0] = _linear_head(b, x)
    if len(pool) > 2 and draw(st.booleans()):
        # An intermediate tensor as a second output: passes must keep it intact.
        extra = draw(st.sampled_from(pool[1:-1]))
        if extra.name not in {o.name for o in outputs}:
            outputs.append(extra)
    graph = helper.make_graph(
        b.nodes,
        "fuzz",
        [info],
        [helper.make_tensor_value_info(o.name, TensorProto.FLOAT, o.shape) for o in outputs],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # the newest IR that every onnxruntime Ember supports reads
    onnx.checker.check_model(model, full_check=True)
    return GeneratedModel(model, {"x": feed}, [prefix, *kinds] if prefix != "none" else kinds)
