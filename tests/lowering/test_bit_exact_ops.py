"""Every quant op lowered to the NPU and run on the simulator equals the reference
interpreter bit for bit, on odd shapes: channels that are not multiples of the MAC
array, 1x1 spatial, large kernels, stride, dilation, depthwise, layers that need several
tiles, inputs of different scales."""

from __future__ import annotations

import pytest

from ember.dialects import quant
from ember.dialects import quant_tables as qt
from ember.target.isa import Engine, Opcode

CONVS = {
    "3x3_odd_channels": dict(shape=[1, 5, 9, 7], oc=20, k=3),
    "1x1_spatial": dict(shape=[1, 24, 1, 1], oc=17, k=1),
    "3x3_on_1x1_padded": dict(shape=[1, 8, 1, 1], oc=8, k=3),
    "large_kernel_7x7_stride2": dict(shape=[1, 3, 23, 19], oc=13, k=7, stride=2),
    "stride_2x1_asymmetric_pads": dict(shape=[1, 6, 12, 11], oc=9, k=3, stride=(2, 1), pads=(0, 1, 2, 1)),
    "dilated": dict(shape=[1, 7, 15, 13], oc=11, k=3, dilation=(2, 3)),
    "depthwise_3x3": dict(shape=[1, 40, 10, 9], oc=40, k=3, group=40),
    "depthwise_5x5_stride2": dict(shape=[1, 19, 17, 15], oc=19, k=5, stride=2, group=19),
    "depthwise_multiplier": dict(shape=[1, 6, 8, 8], oc=12, k=3, group=6),
    "grouped": dict(shape=[1, 12, 9, 9], oc=18, k=3, group=3),
    "relu_no_bias": dict(shape=[1, 9, 6, 6], oc=7, k=1, act="relu", bias=False),
    "fused_silu_table": dict(shape=[1, 9, 6, 6], oc=21, k=3, lut=qt.silu),
    "many_row_tiles": dict(shape=[1, 32, 96, 96], oc=48, k=3),
    "column_tiles": dict(shape=[1, 64, 4, 1400], oc=16, k=3),
    "input_channel_chunks": dict(shape=[1, 1100, 3, 3], oc=130, k=3),
    "kernel_wider_than_tall": dict(shape=[1, 4, 9, 20], oc=5, k=(1, 9)),
}


@pytest.mark.parametrize("case", CONVS.values(), ids=CONVS.keys())
def test_conv(graph, check_bit_exact, case):
    case = dict(case)
    x = graph.input(case.pop("shape"))
    check_bit_exact(graph, graph.conv(x, **case))


CONV_TRANSPOSES = {
    "2x2_odd_channels": dict(shape=[1, 5, 7, 9], oc=3, k=2),
    "2x2_one_output_channel": dict(shape=[1, 24, 33, 31], oc=1, k=2, act="relu"),
    "4x4": dict(shape=[1, 7, 9, 6], oc=11, k=4),
    "2x3_rectangular": dict(shape=[1, 13, 5, 6], oc=5, k=(2, 3)),
    "grouped": dict(shape=[1, 12, 9, 9], oc=6, k=2, group=3),
    "depthwise": dict(shape=[1, 10, 6, 7], oc=10, k=2, group=10),
    "many_row_tiles": dict(shape=[1, 32, 100, 120], oc=30, k=2),
    "column_tiles": dict(shape=[1, 64, 3, 1500], oc=24, k=2),
    "input_channel_chunks": dict(shape=[1, 1100, 3, 3], oc=70, k=2),
    "taps_split_4x4_wide": dict(shape=[1, 7, 20, 30], oc=45, k=4),
}


@pytest.mark.parametrize("case", CONV_TRANSPOSES.values(), ids=CONV_TRANSPOSES.keys())
def test_conv_transpose(graph, check_bit_exact, case):
    case = dict(case)
    x = graph.input(case.pop("shape"))
    check_bit_exact(graph, graph.conv_transpose(x, **case))


def test_fully_connected(graph, check_bit_exact):
    x = graph.input([1, 37])
    check_bit_exact(graph, graph.fc(x, 19))


def test_fully_connected_rows(graph, check_bit_exact):
    x = graph.input([3, 5, 40])
    check_bit_exact(graph, graph.fc(x, 21))


@pytest.mark.parametrize("shape", [[1, 19, 13, 11], [1, 3, 1, 1], [1, 40, 128, 96]])
def test_add_different_scales(graph, check_bit_exact, shape):
    a = graph.input(shape, 0.03, 5, name="a")
    b = graph.input(shape, 0.11, -20, name="b")
    check_bit_exact(graph, graph.add(a, b), graph.add(b, a, relu=True))


def test_mul_and_channel_broadcast(graph, check_bit_exact):
    a = graph.input([1, 21, 9, 7], 0.05, 3, name="a")
    b = graph.input([1, 21, 9, 7], 0.02, -9, name="b")
    gate = graph.input([1, 21, 1, 1], 1 / 256, -128, name="gate")
    check_bit_exact(graph, graph.mul(a, b), graph.mul(a, gate), graph.mul(gate, b), graph.add(gate, a))


