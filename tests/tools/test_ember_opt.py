"""`ember-opt` from the command line: the documented usage, and bad input.

Every bad input exits non-zero with exactly one line on stderr naming the problem, no
traceback (unless --debug), and no output or temporary file left in the directory.
The tool runs as the installed console script, in a subprocess, like a user runs it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DETECTOR = SHARED / "models" / "ppocrv4_det.onnx"
PHOTO = SHARED / "images" / "logo.png"

needs_models = pytest.mark.skipif(not DETECTOR.is_file(), reason=f"the shared real model {DETECTOR} is not there")


def ember_opt(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ember-opt") or str(Path(sys.executable).with_name("ember-opt"))
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with the detector as det.onnx (a link, to keep the test fast)."""
    if DETECTOR.is_file():
        (tmp_path / "det.onnx").symlink_to(DETECTOR)
    return tmp_path


def listing(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


@needs_models
def test_documented_usage(workdir: Path) -> None:
    done = ember_opt("det.onnx", "--input-shape", "x=1,3,320,320", "-p", "onnx-constant-fold,canonicalize", "-t", "onnx", "-o", "out.onnx", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    assert listing(workdir) == {"det.onnx", "out.onnx"}  # no temporary file left
    out = onnx.load(str(workdir / "out.onnx"))
    onnx.checker.check_model(out, full_check=True)
    assert not [n for n in out.graph.node if n.op_type == "Constant"]
    x = np.random.default_rng(0).standard_normal((1, 3, 320, 320)).astype(np.float32)
    original = onnx.load(str(DETECTOR))
    for dim, extent in zip(original.graph.input[0].type.tensor_type.shape.dim, [1, 3, 320, 320]):
        dim.Clear()
        dim.dim_value = extent
    want = ort.InferenceSession(original.SerializeToString()).run(None, {"x": x})
    got = ort.InferenceSession(out.SerializeToString()).run(None, {"x": x})
    assert all(np.array_equal(a, b) for a, b in zip(want, got))


@needs_models
def test_mlir_text_and_back(workdir: Path) -> None:
    assert ember_opt("det.onnx", "--input-shape", "x=1,3,320,320", "-o", "det.mlir", cwd=workdir).returncode == 0
    text = (workdir / "det.mlir").read_text()
    assert "onnx.Constant()" in text and 'dense<"0x' in text
    done = ember_opt("det.mlir", "-p", "onnx-constant-fold", "-t", "onnx", "-o", "back.onnx", cwd=workdir)
    assert done.returncode == 0, done.stderr
    onnx.checker.check_model(str(workdir / "back.onnx"))
    elided = ember_opt("det.onnx", "--elide-weights", cwd=workdir)
    assert elided.returncode == 0 and "dense_resource<__elided__>" in elided.stdout and 'dense<"0x' not in elided.stdout


def _write_inputs(directory: Path) -> None:
    (directory / "empty.onnx").write_bytes(b"")
    data = DETECTOR.read_bytes()
    (directory / "half.onnx").write_bytes(data[: len(data) // 2])
    shutil.copy(PHOTO, directory / "photo.onnx")
    shutil.copy(PHOTO, directory / "photo.png")


BAD_INPUT = [
    ("missing file", ["missing.onnx"], "missing.onnx: no such file"),
    ("empty file", ["empty.onnx"], "empty.onnx: the file is empty; expected an ONNX model"),
    ("truncated file", ["half.onnx"], "half.onnx: not a valid ONNX model (the protobuf does not parse: the file is truncated or not ONNX)"),
    ("PNG named .onnx", ["photo.onnx"], "photo.onnx: not a valid ONNX model (the protobuf does not parse: the file is truncated or not ONNX)"),
    ("PNG", ["photo.png"], "photo.png: unknown input format '.png'; ember-opt reads .onnx and .mlir files"),
    ("unknown pass", ["det.onnx", "-p", "no-such-pass"], "-p 'no-such-pass': Unrecognized passes: ['no-such-pass']"),
    (
        "unknown pass option",
        ["det.onnx", "-p", "onnx-constant-fold{foo=1}"],
        "-p 'onnx-constant-fold{foo=1}': Provided arguments [\"foo\"] not found in expected arguments []",
    ),
    *[
        (f"malformed --input-shape {spec}", ["det.onnx", "--input-shape", spec], f"--input-shape '{spec}': expected NAME=D,D,... with positive integer dimensions, e.g. x=1,3,320,320")
        for spec in ("x=1,a", "x", "x=0,3", "=1,3", "x=")
    ],
    ("unknown input name", ["det.onnx", "--input-shape", "images=1,3,320,320"], "det.onnx: --input-shape names unknown input 'images'; the inputs are: x"),
    ("wrong rank", ["det.onnx", "--input-shape", "x=1,3,320"], "det.onnx: input 'x' has rank 4 but --input-shape gives 3 dimensions"),
    ("-t onnx without -o", ["det.onnx", "-t", "onnx"], "-t onnx writes a binary file: give its path with -o"),
]


@needs_models
@pytest.mark.parametrize(("args", "message"), [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT])
def test_bad_input_is_one_line(workdir: Path, args: list[str], message: str) -> None:
    _write_inputs(workdir)
    before = listing(workdir)
    done = ember_opt(*args, "-t", "onnx", "-o", "out.onnx", cwd=workdir) if "-t" not in args else ember_opt(*args, cwd=workdir)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"ember-opt: error: {message}"]
    assert done.stdout == ""
    assert listing(workdir) == before  # no output file, no temporary file


@needs_models
def test_failure_after_parsing_leaves_no_output(workdir: Path) -> None:
    # Weights printed elided cannot be exported: the run fails while writing the output,
    # and a previous output file stays as it was.
    assert ember_opt("det.onnx", "--elide-weights", "-o", "elided.mlir", cwd=workdir).returncode == 0
    (workdir / "out.onnx").write_bytes(b"previous")
    before = listing(workdir)
    done = ember_opt("elided.mlir", "-t", "onnx", "-o", "out.onnx", cwd=workdir)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "ember-opt: error: the Constant node producing 'batch_norm2d_0.b_0': attribute 'value' holds weights printed with --elide-weights; re-import the model from its .onnx file"
    ]
    assert listing(workdir) == before and (workdir / "out.onnx").read_bytes() == b"previous"


@needs_models
def test_debug_shows_the_traceback(workdir: Path) -> None:
    done = ember_opt("det.onnx", "-p", "no-such-pass", "--debug", cwd=workdir)
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr
    assert "EmberError: -p 'no-such-pass'" in done.stderr
