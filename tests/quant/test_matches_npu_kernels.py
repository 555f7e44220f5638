"""The reference and the NPU simulator's kernels (target/kernels.py, NHWC tiles) agree bit
for bit on what lowering maps one to the other (docs/quant.md, "Bridging to the NPU")."""

import numpy as np
import pytest

from ember.dialects import quant_params as qp
from ember.interpreters import quant_reference as ref
from ember.target import kernels

RNG = np.random.default_rng(99)


def int8(shape):
    return RNG.integers(-128, 128, size=shape).astype(np.int8)


def hwc(x):  # NCHW with N = 1 -> HWC
    return np.transpose(x[0], (1, 2, 0))


@pytest.mark.parametrize("group, dilation", [(1, (1, 1)), (3, (2, 1)), (6, (1, 1))])
def test_conv_and_post(group, dilation):
    x, zp = int8((1, 6, 9, 8)), -5
    w, s_w = qp.quantize_weights(RNG.normal(size=(6, 6 // group, 3, 3)))
    bias = qp.quantize_bias(RNG.normal(size=6), 0.05, s_w)
    m, s = qp.conv_multipliers(0.05, s_w, 0.1)
    table = RNG.integers(-128, 128, 256).astype(np.int8)
    pads = (1, 2, 1, 0)
    y = ref.conv2d(x, zp, w, bias, m, s, 4, pads=pads, dilations=dilation, group=group, act_min=0, lut=table)
    padded = np.pad(hwc(x), ((pads[0], pads[2]), (pads[1], pads[3]), (0, 0)), constant_values=zp)  # LOAD pad_value
    acc = kernels.conv(padded, np.transpose(w, (0, 2, 3, 1)), zp, (1, 1), dilation, group)
    oh, ow, oc = acc.shape
    npu = kernels.post(acc.reshape(-1, oc), bias, m, s, 4, 0, 127, table).reshape(oh, ow, oc)
    assert np.array_equal(hwc(y), npu)


def test_add_and_mul():
    a, b = int8((1, 4, 5, 5)), int8((1, 4, 5, 5))
    in_m, in_s, m, s = qp.add_multipliers(0.07, 0.02, 0.05)
    y = ref.add(a, 3, b, -8, in_m, in_s, m, s, 1, act_min=-20)
    npu = kernels.eltw_add(a, b, 3, -8, (in_m[0], in_s[0]), (in_m[1], in_s[1]), (m, s), 1, -20, 127)
    assert np.array_equal(y, npu)
    m, s = qp.mul_multiplier(0.07, 0.02, 0.01)
    assert np.array_equal(ref.mul(a, 3, b, -8, m, s, 1), kernels.eltw_mul(a, b, 3, -8, (m, s), 1, -128, 127))


def test_avg_and_max_pool():
    x, zp = int8((1, 5, 9, 8)), 6
    m, s = qp.rescale_multiplier(0.1, 0.08)
    pads = (1, 1, 0, 1)  # top, left, bottom, right
    y = ref.avg_pool(x, zp, (3, 3), m, s, -2, (2, 2), pads)
    padded = np.pad(hwc(x), ((1, 0), (1, 1), (0, 0)), constant_values=zp)
    npu_pads = (1, 0, 1, 1)  # POOL's order: top, bottom, left, right
    assert np.array_equal(hwc(y), kernels.pool(padded, True, (3, 3), (2, 2), npu_pads, zp, (m, s), -2, -128, 127))
    y = ref.max_pool(x, (3, 3), (2, 2), pads)
    npu = kernels.pool(padded, False, (3, 3), (2, 2), npu_pads, zp, (1 << 30, 30), zp, -128, 127)
    assert np.array_equal(hwc(y), npu)


def test_global_avg_pool_is_pool_sum_then_post():
    x, zp = int8((1, 7, 6, 6)), -9
    m, s = qp.global_avg_pool_multiplier(0.1, 0.004, 36)
    y = ref.global_avg_pool(x, zp, m, s, 3)
    total = kernels.pool_sum(hwc(x), (6, 6), (1, 1), (0, 0, 0, 0), zp)
    npu = kernels.post(total.reshape(1, 7), np.zeros(7, np.int64), np.full(7, m), np.full(7, s), 3, -128, 127, None)
    assert np.array_equal(y.reshape(1, 7), npu)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("coord", ["half_pixel", "asymmetric", "align_corners"])
def test_resize(mode, coord):
    x, zp = int8((1, 3, 5, 7)), 2
    out_hw = (10, 9)
    m, s = qp.resize_multiplier(0.1, 0.12, mode)
    y = ref.resize(x, zp, out_hw, m, s, -1, mode=mode, coordinate_transformation_mode=coord, nearest_mode="floor")
    ys, yo = ref.resize_coordinates(5, 10, mode, coord, "floor")
    xs, xo = ref.resize_coordinates(7, 9, mode, coord, "floor")
    npu = kernels.resize(hwc(x), mode == "bilinear", out_hw, (ys, xs), (yo, xo), zp, (m, s), -1, -128, 127)
    assert np.array_equal(hwc(y), npu)

