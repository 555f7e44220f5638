"""The assembly listing of a binary: `disassemble` writes it, `assemble` reads it back.

The listing holds everything a binary holds, so `assemble(disassemble(b))` gives back the
same bytes:

    .arch {...}             canonical JSON of the ARCH, MEMMAP, IODESC and META sections
    .memmap {...}
    .iodesc {...}
    .meta {...}
    .const 4096             CONST size, then its bytes as hex, 32 per `.bytes` line
    .bytes 00ff...
    .code 12                instruction count, then one instruction per line:
        0: npu.load dram = 0 sram = 0 ... push_next {node = "conv1", origin = "quant.conv"}

An instruction line is exactly the printed form of its `npu` dialect op (the index prefix
is optional when assembling), so `ember-opt` output can be pasted into a listing. The
grammar is `listing.lark`.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from lark import Lark, Token, Tree, UnexpectedInput

from ember.support.diagnostics import EmberError
from ember.target.arch import Arch
from ember.target.ebin import Ebin, canonical_json
from ember.target.isa import FORMATS, MNEMONICS, TOKEN_NAMES, Instruction, token_names, tokens_from_names

BYTES_PER_LINE = 32


def mlir_string(text: str) -> str:
    """A string literal as MLIR (and xDSL) print it: `\\\\`, and `\\XX` for quotes,
    control and non-ASCII bytes."""
    out = []
    for byte in text.encode("utf-8"):
        if byte == 0x5C:
            out.append("\\\\")
        elif byte < 0x20 or byte > 0x7E or byte == 0x22:
            out.append(f"\\{byte:02X}")
        else:
            out.append(chr(byte))
    return '"' + "".join(out) + '"'


def parse_mlir_string(literal: str) -> str:
    body = literal[1:-1]
    data = bytearray()
    i = 0
    while i < len(body):
        if body[i] == "\\":
            if body[i + 1] == "\\":
                data.append(0x5C)
                i += 2
            else:
                data.append(int(body[i + 1 : i + 3], 16))
                i += 3
        else:
            data += body[i].encode()
            i += 1
    return data.decode("utf-8")


def instruction_text(insn: Instruction, node: str = "", origin: str = "") -> str:
    """One instruction in the `npu` dialect's printed form."""
    parts = [f"npu.{insn.format.mnemonic}"]
    for f in insn.format.fields:
        value = insn.fields[f.name]
        parts.append(f"{f.name} = {f.enum(value).name.lower() if f.enum else value}")
    parts += token_names(insn.tokens)
    attrs = [f"{key} = {mlir_string(value)}" for key, value in (("node", node), ("origin", origin)) if value]
    if attrs:
        parts.append("{" + ", ".join(attrs) + "}")
    return " ".join(parts)


def disassemble(ebin: Ebin) -> str:
    """The listing of a binary's content (sections first, then the code)."""
    lines = [
        f".arch {ebin.arch.to_json()}",
        f".memmap {canonical_json(ebin.memmap).decode()}",
        f".iodesc {canonical_json(ebin.iodesc).decode()}",
        f".meta {canonical_json(ebin.meta).decode()}",
        f".const {len(ebin.const)}",
    ]
    const = ebin.const
    lines += [f".bytes {const[k : k + BYTES_PER_LINE].hex()}" for k in range(0, len(const), BYTES_PER_LINE)]
    lines.append(f".code {len(ebin.program)}")
    width = len(str(max(len(ebin.program) - 1, 0)))
    for i, (insn, (origin, node)) in enumerate(zip(ebin.program, ebin.debug, strict=True)):
        lines.append(f"  {i:>{width}}: {instruction_text(insn, node, origin)}")
    return "\n".join(lines) + "\n"