def test_concat_of_different_scales(graph, check_bit_exact):
    a = graph.input([1, 5, 6, 7], 0.03, 5, name="a")
    b = graph.input([1, 11, 6, 7], 0.08, -4, name="b")
    same = graph.concat([a, a], out=(0.03, 5))  # identity rescale: DMA only
    check_bit_exact(graph, graph.concat([a, b]), same, graph.concat([a, b], axis=1, out=(0.08, -4)))


@pytest.mark.parametrize("axis", [2, 3])
def test_concat_spatial_axes(graph, check_bit_exact, axis):
    a = graph.input([1, 5, 6, 7], 0.03, 5, name="a")
    b = graph.input([1, 5, 6, 7], 0.03, 5, name="b")
    check_bit_exact(graph, graph.concat([a, b], axis=axis, out=(0.03, 5)))


POOLS = {
    "max_2x2_s2": dict(kind="max", kernel=(2, 2), strides=(2, 2)),
    "max_3x3_s2_padded": dict(kind="max", kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
    "avg_3x3_padded_excluded": dict(kind="avg", kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1)),
    "avg_3x3_padded_included": dict(kind="avg", kernel=(3, 3), strides=(2, 2), pads=(1, 0, 1, 2),
                                    count_include_pad=True),  # fmt: skip
    "avg_5x3": dict(kind="avg", kernel=(5, 3), strides=(1, 2)),
}


@pytest.mark.parametrize("case", POOLS.values(), ids=POOLS.keys())
def test_pool(graph, check_bit_exact, case):
    case = dict(case)
    kind = case.pop("kind")
    x = graph.input([1, 13, 17, 15])
    check_bit_exact(graph, (graph.max_pool if kind == "max" else graph.avg_pool)(x, **case))


@pytest.mark.parametrize("shape", [[1, 19, 7, 9], [1, 24, 160, 160], [1, 3, 1, 1]])
def test_global_avg_pool(graph, check_bit_exact, shape):
    check_bit_exact(graph, graph.global_avg_pool(graph.input(shape)))


RESIZES = {
    "nearest_2x": dict(shape=[1, 7, 5, 6], out=(10, 12), mode="nearest", coord="asymmetric"),
    "nearest_half_pixel_3x": dict(shape=[1, 5, 4, 5], out=(12, 15), mode="nearest", coord="half_pixel"),
    "bilinear_2x_half_pixel": dict(shape=[1, 9, 6, 7], out=(12, 14), mode="bilinear", coord="half_pixel"),
    "bilinear_align_corners": dict(shape=[1, 4, 5, 5], out=(9, 13), mode="bilinear", coord="align_corners"),
    "bilinear_downscale": dict(shape=[1, 3, 16, 12], out=(7, 5), mode="bilinear", coord="half_pixel"),
    "nearest_many_tiles": dict(shape=[1, 24, 80, 80], out=(160, 160), mode="nearest", coord="asymmetric"),
}


@pytest.mark.parametrize("case", RESIZES.values(), ids=RESIZES.keys())
def test_resize(graph, check_bit_exact, case):
    x = graph.input(case["shape"])
    check_bit_exact(graph, graph.resize(x, case["out"], case["mode"], case["coord"]))


@pytest.mark.parametrize("function", [qt.sigmoid, qt.hard_swish, qt.tanh], ids=["sigmoid", "hard_swish", "tanh"])
def test_lut(graph, check_bit_exact, function):
    check_bit_exact(graph, graph.lut(graph.input([1, 10, 7, 3]), function))


def test_layout_ops(graph, check_bit_exact):
    x = graph.input([1, 6, 5, 7])
    t = graph.layout(quant.TransposeOp, x, [1, 7, 6, 5], perm=(0, 3, 1, 2))
    s = graph.layout(quant.SliceOp, x, [1, 3, 2, 6], starts=(0, 1, 0, 1), ends=(1, 6, 5, 7), steps=(1, 2, 3, 1))
    p = graph.layout(quant.PadOp, x, [1, 6, 8, 10], pads=(0, 0, 1, 2, 0, 0, 2, 1))
    r = graph.layout(quant.ReshapeOp, x, [1, 30, 7])
    flat = graph.layout(quant.ReshapeOp, graph.global_avg_pool(x), [1, 6])
    check_bit_exact(graph, t, s, p, r, flat)


def test_conv_tiles_alternate_accumulator_halves_so_post_overlaps_the_next_conv(graph, check_bit_exact):
    """POST runs on the store engine: with consecutive tiles in different accumulator
    halves, the requantization of tile k runs while the compute engine convolves tile k+1."""
    x = graph.input([1, 32, 96, 96])
    sim = check_bit_exact(graph, graph.conv(x, oc=48, k=3))
    program, sched = sim.program, sim.schedule
    convs = [i for i, insn in enumerate(program) if insn.opcode == Opcode.CONV]
    posts = [i for i, insn in enumerate(program) if insn.opcode == Opcode.POST]
    assert len(posts) == len(convs) > 2
    halves = [program[i].acc for i in posts]
    assert len(set(halves)) == 2 and all(a != b for a, b in zip(halves, halves[1:]))
    for post, conv in zip(posts, convs[1:]):
        assert sched.engines[post] == Engine.STORE
        assert sched.start[conv] < sched.end[post] and sched.start[post] < sched.end[conv]
