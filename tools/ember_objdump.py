"""`ember-objdump`: print an Ember NPU binary as an assembly listing.

    ember-objdump model.ebin [-o model.s]

The header and section table come first as `//` comments; then the sections and one
line per instruction, in the `npu` dialect's printed form with the ONNX node (`node`) and
IR op (`origin`) it came from. `ember-as` turns the listing back into the same bytes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ember.support.atomic_output import atomic_output
from ember.support.diagnostics import run_tool
from ember.target import ebin
from ember.target.listing import disassemble


def describe_layout(layout: ebin.Layout, arch_name: str, source: str) -> str:
    """The header and section table as `//` comment lines."""
    major, minor = layout.format_version
    lines = [
        f"// {source}: Ember binary format {major}.{minor}, ISA {layout.isa_version},"
        f" arch {arch_name} (hash {layout.arch_hash:016x}), {layout.file_size} bytes",
        f"// {'section':<8} {'offset':>10} {'size':>10}  crc32",
    ]
    lines += [f"// {kind.name:<8} {offset:>10} {size:>10}  {crc:08x}" for kind, crc, offset, size in layout.sections]
    return "\n".join(lines) + "\n"


def _main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="ember-objdump", description="Print an Ember NPU binary as a listing.")
    parser.add_argument("model", help="the .ebin binary")
    parser.add_argument("-o", "--output", help="write the listing here instead of stdout")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    args = parser.parse_args(argv)
    data = ebin.read_file(args.model)
    layout = ebin.read_layout(data, args.model)
    model = ebin.parse(data, args.model, embedded_arch=True)
    text = describe_layout(layout, model.arch.name, args.model) + disassemble(model)
    if args.output:
        with atomic_output(args.output) as handle:
            handle.write(text)
    else:
        print(text, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("ember-objdump", _main, argv)
