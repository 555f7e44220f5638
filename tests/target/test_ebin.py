"""The .ebin container: determinism, round trip, and every kind of damage."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest

from ember.support.diagnostics import EmberError
from ember.target import ebin
from ember.target.arch import load_arch
from ember.target.ebin import HEADER, Section
from ember.target.isa import Buffer, Opcode


@pytest.fixture
def model(tile_program):
    prog = tile_program()
    prog.load(Buffer.INP, 0, np.arange(24, dtype=np.int8).reshape(2, 3, 4))
    prog.op(Opcode.POOL, inp=0, out=100, ih=2, iw=3, channels=4, kh=1, kw=1, sh=1, sw=1, multiplier=1 << 30,
            shift=30, act_min=-128, act_max=127)  # fmt: skip
    return dataclasses.replace(prog.ebin(Buffer.INP, 100, (2, 3, 4)), meta={"compiler": "ember 0.1.0", "options": []})


def test_bytes_are_deterministic_and_round_trip(model):
    data = ebin.to_bytes(model)
    assert data == ebin.to_bytes(model)
    again = ebin.parse(data, "m.ebin")
    assert again == model
    assert ebin.to_bytes(again) == data
    assert data[:8] == b"\x89EBIN\r\n\x1a"
    layout = ebin.read_layout(data, "m.ebin")
    assert [s[0] for s in layout.sections] == list(Section)
    assert all(offset % 16 == 0 for _, _, offset, _ in layout.sections)


def test_write_and_load(model, tmp_path):
    path = tmp_path / "m.ebin"
    ebin.write(model, path)
    assert ebin.load(path) == model


@pytest.mark.parametrize("section", list(Section))
def test_each_section_crc_is_checked(model, section):
    data = bytearray(ebin.to_bytes(model))
    _, _, offset, size = ebin.read_layout(bytes(data), "m.ebin").sections[section - 1]
    data[offset + size // 2] ^= 0x40
    with pytest.raises(EmberError) as err:
        ebin.parse(bytes(data), "m.ebin")
    assert str(err.value) == f"m.ebin: section {section.name} corrupted (CRC mismatch); rebuild the binary"


def test_header_and_table_crc(model):
    data = bytearray(ebin.to_bytes(model))
    data[HEADER.size + 8] ^= 1  # a section offset in the table
    with pytest.raises(EmberError, match=r"^m.ebin: header or section table corrupted \(CRC mismatch\); rebuild"):
        ebin.parse(bytes(data), "m.ebin")


def test_truncation(model):
    data = ebin.to_bytes(model)
    with pytest.raises(EmberError, match=rf"^m.ebin: truncated: {len(data) - 5} bytes of {len(data)}; the file"):
        ebin.parse(data[:-5], "m.ebin")
    with pytest.raises(EmberError, match=r"^m.ebin: truncated: 10 bytes, shorter than the 64-byte header$"):
        ebin.parse(data[:10], "m.ebin")
    with pytest.raises(EmberError, match=r"^m.ebin: 3 unexpected bytes after the end of the binary$"):
        ebin.parse(data + b"abc", "m.ebin")


def test_wrong_magic(model):
    data = b"PK\x03\x04" + ebin.to_bytes(model)[4:]
    with pytest.raises(EmberError, match=r"^m.ebin: not an Ember binary \(bad magic\); pass a .ebin file"):
        ebin.parse(data, "m.ebin")


def test_newer_major_version(model):
    data = bytearray(ebin.to_bytes(model))
    struct.pack_into("<HH", data, 8, ebin.FORMAT_MAJOR + 1, 0)
    with pytest.raises(EmberError) as err:
        ebin.parse(bytes(data), "m.ebin")
    assert str(err.value) == (
        "m.ebin: format version 2.0 is newer than this tool's 1.x; use a matching ember version or recompile the model"
    )


def test_newer_minor_version_is_accepted(model):
    data = bytearray(ebin.to_bytes(model))
    struct.pack_into("<H", data, 10, ebin.FORMAT_MINOR + 3)
    # the minor version is covered by the header CRC: recompute it as a newer writer would
    table_end = HEADER.size + ebin.ENTRY.size * len(Section)
    table_end = (table_end + 15) // 16 * 16
    struct.pack_into("<I", data, 32, zlib.crc32(bytes(data[:32]) + bytes(data[HEADER.size : table_end])))
    assert ebin.parse(bytes(data), "m.ebin").program == model.program


def test_arch_mismatch(model):
    data = ebin.to_bytes(model)
    with pytest.raises(EmberError, match=r"^m.ebin: built for arch 'ember16', not 'ember32'; recompile for 'ember32'$"):
        ebin.parse(data, "m.ebin", load_arch("ember32"))
    changed = dataclasses.replace(load_arch("ember16"), input_buffer_bytes=1 << 20)
    with pytest.raises(EmberError, match=r"^m.ebin: built for a different 'ember16' \(arch hash [0-9a-f]{16}, installed"):
        ebin.parse(data, "m.ebin", changed)


def test_missing_file(tmp_path):
    with pytest.raises(EmberError, match=r"nope.ebin: cannot read \(No such file or directory\)$"):
        ebin.load(tmp_path / "nope.ebin")
