"""Helpers of the lowering tests: a builder of quant graphs with random weights and
calibrated-looking scales, and the end-to-end check that compiles a module to an `.ebin`,
runs it on the simulator and compares with the quant reference interpreter bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.builder import Builder
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr, TensorType, i8, i32
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Block, Region, SSAValue
from xdsl.rewriter import InsertPoint

from ember.dialects import quant
from ember.dialects import quant_params as qp
from ember.dialects import quant_tables as qt
from ember.dialects.dense import dense_from_numpy
from ember.dialects.quant import UniformQuantizedType as Q
from ember.interpreters.quant_reference import run_quant_module
from ember.lowering.npu_to_ebin import ebin_from_module
from ember.lowering.quant_to_npu import LowerQuantToNpuPass
from ember.passes.npu_allocate import NpuAllocatePass
from ember.passes.npu_schedule import NpuSchedulePass
from ember.target.ebin import parse, to_bytes
from ember.target.simulator import Simulator


def qtensor(shape, scale, zp=0, storage=i8, axis=None) -> TensorType:
    return TensorType(Q(storage, scale, zp, axis=axis), shape)


class Graph:
    """Builds `func.func @main` of quant ops; every activation gets a scale and zero
    point that keep values spread over int8, as calibration would."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.block = Block()
        self.builder = Builder(InsertPoint.at_end(self.block))
        self.inputs: list[tuple[str, SSAValue]] = []
        self.count = 0

    def _name(self, op, kind: str) -> None:
        self.count += 1
        node = f"{kind}_{self.count}"
        op.attributes["onnx_node"] = StringAttr(node)
        op.results[0].name_hint = f"{node}_out"

    def qtype(self, value: SSAValue) -> Q:
        return quant.quant_type_of(value)

    def input(self, shape, scale=0.05, zp=-3, name="x") -> SSAValue:
        arg = self.block.insert_arg(qtensor(shape, scale, zp), len(self.block.args))
        self.inputs.append((name, arg))
        return arg

    def act(self, scale=None, zp=None):
        scale = float(np.float32(scale if scale is not None else self.rng.uniform(0.02, 0.1)))
        zp = int(zp if zp is not None else self.rng.integers(-20, 20))
        return scale, zp

    def const(self, array, scales, storage=i8):
        scales = np.atleast_1d(scales)
        axis = 0 if scales.size > 1 else None
        op = quant.ConstantOp(dense_from_numpy(array), qtensor(array.shape, scales, 0, storage, axis))
        self.builder.insert(op)
        return op.output

    def conv(self, x, oc, k=3, stride=1, pads=None, dilation=1, group=1, act=None, lut=None, bias=True, out=None):
        n, c, h, w = x.type.get_shape()
        kh, kw = (k, k) if isinstance(k, int) else k
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        if pads is None:
            pads = (dh * (kh - 1) // 2, dw * (kw - 1) // 2, dh * (kh - 1) // 2, dw * (kw - 1) // 2)
        s_in, _ = self.qtype(x).scale, self.qtype(x).zero_point
        fan_in = kh * kw * c // group
        w_real = self.rng.normal(0, 1.0 / np.sqrt(fan_in), size=(oc, c // group, kh, kw))
        wq, s_w = qp.quantize_weights(w_real)
        wv = self.const(wq, s_w)
        bv = None
        if bias:
            bv = self.const(qp.quantize_bias(self.rng.normal(0, 0.3, oc), s_in, s_w), s_in * s_w, i32)
        oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
        s_out, zp_out = out or self.act(s_in * np.sqrt(fan_in) * 0.6)
        m, s = qp.conv_multipliers(s_in, s_w, s_out)
        kwargs = {}
        lo, hi = -128, 127
        if act == "relu":
            lo = zp_out
        result_type = qtensor([n, oc, oh, ow], s_out, zp_out)
        if lut is not None:
            s_l, zp_l = self.act(0.02)
            kwargs = dict(lut=qt.build_table(lut, s_out, zp_out, s_l, zp_l), lut_input_type=Q(i8, s_out, zp_out))
            result_type = qtensor([n, oc, oh, ow], s_l, zp_l)
        op = quant.Conv2DOp(
            x, wv, bv, result_type, multiplier=m, shift=s, strides=(sh, sw), pads=pads, dilations=(dh, dw),
            group=group, act_min=lo, act_max=hi, **kwargs,
        )  # fmt: skip
        self.builder.insert(op)
        self._name(op, "conv")
        return op.output

    def conv_transpose(self, x, oc, k=2, group=1, act=None):
        """A transposed convolution with stride = kernel `k` (int or (kh, kw))."""
        n, c, h, w = x.type.get_shape()
        kh, kw = (k, k) if isinstance(k, int) else k
        s_in = self.qtype(x).scale
        fan_in = c // group
        wq, s_w = qp.quantize_weights(self.rng.normal(0, 1.0 / np.sqrt(fan_in), size=(oc, c // group, kh, kw)))
        wv = self.const(wq, s_w)
        bv = self.const(qp.quantize_bias(self.rng.normal(0, 0.3, oc), s_in, s_w), s_in * s_w, i32)
        s_out, zp_out = self.act(s_in * np.sqrt(fan_in) * 0.6)
        m, s = qp.conv_multipliers(s_in, s_w, s_out)
        op = quant.ConvTransposeOp(x, wv, bv, qtensor([n, oc, h * kh, w * kw], s_out, zp_out), multiplier=m, shift=s,
                                   group=group, act_min=zp_out if act == "relu" else -128)  # fmt: skip
        self.builder.insert(op)
        self._name(op, "deconv")
        return op.output

    def fc(self, x, n_out):
        k = x.type.get_shape()[-1]
        s_in = self.qtype(x).scale
        wq, s_w = qp.quantize_weights(self.rng.normal(0, 1 / np.sqrt(k), size=(n_out, k)))
        wv = self.const(wq, s_w)
        bv = self.const(qp.quantize_bias(self.rng.normal(0, 0.3, n_out), s_in, s_w), s_in * s_w, i32)
        s_out, zp_out = self.act(s_in * np.sqrt(k) * 0.6)
        m, s = qp.conv_multipliers(s_in, s_w, s_out)
        shape = list(x.type.get_shape()[:-1]) + [n_out]
        op = quant.FullyConnectedOp(x, wv, bv, qtensor(shape, s_out, zp_out), multiplier=m, shift=s)
        self.builder.insert(op)
        self._name(op, "fc")
        return op.output

    def add(self, a, b, out=None, relu=False):
        sa, sb = self.qtype(a).scale, self.qtype(b).scale
        s_out, zp_out = out or self.act((sa + sb) * 0.8)
        in_m, in_s, m, s = qp.add_multipliers(sa, sb, s_out)
        shape = np.broadcast_shapes(a.type.get_shape(), b.type.get_shape())
        op = quant.AddOp(a, b, qtensor(list(shape), s_out, zp_out), input_multipliers=in_m, input_shifts=in_s,
                         multiplier=m, shift=s, act_min=zp_out if relu else -128)  # fmt: skip
        self.builder.insert(op)
        self._name(op, "add")
        return op.output

    def mul(self, a, b, out=None):
        sa, sb = self.qtype(a).scale, self.qtype(b).scale
        s_out, zp_out = out or self.act(sa * sb * 100)
        m, s = qp.mul_multiplier(sa, sb, s_out)
        shape = np.broadcast_shapes(a.type.get_shape(), b.type.get_shape())
        op = quant.MulOp(a, b, qtensor(list(shape), s_out, zp_out), multiplier=m, shift=s)
        self.builder.insert(op)
        self._name(op, "mul")
        return op.output

    def concat(self, values, axis=1, out=None):
        s_out, zp_out = out or self.act(max(self.qtype(v).scale for v in values))
        mult = [qp.rescale_multiplier(self.qtype(v).scale, s_out) for v in values]
        shape = list(values[0].type.get_shape())
        shape[axis] = sum(v.type.get_shape()[axis] for v in values)
        op = quant.ConcatOp(values, qtensor(shape, s_out, zp_out), axis=axis, multipliers=[m for m, _ in mult],
                            shifts=[s for _, s in mult])  # fmt: skip
        self.builder.insert(op)
        self._name(op, "concat")
        return op.output

    @staticmethod
    def _pool_hw(shape, kernel, strides, pads):
        return [(shape[2 + i] + pads[i] + pads[i + 2] - kernel[i]) // strides[i] + 1 for i in range(2)]

    def max_pool(self, x, kernel, strides=(1, 1), pads=(0, 0, 0, 0)):
        n, c = x.type.get_shape()[:2]
        oh, ow = self._pool_hw(x.type.get_shape(), kernel, strides, pads)
        q = self.qtype(x)
        op = quant.MaxPoolOp(x, qtensor([n, c, oh, ow], q.scale, q.zero_point), kernel=kernel, strides=strides, pads=pads)
        self.builder.insert(op)
        self._name(op, "maxpool")
        return op.output

    def avg_pool(self, x, kernel, strides=(1, 1), pads=(0, 0, 0, 0), count_include_pad=False):
        n, c = x.type.get_shape()[:2]
        oh, ow = self._pool_hw(x.type.get_shape(), kernel, strides, pads)
        s_out, zp_out = self.act(self.qtype(x).scale * 0.7)
        m, s = qp.rescale_multiplier(self.qtype(x).scale, s_out)
        op = quant.AvgPoolOp(x, qtensor([n, c, oh, ow], s_out, zp_out), kernel=kernel, strides=strides, pads=pads,
                             count_include_pad=count_include_pad, multiplier=m, shift=s)  # fmt: skip
        self.builder.insert(op)
        self._name(op, "avgpool")
        return op.output

    def global_avg_pool(self, x):
        n, c, h, w = x.type.get_shape()
        s_out, zp_out = self.act(self.qtype(x).scale * 0.5)
        m, s = qp.global_avg_pool_multiplier(self.qtype(x).scale, s_out, h * w)
        op = quant.GlobalAvgPoolOp(x, qtensor([n, c, 1, 1], s_out, zp_out), multiplier=m, shift=s)
        self.builder.insert(op)
        self._name(op, "gap")
        return op.output

    def resize(self, x, out_hw, mode="nearest", coord="asymmetric"):
        n, c = x.type.get_shape()[:2]
        s_out, zp_out = self.act(self.qtype(x).scale)
        m, s = qp.resize_multiplier(self.qtype(x).scale, s_out, mode)
        op = quant.ResizeOp(x, qtensor([n, c, *out_hw], s_out, zp_out), mode=mode, multiplier=m, shift=s,
                            coordinate_transformation_mode=coord)  # fmt: skip
        self.builder.insert(op)
        self._name(op, "resize")
        return op.output

    def lut(self, x, function):
        s_out, zp_out = self.act(0.01)
        table = qt.build_table(function, self.qtype(x).scale, self.qtype(x).zero_point, s_out, zp_out)
        op = quant.LutOp(x, qtensor(x.type.get_shape(), s_out, zp_out), table=table)
        self.builder.insert(op)
        self._name(op, "lut")
        return op.output

    def layout(self, cls, x, shape, **kwargs):
        q = self.qtype(x)
        op = cls(x, qtensor(shape, q.scale, q.zero_point), **kwargs)
        self.builder.insert(op)
        self._name(op, cls.name.split(".")[1])
        return op.output

    def module(self, *outputs: SSAValue) -> ModuleOp:
        self.builder.insert(ReturnOp(*outputs))
        function = FuncOp.from_region(
            "main", [v.type for _, v in self.inputs], [o.type for o in outputs], Region(self.block)
        )
        function.arg_attrs = ArrayAttr([DictionaryAttr({"onnx.name": StringAttr(n)}) for n, _ in self.inputs])
        function.attributes["onnx.output_names"] = ArrayAttr([StringAttr(f"out{i}") for i in range(len(outputs))])
        module = ModuleOp([function])
        module.verify()
        return module

    def random_inputs(self) -> dict[str, np.ndarray]:
        return {
            name: self.rng.integers(-128, 128, size=v.type.get_shape()).astype(np.int8) for name, v in self.inputs
        }


def to_npu_layout(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def from_npu_layout(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return y.transpose(0, 3, 1, 2) if reference.ndim == 4 else y.reshape(reference.shape)


def compile_module(module: ModuleOp, arch: str = "ember16") -> bytes:
    from xdsl.context import Context

    ctx = Context()
    for p in (LowerQuantToNpuPass(arch), NpuAllocatePass(), NpuSchedulePass()):
        p.apply(ctx, module)
    module.verify()
    return to_bytes(ebin_from_module(module))


def run_both(module: ModuleOp, inputs: dict[str, np.ndarray], arch: str = "ember16"):
    """(reference outputs, simulator outputs in NCHW, simulator) for one module."""
    expected = run_quant_module(module, inputs)
    data = compile_module(module, arch)
    sim = Simulator(parse(data, "test.ebin"))
    got = sim.run({name: to_npu_layout(x) for name, x in inputs.items()})
    return expected, {name: from_npu_layout(got[name], expected[name]) for name in expected}, sim


@pytest.fixture
def check_bit_exact():
    """`check(graph, *outputs, arch=...)`: compile, simulate, compare bit for bit;
    returns the simulator (for stats)."""

    def check(graph: Graph, *outputs: SSAValue, arch: str = "ember16", inputs=None):
        module = graph.module(*outputs)
        inputs = inputs or graph.random_inputs()
        expected, got, sim = run_both(module, inputs, arch)
        for name, ref in expected.items():
            assert got[name].shape == ref.shape, name
            mismatch = np.flatnonzero(got[name] != ref)
            assert mismatch.size == 0, f"{name}: {mismatch.size} of {ref.size} values differ"
        return sim

    return check


@pytest.fixture
def graph():
    return Graph(seed=1234)
