"""ember-sim, ember-objdump and ember-as from the command line, and the listing round trip."""

from __future__ import annotations

import numpy as np
import pytest

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin
from xdsl.parser import Parser

from ember.dialects.npu import NPU, module_from_program, program_from_ops
from ember.target import ebin, isa
from ember.target.listing import assemble, disassemble, instruction_text
from ember.tools import ember_as, ember_objdump, ember_sim


def test_sim_runs_and_writes_outputs(model_files, tmp_path, capsys):
    model, x, expected = model_files
    out = tmp_path / "out"
    assert ember_sim.main([str(model), "--input", f"images={x}", "--output-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["y.npy"]
    y = np.load(out / "y.npy")
    assert y.dtype == np.int8 and np.array_equal(y, expected)
    assert capsys.readouterr().out == ""


def test_sim_stats_trace_dumps_and_repeat(model_files, tmp_path, capsys):
    model, x, expected = model_files
    trace, dumps = tmp_path / "t.txt", tmp_path / "dumps"
    code = ember_sim.main([str(model), "--input", f"images={x}", "--output-dir", str(tmp_path / "o"), "--stats",
                           "--repeat", "3", "--trace", str(trace), "--dump-dir", str(dumps)])  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "instructions: 11 (CONV 1, END 1, LOAD 4, POOL 1, POST 1, STORE 2, SYNC 1)"
    assert lines[1].startswith("cycles: ") and "busy load " in lines[1]
    assert lines[2].startswith("MAC utilization: ") and "(192 MACs on a 16x16 array)" in lines[2]
    assert lines[3] == "DRAM traffic: 172 bytes read, 80 bytes written"
    assert lines[4] == "per-layer cycles (busy, all engines), MACs, MAC utilization (MACs / (compute-engine cycles x array)):"
    assert [line.split()[0] for line in lines[5:8]] == ["conv1", "pool1", "(none)"]
    assert lines[5].split()[2:] == ["192", "MACs", "2.3%"] and lines[6].split()[2:] == ["0", "MACs", "0.0%"]
    assert lines[8].startswith("estimated NPU latency: ") and lines[8].endswith(" ms at 800 MHz")
    assert lines[9].endswith(" ms per inference (simulator wall clock, mean of 3 runs)")
    float(lines[9].split()[0])
    trace_lines = trace.read_text().splitlines()
    assert len(trace_lines) == 11
    assert trace_lines[3].split()[:3] == ["3", "compute", "conv"] and trace_lines[3].endswith("node=conv1")
    assert sorted(p.name for p in dumps.iterdir()) == ["t1.npy", "y.npy"]
    assert np.array_equal(np.load(dumps / "y.npy"), expected)
    assert np.load(dumps / "t1.npy").shape == (1, 4, 4, 4)


def test_sim_stats_layer_mac_utilization(model_files):
    """Per layer: MACs of its CONVs over its compute-engine cycles times the MAC array."""
    from ember.target.cost import macs
    from ember.target.simulator import Simulator

    model, _, _ = model_files
    sim = Simulator(ebin.load(str(model)))
    stats = sim.stats()
    sched = sim.schedule
    conv1 = [i for i, (_, node) in enumerate(sim.ebin.debug) if node == "conv1"]
    busy = sum(int(sched.cost[i]) for i in conv1 if sched.engines[i] == isa.Engine.COMPUTE)
    assert busy == 32  # the CONV; its LOADs, POST and STORE run on the load and store engines
    assert stats.layer_compute_cycles["conv1"] == busy
    assert sum(macs(sim.program[i]) for i in conv1) == 192  # 4x4 pixels x 4 outputs x 3 inputs (1x1)
    assert stats.layer_macs == {"conv1": 192, "pool1": 0, "(none)": 0}
    assert stats.layer_utilization("conv1") == 192 / (busy * 16 * 16)
    assert stats.layer_utilization("pool1") == 0.0 and stats.layer_utilization("no such layer") == 0.0


@pytest.mark.parametrize(
    "make_input,message",
    [
        (lambda x: x.astype(np.float32), "input 'images': expected shape [1, 4, 4, 3] int8, got [1, 4, 4, 3] float32;"
                                         " quantize and lay out the input as IODESC describes"),  # fmt: skip
        (lambda x: x[:, :2], "input 'images': expected shape [1, 4, 4, 3] int8, got [1, 2, 4, 3] int8;"
                             " quantize and lay out the input as IODESC describes"),  # fmt: skip
    ],
)
def test_sim_bad_input_is_one_line_and_no_output(model_files, tmp_path, capsys, make_input, message):
    model, x, _ = model_files
    bad = tmp_path / "bad.npy"
    np.save(bad, make_input(np.load(x)))
    out = tmp_path / "out"
    assert ember_sim.main([str(model), "--input", f"images={bad}", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"ember-sim: error: {message}\n"
    assert not out.exists() or not any(out.iterdir())


def test_sim_missing_and_unknown_inputs(model_files, tmp_path, capsys):
    model, x, _ = model_files
    out = str(tmp_path / "out")
    assert ember_sim.main([str(model), "--output-dir", out]) == 1
    assert capsys.readouterr().err == "ember-sim: error: input 'images': missing; pass --input images=file.npy\n"
    assert ember_sim.main([str(model), "--input", f"img={x}", "--output-dir", out]) == 1
    assert capsys.readouterr().err == (
        "ember-sim: error: input 'img': the model has no such input; its inputs are images\n"
    )
    assert ember_sim.main([str(model), "--input", f"images={tmp_path / 'none.npy'}", "--output-dir", out]) == 1
    assert capsys.readouterr().err.endswith("none.npy: cannot read as a .npy array (No such file or directory)\n")
    not_npy = tmp_path / "x.txt"
    not_npy.write_text("hello")
    assert ember_sim.main([str(model), "--input", f"images={not_npy}", "--output-dir", out]) == 1
    assert capsys.readouterr().err.startswith(f"ember-sim: error: {not_npy}: cannot read as a .npy array (")
    assert not (tmp_path / "out").exists()


def test_sim_corrupt_binary(model_files, tmp_path, capsys):
    model, x, _ = model_files
    data = bytearray(model.read_bytes())
    _, _, offset, size = ebin.read_layout(bytes(data), "m").sections[-1]
    data[offset + size - 1] ^= 0xFF  # inside META
    model.write_bytes(bytes(data))
    assert ember_sim.main([str(model), "--input", f"images={x}", "--output-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"ember-sim: error: {model}: section META corrupted (CRC mismatch); rebuild the binary"]


def test_sim_arch_option(model_files, tmp_path, capsys):
    model, x, _ = model_files
    code = ember_sim.main([str(model), "--input", f"images={x}", "--output-dir", str(tmp_path / "o"), "--arch", "ember32"])
    assert code == 1
    assert capsys.readouterr().err == (
        f"ember-sim: error: {model}: built for arch 'ember16', not 'ember32'; recompile for 'ember32'\n"
    )


def test_objdump_then_as_gives_identical_bytes(model_files, tmp_path, capsys):
    model, _, _ = model_files
    assert ember_objdump.main([str(model)]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith(f"// {model}: Ember binary format 1.0, ISA {isa.ISA_VERSION}, arch ember16 (hash ")
    assert "//   ARCH" not in listing and "// CODE " in listing
    assert '   3: npu.conv inp = 0 wgt = 0 acc = 0 ih = 4 iw = 4 ic = 3 oc = 4 groups = 1 kh = 1 kw = 1 sh = 1 sw = 1' \
           ' dh = 1 dw = 1 in_zp = 0 accumulate = 0 in_i16 = 0 pop_prev push_next {node = "conv1", origin = "quant.conv2d"}' in listing.splitlines()
    source = tmp_path / "model.s"
    source.write_text(listing)
    rebuilt = tmp_path / "rebuilt.ebin"
    assert ember_as.main([str(source), "-o", str(rebuilt)]) == 0
    assert rebuilt.read_bytes() == model.read_bytes()
    # and back: the listing of the rebuilt binary is the same text (but for its file name)
    assert ember_objdump.main([str(rebuilt)]) == 0
    assert capsys.readouterr().out.replace(str(rebuilt), str(model)) == listing


def test_listing_text_is_the_npu_dialect_printed_form(model_files):
    program = [
        isa.make(op, isa.Token.POP_PREV | isa.Token.PUSH_NEXT, **{
            f.name: (max(int(v) for v in f.enum) if f.enum else np.iinfo(f.dtype).min + k) for k, f in enumerate(fmt.fields)
        })
        for op, fmt in isa.FORMATS.items()
    ]  # fmt: skip
    debug = [("quant.op", 'node "with" quotes\\ and é') for _ in program]
    module = module_from_program(program, debug)
    printed = [line.strip() for line in str(module).splitlines()[1:-1]]
    assert printed == [instruction_text(insn, node, origin) for insn, (origin, node) in zip(program, debug)]
    ctx = Context()
    ctx.load_dialect(Builtin)
    ctx.load_dialect(NPU)
    parsed = Parser(ctx, str(module)).parse_module()
    assert program_from_ops(parsed.body.block.ops) == (program, debug)
    listing = disassemble(ebin.load(model_files[0])).split(".code")[0] + f".code {len(program)}\n" + "\n".join(printed) + "\n"
    assembled = assemble(listing, "t.s")
    assert assembled.program == program and assembled.debug == debug


def test_assembler_errors_are_one_line(tmp_path, capsys, model_files):
    model, _, _ = model_files
    listing = disassemble(ebin.load(model))
    bad = listing.replace("groups = 1", "groups = 1 bogus = 2", 1)
    path = tmp_path / "bad.s"
    path.write_text(bad)
    assert ember_as.main([str(path), "-o", str(tmp_path / "bad.ebin")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ember-as: error: {path}:") and err.endswith(": npu.conv has no field 'bogus'\n")
    assert not (tmp_path / "bad.ebin").exists()
    path.write_text(listing.replace("kh = 1 kw = 1 sh = 1", "kh = 300 kw = 1 sh = 1", 1))
    assert ember_as.main([str(path), "-o", str(tmp_path / "bad.ebin")]) == 1
    assert capsys.readouterr().err == f"ember-as: error: {path}: instruction 3 (conv): kh = 300 does not fit uint8\n"
    path.write_text(listing.replace("npu.pool", "npu.poo1", 1))
    assert ember_as.main([str(path), "-o", str(tmp_path / "bad.ebin")]) == 1
    assert "syntax error in the listing" in capsys.readouterr().err
    assert not (tmp_path / "bad.ebin").exists()
