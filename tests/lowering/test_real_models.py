"""The two shared PaddleOCR models, quantized by the project's own passes, compiled to
`.ebin` and simulated: the NPU's outputs equal the quant reference interpreter's bit for
bit. Both are cut by `autocrop`: the detector (at 160x160) runs through its head's two
ConvTranspose layers, and only the final Sigmoid stays on the host; once more with its
image input and first 23 convolutions in int16 (CONV `in_i16`, POST `out_i16` and
interpolated tables, and the first squeeze-excitation block's POOL sum `in_i16` and ELTW
mul `a_i16`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from ember.frontend.onnx_import import import_model, load_onnx, parse_input_shapes
from ember.interpreters.quant_reference import run_quant_module
from ember.lowering.npu_to_ebin import compile_to_ebin
from ember.lowering.quant_to_npu import main_function
from ember.passes.autocrop import AutocropPass
from ember.passes.calibrate import CalibratePass
from ember.passes.extract_normalization import ExtractNormalizationPass
from ember.passes.fold_batchnorm import FoldBatchNormPass
from ember.passes.quantize import QuantizePass
from ember.target import kernels
from ember.target.ebin import parse, to_bytes
from ember.target.isa import Opcode
from ember.target.simulator import Simulator

SHARED = Path(__file__).resolve().parents[2].parent / "shared"

MODELS = {
    "ppocrv4_det": dict(
        file="ppocrv4_det.onnx", shape="x=1,3,160,160", cut=[AutocropPass(remarks=False)],
        mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), ops={"quant.conv_transpose": 2},
    ),
    "ppocrv4_det_int16": dict(
        file="ppocrv4_det.onnx", shape="x=1,3,160,160", cut=[AutocropPass(remarks=False)],
        mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), ops={"quant.conv_transpose": 2},
        int16_nodes="x,p2o.Conv.?,p2o.Conv.1?,p2o.Conv.2[0-2]", input_dtype="int16", int16_se=True,
    ),
    "ppocr_mobile_v2_cls": dict(
        file="ppocr_mobile_v2_cls.onnx", shape="x=1,3,48,192", cut=[AutocropPass(remarks=False)],
        mean=(127.5,), std=(127.5,), ops={"quant.fully_connected": 1},
    ),
    "ppocr_mobile_v2_cls_bias_corrected": dict(
        file="ppocr_mobile_v2_cls.onnx", shape="x=1,3,48,192", cut=[AutocropPass(remarks=False)],
        mean=(127.5,), std=(127.5,), ops={"quant.fully_connected": 1}, bias_correction=True,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", MODELS.values(), ids=MODELS.keys())
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_model_bit_exact(case):
    path = SHARED / "models" / case["file"]
    assert path.exists(), f"{path} not present: the tests need ../shared beside the repository"
    module = import_model(load_onnx(str(path)), parse_input_shapes([case["shape"]]), source=str(path))
    ctx = Context()
    passes = [FoldBatchNormPass(), ExtractNormalizationPass(remarks=False), *case["cut"],
              CalibratePass(data=str(SHARED / "images"), limit=2, mean=case["mean"], std=case["std"]),
              QuantizePass(bias_correction=case.get("bias_correction", False), int16_nodes=case.get("int16_nodes", ""))]  # fmt: skip
    for p in passes:
        p.apply(ctx, module)
    quant_part = ModuleOp([main_function(module).clone()])
    names = [op.name for op in quant_part.walk()]
    assert {name: names.count(name) for name in case["ops"]} == case["ops"]
    data = to_bytes(compile_to_ebin(module))
    assert to_bytes(parse(data, "model.ebin")) == data  # deterministic round trip
    sim = Simulator(parse(data, "model.ebin"))
    if case.get("int16_se"):
        program = sim.ebin.program
        assert any(i.opcode == Opcode.ELTW and i.a_i16 for i in program) and any(i.opcode == Opcode.POOL and i.in_i16 for i in program)
    (x_desc,) = sim.ebin.iodesc["inputs"]
    (y_desc,) = sim.ebin.iodesc["outputs"]
    assert x_desc["dtype"] == case.get("input_dtype", "int8")
    info = np.iinfo(x_desc["dtype"])
    x = np.random.default_rng(7).integers(info.min, info.max + 1, size=x_desc["shape"]).astype(info.dtype)
    got = sim.run({x_desc["name"]: x})[y_desc["name"]]
    # the reference takes the float input the host would quantize to exactly x
    real = (x.transpose(0, 3, 1, 2).astype(np.float32) - x_desc["zero_point"]) * np.float32(x_desc["scale"])
    (expected,) = run_quant_module(quant_part, {x_desc["name"]: real}).values()
    got_real = (got.astype(np.float32) - y_desc["zero_point"]) * np.float32(y_desc["scale"])
    if got_real.ndim == 4:
        got_real = got_real.transpose(0, 3, 1, 2)
    assert np.array_equal(got_real.reshape(expected.shape), expected)
    assert sim.stats().macs > 0
    for threshold in (0, 2**62):  # every kernel on all of numba's threads, then on one
        with pytest.MonkeyPatch.context() as patch:
            for name in ("PARALLEL_MACS", "PARALLEL_DEPTHWISE_MACS", "PARALLEL_ELEMENTS"):
                patch.setattr(kernels, name, threshold)
            assert np.array_equal(sim.run({x_desc["name"]: x})[y_desc["name"]], got)
