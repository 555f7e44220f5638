"""The `.ebin` container: header, section table and sections (see docs/ebin.md).

Layout (all integers little-endian):

    header   64 bytes   magic, format major/minor, ISA version, section count,
                        arch hash, file size, CRC32 of header + section table
    table    24 bytes per section: kind, CRC32 of the payload, offset, size
    payloads in table order, each starting at a multiple of 16 (zero padding)

Sections, all present and in this order: ARCH (canonical arch JSON), CODE (64-byte
instruction records), CONST (raw bytes placed in DRAM at MEMMAP's const_offset), MEMMAP,
IODESC, DEBUG, META (canonical JSON). Writing is deterministic: same content, same bytes.
"""

from __future__ import annotations

import enum
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.support.atomic_output import write_bytes_atomic
from ember.support.diagnostics import EmberError
from ember.target.arch import Arch, load_arch
from ember.target.isa import ISA_VERSION, Instruction, decode, encode

MAGIC = b"\x89EBIN\r\n\x1a"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
HEADER = struct.Struct("<8sHHHHQQI28x")
ENTRY = struct.Struct("<IIQQ")
ALIGN = 16


class Section(enum.IntEnum):
    ARCH = 1
    CODE = 2
    CONST = 3
    MEMMAP = 4
    IODESC = 5
    DEBUG = 6
    META = 7


@dataclass(frozen=True)
class Ebin:
    """The content of a binary. `debug[i]` is (IR op, ONNX node) of instruction i.

    `memmap` holds `dram_size`, `const_offset` and `regions` (name, kind, offset, size and,
    for tensors, shape, dtype and producer node); `iodesc` holds `inputs` and `outputs`
    (name, offset, shape, dtype, layout, scale, zero_point, pixel_format, normalization)."""

    arch: Arch
    program: list[Instruction]
    const: bytes
    memmap: dict[str, Any]
    iodesc: dict[str, Any]
    debug: list[tuple[str, str]]
    meta: dict[str, Any] = field(default_factory=dict)


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys, no whitespace, ASCII only: the deterministic section encoding."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _payloads(ebin: Ebin) -> dict[Section, bytes]:
    if len(ebin.debug) != len(ebin.program):
        raise ValueError(f"DEBUG has {len(ebin.debug)} entries for {len(ebin.program)} instructions")
    return {
        Section.ARCH: ebin.arch.to_json().encode(),
        Section.CODE: encode(ebin.program),
        Section.CONST: bytes(ebin.const),
        Section.MEMMAP: canonical_json(ebin.memmap),
        Section.IODESC: canonical_json(ebin.iodesc),
        Section.DEBUG: canonical_json({"instructions": [list(entry) for entry in ebin.debug]}),
        Section.META: canonical_json(ebin.meta),
    }


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def to_bytes(ebin: Ebin) -> bytes:
    """Serialize deterministically."""
    payloads = _payloads(ebin)
    offset = _aligned(HEADER.size + ENTRY.size * len(payloads))
    table = b""
    body = b""
    for kind, data in payloads.items():
        table += ENTRY.pack(kind, zlib.crc32(data), offset, len(data))
        padded = data + bytes(_aligned(len(data)) - len(data))
        body += padded
        offset += len(padded)
    table += bytes(_aligned(HEADER.size + len(table)) - HEADER.size - len(table))
    size = HEADER.size + len(table) + len(body)
    fields = (MAGIC, FORMAT_MAJOR, FORMAT_MINOR, ISA_VERSION, len(payloads), ebin.arch.arch_hash, size)
    crc = zlib.crc32(HEADER.pack(*fields, 0)[:-32] + table)
    return HEADER.pack(*fields, crc) + table + body


def write(ebin: Ebin, path: str | Path) -> None:
    """Write the binary atomically."""
    write_bytes_atomic(path, to_bytes(ebin))


@dataclass(frozen=True)
class Layout:
    """What the header and section table say, for tools that print them."""

    format_version: tuple[int, int]
    isa_version: int
    arch_hash: int
    file_size: int
    sections: list[tuple[Section, int, int, int]]  # kind, crc, offset, size


