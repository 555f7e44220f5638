"""quant types and ops: print/parse round trip, verification, and the reference
interpreter running a whole function."""

import numpy as np
import pytest
from xdsl.builder import Builder, InsertPoint
from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, Builtin, DictionaryAttr, ModuleOp, StringAttr, TensorType, f32, i8, i32
from xdsl.dialects.func import Func, FuncOp, ReturnOp
from xdsl.ir import Block, Region
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

from ember.dialects import quant
from ember.dialects import quant_params as qp
from ember.dialects import quant_tables as qt
from ember.dialects.dense import dense_from_numpy
from ember.dialects.quant import UniformQuantizedType as Q
from ember.interpreters import quant_reference as ref
from ember.interpreters.quant_reference import run_quant_module
from ember.support.diagnostics import EmberError

RNG = np.random.default_rng(7)


def context() -> Context:
    ctx = Context()
    for dialect in (Builtin, Func, quant.Quant):
        ctx.load_dialect(dialect)
    return ctx


def parse(text: str) -> ModuleOp:
    module = Parser(context(), text).parse_module()
    module.verify()
    return module


@pytest.mark.parametrize(
    "text",
    [
        "!quant.uniform<i8:f32, 0.0235:-3>",
        "!quant.uniform<i8:f32, 0.5>",
        "!quant.uniform<i8:f32:0, {0.1, 0.2:-1, 1.0e-05}>",
        "!quant.uniform<i32:f32:1, {3.0e-07, 0.25}>",
        "!quant.uniform<i8:f16, 1.0e+20:127>",
    ],
)
def test_type_round_trip(text):
    parsed = Parser(context(), text).parse_type()
    assert isinstance(parsed, Q)
    assert str(parsed) == text
    assert Parser(context(), str(parsed)).parse_type() == parsed


def test_type_accessors_and_tensor_element():
    per_tensor = Q(i8, 0.0235, -3)
    per_axis = Q(i8, [0.1, 0.2], 0, axis=0)
    assert (per_tensor.scale, per_tensor.zero_point, per_tensor.is_per_axis) == (0.0235, -3, False)
    assert per_axis.scale_array().tolist() == [0.1, 0.2] and per_axis.zero_point_array().tolist() == [0, 0]
    tensor = TensorType(per_tensor, [1, 16, 24, 96])
    assert str(tensor) == "tensor<1x16x24x96x!quant.uniform<i8:f32, 0.0235:-3>>"
    # a scale that only its shortest repr prints exactly survives the round trip
    odd = Q(i8, float(np.float32(0.1) / 3), 5)
    assert Parser(context(), str(odd)).parse_type() == odd


@pytest.mark.parametrize(
    "text, message",
    [
        ("!quant.uniform<i8:f32, -0.5>", "positive"),
        ("!quant.uniform<i8:f32, 0.5:200>", "zero point out of range"),
        ("!quant.uniform<i4:f32, 0.5>", "storage must be"),
    ],
)
def test_type_verification(text, message):
    with pytest.raises(VerifyException, match=message):
        Parser(context(), text).parse_type().verify()


def qtensor(shape, scale, zp=0, storage=i8, axis=None):
    return TensorType(Q(storage, scale, zp, axis=axis), shape)


def constant(builder, array, scales, storage):
    scales = np.atleast_1d(scales)
    axis = 0 if scales.size > 1 else None
    op = quant.ConstantOp(dense_from_numpy(array), qtensor(array.shape, scales, 0, storage, axis))
    builder.insert(op)
    return op.output


