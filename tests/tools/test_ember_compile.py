"""ember-compile and ember-run end to end on the bundled classifier: every artifact, the
report's sections, ember-run against the runtime API, and one-line errors that leave no
partial output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ember.runtime.accelerator import Accelerator
from ember.target import ebin
from ember.tools.ember_compile import main as ember_compile
from ember.tools.ember_run import main as ember_run
from ember.tools.ember_run import output_file_name, read_input

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "models" / "ppocr_mobile_v2_cls.onnx"
SCRIPT = ROOT / "examples" / "ppocr_mobile_v2_cls.ems"
CALIB = ROOT / "examples" / "calibration"
IMAGE = ROOT / "examples" / "inputs" / "text.png"
SHAPE = "x=1,3,48,192"
STEM = "ppocr_mobile_v2_cls"
OUTPUT = "save_infer_model/scale_0.tmp_1"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cls") / "out"
    assert ember_compile([str(MODEL), "-o", str(out), "--input-shape", SHAPE, "--calib", str(CALIB), "--script", str(SCRIPT)]) == 0
    return out


def test_artifacts(compiled: Path):
    for suffix in ("_original_float.onnx", "_optimized_float.onnx", "_quantized.onnx", "_quantized.mlir", ".ebin",
                   "_post.onnx", "_quant_info.json", "_node_info.csv", "_report.html"):  # fmt: skip
        assert (compiled / f"{STEM}{suffix}").stat().st_size > 0, suffix
    assert not (compiled / f"{STEM}_pre.onnx").exists()  # autocrop keeps nothing before the NPU
    assert "calibration: mse on" in (compiled / "compile.log").read_text()
    binary = ebin.load(compiled / f"{STEM}.ebin")
    (x,) = binary.iodesc["inputs"]
    assert (x["dtype"], x["pixel_format"], x["shape"]) == ("uint8", "rgb", [1, 48, 192, 3])
    assert binary.meta["options"]["deploy"]["outputs"] == [OUTPUT]
    assert not list(compiled.parent.glob(".out.*"))  # the staging folder is gone


def test_report_sections(compiled: Path):
    page = (compiled / f"{STEM}_report.html").read_text()
    for section in ("Decisions", "What runs where", "Cycles per layer", "MAC utilization per layer",
                    "Similarity (cosine to float, per node)", "Stages", "Softmax@0", "x.preproc", "<svg"):  # fmt: skip
        assert section in page, section
    assert "<script" not in page


def test_ember_run_equals_runtime_api(compiled: Path, tmp_path: Path, capsys):
    assert ember_run([str(compiled), "--input", f"x={IMAGE}", "--output-dir", str(tmp_path / "sim")]) == 0
    assert ember_run([str(compiled), "--input", f"x={IMAGE}", "--output-dir", str(tmp_path / "ref"), "--reference"]) == 0
    assert OUTPUT in capsys.readouterr().out
    accl = Accelerator(compiled)
    expected = accl.run({"x": read_input(accl, "x", IMAGE)})[OUTPUT]
    for run in ("sim", "ref"):
        assert np.array_equal(np.load(tmp_path / run / output_file_name(OUTPUT)), expected), run


def _fails(tool, argv, capsys, message: str) -> None:
    assert tool(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_bias_correction_changes_only_biases_and_stays_bit_exact(compiled: Path, tmp_path: Path):
    """--bias-correction moves int32 biases by the measured mean error; the NPU still
    equals the reference interpreter bit for bit."""
    out = tmp_path / "bc"
    assert ember_compile([str(MODEL), "-o", str(out), "--input-shape", SHAPE, "--calib", str(CALIB), "--script", str(SCRIPT), "--bias-correction"]) == 0
    assert "bias correction: empirical, on the calibration samples" in (out / "compile.log").read_text()
    plain = (compiled / f"{STEM}_quantized.mlir").read_text().splitlines()
    corrected = (out / f"{STEM}_quantized.mlir").read_text().splitlines()
    assert len(plain) == len(corrected)
    changed = [b for a, b in zip(plain, corrected) if a != b]
    assert changed and all("quant.constant" in line and "xi32>" in line for line in changed)
    sim, ref = Accelerator(out), Accelerator(out, reference=True)
    x = read_input(sim, "x", IMAGE)
    np.testing.assert_array_equal(sim.run({"x": x})[OUTPUT], ref.run({"x": x})[OUTPUT])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--calib", "/nonexistent/images"], "/nonexistent/images: calibration data not found"),
        (["--outputs", "no_such_tensor"], "crop: tensor 'no_such_tensor' is not a non-constant tensor of the graph"),
        (["--script", "BAD"], "bad.ems:2:21: method must be one of"),
    ],
)
def test_compile_errors_leave_nothing(tmp_path: Path, capsys, extra, message):
    (tmp_path / "bad.ems").write_text("autocrop()\nquantization(method=fast)\n")
    extra = [str(tmp_path / "bad.ems") if e == "BAD" else e for e in extra]
    out = tmp_path / "out"
    _fails(ember_compile, [str(MODEL), "-o", str(out), "--input-shape", SHAPE, *extra], capsys, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ems"]


def test_missing_model(tmp_path: Path, capsys):
    _fails(ember_compile, [str(tmp_path / "none.onnx"), "-o", str(tmp_path / "out")], capsys, "none.onnx")
    assert list(tmp_path.iterdir()) == []


def test_run_errors(compiled: Path, tmp_path: Path, capsys):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((1, 3, 32, 32), np.float32))
    out = tmp_path / "res"
    _fails(ember_run, [str(compiled), "--input", f"y={IMAGE}", "--output-dir", str(out)], capsys, "the model has no input 'y'; its inputs are x")
    _fails(ember_run, [str(compiled), "--input", f"x={wrong}", "--output-dir", str(out)], capsys,
           "input 'x': the NPU takes raw rgb uint8 frames of shape [1, 48, 192, 3], got [1, 3, 32, 32] float32")  # fmt: skip
    _fails(ember_run, [str(tmp_path / "nothing"), "--input", f"x={IMAGE}", "--output-dir", str(out)], capsys, "not a folder")
    assert not out.exists()
