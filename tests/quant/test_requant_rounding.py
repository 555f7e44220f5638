"""Pins the requantization arithmetic (ember.target.requant) that every quant op uses,
against values computed by hand."""

import numpy as np
import pytest

from ember.target.requant import quantize_multiplier, requantize

HALF = (1 << 30, 31)  # M, S of the real multiplier 0.5


def rq(acc, m_s=HALF, zp=0, lo=-128, hi=127, **kw):
    m, s = m_s
    return requantize(np.asarray(acc), np.int64(m), np.int64(s), zp, lo, hi, **kw).tolist()


def test_multiplier_of_powers_of_two():
    # 0.5 = 0.5 * 2^0 -> M = 2^30, S = 31; 1.0 = 0.5 * 2^1 -> S = 30; 0.25 -> S = 32
    m, s = quantize_multiplier([0.5, 1.0, 0.25])
    assert m.tolist() == [1 << 30] * 3 and s.tolist() == [31, 30, 32]


def test_multiplier_rounds_half_away_from_zero():
    # q * 2^31 = 2^30 + 0.5 exactly -> rounds up to 2^30 + 1
    m, s = quantize_multiplier((2**30 + 0.5) / 2**31)
    assert (m[0], s[0]) == (2**30 + 1, 31)
    m, _ = quantize_multiplier((2**30 + 0.25) / 2**31)
    assert m[0] == 2**30


def test_multiplier_carry_at_two_to_the_31():
    # 1 - 2^-32 = q * 2^0 with q * 2^31 = 2^31 - 0.5 -> rounds to 2^31 -> M = 2^30, S = 30
    m, s = quantize_multiplier(1 - 2.0**-32)
    assert (m[0], s[0]) == (1 << 30, 30)
    assert rq([7, -7], (m[0], s[0])) == [7, -7]


def test_multiplier_extremes():
    # 2^-32 still fits (S = 62); 2^-33 and 0 flush to M = 0
    m, s = quantize_multiplier([2.0**-32, 2.0**-33, 0.0])
    assert m.tolist() == [1 << 30, 0, 0] and s.tolist() == [62, 62, 62]
    m, s = quantize_multiplier(2.0**30 - 1)
    assert (m[0], s[0]) == (2**31 - 2, 1)  # (2^30 - 1) = (1 - 2^-30) * 2^30
    with pytest.raises(ValueError):
        quantize_multiplier(2.0**30)
    with pytest.raises(ValueError):
        quantize_multiplier(-0.1)
    with pytest.raises(ValueError):
        quantize_multiplier(float("nan"))


def test_ties_round_half_up_including_negative():
    # x * 0.5 for x = 3, 1, -1, -3, -5: 1.5 -> 2, 0.5 -> 1, -0.5 -> 0, -1.5 -> -1, -2.5 -> -2
    assert rq([3, 1, -1, -3, -5]) == [2, 1, 0, -1, -2]
    # non-ties round to nearest: 0.75 * x
    m, s = quantize_multiplier(0.75)
    assert rq([1, 2, -1, -2, 5], (m[0], s[0])) == [1, 2, -1, -1, 4]  # .75 1.5 -.75 -1.5 3.75


def test_saturation_and_zero_point():
    assert rq([1000, -1000, 0], zp=10) == [127, -128, 10]
    assert rq([240, 300], zp=5) == [125, 127]  # 120 + 5, 150 + 5 saturates
    assert rq([-300, 10], lo=0, hi=6) == [0, 5]  # fused ReLU6-style clamp


def test_flushed_multiplier_gives_zero_point():
    m, s = quantize_multiplier(2.0**-40)
    assert rq([2**31 - 1, -(2**31)], (m[0], s[0]), zp=-3) == [-3, -3]


def test_extreme_accumulators_do_not_overflow():
    # |acc| up to 2^31 times M < 2^31 stays inside int64
    m, s = quantize_multiplier(2.0**-24)
    assert rq([2**31 - 1, -(2**31)], (m[0], s[0])) == [127, -128]
    assert rq([2**31 - 1], (m[0], s[0]), lo=-(2**31), hi=2**31 - 1) == [128]  # (2^31 - 1) / 2^24 = 127.99..


def test_per_channel_bias_and_parameters():
    y = requantize(
        np.array([[10, 10], [10, 10]]),
        np.array([1 << 30, 1 << 30]),
        np.array([31, 30]),
        0,
        bias=np.array([1, -1]),
        channel_axis=1,
    )
    # column 0: (10 + 1) * 0.5 = 5.5 -> 6; column 1: (10 - 1) * 1.0 = 9
    assert y.tolist() == [[6, 9], [6, 9]]
