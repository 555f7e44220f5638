"""The bad-input corpus: every tool, fed a broken file or a wrong argument, exits 1 with
exactly one line on stderr (asserted below, naming the file, node or tensor), no
traceback, and writes nothing: the case's output folder stays empty (no partial file, no
temporary file, no staging folder).

`CASES` is the table: (tool, case id, argv, expected stderr line). In argv and the expected
line, `{d}` is the corpus folder (the inputs, built once per session from small generated
graphs and the shared PaddleOCR classifier) and `{o}` a fresh empty folder for the
case's outputs. An expected line starting with `re:` is a regular expression; any other
must equal the stderr line exactly. Tools run in-process through their `main(argv)`; a
few cases also run the installed console scripts.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ember.target.ebin import Section, read_layout
from ember.tools import ember_as, ember_compile, ember_objdump, ember_opt, ember_run, ember_sim

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
TOOLS = {"ember-opt": ember_opt, "ember-compile": ember_compile, "ember-run": ember_run,
         "ember-sim": ember_sim, "ember-objdump": ember_objdump, "ember-as": ember_as}  # fmt: skip


@dataclass(frozen=True)
class Case:
    tool: str
    id: str
    argv: tuple[str, ...]
    expected: str


def _cases() -> list[Case]:
    cases: list[Case] = []

    def add(tool: str, id: str, argv: str | tuple[str, ...], expected: str) -> None:
        cases.append(Case(tool, id, tuple(argv.split()) if isinstance(argv, str) else argv, expected))

    bad_onnx = "{d}/%s: not a valid ONNX model (the protobuf does not parse: the file is truncated or not ONNX)"
    opset5 = "{d}/opset5.onnx: opset 5 is not supported ('Add' changed in a later opset; Ember imports opset 7 and newer); convert it with onnx.version_converter"

    # ---------------------------------------------------------------- ember-opt
    opt = "ember-opt"
    add(opt, "missing", "{d}/nope.onnx -o {o}/out.mlir", "{d}/nope.onnx: no such file")
    add(opt, "empty", "{d}/empty.onnx -o {o}/out.mlir", "{d}/empty.onnx: the file is empty; expected an ONNX model")
    for name in ("truncated.onnx", "truncated_header.onnx", "png.onnx", "random.onnx", "text.onnx"):
        add(opt, name, f"{{d}}/{name} -o {{o}}/out.mlir", bad_onnx % name)
    add(opt, "png_suffix", "{d}/coins.png -o {o}/out.mlir", "{d}/coins.png: unknown input format '.png'; ember-opt reads .onnx and .mlir files")
    add(opt, "opset5", "{d}/opset5.onnx -o {o}/out.mlir", opset5)
    add(opt, "input_shape_syntax", "{d}/dynamic.onnx --input-shape x=1,a -o {o}/out.mlir",
        "--input-shape 'x=1,a': expected NAME=D,D,... with positive integer dimensions, e.g. x=1,3,320,320")
    add(opt, "input_shape_name", "{d}/dynamic.onnx --input-shape q=1,3,8,8 -o {o}/out.mlir",
        "{d}/dynamic.onnx: --input-shape names unknown input 'q'; the inputs are: x")
    add(opt, "input_shape_rank", "{d}/dynamic.onnx --input-shape x=1,3,8 -o {o}/out.mlir",
        "{d}/dynamic.onnx: input 'x' has rank 4 but --input-shape gives 3 dimensions")
    add(opt, "unknown_pass", ("{d}/conv.onnx", "-p", "no-such-pass", "-o", "{o}/out.mlir"), "-p 'no-such-pass': Unrecognized passes: ['no-such-pass']")
    add(opt, "unknown_pass_option", ("{d}/conv.onnx", "-p", "crop{bogus=1}", "-o", "{o}/out.mlir"),
        "-p 'crop{bogus=1}': Provided arguments [\"bogus\"] not found in expected arguments [\"inputs\", \"outputs\", \"config\"]")
    add(opt, "crop_name", ("{d}/conv.onnx", "-p", 'crop{outputs="nope"}', "-o", "{o}/out.mlir"),
        "crop: tensor 'nope' is not a non-constant tensor of the graph; check the name in the IR (ember-opt model.onnx --elide-weights)")
    add(opt, "crop_not_separating", ("{d}/residual.onnx", "-p", 'crop{inputs="c" outputs="y"}', "-o", "{o}/out.mlir"),
        "crop: the cut does not separate the graph: the main part also reads 'x', which the crop inputs do not cover; add them to inputs or move the cut")
    add(opt, "crop_json_syntax", ("{d}/conv.onnx", "-p", 'crop{config="{d}/bad.json"}', "-o", "{o}/out.mlir"),
        '{d}/bad.json: not valid JSON (Expecting value at line 1); expected {"inputs": [...], "outputs": [...]}')
    add(opt, "crop_json_shape", ("{d}/conv.onnx", "-p", 'crop{config="{d}/list.json"}', "-o", "{o}/out.mlir"),
        '{d}/list.json: expected {"inputs": [...], "outputs": [...]} with lists of tensor names')
    add(opt, "mlir_syntax", "{d}/bad.mlir -o {o}/out.mlir", "{d}/bad.mlir: Expected argument or type")
    add(opt, "onnx_without_o", "{d}/conv.onnx -t onnx", "-t onnx writes a binary file: give its path with -o")
    add(opt, "ebin_unlowered", "{d}/conv.onnx -t ebin -o {o}/out.ebin", "-t ebin: the module holds no NPU program; run lower-quant-to-npu first")

    # ------------------------------------------------------------ ember-compile
    cc = "ember-compile"
    add(cc, "missing", "{d}/nope.onnx -o {o}/out", "{d}/nope.onnx: model file not found")
    add(cc, "empty", "{d}/empty.onnx -o {o}/out", "{d}/empty.onnx: the file is empty; expected an ONNX model")
    for name in ("truncated.onnx", "png.onnx", "text.onnx"):
        add(cc, name, f"{{d}}/{name} -o {{o}}/out", bad_onnx % name)
    add(cc, "opset5", "{d}/opset5.onnx -o {o}/out", opset5)
    add(cc, "custom_op", "{d}/custom.onnx -o {o}/out",
        "node 'frob0' (com.acme:Frobnicate): a custom-domain op that neither onnxruntime nor the NPU runs; keep it on the host with --autocrop (or cut it off with --inputs/--outputs)")
    add(cc, "dynamic_shape", "{d}/dynamic.onnx -o {o}/out", "input 'x': calibration needs a static shape; give one with --input-shape x=...")
    add(cc, "nan_weight", "{d}/nan.onnx -o {o}/out", "tensor 'c': the float model produces NaN or Inf; check its weights and the samples")
    add(cc, "inf_weight", "{d}/inf.onnx -o {o}/out", "tensor 'c': the float model produces NaN or Inf; check its weights and the samples")
    add(cc, "zero_size_weight", "{d}/zero_weight.onnx -o {o}/out", "tensor 'y' of node 'conv0' has no elements (shape 1x0x8x8); remove the node or fix its weights")
    add(cc, "zero_size_input", "{d}/zero_input.onnx -o {o}/out", "input 'x': shape 1x3x0x16 has no elements; give a shape with --input-shape x=...")
    add(cc, "huge_weights", "{d}/huge.onnx -o {o}/out",
        "conv0,relu0: cannot tile for ember16: the weights of one group (640000 bytes) exceed half the weight buffer (131072 bytes); run it on the host: compile with --autocrop")
    add(cc, "input_shape_zero", "{d}/conv.onnx --input-shape x=1,3,0,4 -o {o}/out",
        "--input-shape 'x=1,3,0,4': expected NAME=D,D,... with positive integer dimensions, e.g. x=1,3,320,320")
    add(cc, "crop_name", "{d}/conv.onnx --inputs nope --outputs y -o {o}/out",
        "crop: tensor 'nope' is not a non-constant tensor of the graph; check the name in the IR (ember-opt model.onnx --elide-weights)")
    add(cc, "crop_not_separating", "{d}/residual.onnx --crop-config {d}/not_separating.json -o {o}/out",
        "crop: the cut does not separate the graph: the main part also reads 'x', which the crop inputs do not cover; add them to inputs or move the cut")
    add(cc, "crop_json_syntax", "{d}/conv.onnx --crop-config {d}/bad.json -o {o}/out",
        '{d}/bad.json: not valid JSON (Expecting value at line 1); expected {"inputs": [...], "outputs": [...]}')
    add(cc, "crop_json_missing", "{d}/conv.onnx --crop-config {d}/nope.json -o {o}/out", "{d}/nope.json: cannot read the crop config (No such file or directory)")
    add(cc, "crop_alternatives", "{d}/conv.onnx --autocrop --inputs x -o {o}/out", "--inputs/--outputs, --autocrop and --crop-config are alternatives; give one")
    add(cc, "script_syntax", "{d}/conv.onnx --script {d}/syntax.script -o {o}/out",
        "{d}/syntax.script:1:31: syntax error: unexpected end of line; commands look like name = command(arg, key=value)")
    add(cc, "script_command", "{d}/conv.onnx --script {d}/command.script -o {o}/out", "re:{d}/command.script:1:1: unknown command 'frobnicate'; commands are: normalization, .*")
    add(cc, "script_argument", "{d}/conv.onnx --script {d}/argument.script -o {o}/out", "re:{d}/argument.script:1:21: method must be one of minmax, .*, not 'magic'")
    add(cc, "script_value", "{d}/conv.onnx --script {d}/value.script -o {o}/out", "{d}/value.script:1:18: size must be a positive integer")
    add(cc, "calib_empty_folder", "{d}/conv.onnx --calib {d}/calib_empty -o {o}/out", "{d}/calib_empty: no .npy or image (.png/.jpg/.bmp) files to calibrate on")
    add(cc, "calib_shape", "{d}/conv.onnx --calib {d}/calib_shape -o {o}/out", "a.npy: shape 1x3x8x8, input 'x' expects 1x3x16x16")
    add(cc, "calib_dtype", "{d}/conv.onnx --calib {d}/calib_dtype -o {o}/out", "a.npy: dtype int64, expected float32 samples for input 'x'")
    add(cc, "calib_npz_names", "{d}/conv.onnx --calib {d}/calib.npz -o {o}/out", "{d}/calib.npz: no array for input 'x' (keys: y)")
    add(cc, "calib_bad_image", "{d}/conv.onnx --calib {d}/calib_bad_image -o {o}/out",
        "{d}/calib_bad_image/a.png: not a readable image (cannot identify image file '{d}/calib_bad_image/a.png')")
    add(cc, "arch", "{d}/conv.onnx --arch nope -o {o}/out", "arch 'nope': no such preset; choose one of ember16, ember32")

    # ---------------------------------------------------------------- ember-run
    run = "ember-run"
    add(run, "no_folder", "{d}/nope --input x={d}/x_float.npy --output-dir {o}/out", "{d}/nope: not a folder; pass the output folder of ember-compile")
    add(run, "no_binary", "{d}/calib_empty --input x={d}/x_float.npy --output-dir {o}/out", "{d}/calib_empty: expected one .ebin written by ember-compile, found 0")
    add(run, "corrupted_binary", "{d}/compiled_corrupt --input x={d}/x_float.npy --output-dir {o}/out",
        "{d}/compiled_corrupt/conv.ebin: section META corrupted (CRC mismatch); rebuild the binary")
    add(run, "wrong_name", "{d}/compiled --input q={d}/x_float.npy --output-dir {o}/out", "--input q=...: the model has no input 'q'; its inputs are x")
    add(run, "wrong_shape", "{d}/compiled --input x={d}/x_small.npy --output-dir {o}/out",
        "input 'x': expected float32 of shape [1, 3, 16, 16], got [1, 3, 8, 8] float32")
    add(run, "wrong_dtype", "{d}/compiled --input x={d}/x_int32.npy --output-dir {o}/out",
        "input 'x': expected float32 of shape [1, 3, 16, 16], got [1, 3, 16, 16] int32")
    add(run, "nan_input", "{d}/compiled --input x={d}/x_nan.npy --output-dir {o}/out", "input 'x': contains NaN or Inf; the NPU quantizes finite values only")
    add(run, "missing_input", "{d}/compiled --output-dir {o}/out", "input 'x': missing; the model's inputs are x")
    add(run, "input_twice", "{d}/compiled --input x={d}/x_float.npy --input x={d}/x_float.npy --output-dir {o}/out", "--input 'x': given twice")
    add(run, "input_spec", "{d}/compiled --input x --output-dir {o}/out", "--input 'x': expected NAME=FILE")
    add(run, "input_file_missing", "{d}/compiled --input x={d}/nope.npy --output-dir {o}/out", "--input x={d}/nope.npy: file not found")
    add(run, "input_not_npy", "{d}/compiled --input x={d}/text.npy --output-dir {o}/out", "re:{d}/text.npy: not a readable .npy array \\(.*\\)")
    add(run, "input_suffix", "{d}/compiled --input x={d}/syntax.script --output-dir {o}/out",
        "--input x={d}/syntax.script: expected a .npy or an image (.png/.jpg/.bmp)")
    add(run, "input_bad_image", "{d}/compiled --input x={d}/calib_bad_image/a.png --output-dir {o}/out",
        "--input x={d}/calib_bad_image/a.png: not a readable image (cannot identify image file '{d}/calib_bad_image/a.png')")
    add(run, "reference_without_mlir", "{d}/compiled_no_mlir --reference --input x={d}/x_float.npy --output-dir {o}/out",
        "{d}/compiled_no_mlir/conv_quantized.mlir: missing; --reference runs the quantized MLIR that ember-compile writes")

    # ------------------------------------------------- ember-sim and ember-objdump
    sim, dump = "ember-sim", "ember-objdump"
    for tool, out in ((sim, "--output-dir {o}/out"), (dump, "-o {o}/model.s")):
        for section in Section:
            add(tool, f"bit_flip_{section.name}", f"{{d}}/flip_{section.name}.ebin {out}",
                f"{{d}}/flip_{section.name}.ebin: section {section.name} corrupted (CRC mismatch); rebuild the binary")
        add(tool, "bit_flip_table", f"{{d}}/flip_table.ebin {out}", "{d}/flip_table.ebin: header or section table corrupted (CRC mismatch); rebuild the binary")
        add(tool, "wrong_magic", f"{{d}}/magic.ebin {out}", "{d}/magic.ebin: not an Ember binary (bad magic); pass a .ebin file written by ember")
        add(tool, "onnx_as_binary", f"{{d}}/conv.onnx {out}", "{d}/conv.onnx: not an Ember binary (bad magic); pass a .ebin file written by ember")
        add(tool, "newer_major", f"{{d}}/major.ebin {out}",
            "{d}/major.ebin: format version 2.0 is newer than this tool's 1.x; use a matching ember version or recompile the model")
        add(tool, "truncated_0", f"{{d}}/truncated_0.ebin {out}", "{d}/truncated_0.ebin: truncated: 0 bytes, shorter than the 64-byte header")
        add(tool, "truncated_10", f"{{d}}/truncated_10.ebin {out}", "{d}/truncated_10.ebin: truncated: 10 bytes, shorter than the 64-byte header")
        for cut in ("64", "half", "last"):
            add(tool, f"truncated_{cut}", f"{{d}}/truncated_{cut}.ebin {out}", f"re:{{d}}/truncated_{cut}.ebin: truncated: \\d+ bytes of \\d+; the file was cut short")
        add(tool, "missing", f"{{d}}/nope.ebin {out}", "{d}/nope.ebin: cannot read (No such file or directory)")
    good = "{d}/compiled/conv.ebin --output-dir {o}/out"
    add(sim, "wrong_name", f"{good} --input q={{d}}/x_int8.npy", "input 'q': the model has no such input; its inputs are x")
    add(sim, "wrong_shape", f"{good} --input x={{d}}/x_nchw_int8.npy",
        "input 'x': expected shape [1, 16, 16, 3] int8, got [1, 3, 16, 16] int8; quantize and lay out the input as IODESC describes")
    add(sim, "wrong_dtype", f"{good} --input x={{d}}/x_nhwc_float.npy",
        "input 'x': expected shape [1, 16, 16, 3] int8, got [1, 16, 16, 3] float32; quantize and lay out the input as IODESC describes")
    add(sim, "missing_input", good, "input 'x': missing; pass --input x=file.npy")
    add(sim, "input_twice", f"{good} --input x={{d}}/x_int8.npy --input x={{d}}/x_int8.npy", "--input 'x': given twice")
    add(sim, "input_not_npy", f"{good} --input x={{d}}/text.npy", "re:{d}/text.npy: cannot read as a .npy array \\(.*\\)")
    add(sim, "arch_mismatch", f"{good} --arch ember32 --input x={{d}}/x_int8.npy", "{d}/compiled/conv.ebin: built for arch 'ember16', not 'ember32'; recompile for 'ember32'")
    add(sim, "arch_unknown", f"{good} --arch nope", "arch 'nope': no such preset; choose one of ember16, ember32")
    add(sim, "repeat", f"{good} --repeat 0 --input x={{d}}/x_int8.npy", "--repeat must be at least 1")

    # ----------------------------------------------------------------- ember-as
    asm = "ember-as"
    add(asm, "missing", "{d}/nope.s -o {o}/model.ebin", "{d}/nope.s: cannot read (No such file or directory)")
    add(asm, "empty", "{d}/empty.s -o {o}/model.ebin", "{d}/empty.s: the listing has no .arch line")
    add(asm, "binary", "{d}/random.onnx -o {o}/model.ebin", "re:{d}/random.onnx: cannot read \\(.*\\)|{d}/random.onnx:\\d+:\\d+: syntax error in the listing")
    add(asm, "garbage", "{d}/text.onnx -o {o}/model.ebin", "{d}/text.onnx:1:1: syntax error in the listing")
    add(asm, "unknown_opcode", "{d}/unknown_opcode.s -o {o}/model.ebin", "re:{d}/unknown_opcode.s:\\d+:\\d+: syntax error in the listing")
    add(asm, "field_range", "{d}/field_range.s -o {o}/model.ebin", "{d}/field_range.s: instruction 0 (load): dram = 99999999999 does not fit uint32")
    add(asm, "bad_buffer", "{d}/bad_buffer.s -o {o}/model.ebin", "re:{d}/bad_buffer.s:\\d+: buf = xyz: expected one of inp, wgt, acc, par, lut")
    add(asm, "arch_field", "{d}/arch_field.s -o {o}/model.ebin", "{d}/arch_field.s: .arch: arch field mac_rows must be a positive integer")
    add(asm, "arch_json", "{d}/arch_json.s -o {o}/model.ebin", "re:{d}/arch_json.s:\\d+: \\.arch is not valid JSON \\(.*\\)")
    add(asm, "code_count", "{d}/code_count.s -o {o}/model.ebin", "re:{d}/code_count.s: \\.code announces \\d+ instructions but the listing holds \\d+")
    return cases


CASES = _cases()


# --------------------------------------------------------------------------- the inputs


def _model(nodes, initializers, inputs, outputs, opset=13, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bad_inputs", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)])
    model.ir_version = 8
    return model


def _info(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _conv_model(weights: np.ndarray, shape=(1, 3, 16, 16), extra=()) -> onnx.ModelProto:
    """x -> Conv(conv0, 3x3 same) -> Relu(relu0) -> y [-> extra nodes]."""
    pads = [weights.shape[2] // 2] * 2 + [(weights.shape[2] - 1) // 2] * 2 if weights.shape[2] < 100 else [0] * 4
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv0", pads=pads), helper.make_node("Relu", ["c"], ["y"], name="relu0"), *extra]
    domains = sorted({n.domain for n in extra if n.domain})
    out = nodes[-1].output[0]
    return _model(nodes, [numpy_helper.from_array(weights, "w")], [_info("x", list(shape))], [_info(out, None)], domains=domains)


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def _build(d: Path) -> None:
    rng = np.random.default_rng(0)
    weights = (rng.normal(size=(8, 3, 3, 3)) * 0.2).astype(np.float32)
    onnx.save(_conv_model(weights), d / "conv.onnx")
    cls = (SHARED / "models" / "ppocr_mobile_v2_cls.onnx").read_bytes()
    png = (SHARED / "images" / "coins.png").read_bytes()
    _write(d / "empty.onnx", b"")
    _write(d / "truncated.onnx", cls[: len(cls) // 2])
    _write(d / "truncated_header.onnx", cls[:1000])
    _write(d / "png.onnx", png[:4096])
    _write(d / "coins.png", png[:4096])
    _write(d / "random.onnx", np.random.default_rng(1).bytes(4096))
    _write(d / "text.onnx", "this is not an onnx model\n")
    _write(d / "text.npy", "not an array either\n")
    onnx.save(_model([helper.make_node("Add", ["x", "x"], ["y"], name="add0")], [], [_info("x", [1, 3])], [_info("y", [1, 3])], opset=5), d / "opset5.onnx")
    onnx.save(_conv_model(weights, extra=[helper.make_node("Frobnicate", ["y"], ["z"], name="frob0", domain="com.acme")]), d / "custom.onnx")
    dynamic = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv0")], [numpy_helper.from_array(weights[:, :, :1, :1].copy(), "w")],
                     [_info("x", ["N", 3, 8, 8])], [_info("y", None)])  # fmt: skip
    onnx.save(dynamic, d / "dynamic.onnx")
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        poisoned = weights.copy()
        poisoned[0, 0, 0, 0] = value
        onnx.save(_conv_model(poisoned), d / f"{name}.onnx")
    zero = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv0")], [numpy_helper.from_array(np.zeros((0, 3, 1, 1), np.float32), "w")],
                  [_info("x", [1, 3, 8, 8])], [_info("y", None)])  # fmt: skip
    onnx.save(zero, d / "zero_weight.onnx")
    onnx.save(_conv_model(weights, shape=(1, 3, 0, 16)), d / "zero_input.onnx")
    # a 200x200 kernel: one output channel's weights (4 x 200 x 200 bytes) exceed the weight buffer
    onnx.save(_conv_model((rng.normal(size=(4, 4, 200, 200)) * 1e-3).astype(np.float32), shape=(1, 4, 200, 200)), d / "huge.onnx")
    residual = _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv0"), helper.make_node("Relu", ["c"], ["r"], name="relu0"),
         helper.make_node("Add", ["r", "x"], ["y"], name="add0")],
        [numpy_helper.from_array(rng.normal(size=(3, 3, 1, 1)).astype(np.float32), "w")], [_info("x", [1, 3, 8, 8])], [_info("y", None)],
    )  # fmt: skip
    onnx.save(residual, d / "residual.onnx")
    _write(d / "not_separating.json", json.dumps({"inputs": ["c"], "outputs": ["y"]}))
    _write(d / "bad.json", '{"inputs": [')
    _write(d / "list.json", "[1, 2]")
    _write(d / "bad.mlir", "func.func @f( {\n")
    _write(d / "syntax.script", "normalization([1,2,3], [4,5,6]\n")
    _write(d / "command.script", "frobnicate(1)\n")
    _write(d / "argument.script", "quantization(method=magic)\n")
    _write(d / "value.script", "calibration(size=-3)\n")
    (d / "calib_empty").mkdir()
    for folder, array in (("calib_shape", np.zeros((1, 3, 8, 8), np.float32)), ("calib_dtype", np.zeros((1, 3, 16, 16), np.int64))):
        (d / folder).mkdir()
        np.save(d / folder / "a.npy", array)
    np.savez(d / "calib.npz", y=np.zeros((2, 1, 3, 16, 16), np.float32))
    _write(d / "calib_bad_image" / "a.png", b"not a png")
    for name, array in (("x_float", np.zeros((1, 3, 16, 16), np.float32)), ("x_small", np.zeros((1, 3, 8, 8), np.float32)),
                        ("x_int32", np.zeros((1, 3, 16, 16), np.int32)), ("x_nan", np.full((1, 3, 16, 16), np.nan, np.float32)),
                        ("x_int8", np.zeros((1, 16, 16, 3), np.int8)), ("x_nchw_int8", np.zeros((1, 3, 16, 16), np.int8)),
                        ("x_nhwc_float", np.zeros((1, 16, 16, 3), np.float32))):  # fmt: skip
        np.save(d / f"{name}.npy", array)

    # one real compilation: the folder ember-run takes, the binary the binary cases damage
    with contextlib.redirect_stdout(io.StringIO()):
        assert ember_compile.main([str(d / "conv.onnx"), "-o", str(d / "compiled")]) == 0
    shutil.copytree(d / "compiled", d / "compiled_no_mlir")
    (d / "compiled_no_mlir" / "conv_quantized.mlir").unlink()
    shutil.copytree(d / "compiled", d / "compiled_corrupt")
    data = (d / "compiled" / "conv.ebin").read_bytes()
    damaged = bytearray(data)
    damaged[-90] ^= 0x01  # inside META, the last section
    _write(d / "compiled_corrupt" / "conv.ebin", bytes(damaged))
    layout = read_layout(data, "conv.ebin")
    for kind, _, offset, size in layout.sections:
        flipped = bytearray(data)
        flipped[offset + size // 2] ^= 0x10
        _write(d / f"flip_{kind.name}.ebin", bytes(flipped))
    flipped = bytearray(data)
    flipped[64 + 4] ^= 0x01  # the first section entry's CRC field
    _write(d / "flip_table.ebin", bytes(flipped))
    _write(d / "magic.ebin", b"\x7fELF" + data[4:])
    newer = bytearray(data)
    struct.pack_into("<H", newer, 8, 2)
    _write(d / "major.ebin", bytes(newer))
    for cut, n in (("0", 0), ("10", 10), ("64", 64), ("half", len(data) // 2), ("last", len(data) - 1)):
        _write(d / f"truncated_{cut}.ebin", data[:n])

    # listings for ember-as: the real one, damaged one way each (and without a final newline)
    with contextlib.redirect_stdout(io.StringIO()):
        assert ember_objdump.main([str(d / "compiled" / "conv.ebin"), "-o", str(d / "model.s")]) == 0
    lines = (d / "model.s").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.lstrip().startswith("0:"))

    def listing(name: str, edited: list[str]) -> None:
        _write(d / f"{name}.s", "\n".join(edited))

    listing("unknown_opcode", [*lines[:first], lines[first].replace("npu.", "npu.frob_", 1), *lines[first + 1 :]])
    listing("field_range", [*lines[:first], re.sub(r"dram = \d+", "dram = 99999999999", lines[first], count=1), *lines[first + 1 :]])
    listing("bad_buffer", [line.replace("buf = inp", "buf = xyz") for line in lines])
    listing("arch_field", [line.replace('"mac_rows":16', '"mac_rows":"x"') for line in lines])
    listing("arch_json", [line.replace(".arch {", ".arch {{") for line in lines])
    listing("code_count", [line for line in lines if "npu.end" not in line])
    _write(d / "empty.s", "")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    assert (SHARED / "models" / "ppocr_mobile_v2_cls.onnx").exists(), "the shared models are not present beside the repository"
    d = tmp_path_factory.mktemp("bad_inputs")
    _build(d)
    return d


def _expand(text: str, d: Path, o: Path) -> str:
    return text.replace("{d}", str(d)).replace("{o}", str(o))


def _check_line(stderr: str, prog: str, expected: str, d: Path, o: Path) -> None:
    lines = stderr.splitlines()
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    prefix = f"{prog}: error: "
    assert lines[0].startswith(prefix), lines[0]
    message = lines[0][len(prefix) :]
    if expected.startswith("re:"):
        pattern = expected[3:].replace("{d}", re.escape(str(d))).replace("{o}", re.escape(str(o)))
        assert re.fullmatch(pattern, message), f"{message!r} does not match {pattern!r}"
    else:
        assert message == _expand(expected, d, o)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.tool}-{c.id}" for c in CASES])
def test_bad_input(corpus: Path, tmp_path: Path, case: Case) -> None:
    before = sorted(p.name for p in corpus.iterdir())
    out = tmp_path / "o"
    out.mkdir()
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        code = TOOLS[case.tool].main([_expand(a, corpus, out) for a in case.argv])
    assert code == 1, f"exit {code}; stderr: {stderr.getvalue()}"
    _check_line(stderr.getvalue(), case.tool, case.expected, corpus, out)
    assert sorted(p.name for p in out.iterdir()) == [], "a failing run left files in the output folder"
    assert sorted(p.name for p in corpus.iterdir()) == before, "a failing run left files beside its inputs"


SMOKE = ["ember-opt-empty", "ember-compile-custom_op", "ember-run-wrong_shape", "ember-sim-bit_flip_CODE", "ember-objdump-newer_major", "ember-as-field_range"]


@pytest.mark.parametrize("case_id", SMOKE)
def test_console_script(corpus: Path, tmp_path: Path, case_id: str) -> None:
    """The installed console scripts give the same single line and exit code."""
    case = next(c for c in CASES if f"{c.tool}-{c.id}" == case_id)
    out = tmp_path / "o"
    out.mkdir()
    proc = subprocess.run([case.tool, *(_expand(a, corpus, out) for a in case.argv)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    _check_line(proc.stderr, case.tool, case.expected, corpus, out)
    assert list(out.iterdir()) == []