def read_layout(data: bytes, source: str) -> Layout:
    """Check the header, the section table and every section's CRC."""
    if len(data) < HEADER.size:
        raise EmberError(f"{source}: truncated: {len(data)} bytes, shorter than the {HEADER.size}-byte header")
    magic, major, minor, isa, count, arch_hash, size, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise EmberError(f"{source}: not an Ember binary (bad magic); pass a .ebin file written by ember")
    if major != FORMAT_MAJOR:
        newer = "newer" if major > FORMAT_MAJOR else "older"
        raise EmberError(
            f"{source}: format version {major}.{minor} is {newer} than this tool's {FORMAT_MAJOR}.x;"
            " use a matching ember version or recompile the model"
        )
    if isa != ISA_VERSION:
        raise EmberError(f"{source}: ISA version {isa}, this tool runs ISA version {ISA_VERSION}; recompile the model")
    if len(data) < size:
        raise EmberError(f"{source}: truncated: {len(data)} bytes of {size}; the file was cut short")
    if len(data) > size:
        raise EmberError(f"{source}: {len(data) - size} unexpected bytes after the end of the binary")
    table_end = HEADER.size + ENTRY.size * count
    if table_end > size or zlib.crc32(data[: HEADER.size - 32] + data[HEADER.size : _aligned(table_end)]) != crc:
        raise EmberError(f"{source}: header or section table corrupted (CRC mismatch); rebuild the binary")
    sections = []
    for k in range(count):
        kind, section_crc, offset, length = ENTRY.unpack_from(data, HEADER.size + k * ENTRY.size)
        if kind not in Section.__members__.values():
            raise EmberError(f"{source}: unknown section kind {kind}; rebuild the binary")
        name = Section(kind).name
        if offset + length > size:
            raise EmberError(f"{source}: section {name} extends past the end of the file; the file is truncated")
        if zlib.crc32(data[offset : offset + length]) != section_crc:
            raise EmberError(f"{source}: section {name} corrupted (CRC mismatch); rebuild the binary")
        if any(data[offset + length : _aligned(offset + length)]):
            raise EmberError(f"{source}: nonzero padding after section {name}; the file is corrupted")
        sections.append((Section(kind), section_crc, offset, length))
    kinds = [s[0] for s in sections]
    if kinds != list(Section):
        raise EmberError(f"{source}: sections {[k.name for k in kinds]} are not the expected {[s.name for s in Section]}")
    return Layout((major, minor), isa, arch_hash, size, sections)


def _json(data: bytes, source: str, name: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EmberError(f"{source}: section {name} is not valid JSON ({err}); rebuild the binary") from None


def parse(data: bytes, source: str, arch: Arch | None = None, embedded_arch: bool = False) -> Ebin:
    """Validate and decode a binary. `arch` is the arch the caller runs; by default the
    installed preset of the name the binary records, or with `embedded_arch` (for tools
    that only read the binary) the arch stored in it. Raises EmberError with a one-line
    message for every kind of damage or mismatch."""
    layout = read_layout(data, source)
    raw = {kind: data[offset : offset + size] for kind, _, offset, size in layout.sections}
    built = Arch.from_dict(_json(raw[Section.ARCH], source, "ARCH"), f"{source}: ARCH")
    if built.arch_hash != layout.arch_hash:
        raise EmberError(f"{source}: the ARCH section does not match the header's arch hash; rebuild the binary")
    target = built if embedded_arch else arch if arch is not None else load_arch(built.name)
    if target.name != built.name:
        raise EmberError(f"{source}: built for arch '{built.name}', not '{target.name}'; recompile for '{target.name}'")
    if target.arch_hash != built.arch_hash:
        raise EmberError(
            f"{source}: built for a different '{built.name}' (arch hash {built.arch_hash:016x},"
            f" installed preset {target.arch_hash:016x}); recompile the model"
        )
    program = decode(raw[Section.CODE], f"{source}: CODE")
    debug = _json(raw[Section.DEBUG], source, "DEBUG").get("instructions", [])
    if len(debug) != len(program) or not all(isinstance(d, list) and len(d) == 2 for d in debug):
        raise EmberError(f"{source}: DEBUG does not describe each of the {len(program)} instructions; rebuild the binary")
    memmap = _json(raw[Section.MEMMAP], source, "MEMMAP")
    const = raw[Section.CONST]
    dram_size = memmap.get("dram_size", 0) if isinstance(memmap, dict) else 0
    const_offset = memmap.get("const_offset", 0) if isinstance(memmap, dict) else 0
    if not isinstance(dram_size, int) or not isinstance(const_offset, int) or const_offset + len(const) > dram_size:
        raise EmberError(f"{source}: MEMMAP does not place CONST ({len(const)} bytes) inside DRAM; rebuild the binary")
    return Ebin(
        arch=target,
        program=program,
        const=const,
        memmap=memmap,
        iodesc=_json(raw[Section.IODESC], source, "IODESC"),
        debug=[(str(a), str(b)) for a, b in debug],
        meta=_json(raw[Section.META], source, "META"),
    )


def read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise EmberError(f"{path}: cannot read ({err.strerror})") from None


def load(path: str | Path, arch: Arch | None = None, embedded_arch: bool = False) -> Ebin:
    """Read and validate a binary file (see `parse`)."""
    return parse(read_file(path), str(path), arch, embedded_arch)
