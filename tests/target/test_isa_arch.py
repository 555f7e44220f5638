"""Instruction records and arch presets."""

from __future__ import annotations

import numpy as np
import pytest

from ember.support.diagnostics import EmberError
from ember.target import isa
from ember.target.arch import load_arch, preset_names
from ember.target.isa import FORMATS, RECORD_SIZE, Opcode, Token


def test_every_format_is_a_64_byte_naturally_aligned_record():
    for fmt in FORMATS.values():
        assert fmt.dtype.itemsize == RECORD_SIZE
        for f in fmt.fields:
            assert f.offset % f.dtype.itemsize == 0
            assert f.offset >= isa.HEADER_SIZE
        spans = sorted((f.offset, f.offset + f.dtype.itemsize) for f in fmt.fields)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_encode_decode_round_trip_of_every_opcode_with_extreme_values():
    program = []
    for op, fmt in FORMATS.items():
        values = {}
        for k, f in enumerate(fmt.fields):
            info = np.iinfo(f.dtype)
            values[f.name] = [info.min, info.max, 1][k % 3] if f.enum is None else max(int(v) for v in f.enum)
        program.append(isa.make(op, Token.PUSH_NEXT | Token.POP_PREV, **values))
    data = isa.encode(program)
    assert len(data) == RECORD_SIZE * len(program)
    assert isa.decode(data) == program


def test_record_bytes_are_little_endian_at_documented_offsets():
    insn = isa.make(Opcode.CONV, Token.POP_PREV | Token.PUSH_NEXT, inp=0x01020304, oc=0x0506, in_zp=-2)
    raw = isa.encode([insn])
    conv = FORMATS[Opcode.CONV]
    assert raw[0] == Opcode.CONV and raw[1] == 0b1001
    assert raw[conv.field("inp").offset : conv.field("inp").offset + 4] == bytes([4, 3, 2, 1])
    assert raw[conv.field("oc").offset : conv.field("oc").offset + 2] == bytes([6, 5])
    assert raw[conv.field("in_zp").offset] == 0xFE


def test_decode_rejects_unknown_opcodes_and_partial_records():
    with pytest.raises(EmberError, match=r"^CODE: instruction 1 has unknown opcode 77; the binary is corrupt$"):
        isa.decode(isa.encode([isa.make(Opcode.END)]) + bytes([77]) + bytes(63))
    with pytest.raises(EmberError, match="not a whole number of 64-byte instructions"):
        isa.decode(bytes(65))


def test_field_overflow_is_reported():
    with pytest.raises(ValueError, match=r"instruction 0 \(conv\): kh = 256 does not fit uint8"):
        isa.encode([isa.make(Opcode.CONV, kh=256)])


def test_presets_and_hash():
    assert {"ember16", "ember32"} <= set(preset_names())
    a16, a32 = load_arch("ember16"), load_arch("ember32")
    assert (a16.mac_rows, a16.mac_cols, a32.mac_rows, a32.mac_cols) == (16, 16, 32, 32)
    assert a16.arch_hash == load_arch("ember16").arch_hash != a32.arch_hash
    assert a16.arch_hash.bit_length() <= 64


def test_unknown_preset_is_one_clear_error():
    with pytest.raises(EmberError, match=r"^arch 'ember64': no such preset; choose one of ember16, ember32$"):
        load_arch("ember64")