@cache
def _parser() -> Lark:
    grammar = resources.files("ember.target").joinpath("listing.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True)


def _instruction(tree: Tree, source: str, expected_index: int) -> tuple[Instruction, tuple[str, str]]:
    line = tree.meta.line
    where = f"{source}:{line}"
    children = list(tree.children)
    if isinstance(children[0], Tree) and children[0].data == "index":
        index = int(children.pop(0).children[0])
        if index != expected_index:
            raise EmberError(f"{where}: instruction index {index}, expected {expected_index}; renumber the listing")
    mnemonic = str(children.pop(0))[len("npu.") :]
    if mnemonic not in MNEMONICS:
        raise EmberError(f"{where}: unknown instruction 'npu.{mnemonic}'")
    fmt = FORMATS[MNEMONICS[mnemonic]]
    values: dict[str, int] = {}
    flags: list[str] = []
    debug = {"node": "", "origin": ""}
    for child in children:
        if isinstance(child, Token):  # a token flag
            flags.append(str(child))
        elif child.data == "field":
            name, value = (str(c) for c in child.children)
            try:
                field = fmt.field(name)
            except KeyError:
                raise EmberError(f"{where}: npu.{mnemonic} has no field '{name}'") from None
            if name in values:
                raise EmberError(f"{where}: field '{name}' given twice")
            if field.enum is not None:
                members = {m.name.lower(): int(m) for m in field.enum}
                if value not in members:
                    raise EmberError(f"{where}: {name} = {value}: expected one of {', '.join(members)}")
                values[name] = members[value]
            else:
                try:
                    values[name] = int(value)
                except ValueError:
                    raise EmberError(f"{where}: {name} = {value}: expected an integer") from None
        else:  # debug attributes
            for entry in child.children:
                key, literal = str(entry.children[0]), str(entry.children[1])
                if key not in debug:
                    raise EmberError(f"{where}: unknown attribute '{key}' (expected node, origin)")
                debug[key] = parse_mlir_string(literal)
    missing = [f.name for f in fmt.fields if f.name not in values]
    if missing:
        raise EmberError(f"{where}: npu.{mnemonic} misses fields {', '.join(missing)}")
    if len(set(flags)) != len(flags) or [t for t in TOKEN_NAMES if t in flags] != flags:
        raise EmberError(f"{where}: token flags must be distinct and in the order {' '.join(TOKEN_NAMES)}")
    return Instruction(fmt.opcode, tokens_from_names(flags), values), (debug["origin"], debug["node"])


def assemble(text: str, source: str) -> Ebin:
    """Parse a listing into binary content (field ranges are checked when encoding)."""
    if not text.endswith("\n"):
        text += "\n"  # every line of the grammar ends in a newline; an editor may drop the last one
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        raise EmberError(f"{source}:{err.line}:{err.column}: syntax error in the listing") from None
    sections: dict[str, object] = {}
    const = bytearray()
    const_size: int | None = None
    code_size: int | None = None
    program: list[Instruction] = []
    debug: list[tuple[str, str]] = []
    for stmt in tree.children:
        where = f"{source}:{stmt.meta.line}"
        if stmt.data == "json_section":
            keyword, text_value = (str(c) for c in stmt.children)
            try:
                sections[keyword[1:]] = json.loads(text_value)
            except json.JSONDecodeError as err:
                raise EmberError(f"{where}: {keyword} is not valid JSON ({err.msg})") from None
        elif stmt.data == "const_section":
            const_size = int(stmt.children[0])
        elif stmt.data == "bytes_line":
            digits = str(stmt.children[0])
            if const_size is None or code_size is not None or len(digits) % 2:
                raise EmberError(f"{where}: .bytes must follow .const and hold whole bytes")
            const += bytes.fromhex(digits)
        elif stmt.data == "code_section":
            code_size = int(stmt.children[0])
        else:
            if code_size is None:
                raise EmberError(f"{where}: instructions must follow .code")
            insn, entry = _instruction(stmt, source, len(program))
            program.append(insn)
            debug.append(entry)
    for name in ("arch", "memmap", "iodesc", "meta"):
        if name not in sections:
            raise EmberError(f"{source}: the listing has no .{name} line")
    if const_size is None or len(const) != const_size:
        raise EmberError(f"{source}: .const announces {const_size} bytes but .bytes lines hold {len(const)}")
    if code_size is None or len(program) != code_size:
        raise EmberError(f"{source}: .code announces {code_size} instructions but the listing holds {len(program)}")
    arch = sections["arch"]
    if not isinstance(arch, dict):
        raise EmberError(f"{source}: .arch must be a JSON object")
    return Ebin(
        arch=Arch.from_dict(arch, f"{source}: .arch"),
        program=program,
        const=bytes(const),
        memmap=sections["memmap"],  # type: ignore[arg-type]
        iodesc=sections["iodesc"],  # type: ignore[arg-type]
        debug=debug,
        meta=sections["meta"],  # type: ignore[arg-type]
    )
