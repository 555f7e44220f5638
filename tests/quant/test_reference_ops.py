"""Every reference op against an independent float computation (dequantize -> float op
-> quantize): within 1 LSB where requantization rounds differently from float rounding,
exact where the definition moves values without arithmetic."""

import numpy as np
import onnxruntime as ort
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper

from ember.dialects import quant_params as qp
from ember.interpreters import quant_reference as ref

RNG = np.random.default_rng(20240611)


def int8(shape, lo=-128, hi=127):
    return RNG.integers(lo, hi + 1, size=shape).astype(np.int8)


def wide(x):
    """int8 -> int64 before arithmetic (int8 minus a Python int would wrap)."""
    return x.astype(np.int64)


def fq(x, scale, zp):
    """Float reference quantization (float64, round half to even)."""
    return np.clip(np.rint(x / scale) + zp, -128, 127).astype(np.int64)


def assert_within_one(actual, expected, exact_fraction=0.9):
    diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    assert diff.max() <= 1, f"max error {diff.max()} LSB"
    assert np.mean(diff == 0) >= exact_fraction


def float_conv(x, w, strides, pads, dilations, group):
    """Direct float64 convolution through sliding windows (independent of the reference)."""
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oc, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # n, c, oh, ow, kh, kw
    n, c, oh, ow = win.shape[:4]
    win = win.reshape(n, group, cg, oh, ow, kh, kw)
    wg = w.reshape(group, oc // group, cg, kh, kw)
    return np.einsum("ngcyxij,gocij->ngoyx", win, wg).reshape(n, oc, oh, ow)


CONV_CASES = {
    "plain": dict(c=6, oc=8, k=3, strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=1),
    "strided_asymmetric_pads": dict(c=5, oc=4, k=3, strides=(2, 2), pads=(0, 1, 2, 1), dilations=(1, 1), group=1),
    "dilated": dict(c=4, oc=6, k=3, strides=(1, 2), pads=(2, 2, 2, 2), dilations=(2, 2), group=1),
    "grouped": dict(c=8, oc=12, k=3, strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=4),
    "depthwise": dict(c=8, oc=8, k=5, strides=(2, 2), pads=(2, 2, 2, 2), dilations=(1, 1), group=8),
    "depthwise_multiplier": dict(c=4, oc=8, k=3, strides=(1, 1), pads=(1, 0, 1, 0), dilations=(1, 1), group=4),
    "pointwise": dict(c=16, oc=8, k=1, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1),
}


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv2d_against_float(case):
    c, oc, k, group = case["c"], case["oc"], case["k"], case["group"]
    s_in, zp_in, s_out, zp_out = 0.05, -7, 0.08, 5
    x = int8((2, c, 11, 9))
    w_real = RNG.normal(0, 0.3, size=(oc, c // group, k, k))
    w_real[1] = 0.0  # an all-zero channel
    b_real = RNG.normal(0, 0.5, size=oc)
    w, s_w = qp.quantize_weights(w_real)
    b = qp.quantize_bias(b_real, s_in, s_w)
    m, s = qp.conv_multipliers(s_in, s_w, s_out)
    geometry = dict(strides=case["strides"], pads=case["pads"], dilations=case["dilations"], group=group)
    y = ref.conv2d(x, zp_in, w, b, m, s, zp_out, **geometry)

    # the accumulator is exact: the same integers through the float64 direct convolution
    acc_int = float_conv(wide(x) - zp_in, w.astype(np.float64), **{k_: v for k_, v in geometry.items()})
    assert np.array_equal(ref.conv2d_accumulate(x, zp_in, w, **geometry), acc_int.astype(np.int64))

    real = float_conv((wide(x) - zp_in) * s_in, w * s_w[:, None, None, None], **geometry)
    real += (b * s_in * s_w)[None, :, None, None]
    assert_within_one(y, fq(real, s_out, zp_out))


def test_conv2d_padding_contributes_zero():
    # a 3x3 all-ones kernel on a constant input equal to the zero point gives bias only
    x = np.full((1, 1, 4, 4), 9, dtype=np.int8)
    w = np.ones((1, 1, 3, 3), dtype=np.int8)
    m, s = qp.conv_multipliers(1.0, [1.0], 1.0)
    y = ref.conv2d(x, 9, w, np.array([3]), m, s, 0, pads=(1, 1, 1, 1))
    assert np.all(y == 3)


def test_conv2d_fused_clamp_and_lut():
    x = int8((1, 3, 6, 6))
    w, s_w = qp.quantize_weights(RNG.normal(size=(4, 3, 3, 3)))
    m, s = qp.conv_multipliers(0.1, s_w, 0.2)
    plain = ref.conv2d(x, 0, w, None, m, s, -10)
    relu = ref.conv2d(x, 0, w, None, m, s, -10, act_min=-10, act_max=127)
    assert np.array_equal(relu, np.maximum(plain, -10))
    table = np.arange(127, -129, -1).astype(np.int8)  # y -> -1 - y
    assert np.array_equal(ref.conv2d(x, 0, w, None, m, s, -10, lut=table), (-1 - wide(plain)).astype(np.int8))


def test_fully_connected_against_float():
    s_in, zp_in, s_out, zp_out = 0.03, 12, 0.1, -20
    x = int8((3, 5, 40))
    w, s_w = qp.quantize_weights(RNG.normal(0, 0.2, size=(10, 40)))
    b = qp.quantize_bias(RNG.normal(size=10), s_in, s_w)
    m, s = qp.conv_multipliers(s_in, s_w, s_out)
    y = ref.fully_connected(x, zp_in, w, b, m, s, zp_out)
    real = ((wide(x) - zp_in) * s_in) @ (w * s_w[:, None]).T + b * s_in * s_w
    assert y.shape == (3, 5, 10)
    assert_within_one(y, fq(real, s_out, zp_out))


@pytest.mark.parametrize("scales", [(0.05, 0.02, 0.06), (0.1, 0.1, 0.1), (0.004, 0.3, 0.25), (0.2, 0.01, 0.02)])
def test_add_against_float(scales):
    s_a, s_b, s_out = scales
    a, b = int8((2, 4, 5, 6)), int8((2, 4, 1, 1))  # broadcasting, as in SE blocks
    in_m, in_s, m, s = qp.add_multipliers(s_a, s_b, s_out)
    y = ref.add(a, 3, b, -4, in_m, in_s, m, s, 2)
    real = (wide(a) - 3) * s_a + (wide(b) + 4) * s_b
    assert_within_one(y, fq(real, s_out, 2))
    relu = ref.add(a, 3, b, -4, in_m, in_s, m, s, 2, act_min=2)
    assert np.array_equal(relu, np.maximum(y, 2))


@pytest.mark.parametrize("scales", [(0.05, 0.02, 0.001), (0.1, 0.1, 0.5), (0.004, 0.3, 0.01)])
def test_mul_against_float(scales):
    s_a, s_b, s_out = scales
    a, b = int8((2, 4, 5, 6)), int8((1, 4, 5, 6))
    m, s = qp.mul_multiplier(s_a, s_b, s_out)
    y = ref.mul(a, -1, b, 6, m, s, -5)
    real = ((wide(a) + 1) * s_a) * ((wide(b) - 6) * s_b)
    assert_within_one(y, fq(real, s_out, -5))


def test_concat_requantizes_each_input():
    parts = [int8((1, 2, 3, 3)), int8((1, 3, 3, 3)), int8((1, 1, 3, 3))]
    types = [(0.1, 4), (0.05, -2), (0.2, 0)]
    out_scale, out_zp = 0.1, 4
    mults = [qp.rescale_multiplier(s, out_scale) for s, _ in types]
    y = ref.concat(parts, [zp for _, zp in types], [m for m, _ in mults], [s for _, s in mults], out_zp, axis=1)
    real = np.concatenate([(wide(p) - zp) * s for p, (s, zp) in zip(parts, types)], axis=1)
    assert_within_one(y, fq(real, out_scale, out_zp), exact_fraction=0.75)  # x/2 ties: half up vs even
    assert np.array_equal(y[:, :2], parts[0])  # same type: moved exactly


def float_pool(x, kernel, strides, pads, fill, reduce):
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    win = sliding_window_view(xp, tuple(kernel), axis=(2, 3))[:, :, :: strides[0], :: strides[1]]
    return reduce(win, axis=(4, 5))


def test_max_pool_is_exact():
    x = int8((2, 3, 9, 8))
    y = ref.max_pool(x, (3, 3), (2, 2), (1, 1, 1, 1))
    real = float_pool((wide(x) - 5) * 0.1, (3, 3), (2, 2), (1, 1, 1, 1), -np.inf, np.max)
    assert np.array_equal(y, fq(real, 0.1, 5))
    dilated = ref.max_pool(x, (2, 2), (1, 1), (0, 0, 0, 0), (2, 2))
    assert np.array_equal(dilated, np.maximum.reduce([x[:, :, i:i + 7, j:j + 6] for i in (0, 2) for j in (0, 2)]))


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("out_scale", [0.1, 0.15])
def test_avg_pool_against_float(count_include_pad, out_scale):
    x = int8((2, 3, 10, 9))
    s_in, zp_in, zp_out = 0.1, -3, 7
    pads, kernel, strides = (1, 1, 1, 1), (3, 3), (2, 2)
    m, s = qp.rescale_multiplier(s_in, out_scale)
    y = ref.avg_pool(x, zp_in, kernel, m, s, zp_out, strides, pads, count_include_pad)
    total = float_pool((wide(x) - zp_in) * s_in, kernel, strides, pads, 0.0, np.sum)
    ones = float_pool(np.ones_like(x, dtype=np.float64), kernel, strides, pads, 0.0, np.sum)
    real = total / (9 if count_include_pad else ones)
    assert_within_one(y, fq(real, out_scale, zp_out), exact_fraction=0.8)


def test_avg_pool_rounds_the_division_half_up():
    # windows of sums 3 and -3 over 2 elements: 1.5 -> 2, -1.5 -> -1 (then identity rescale)
    x = np.array([[[[1, 2, -1, -2]]]], dtype=np.int8)
    y = ref.avg_pool(x, 0, (1, 2), 1 << 30, 30, 0, strides=(1, 2))
    assert y.ravel().tolist() == [2, -1]


def test_global_avg_pool_against_float():
    x = int8((2, 6, 7, 7))
    s_in, zp_in, s_out, zp_out = 0.1, 10, 0.01, -4
    m, s = qp.global_avg_pool_multiplier(s_in, s_out, 49)
    y = ref.global_avg_pool(x, zp_in, m, s, zp_out)
    real = ((wide(x) - zp_in) * s_in).mean(axis=(2, 3), keepdims=True)
    assert y.shape == (2, 6, 1, 1)
    assert_within_one(y, fq(real, s_out, zp_out))


def onnx_source_coords(in_size, out_size, mode):
    """ONNX Resize's float coordinate transformation (scale = out / in)."""
    o = np.arange(out_size, dtype=np.float64)
    scale = out_size / in_size
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "asymmetric":
        return o / scale
    if mode == "align_corners":
        return o * (in_size - 1) / (out_size - 1)
    raise AssertionError(mode)


NEAREST = {
    "round_prefer_floor": lambda v: np.ceil(v - 0.5),
    "round_prefer_ceil": lambda v: np.floor(v + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}


@pytest.mark.parametrize("coord", ["half_pixel", "asymmetric", "align_corners"])
@pytest.mark.parametrize("nearest", NEAREST.keys())
@pytest.mark.parametrize("sizes", [(5, 10), (8, 4), (4, 12), (6, 9), (7, 180), (3, 181), (100, 30), (240, 480)])
def test_resize_nearest_is_exact(coord, nearest, sizes):
    in_size, out_size = sizes
    x = int8((1, 2, in_size, in_size))
    y = ref.resize(x, 3, (out_size, out_size), 1 << 30, 30, 3, mode="nearest",
                   coordinate_transformation_mode=coord, nearest_mode=nearest)  # fmt: skip
    idx = np.clip(NEAREST[nearest](onnx_source_coords(in_size, out_size, coord)), 0, in_size - 1).astype(int)
    step = (in_size - 1) / (out_size - 1) if coord == "align_corners" else in_size / out_size
    if out_size <= 181 or (step * 65536).is_integer():  # the documented exactness condition
        assert np.array_equal(y, x[:, :, idx][:, :, :, idx])
    else:  # Q16 can land on the neighbouring pixel near a rounding boundary
        step_q16, offset_q16 = ref.resize_coordinates(in_size, out_size, "nearest", coord, nearest)
        ours = np.clip((np.arange(out_size) * step_q16 + offset_q16) >> 16, 0, in_size - 1)
        assert np.abs(ours - idx).max() <= 1
        assert np.array_equal(y, x[:, :, ours][:, :, :, ours])


@pytest.mark.parametrize("coord", ["half_pixel", "asymmetric", "align_corners"])
@pytest.mark.parametrize("sizes", [(5, 10), (8, 4), (6, 9)])
@pytest.mark.parametrize("out_scale", [0.1, 0.07])
def test_resize_bilinear_against_float(coord, sizes, out_scale):
    in_size, out_size = sizes
    s_in, zp_in, zp_out = 0.1, -6, 2
    x = int8((2, 3, in_size, in_size))
    m, s = qp.resize_multiplier(s_in, out_scale, "bilinear")
    y = ref.resize(x, zp_in, (out_size, out_size), m, s, zp_out, mode="bilinear", coordinate_transformation_mode=coord)
    src = np.clip(onnx_source_coords(in_size, out_size, coord), 0, in_size - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, in_size - 1)
    f = src - i0
    v = (wide(x) - zp_in) * s_in
    rows = v[:, :, i0] * (1 - f)[:, None] + v[:, :, i1] * f[:, None]
    real = rows[..., i0] * (1 - f) + rows[..., i1] * f
    assert_within_one(y, fq(real, out_scale, zp_out), exact_fraction=0.75)


def test_resize_coordinates_fold_nearest_mode_into_offset():
    # 2x upsampling, half_pixel: src = o / 2 - 1/4 -> step 0.5, offset -0.25 (Q16)
    assert ref.resize_coordinates(4, 8, "bilinear") == (32768, -16384)
    assert ref.resize_coordinates(4, 8, "nearest", nearest_mode="floor") == (32768, -16384)
    assert ref.resize_coordinates(4, 8, "nearest", nearest_mode="round_prefer_ceil") == (32768, -16384 + 32768)
    # 3/7 * 2^16 = 28086.86: rounded up for floor, down for ceil (then the ceil bias)
    assert ref.resize_coordinates(4, 8, "nearest", "align_corners", "floor") == (28087, 0)
    assert ref.resize_coordinates(4, 8, "nearest", "align_corners", "ceil") == (28086, 65535)


def test_lut_indexes_table_at_x_plus_128():
    table = RNG.integers(-128, 128, 256).astype(np.int8)
    x = np.arange(-128, 128, dtype=np.int8).reshape(4, 64)
    assert np.array_equal(ref.lut(x, table), table.reshape(4, 64))


def test_layout_ops():
    x = int8((2, 3, 4))
    assert np.array_equal(ref.pad(x, -5, (0, 1, 0, 1, 0, 2))[:2, 1:4, :4], x)
    assert np.all(ref.pad(x, -5, (0, 1, 0, 1, 0, 2))[:, 0] == -5)
    assert np.array_equal(ref.slice_(x, (0, 1, 0), (2, 3, 4), (1, 1, 2)), x[:, 1:3, ::2])


def ort_quantize_linear(x, scale, zp):
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    graph = helper.make_graph(
        [node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.INT8, x.shape)],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]), helper.make_tensor("z", TensorProto.INT8, [], [zp])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_quantize_matches_onnxruntime_quantize_linear():
    scale, zp = 0.25, -3
    ties = np.arange(-40, 40, dtype=np.float32) * 0.125  # x / s hits every .5 tie
    x = np.concatenate([ties, RNG.normal(0, 20, 500).astype(np.float32), np.float32([1e9, -1e9])])
    y = ref.quantize(x, scale, zp)
    assert np.array_equal(y, ort_quantize_linear(x, scale, zp))
    assert ref.quantize(np.float32([0.125, 0.375, -0.125]), scale, 0).tolist() == [0, 2, 0]  # half to even


def test_dequantize_per_axis():
    q = int8((3, 2))
    y = ref.dequantize(q, [0.5, 0.25, 2.0], [0, 1, -1], axis=0)
    assert y.dtype == np.float32
    assert np.array_equal(y, ((wide(q) - np.array([[0], [1], [-1]])) * np.array([[0.5], [0.25], [2.0]])).astype(np.float32))
