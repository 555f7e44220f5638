"""Graphs that mirror real architectures, compiled and simulated bit-exactly: a ResNet
residual stage, a MobileNetV3 block (depthwise + squeeze-excitation + hard-swish), and a
YOLO-style neck and head (upsample, concat of different scales, multi-scale outputs)."""

from __future__ import annotations

from ember.dialects import quant_tables as qt


def test_resnet_stage(graph, check_bit_exact):
    x = graph.input([1, 32, 28, 28])
    stem = graph.max_pool(graph.conv(x, 64, k=7, stride=2, act="relu"), (3, 3), (2, 2), (1, 1, 1, 1))
    h = stem
    for width, stride in ((64, 1), (128, 2)):
        skip = h if stride == 1 and h.type.get_shape()[1] == width else graph.conv(h, width, k=1, stride=stride, bias=False)
        y = graph.conv(h, width, k=3, stride=stride, act="relu")
        y = graph.conv(y, width, k=3)
        h = graph.add(y, skip, relu=True)
    check_bit_exact(graph, graph.global_avg_pool(h))


def test_mobilenet_block_with_squeeze_excitation(graph, check_bit_exact):
    x = graph.input([1, 24, 40, 40])
    expand = graph.conv(x, 72, k=1, lut=qt.hard_swish)
    dw = graph.conv(expand, 72, k=5, stride=2, group=72, lut=qt.hard_swish)
    squeeze = graph.global_avg_pool(dw)
    s = graph.conv(squeeze, 18, k=1, act="relu")
    gate = graph.conv(s, 72, k=1, lut=qt.hard_sigmoid)
    excited = graph.mul(dw, gate)
    project = graph.conv(excited, 40, k=1)
    residual = graph.add(project, graph.conv(x, 40, k=3, stride=2))
    check_bit_exact(graph, residual)


def test_yolo_neck_and_head(graph, check_bit_exact):
    x = graph.input([1, 16, 64, 64])
    c3 = graph.conv(graph.conv(x, 32, k=3, stride=2, lut=qt.silu), 48, k=3, stride=2, lut=qt.silu)  # 16x16
    c4 = graph.conv(c3, 64, k=3, stride=2, lut=qt.silu)  # 8x8
    c5 = graph.conv(c4, 96, k=3, stride=2, lut=qt.silu)  # 4x4
    pooled = graph.concat([c5, graph.max_pool(c5, (5, 5), pads=(2, 2, 2, 2)), graph.max_pool(c5, (9, 9), pads=(4, 4, 4, 4))])
    p5 = graph.conv(pooled, 64, k=1, lut=qt.silu)  # SPPF-like
    up4 = graph.resize(p5, (8, 8), "nearest", "asymmetric")
    p4 = graph.conv(graph.concat([up4, c4]), 48, k=3, lut=qt.silu)
    up3 = graph.resize(p4, (16, 16), "nearest", "asymmetric")
    p3 = graph.conv(graph.concat([up3, c3]), 32, k=3, lut=qt.silu)
    down = graph.conv(p3, 48, k=3, stride=2, lut=qt.silu)
    n4 = graph.conv(graph.concat([down, p4]), 48, k=3, lut=qt.silu)
    heads = [graph.conv(p, 3 * (5 + 4), k=1) for p in (p3, n4, p5)]
    check_bit_exact(graph, *heads, graph.lut(heads[0], qt.sigmoid))