def build_model() -> tuple[ModuleOp, dict]:
    """x(f32) -> quantize -> conv(+bias, fused SiLU table) -> add(skip) -> max_pool ->
    concat(with avg_pool) -> resize -> mul -> lut -> global_avg_pool -> reshape ->
    fully_connected -> dequantize, plus transpose/pad/slice on a side output."""
    s_x, zp_x = 0.04, 3
    s_c, zp_c, s_act, zp_act = 0.05, -5, 0.03, -90
    s_add, zp_add = 0.06, 1
    block = Block(arg_types=[TensorType(f32, [1, 4, 8, 8])])
    b = Builder(InsertPoint.at_end(block))
    x = block.args[0]
    q = b.insert(quant.QuantizeOp(x, qtensor([1, 4, 8, 8], s_x, zp_x))).output

    w_real = RNG.normal(0, 0.3, (4, 4, 3, 3))
    w, s_w = qp.quantize_weights(w_real)
    bias = qp.quantize_bias(RNG.normal(0, 0.2, 4), s_x, s_w)
    wv = constant(b, w, s_w, i8)
    bv = constant(b, bias, s_x * s_w, i32)
    m, s = qp.conv_multipliers(s_x, s_w, s_c)
    silu = qt.build_table(qt.silu, s_c, zp_c, s_act, zp_act)
    conv = b.insert(
        quant.Conv2DOp(
            q, wv, bv, qtensor([1, 4, 8, 8], s_act, zp_act), multiplier=m, shift=s, pads=(1, 1, 1, 1),
            lut=silu, lut_input_type=Q(i8, s_c, zp_c),
        )
    ).output  # fmt: skip
    in_m, in_s, out_m, out_s = qp.add_multipliers(s_act, s_x, s_add)
    added = b.insert(
        quant.AddOp(conv, q, qtensor([1, 4, 8, 8], s_add, zp_add), input_multipliers=in_m, input_shifts=in_s,
                    multiplier=out_m, shift=out_s, act_min=zp_add)
    ).output  # fmt: skip
    pooled = b.insert(quant.MaxPoolOp(added, qtensor([1, 4, 4, 4], s_add, zp_add), kernel=(2, 2), strides=(2, 2))).output
    am, ash = qp.rescale_multiplier(s_x, s_x)
    avg = b.insert(
        quant.AvgPoolOp(q, qtensor([1, 4, 4, 4], s_x, zp_x), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
                        multiplier=am, shift=ash)
    ).output  # fmt: skip
    cm = [qp.rescale_multiplier(s_add, s_add), qp.rescale_multiplier(s_x, s_add)]
    cat = b.insert(
        quant.ConcatOp([pooled, avg], qtensor([1, 8, 4, 4], s_add, zp_add), axis=1,
                       multipliers=[v[0] for v in cm], shifts=[v[1] for v in cm])
    ).output  # fmt: skip
    rm, rs = qp.resize_multiplier(s_add, s_add, "bilinear")
    up = b.insert(quant.ResizeOp(cat, qtensor([1, 8, 8, 8], s_add, zp_add), mode="bilinear", multiplier=rm, shift=rs)).output
    mm, ms = qp.mul_multiplier(s_add, s_add, 0.1)
    sq = b.insert(quant.MulOp(up, up, qtensor([1, 8, 8, 8], 0.1, -128), multiplier=mm, shift=ms)).output
    tanh = b.insert(quant.LutOp(sq, qtensor([1, 8, 8, 8], 1 / 128, 0), table=qt.build_table(qt.tanh, 0.1, -128, 1 / 128, 0))).output
    gm, gs = qp.global_avg_pool_multiplier(1 / 128, 1 / 256, 64)
    gap = b.insert(quant.GlobalAvgPoolOp(tanh, qtensor([1, 8, 1, 1], 1 / 256, -10), multiplier=gm, shift=gs)).output
    flat = b.insert(quant.ReshapeOp(gap, qtensor([1, 8], 1 / 256, -10))).output
    fw, fs = qp.quantize_weights(RNG.normal(0, 0.5, (3, 8)))
    fwv = constant(b, fw, fs, i8)
    fm, fsh = qp.conv_multipliers(1 / 256, fs, 0.01)
    fc = b.insert(quant.FullyConnectedOp(flat, fwv, None, qtensor([1, 3], 0.01, 0), multiplier=fm, shift=fsh)).output
    out = b.insert(quant.DequantizeOp(fc, TensorType(f32, [1, 3]))).output
    t = b.insert(quant.TransposeOp(pooled, qtensor([1, 4, 4, 4], s_add, zp_add), perm=(0, 1, 3, 2))).output
    p = b.insert(quant.PadOp(t, qtensor([1, 4, 6, 5], s_add, zp_add), pads=(0, 0, 1, 0, 0, 0, 1, 1))).output
    side = b.insert(
        quant.SliceOp(p, qtensor([1, 2, 3, 5], s_add, zp_add), starts=(0, 1, 0, 0), ends=(1, 3, 6, 5), steps=(1, 1, 2, 1))
    ).output  # fmt: skip
    b.insert(ReturnOp(out, side))
    function = FuncOp.from_region("main", [x.type], [out.type, side.type], Region(block))
    function.arg_attrs = ArrayAttr([DictionaryAttr({"onnx.name": StringAttr("image")})])
    function.attributes["onnx.output_names"] = ArrayAttr([StringAttr("logits"), StringAttr("side")])
    module = ModuleOp([function])
    module.verify()
    params = dict(w=w, bias=bias, m=m, s=s, silu=silu, s_x=s_x, zp_x=zp_x, zp_c=zp_c, in_m=in_m, in_s=in_s,
                  out_m=out_m, out_s=out_s, zp_add=zp_add)  # fmt: skip
    return module, params


