"""docs/isa.md holds one field table per instruction; they must match target/isa.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.target.isa import FORMATS, Format

DOC = Path(__file__).resolve().parents[2] / "docs" / "isa.md"


def markdown_table(fmt: Format) -> str:
    """The field table of one instruction, as docs/isa.md prints it."""

    def type_name(field) -> str:
        return ("i" if field.dtype.kind == "i" else "u") + str(field.dtype.itemsize * 8)

    rows = [
        "| bytes | bits | field | type | meaning |",
        "|---|---|---|---|---|",
        f"| 0 | 0–7 | opcode | u8 | {int(fmt.opcode)} (`{fmt.opcode.name}`) |",
        "| 1 | 8–15 | tokens | u8 | bit 0 pop_prev, 1 pop_next, 2 push_prev, 3 push_next |",
    ]
    for f in fmt.fields:
        size = f.dtype.itemsize
        where = f"{f.offset}" if size == 1 else f"{f.offset}–{f.offset + size - 1}"
        meaning = f.doc.replace("|", "\\|")
        if f.enum is not None:
            meaning += ": " + ", ".join(f"{int(m)} `{m.name.lower()}`" for m in f.enum)
        rows.append(f"| {where} | {8 * f.offset}–{8 * (f.offset + size) - 1} | {f.name} | {type_name(f)} | {meaning} |")
    return "\n".join(rows)


@pytest.mark.parametrize("opcode", list(FORMATS))
def test_isa_doc_table_matches_the_record_layout(opcode):
    fmt = FORMATS[opcode]
    text = DOC.read_text()
    section = text.split(f"\n## {opcode.name} ")[1].split("\n## ")[0]
    assert markdown_table(fmt) in section


def test_isa_doc_engines_match_the_formats():
    """The engines table and each instruction's heading name the engine `FORMATS` gives it."""
    text = DOC.read_text()
    table = text.split("| engine | instructions |\n|---|---|\n")[1].split("\n\n")[0]
    listed = {}
    for row in table.splitlines():
        engine, names = (cell.strip() for cell in row.strip("|").split("|"))
        for name in names.split(", "):
            if not name.startswith("`SYNC"):
                listed[name] = engine
    fixed = {op.name: fmt.engine.name.lower() for op, fmt in FORMATS.items() if fmt.engine is not None}
    assert listed == fixed
    for name, engine in fixed.items():
        heading = text.split(f"\n## {name} ")[1].split("\n")[0]
        if name != "END":
            assert heading.endswith(f"({engine} engine)")
