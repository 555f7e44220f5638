"""Lookup tables are exact against float64; quantization parameters from ranges."""

import math

import numpy as np
import pytest

from ember.dialects import quant_params as qp
from ember.dialects import quant_tables as qt
from ember.interpreters import quant_reference as ref
from ember.support.diagnostics import EmberError
from ember.target.requant import quantize_multiplier

FLOAT_FUNCTIONS = {
    "sigmoid": (qt.sigmoid, lambda v: 1 / (1 + math.exp(-v))),
    "hard_sigmoid": (qt.hard_sigmoid, lambda v: max(0.0, min(1.0, 0.2 * v + 0.5))),
    "hard_swish": (qt.hard_swish, lambda v: v * max(0.0, min(1.0, v / 6 + 0.5))),
    "silu": (qt.silu, lambda v: v / (1 + math.exp(-v))),
    "tanh": (qt.tanh, math.tanh),
    "gelu": (qt.gelu, lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))),
    "relu": (qt.relu, lambda v: max(v, 0.0)),
    "relu6": (qt.relu6, lambda v: min(max(v, 0.0), 6.0)),
    "leaky_relu": (qt.leaky_relu, lambda v: v if v >= 0 else 0.01 * v),
    "exp": (qt.exp, math.exp),
    "identity": (qt.identity, lambda v: v),
}


@pytest.mark.parametrize("name", FLOAT_FUNCTIONS.keys())
def test_tables_are_exact_against_float64(name):
    vectorised, scalar = FLOAT_FUNCTIONS[name]
    s_in, zp_in, s_out, zp_out = 0.05, -10, 0.02, -100
    table = qt.build_table(vectorised, s_in, zp_in, s_out, zp_out)
    assert table.dtype == np.int8 and table.shape == (256,)
    for i, x in enumerate(range(-128, 128)):  # the independent scalar computation
        expected = min(127, max(-128, round(scalar((x - zp_in) * s_in) / s_out) + zp_out))
        assert table[i] == expected, (name, x)


def test_table_rounds_half_to_even_and_saturates():
    # identity from scale 1 to scale 2: x / 2, ties to even: 1 -> 0, 3 -> 2, -1 -> 0, -3 -> -2
    table = qt.build_table(qt.identity, 1.0, 0, 2.0, 0)
    assert [int(table[x + 128]) for x in (1, 3, -1, -3, 5)] == [0, 2, 0, -2, 2]
    exp_table = qt.build_table(qt.exp, 1.0, 0, 1.0, 0)
    assert exp_table[127 + 128] == 127 and exp_table[-128 + 128] == 0


def test_clip_and_hard_sigmoid_parameters():
    table = qt.build_table(lambda v: qt.clip(v, -1.0, 2.0), 0.1, 0, 0.1, 0)
    assert table.min() == -10 and table.max() == 20
    hs = qt.build_table(lambda v: qt.hard_sigmoid(v, alpha=0.5, beta=0.25), 0.1, 0, 1 / 127, -127)
    assert hs[0 + 128] == round(0.25 * 127) - 127


def test_lut_op_applies_table():
    table = qt.build_table(qt.sigmoid, 0.1, 0, 1 / 256, -128)
    x = np.array([[-128, 0, 127]], dtype=np.int8)
    y = ref.lut(x, table)
    assert y.tolist() == [[-128, 0, 127]]  # sigmoid(-12.8) ~ 0, sigmoid(0) = 0.5, sigmoid(12.7) ~ 1


def test_activation_params_represent_zero_exactly():
    for lo, hi in [(-1.0, 1.0), (-0.3, 5.7), (2.0, 5.0), (-5.0, -2.0), (-1e-3, 1e4)]:
        scale, zp = qp.activation_params(lo, hi)
        assert scale == float(np.float32(scale)) and -128 <= zp <= 127
        assert ref.quantize(np.float32([0.0]), scale, zp)[0] == zp
        assert ref.dequantize(ref.quantize(np.float32([min(lo, 0), max(hi, 0)]), scale, zp), scale, zp) == pytest.approx(
            [min(lo, 0), max(hi, 0)], abs=scale / 2 + 1e-12
        )
    assert qp.activation_params(2.0, 5.0)[1] == -128  # positive range: zero at the bottom
    assert qp.activation_params(-5.0, -2.0)[1] == 127


def test_activation_params_degenerate_and_bad_ranges():
    assert qp.activation_params(0.0, 0.0) == (1.0, 0)
    with pytest.raises(EmberError, match="conv1: .*not finite"):
        qp.activation_params(float("nan"), 1.0, "conv1")
    with pytest.raises(EmberError, match="inverted"):
        qp.activation_params(1.0, -1.0)


def test_weights_symmetric_per_channel():
    w = np.array([[0.5, -1.27, 0.0], [0.0, 0.0, 0.0], [2.54, 1.0, -2.54]])
    q, scales = qp.quantize_weights(w)
    assert scales == pytest.approx([0.01, 1 / 127, 0.02])
    assert q.tolist() == [[50, -127, 0], [0, 0, 0], [127, 50, -127]]
    with pytest.raises(EmberError, match="NaN or Inf"):
        qp.quantize_weights(np.array([[np.inf]]))


def test_bias_scale_and_saturation():
    b = qp.quantize_bias(np.array([1.0, -1.0, 1e30]), 0.5, np.array([0.01, 0.02, 0.01]))
    assert b.dtype == np.int32 and b.tolist() == [200, -100, 2**31 - 1]


def test_multiplier_helpers():
    m, s = qp.conv_multipliers(0.05, np.array([0.01, 0.02]), 0.1)
    em, es = quantize_multiplier(np.array([0.005, 0.01]))
    assert np.array_equal(m, em) and np.array_equal(s, es)
    in_m, in_s, out_m, out_s = qp.add_multipliers(0.1, 0.05, 0.2)
    assert (in_m.tolist(), in_s.tolist()) == ([1 << 30, 1 << 30], [31, 32])  # 1/2 and 1/4
    assert (out_m, out_s) == tuple(int(v[0]) for v in quantize_multiplier(0.2 / (2**20 * 0.2)))
    assert qp.resize_multiplier(0.1, 0.1, "bilinear") == (1 << 30, 50)
    assert qp.resize_multiplier(0.1, 0.1, "nearest") == (1 << 30, 30)
    with pytest.raises(EmberError, match="too large"):
        qp.conv_multipliers(1.0, np.array([1.0]), 1e-12)