def test_module_print_parse_round_trip():
    module, _ = build_model()
    text = str(module)
    assert "quant.conv2d" in text and "lut_input_type = !quant.uniform<i8:f32, 0.05:-5>" in text
    again = parse(text)
    assert str(again) == text


def test_interpreter_runs_module_and_matches_functions():
    module, p = build_model()
    image = RNG.normal(0, 2, (1, 4, 8, 8)).astype(np.float32)
    seen = {}
    outputs = run_quant_module(module, {"image": image}, observe=lambda op, results: seen.setdefault(op.name, results))
    assert set(outputs) == {"logits", "side"}
    assert outputs["logits"].dtype == np.float32 and outputs["logits"].shape == (1, 3)
    assert outputs["side"].dtype == np.int8 and outputs["side"].shape == (1, 2, 3, 5)

    q = ref.quantize(image, p["s_x"], p["zp_x"])
    assert np.array_equal(seen["quant.quantize"][0], q)
    conv = ref.conv2d(q, p["zp_x"], p["w"], p["bias"], p["m"], p["s"], p["zp_c"], pads=(1, 1, 1, 1), lut=p["silu"])
    assert np.array_equal(seen["quant.conv2d"][0], conv)
    added = ref.add(conv, -90, q, p["zp_x"], p["in_m"], p["in_s"], p["out_m"], p["out_s"], p["zp_add"], act_min=p["zp_add"])
    assert np.array_equal(seen["quant.add"][0], added)
    assert seen["quant.add"][0].min() >= p["zp_add"]  # the fused ReLU

    # parsing the printed module gives a module that computes the same
    again = run_quant_module(parse(str(module)), {"image": image})
    assert all(np.array_equal(outputs[k], again[k]) for k in outputs)


def test_interpreter_input_errors():
    module, _ = build_model()
    with pytest.raises(EmberError, match="image: input not given"):
        run_quant_module(module, {})
    with pytest.raises(EmberError, match="image: input has shape"):
        run_quant_module(module, {"image": np.zeros((1, 4, 8, 9), np.float32)})
    with pytest.raises(EmberError, match="image: input has dtype"):
        run_quant_module(module, {"image": np.zeros((1, 4, 8, 8), np.float64)})


def conv_module(props: str, out: int = 8, weight_zp: int = 0) -> str:
    x_type = "tensor<1x4x8x8x!quant.uniform<i8:f32, 0.1>>"
    w_type = f"tensor<4x4x3x3x!quant.uniform<i8:f32:0, {{0.1:{weight_zp}, 0.1, 0.1, 0.1}}>>"
    y_type = f"tensor<1x4x{out}x8x!quant.uniform<i8:f32, 0.2>>"
    return f"""func.func @main(%x: {x_type}) {{
  %w = quant.constant dense<1> : tensor<4x4x3x3xi8> : {w_type}
  %y = quant.conv2d %x, %w {{{props}}} : ({x_type}, {w_type}) -> {y_type}
  func.return
}}"""


GOOD = (
    "strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, "
    "multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 31, 31, 31, 31>, "
    "act_min = -128 : i32, act_max = 127 : i32"
)


def test_conv_verifier_accepts_good_and_rejects_bad():
    parse(conv_module(GOOD))
    bad = {
        "result shape": conv_module(GOOD, out=7),
        "needs 4 values": conv_module(GOOD.replace("shift = array<i32: 31, 31, 31, 31>", "shift = array<i32: 31>")),
        "multiplier must be": conv_module(GOOD.replace("multiplier = array<i32: 1073741824,", "multiplier = array<i32: 5,")),
        "symmetric": conv_module(GOOD, weight_zp=3),
        "act_min <= act_max": conv_module(GOOD.replace("act_min = -128", "act_min = 100").replace("act_max = 127", "act_max = 0")),
        "go together": conv_module(GOOD + ", lut = array<i8: 1>"),
    }
    for message, text in bad.items():
        with pytest.raises(VerifyException, match=message):
            parse(text)
