"""calibrate: sample formats, range estimators, the IR record and JSON, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import helper
from PIL import Image
from xdsl.context import Context

from ember.frontend.onnx_import import import_model
from ember.frontend.samples import InputSpec, Normalization, load_samples
from ember.lowering.onnx_to_quant import convert
from ember.passes.calibrate import CalibratePass, calibrate, load_quant_info, recorded_observed, recorded_ranges
from ember.support.diagnostics import EmberError
from tests.quant.quantize_helpers import model, samples

SPEC = [InputSpec("x", (1, 3, 8, 8))]


def relu_model():
    return import_model(model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 3, 8, 8])], [("y", None)]))


def write_npy(folder, count=3, dtype=np.float32, shape=(1, 3, 8, 8)):
    folder.mkdir(exist_ok=True)
    for i in range(count):
        np.save(folder / f"s{i}.npy", np.random.default_rng(i).standard_normal(shape).astype(dtype))
    return folder


def test_npy_folder_records_ranges_on_the_module_and_json(tmp_path) -> None:
    module = relu_model()
    output = tmp_path / "m_quant_info.json"
    CalibratePass(data=str(write_npy(tmp_path / "npy")), output=str(output)).apply(Context(), module)
    ranges = recorded_ranges(module)
    assert set(ranges) == {"x", "y"} and ranges["y"][0] == 0.0 and ranges["x"][0] < 0 < ranges["x"][1]
    info = json.loads(output.read_text())
    assert info["method"] == "minmax" and info["samples"] == ["s0.npy", "s1.npy", "s2.npy"]
    loaded = load_quant_info(output)
    assert loaded.ranges == {k: tuple(v) for k, v in ranges.items()} and loaded.observed == recorded_observed(module)
    assert loaded.method == "minmax" and loaded.samples == info["samples"]


def test_quantize_from_quant_info_json_equals_quantize_from_the_module(tmp_path) -> None:
    """`quantize{quant_info=...}` reads ranges and observed extremes from the JSON: the
    int16 input's scale (observed) and the int8 result's (calibrated) match the module's."""
    from ember.dialects import quant
    from ember.dialects.quant import quant_type_of
    from ember.passes.quantize import QuantizePass

    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3))
    proto = model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], [("x", [1, 3, 8, 8])], [("y", None)], [("w", w)])
    output = tmp_path / "m_quant_info.json"
    types = []
    for source in ("module", "json"):
        module = import_model(proto)
        CalibratePass(data=str(write_npy(tmp_path / "npy")), method="mse", output=str(output)).apply(Context(), module)
        QuantizePass(int16_nodes="x", quant_info=str(output) if source == "json" else "").apply(Context(), module)
        (conv,) = [op for op in module.walk() if isinstance(op, quant.Conv2DOp)]
        types.append((quant_type_of(conv.input), quant_type_of(conv.output)))
    assert types[0] == types[1] and types[0][0].storage_dtype == np.int16


def test_npz_and_stacked_samples(tmp_path) -> None:
    stack = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "s.npz", x=stack)
    loaded = load_samples(tmp_path / "s.npz", SPEC)
    assert len(loaded) == 5 and next(iter(loaded))["x"].shape == (1, 3, 8, 8)
    np.savez(tmp_path / "bad.npz", y=stack)
    with pytest.raises(EmberError, match="no array for input 'x'"):
        load_samples(tmp_path / "bad.npz", SPEC)


def test_images_are_resized_and_normalized(tmp_path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((20, 30, 3), 255, dtype=np.uint8)).save(folder / "white.png")
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(folder / "black.jpg")
    loaded = list(load_samples(folder, SPEC, Normalization((127.5,), (127.5,))))
    assert [s["x"].shape for s in loaded] == [(1, 3, 8, 8)] * 2
    assert np.allclose(loaded[0]["x"], -1.0) and np.allclose(loaded[1]["x"], 1.0)  # black.jpg sorts first


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse", "entropy"])
def test_methods_give_ranges_inside_the_observed_ones(method: str) -> None:
    module = relu_model()
    result = calibrate(module, samples({"x": (1, 3, 8, 8)}, 6), method)
    for name, (lo, hi) in result.ranges.items():
        observed_lo, observed_hi = result.observed[name]
        assert observed_lo - 1e-6 <= lo <= hi <= observed_hi + 1e-6


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d.mkdir(), "no .npy or image"),
        (lambda d: write_npy(d, shape=(1, 3, 4, 4)), r"s0.npy: shape 1x3x4x4, input 'x' expects 1x3x8x8"),
        (lambda d: write_npy(d, dtype=np.int32), "s0.npy: dtype int32"),
        (lambda d: (d.mkdir(), (d / "broken.png").write_bytes(b"not a png")), "broken.png: not a readable image"),
        (lambda d: (d.mkdir(), (d / "broken.npy").write_bytes(b"junk")), "broken.npy: not a readable .npy"),
    ],
    ids=["empty", "shape", "dtype", "image", "npy"],
)
def test_bad_samples_are_one_line_errors(tmp_path, setup, message) -> None:
    folder = tmp_path / "data"
    setup(folder)
    with pytest.raises(EmberError, match=message) as caught:
        CalibratePass(data=str(folder)).apply(Context(), relu_model())
    assert "\n" not in str(caught.value)


def test_missing_folder_and_nan_samples(tmp_path) -> None:
    with pytest.raises(EmberError, match="not found"):
        CalibratePass(data=str(tmp_path / "nowhere")).apply(Context(), relu_model())
    folder = write_npy(tmp_path / "nan", count=1)
    array = np.load(folder / "s0.npy")
    array[0, 0, 0, 0] = np.nan
    np.save(folder / "s0.npy", array)
    with pytest.raises(EmberError, match="s0.npy: sample contains NaN or Inf"):
        CalibratePass(data=str(folder)).apply(Context(), relu_model())


def test_nan_weights_are_an_error() -> None:
    w = np.ones((2, 3, 1, 1), dtype=np.float32)
    w[1, 0, 0, 0] = np.inf
    proto = model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [("x", [1, 3, 8, 8])], [("y", None)], [("w", w)])
    module = import_model(proto)
    with pytest.raises(EmberError, match="NaN or Inf"):
        convert(module, calibrate(module, samples({"x": (1, 3, 8, 8)})).ranges)


def test_constant_zero_tensor_gets_a_valid_scale() -> None:
    """x * 0 has the degenerate range [0, 0]: scale 1.0, zero point 0, exact zeros out."""
    from tests.quant.quantize_helpers import quantize_and_compare

    proto = model(
        [helper.make_node("Mul", ["x", "zero"], ["z"]), helper.make_node("Add", ["z", "x"], ["y"])],
        [("x", [1, 3, 8, 8])], [("y", None)], [("zero", np.zeros((1, 3, 1, 1)))],
    )
    module, cos, _ = quantize_and_compare(proto, {"x": (1, 3, 8, 8)})
    module.verify()
    assert cos > 0.99


def test_quantize_without_calibration_says_what_to_do() -> None:
    from ember.passes.quantize import QuantizePass

    with pytest.raises(EmberError, match="run 'calibrate"):
        QuantizePass().apply(Context(), relu_model())
