"""`npu-preproc`: a binary that takes raw uint8 frames gives, bit for bit, what the same
program gives on the int8 input that the host would compute from the same pixels
(normalize in float32, then QuantizeLinear)."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.context import Context

from ember.frontend.samples import Normalization
from ember.interpreters.quant_reference import quantize
from ember.lowering.npu_to_ebin import ebin_from_module
from ember.lowering.quant_to_npu import LowerQuantToNpuPass
from ember.passes.npu_allocate import NpuAllocatePass
from ember.passes.npu_preproc import NpuPreprocPass, preproc_tables
from ember.passes.npu_schedule import NpuSchedulePass
from ember.support.diagnostics import EmberError
from ember.target import kernels
from ember.target.ebin import parse, to_bytes
from ember.target.isa import ChannelOrder, PixelFormat
from ember.target.simulator import Simulator

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def _simulator(graph, shape, preproc: NpuPreprocPass | None) -> Simulator:
    x = graph.input(shape, scale=0.0187, zp=-7)
    module = graph.module(graph.conv(x, 8, k=3))
    passes = [LowerQuantToNpuPass(), *([preproc] if preproc else []), NpuAllocatePass(), NpuSchedulePass()]
    for p in passes:
        p.apply(Context(), module)
    module.verify()
    return Simulator(parse(to_bytes(ebin_from_module(module)), "t.ebin"))


def _host_int8(rgb: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """What the host feeds without PREPROC: normalized float32, quantized, NHWC."""
    nchw = rgb.astype(np.float32).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(quantize(Normalization(MEAN, STD).apply(nchw), scale, zp).transpose(0, 2, 3, 1))


@pytest.mark.parametrize("fmt", ["rgb", "bgr", "nv12"])
@pytest.mark.parametrize("hw", [(6, 10), (300, 160)], ids=["one_tile", "many_tiles"])
def test_frames_equal_host_normalization(graph, fmt, hw):
    from tests.lowering.conftest import Graph

    h, w = hw
    rng = np.random.default_rng(3)
    sim = _simulator(graph, [1, 3, h, w], NpuPreprocPass(input="x", format=fmt, mean=MEAN, std=STD))
    plain = _simulator(Graph(seed=1234), [1, 3, h, w], None)
    (desc,) = sim.ebin.iodesc["inputs"]
    assert (desc["dtype"], desc["pixel_format"], desc["normalization"]) == ("uint8", fmt, {"mean": list(MEAN), "std": list(STD)})
    if fmt == "nv12":
        frame = rng.integers(0, 256, size=(1, h * 3 // 2, w), dtype=np.uint8)
        rgb = kernels.nv12_to_rgb(frame[0, :h], frame[0, h:].reshape(h // 2, w // 2, 2))
    else:
        rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        frame = (rgb[..., ::-1] if fmt == "bgr" else rgb)[None].copy()
    got = sim.run({"x": frame})
    expected = plain.run({"x": _host_int8(rgb, desc["scale"], desc["zero_point"])})
    for name, value in expected.items():
        assert np.array_equal(got[name], value), name
    assert (sim.stats().instructions["PREPROC"] > 1) == (h == 300)


def test_tables_are_the_host_quantization():
    tables = preproc_tables(Normalization((127.5,), (127.5,)), 1 / 128, 0)
    assert tables.shape == (3, 256) and tables.dtype == np.int8
    # (v - 127.5) / 127.5 * 128: -128 at 0, 128 clamps to 127 at 255, +-0.502 round away from 0
    assert list(tables[0, [0, 127, 128, 255]]) == [-128, -1, 1, 127]
    assert np.array_equal(tables[0], tables[2])
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 256, 1).repeat(3, axis=2)
    out = kernels.preproc(pixels, None, PixelFormat.RGB, ChannelOrder.RGB, tables)
    assert np.array_equal(out[0, :, 0], tables[0])


def test_errors(graph):
    with pytest.raises(EmberError, match="npu-preproc: the program has no input 'image' \\(inputs: x\\)"):
        _simulator(graph, [1, 3, 4, 4], NpuPreprocPass(input="image"))
    from tests.lowering.conftest import Graph

    with pytest.raises(EmberError, match="PREPROC needs 1 x 3 x H x W"):
        _simulator(Graph(), [1, 4, 4, 4], NpuPreprocPass(input="x"))
    with pytest.raises(EmberError, match="nv12 frames need an even height and width"):
        _simulator(Graph(), [1, 3, 5, 4], NpuPreprocPass(input="x", format="nv12"))
