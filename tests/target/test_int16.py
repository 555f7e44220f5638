"""ISA versions 2 to 4: int16 activations (CONV `in_i16`, POST `out_i16` and its
interpolated int16 table, PREPROC `out_i16`, ELTW mul's `a_i16`, POOL sum's `in_i16`)
against plain numpy int64 arithmetic and the quant reference, the loader's checks of the
new fields, their memory footprints and the cycle model."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from ember.interpreters.quant_reference import mul as quant_mul
from ember.support.diagnostics import EmberError
from ember.target import ebin, isa, kernels
from ember.target.arch import load_arch
from ember.target.cost import cycles
from ember.target.ebin import Ebin
from ember.target.isa import Buffer, ChannelOrder, EltwMode, Opcode, PixelFormat, PoolMode
from ember.target.program import Access, accesses
from ember.target.requant import quantize_multiplier, requantize
from ember.target.simulator import Simulator
from tests.target.conv_helpers import conv_int64, direct_conv, run_conv_post, wrap32

INT16 = np.iinfo(np.int16)
IDENTITY = (1 << 30, 30)  # requantize multiplier and shift of exactly 1.0


def post_reference(acc, bias, m, s, zp, lo, hi) -> np.ndarray:
    """POST's requantization, written out in numpy int64 per channel (last axis):
    clamp(((acc + bias) * M + 2^(S-1)) >> S + zp, lo, hi)."""
    m, s = np.asarray(m, dtype=np.int64), np.asarray(s, dtype=np.int64)
    r = ((np.asarray(acc, dtype=np.int64) + np.asarray(bias, dtype=np.int64)) * m + (np.int64(1) << (s - 1))) >> s
    return np.clip(r + zp, lo, hi)


def lookup16(y: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The int16 table of docs/isa.md in numpy int64: u = y + 32768, i = u >> 7,
    f = u & 127, t[i] + (((t[i+1] - t[i]) * f + 64) >> 7)."""
    u = np.asarray(y, dtype=np.int64) + 32768
    i, f = u >> 7, u & 127
    t = table.astype(np.int64)
    return t[i] + (((t[i + 1] - t[i]) * f + 64) >> 7)


# ------------------------------------------------------------------------- CONV kernels

CONVS = {
    "dense 3x3 stride 1": ((6, 11, 64), 8, (3, 3), (1, 1), (1, 1), 1),
    "dense 1x1": ((5, 7, 48), 12, (1, 1), (1, 1), (1, 1), 1),
    "dense 3x3 stride 2 (im2col)": ((7, 9, 16), 6, (3, 3), (2, 2), (1, 1), 1),
    "dense 3x2 dilation 2x3": ((9, 10, 5), 4, (3, 2), (1, 1), (2, 3), 1),
    "depthwise 3x3": ((6, 13, 16), 16, (3, 3), (1, 1), (1, 1), 16),
    "depthwise multiplier 2, stride 2x1, dilation 1x2": ((9, 10, 3), 6, (3, 3), (2, 1), (1, 2), 3),
    "grouped": ((5, 5, 8), 6, (3, 3), (1, 1), (1, 1), 2),
}


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("full_range", [False, True], ids=["small values", "int16 range"])
def test_int16_conv_paths_match_int64(name, full_range, kernel_threads):
    """Small values keep dense sums below 2^24 (float32); the whole int16 range takes
    float64 (products up to 2^22), with rows of -32768 against weights -128 and 127."""
    (ih, iw, ic), oc, (kh, kw), stride, dilation, groups = CONVS[name]
    rng = np.random.default_rng(len(name) + 7 * full_range)
    span = (32768, 128) if full_range else (40, 4)
    x = rng.integers(-span[0], span[0], (ih, iw, ic)).astype(np.int16)
    w = rng.integers(-span[1], span[1], (oc, kh, kw, ic // groups)).astype(np.int8)
    if full_range:
        x[:3] = INT16.min
        w[0], w[-1] = -128, 127
    assert kernels._accumulation_dtype(x, w, 0) == (np.float64 if full_range else np.float32)
    got = kernels.conv(x, w, 0, stride, dilation, groups)
    assert got.dtype == np.int32
    assert np.array_equal(got, direct_conv(x, w, 0, stride, dilation, groups))


WRAPPING = {
    "dense 1x1, 600 channels": ((1, 2, 600), 2, (1, 1), 1),
    "dense 3x3, 64 channels": ((3, 4, 64), 2, (3, 3), 1),
    "depthwise 23x23": ((23, 24, 2), 2, (23, 23), 2),
    "grouped 3x3, 2 x 64 channels": ((3, 3, 128), 4, (3, 3), 2),
}


@pytest.mark.parametrize("name", list(WRAPPING))
def test_int16_extremes_wrap_around_like_the_accumulator(name, kernel_threads):
    """More than 512 taps of -32768 * -128 = 2^22 (or 32767 * -128) pass +-2^31: every
    path gives the exact sum modulo 2^32."""
    (ih, iw, ic), oc, (kh, kw), groups = WRAPPING[name]
    w = np.full((oc, kh, kw, ic // groups), -128, dtype=np.int8)
    w[1::2] = 127
    for value in (INT16.min, INT16.max):
        x = np.full((ih, iw, ic), value, dtype=np.int16)
        exact = conv_int64(x, w, 0, (1, 1), (1, 1), groups)
        assert (np.abs(exact) >= 2**31).all()
        assert np.array_equal(kernels.conv(x, w, 0, (1, 1), (1, 1), groups), wrap32(exact))


@pytest.mark.parametrize("name", list(CONVS))
def test_int16_conv_accumulates_with_wrap_around(name, kernel_threads):
    """The accumulate flag adds to accumulators near the int32 limits, wrapping."""
    (ih, iw, ic), oc, (kh, kw), stride, dilation, groups = CONVS[name]
    rng = np.random.default_rng(len(name) + 100)
    x = rng.integers(INT16.min, INT16.max + 1, (ih, iw, ic)).astype(np.int16)
    w = rng.integers(-128, 128, (oc, kh, kw, ic // groups)).astype(np.int8)
    exact = conv_int64(x, w, 0, stride, dilation, groups)
    held = rng.choice(np.array([np.iinfo(np.int32).min, -1, 0, np.iinfo(np.int32).max], dtype=np.int32), exact.shape)
    out = held.copy()
    kernels.Conv(x.shape, w.shape, 0, stride, dilation, groups, accumulate=True, in_i16=True)(out, x, w)
    assert np.array_equal(out, wrap32(held.astype(np.int64) + exact))


# ------------------------------------------------------------------------- POST kernel


def table_cases(rng) -> dict[str, np.ndarray]:
    return {
        "random": rng.integers(INT16.min, INT16.max + 1, 513).astype(np.int16),
        "decreasing": np.sort(rng.integers(INT16.min, INT16.max + 1, 513))[::-1].astype(np.int16),
        "alternating extremes": np.where(np.arange(513) % 2, INT16.max, INT16.min).astype(np.int16),
    }


def edge_inputs(rng) -> np.ndarray:
    """y values at the int16 ends, at knots (f = 0), just below knots (f = 127), around 0
    and random."""
    knots = np.arange(-32768, 32768, 128)
    special = [INT16.min, INT16.min + 1, INT16.min + 64, INT16.min + 65, INT16.min + 127, INT16.min + 128,
               -129, -128, -65, -64, -1, 0, 1, 63, 64, 127, 128, 32640, INT16.max - 1, INT16.max]  # fmt: skip
    values = np.concatenate([special, knots, knots + 127, knots + 64, rng.integers(INT16.min, INT16.max + 1, 200)])
    return values.astype(np.int64)


def test_int16_lookup_pinned_by_hand():
    """lut16[0] = 0, lut16[1] = -1, lut16[511] = 100, lut16[512] = -100: the rounding is
    a floor of (delta * f + 64) / 128, so negative deltas round half up too."""
    table = np.zeros(513, dtype=np.int16)
    table[1], table[511], table[512] = -1, 100, -100
    y = np.array([[INT16.min], [INT16.min + 64], [INT16.min + 65], [INT16.min + 128], [INT16.max], [INT16.max - 63]])
    m, s = np.array([IDENTITY[0]]), np.array([IDENTITY[1]])
    got = kernels.post(y.astype(np.int32), np.zeros(1), m, s, 0, INT16.min, INT16.max, table, np.int16)
    # u = 0: 0; f = 64: (-64 + 64) >> 7 = 0; f = 65: (-65 + 64) >> 7 = -1; knot 1: -1;
    # u = 65535: 100 + ((-200 * 127 + 64) >> 7) = 100 - 198; f = 64: 100 + ((-200 * 64 + 64) >> 7) = 100 - 100
    assert got[:, 0].tolist() == [0, 0, -1, -1, -98, 0]


@pytest.mark.parametrize("table_name", ["random", "decreasing", "alternating extremes"])
def test_post_int16_table_matches_the_formula(table_name, kernel_threads):
    rng = np.random.default_rng(len(table_name))
    table = table_cases(rng)[table_name]
    y = edge_inputs(rng)
    channels = 3
    acc = np.repeat(y[:, None], channels, axis=1)
    acc[:5, 1] = [40000, -40000, 2**31 - 1, -(2**31), 12345]  # clamped to the act range
    m, s = np.full(channels, IDENTITY[0]), np.full(channels, IDENTITY[1])
    for zp, lo, hi in ((0, INT16.min, INT16.max), (-7, -30000, 31000), (127, -128, 127)):
        clamped = post_reference(acc, 0, m, s, zp, lo, hi)
        got = kernels.post(acc.astype(np.int32), np.zeros(channels), m, s, zp, lo, hi, table, np.int16)
        assert got.dtype == np.int16
        assert np.array_equal(got, lookup16(clamped, table))
        assert np.array_equal(kernels.post(acc.astype(np.int32), np.zeros(channels), m, s, zp, lo, hi, None, np.int16), clamped)


@pytest.mark.parametrize("with_table", [False, True])
def test_post_int16_requantizes_like_requantize(with_table, kernel_threads):
    """Random multipliers, shifts, biases and accumulators (the int32 extremes included),
    a wide and a narrow clamp, int16 results with and without the table."""
    rng = np.random.default_rng(31 + with_table)
    n, c = 300, 9
    acc = rng.integers(-(2**31), 2**31, (n, c)).astype(np.int32)
    acc[0], acc[1] = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    bias = rng.integers(-(2**20), 2**20, c)
    m, s = rng.integers(2**30, 2**31, c), rng.integers(20, 40, c)
    table = rng.integers(INT16.min, INT16.max + 1, 513).astype(np.int16) if with_table else None
    for zp, lo, hi in ((0, INT16.min, INT16.max), (5, -1000, 30000)):
        y = post_reference(acc, bias, m, s, zp, lo, hi)
        assert np.array_equal(y, requantize(acc, m, s, zp, lo, hi, bias=bias))
        got = kernels.post(acc, bias, m, s, zp, lo, hi, table, np.int16)
        assert np.array_equal(got, lookup16(y, table) if with_table else y)


def test_post_refuses_a_table_of_the_other_type():
    acc = np.zeros((2, 2), dtype=np.int32)
    params = np.array([[0, 0], [1 << 30] * 2, [30, 30]], dtype=np.int32)
    with pytest.raises(ValueError, match="^an int8 result takes no table of 513 int16 entries$"):
        kernels.post_into(np.empty((2, 2), np.int8), acc, params, 0, -128, 127, np.zeros(513, np.int16))
    with pytest.raises(ValueError, match="^an int16 result takes no table of 256 int8 entries$"):
        kernels.post_into(np.empty((2, 2), np.int16), acc, params, 0, -128, 127, np.zeros(256, np.int8))


# --------------------------------------------------------------- whole programs


PROGRAMS = {
    "3x3 pad 1": dict(h=7, w=6, ic=8, oc=5, k=(3, 3), pads=(1, 1, 1, 1), stride=(1, 1), dil=(1, 1), groups=1),
    "stride 2": dict(h=9, w=8, ic=4, oc=6, k=(3, 3), pads=(1, 0, 1, 0), stride=(2, 2), dil=(1, 1), groups=1),
    "depthwise": dict(h=6, w=6, ic=8, oc=8, k=(3, 3), pads=(1, 1, 1, 1), stride=(1, 1), dil=(1, 1), groups=8),
    "grouped": dict(h=5, w=5, ic=8, oc=6, k=(3, 3), pads=(0, 0, 0, 0), stride=(1, 1), dil=(1, 1), groups=2),
    "matmul as 1x1": dict(h=1, w=10, ic=32, oc=7, k=(1, 1), pads=(0, 0, 0, 0), stride=(1, 1), dil=(1, 1), groups=1),
}


def program_case(name: str):
    case = PROGRAMS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    x = rng.integers(INT16.min, INT16.max + 1, (case["h"], case["w"], case["ic"])).astype(np.int16)
    w = rng.integers(-128, 128, (case["oc"], *case["k"], case["ic"] // case["groups"])).astype(np.int8)
    bias = rng.integers(-50000, 50000, case["oc"])
    m, s = quantize_multiplier(rng.uniform(0.0002, 0.002, case["oc"]))
    top, bottom, left, right = case["pads"]
    padded = np.pad(x, ((top, bottom), (left, right), (0, 0)))
    acc = direct_conv(padded, w, 0, case["stride"], case["dil"], case["groups"])
    return case, rng, x, w, (bias, m, s), acc


SPLITS = [(name, False) for name in PROGRAMS] + [(name, True) for name in PROGRAMS if PROGRAMS[name]["groups"] == 1]


@pytest.mark.parametrize("name,split", SPLITS, ids=[f"{n}, {'two accumulating CONVs' if s else 'one CONV'}" for n, s in SPLITS])
def test_int16_program_with_the_int16_table(tile_program, name, split, kernel_threads):
    """LOAD int16 bytes -> CONV in_i16 -> POST out_i16 through the int16 table -> STORE
    (and without the table)."""
    case, rng, x, w, (bias, m, s), acc = program_case(name)
    lut = np.sort(rng.integers(INT16.min, INT16.max + 1, 513))[::-1].astype(np.int16)
    post = dict(zp_out=0, act_min=-20000, act_max=INT16.max, use_lut=2, out_i16=1)
    geometry = (case["pads"], case["stride"], case["dil"], case["groups"])
    got = run_conv_post(tile_program, x, w, 0, *geometry, bias, m, s, 0, lut, split=split, post=post)
    y = post_reference(acc, bias, m, s, 0, -20000, INT16.max)
    assert got.dtype == np.int16
    assert np.array_equal(got, lookup16(y, lut))
    plain = run_conv_post(tile_program, x, w, 0, *geometry, bias, m, s, 0, post={**post, "use_lut": 0})
    assert np.array_equal(plain, y)
    assert len(np.unique(y)) > 10  # the outputs span the int16 range, not one clamp value


@pytest.mark.parametrize("with_table", [False, True])
def test_int16_input_to_int8_output(tile_program, with_table):
    """in_i16 = 1 with out_i16 = 0: int8 results, optionally through the int8 table."""
    case, rng, x, w, (bias, m, s), acc = program_case("3x3 pad 1")
    m, s = quantize_multiplier(rng.uniform(0.000005, 0.00002, case["oc"]))
    lut = rng.integers(-128, 128, 256).astype(np.int8) if with_table else None
    post = dict(zp_out=-3, act_min=-100, act_max=127, use_lut=int(with_table), out_i16=0)
    got = run_conv_post(tile_program, x, w, 0, case["pads"], case["stride"], case["dil"], 1, bias, m, s, -3, lut, post=post)
    y = post_reference(acc, bias, m, s, -3, -100, 127)
    assert got.dtype == np.int8
    assert np.array_equal(got, lut[y + 128] if with_table else y)
    assert len(np.unique(y)) > 10


# ------------------------------------------------------------ loader checks, footprints

ARCH = load_arch("ember16")


def conv16(**fields):
    base = dict(inp=0, wgt=0, acc=0, ih=4, iw=4, ic=8, oc=4, groups=1, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, in_i16=1)
    return isa.make(Opcode.CONV, **{**base, **fields})


def post16(**fields):
    base = dict(acc=0, par=0, out=0, lut=0, count=16, channels=2, act_min=INT16.min, act_max=INT16.max, use_lut=2, out_i16=1)
    return isa.make(Opcode.POST, **{**base, **fields})


def preproc16(**fields):
    """A 2 x 4 rgb frame at inp 0 to int16 at inp 1000, tables at lut 0."""
    base = dict(inp=0, uv=0, out=1000, lut=0, height=2, width=4, pixel_format=PixelFormat.RGB, order=ChannelOrder.RGB,
                out_i16=1)  # fmt: skip
    return isa.make(Opcode.PREPROC, **{**base, **fields})


def eltw16(**fields):
    """A mul of 4 x 8 int16 values at inp 64 by 8 int8 gates at inp 0, into inp 512."""
    base = dict(a=64, b=0, out=512, count=4, channels=8, mult_out=1 << 30, shift_out=40, act_min=-128, act_max=127,
                mode=EltwMode.MUL, broadcast_b=1, a_i16=1)  # fmt: skip
    return isa.make(Opcode.ELTW, **{**base, **fields})


def pool16(**fields):
    """The sum of a 4 x 4 x 8 int16 tile at inp 0 into acc 0."""
    base = dict(inp=0, out=0, ih=4, iw=4, channels=8, kh=4, kw=4, sh=1, sw=1, act_min=-128, act_max=127, mode=PoolMode.SUM, in_i16=1)
    return isa.make(Opcode.POOL, **{**base, **fields})


def simulator(program: list[isa.Instruction]) -> Simulator:
    """The program (tokens as given) followed by END, with 1 KiB of DRAM."""
    program = [*program, isa.make(Opcode.END)]
    model = Ebin(
        arch=ARCH,
        program=program,
        const=bytes(256),
        memmap={"dram_size": 1024, "const_offset": 0, "regions": []},
        iodesc={"inputs": [], "outputs": [{"name": "y", "offset": 512, "shape": [16], "dtype": "int8"}]},
        debug=[("quant.op", f"layer{i}") for i in range(len(program))],
    )
    return Simulator(model, "t.ebin")


@pytest.mark.parametrize(
    "insn,message",
    [
        (conv16(in_zp=3), "in_zp = 3 with in_i16 = 1; int16 inputs are symmetric (in_zp must be 0)"),
        (conv16(inp=101), "inp = 101 is odd; int16 data needs an even byte address"),
        (conv16(in_i16=2), "in_i16 = 2 is not 0 or 1"),
        (post16(use_lut=1), "use_lut = 1 (int8 table) with out_i16 = 1; an int16 result takes use_lut 0 or 2"),
        (post16(out_i16=0, act_min=-128, act_max=127), "use_lut = 2 (int16 table) with out_i16 = 0; an int8 result takes use_lut 0 or 1"),
        (post16(use_lut=3), "use_lut = 3 is not 0 (no table), 1 (int8 table) or 2 (int16 table)"),
        (post16(out_i16=2), "out_i16 = 2 is not 0 or 1"),
        (post16(out_i16=0, use_lut=1, act_min=-129, act_max=127), "act_min = -129, act_max = 127 exceed the int8 result range [-128, 127]"),
        (post16(out_i16=0, use_lut=0, act_min=0, act_max=128), "act_min = 0, act_max = 128 exceed the int8 result range [-128, 127]"),
        (post16(out=7), "out = 7 is odd; int16 data needs an even byte address"),
        (post16(lut=33), "lut = 33 is odd; int16 data needs an even byte address"),
        (post16(act_min=5, act_max=4), "act_min is greater than act_max"),
        (preproc16(out=1001), "out = 1001 is odd; int16 data needs an even byte address"),
        (preproc16(lut=3), "lut = 3 is odd; int16 data needs an even byte address"),
        (preproc16(out_i16=2), "out_i16 = 2 is not 0 or 1"),
        (eltw16(mode=EltwMode.ADD, shift_a=1, shift_b=1), "a_i16 = 1 with mode add; only mul reads int16"),
        (eltw16(zp_a=3), "zp_a = 3 with a_i16 = 1; int16 inputs are symmetric (zp_a must be 0)"),
        (eltw16(a=101), "a = 101 is odd; int16 data needs an even byte address"),
        (eltw16(a_i16=2), "a_i16 = 2 is not 0 or 1"),
        (pool16(mode=PoolMode.MAX, multiplier=1 << 30, shift=30), "in_i16 = 1 with mode max; only sum reads int16"),
        (pool16(mode=PoolMode.AVG, multiplier=1 << 30, shift=30), "in_i16 = 1 with mode avg; only sum reads int16"),
        (pool16(zp_in=-1), "zp_in = -1 with in_i16 = 1; int16 inputs are symmetric (zp_in must be 0)"),
        (pool16(inp=33), "inp = 33 is odd; int16 data needs an even byte address"),
        (pool16(in_i16=2), "in_i16 = 2 is not 0 or 1"),
    ],
)
def test_loader_refuses_invalid_int16_instructions(insn, message):
    with pytest.raises(EmberError) as err:
        simulator([insn])
    assert str(err.value) == f"t.ebin: instruction 0 ({insn.format.mnemonic}, node 'layer0'): {message}"


def test_valid_combinations_load():
    for insn in (
        conv16(),
        conv16(in_i16=0, in_zp=-5, inp=101),
        post16(),
        post16(use_lut=0, out=2),
        post16(out_i16=0, use_lut=0, act_min=-128, act_max=127, out=7),
        post16(out_i16=0, use_lut=1, act_min=-128, act_max=127, lut=33),
        post16(use_lut=0, lut=33),  # an unused table address is not checked
        preproc16(),
        preproc16(out_i16=0, out=1001, lut=3),
        eltw16(),
        eltw16(a_i16=0, a=101, zp_a=3),
        pool16(),
        pool16(in_i16=0, inp=33, zp_in=-1),
    ):
        simulator([insn])


def test_int16_footprints():
    """int16 tiles take 2 bytes per element, POST's int16 table 1026 bytes, PREPROC's
    three int16 tables 1536."""
    conv_in = accesses(conv16(inp=100, ih=4, iw=5, ic=6, kh=1, kw=1))[0]
    assert conv_in == Access(Buffer.INP, 100, 100 + 2 * 4 * 5 * 6, False)
    assert accesses(conv16(inp=100, ih=4, iw=5, ic=6, kh=1, kw=1, in_i16=0))[0].stop == 100 + 4 * 5 * 6
    found = accesses(post16(out=200, lut=64, count=10, channels=3))
    assert found[2:] == [Access(Buffer.INP, 200, 260, True), Access(Buffer.LUT, 64, 64 + 1026, False)]
    found = accesses(post16(out=200, lut=64, count=10, channels=3, out_i16=0, use_lut=1, act_min=-128, act_max=127))
    assert found[2:] == [Access(Buffer.INP, 200, 230, True), Access(Buffer.LUT, 64, 320, False)]
    found = accesses(preproc16(out=1000, lut=64))  # 2 x 4 pixels, three channels
    assert found == [
        Access(Buffer.LUT, 64, 64 + 1536, False), Access(Buffer.INP, 1000, 1000 + 2 * 24, True),
        Access(Buffer.INP, 0, 24, False),  # the uint8 frame
    ]  # fmt: skip
    found = accesses(preproc16(out=1000, lut=64, out_i16=0))
    assert found[:2] == [Access(Buffer.LUT, 64, 64 + 768, False), Access(Buffer.INP, 1000, 1000 + 24, True)]
    found = accesses(preproc16(out=1000, lut=64, uv=100, pixel_format=PixelFormat.NV12))
    assert found[1:] == [
        Access(Buffer.INP, 1000, 1000 + 2 * 24, True), Access(Buffer.INP, 0, 8, False), Access(Buffer.INP, 100, 104, False),
    ]  # fmt: skip
    # ELTW's int16 `a` and POOL's int16 tile: 2 bytes per element; b, the result and the sums as before
    assert accesses(eltw16()) == [
        Access(Buffer.INP, 64, 64 + 2 * 32, False), Access(Buffer.INP, 0, 8, False), Access(Buffer.INP, 512, 512 + 32, True),
    ]  # fmt: skip
    assert accesses(eltw16(a_i16=0))[0] == Access(Buffer.INP, 64, 64 + 32, False)
    assert accesses(pool16()) == [Access(Buffer.INP, 0, 2 * 128, False), Access(Buffer.ACC, 0, 8, True)]
    assert accesses(pool16(in_i16=0))[0] == Access(Buffer.INP, 0, 128, False)


@pytest.mark.parametrize(
    "insn,message",
    [
        (post16(out=262144 - 32), "out-of-range write of inp [262112, 262176) (size 262144)"),
        (post16(lut=4096 - 1024), "out-of-range read of lut [3072, 4098) (size 4096)"),
        (conv16(inp=262144 - 254), "out-of-range read of inp [261890, 262146) (size 262144)"),
        (preproc16(out=262144 - 46), "out-of-range write of inp [262098, 262146) (size 262144)"),
        (preproc16(lut=4096 - 1534), "out-of-range read of lut [2562, 4098) (size 4096)"),
        (eltw16(a=262144 - 62), "out-of-range read of inp [262082, 262146) (size 262144)"),
        (pool16(inp=262144 - 254), "out-of-range read of inp [261890, 262146) (size 262144)"),
    ],
)
def test_int16_bounds(insn, message):
    simulator([conv16(inp=262144 - 256)])  # 4 x 4 x 8 int16 values: the last 256 bytes exactly
    simulator([preproc16(out=262144 - 48, lut=4096 - 1536)])  # 2 x 4 x 3 int16 values, 3 x 256 int16 entries
    with pytest.raises(EmberError) as err:
        simulator([insn])
    assert str(err.value) == f"t.ebin: instruction 0 ({insn.format.mnemonic}, node 'layer0'): {message}"


def test_race_checker_sees_the_whole_int16_result():
    """A POST writing 16 int16 values at inp [0, 32) and a compute-engine copy of inp
    [16, 32) with no token between them: a race only because the result is int16."""
    copy = isa.make(Opcode.POOL, inp=16, out=64, ih=1, iw=1, channels=16, kh=1, kw=1, sh=1, sw=1,
                    multiplier=1 << 30, shift=30, act_min=-128, act_max=127)  # fmt: skip
    program = [post16(count=8, use_lut=0, out_i16=0, act_min=-128, act_max=127), copy]
    simulator(program)
    program[0] = post16(count=8, use_lut=0)
    with pytest.raises(EmberError) as err:
        simulator(program)
    assert str(err.value) == (
        "t.ebin: instruction 1 (pool, node 'layer1'): inp [16, 32) overlaps memory used by t.ebin: instruction 0"
        " (post, node 'layer0') on the store engine with no dependency-token path between them; add a push/pop pair"
    )


# ------------------------------------------------------------ cycles, layout, version


def test_int16_conv_costs_twice_the_compute_cycles():
    setup = ARCH.compute_setup_cycles
    for fields in (
        dict(ih=10, iw=10, ic=32, oc=40, groups=1, kh=3, kw=3),  # 64 pixels, 18 x 3 passes
        dict(ih=10, iw=10, ic=32, oc=32, groups=32, kh=3, kw=3),  # depthwise: 1 x 2 passes
        dict(ih=1, iw=50, ic=20, oc=12, groups=4, kh=1, kw=1),  # grouped
    ):
        int8 = cycles(conv16(in_i16=0, **fields), ARCH)
        int16 = cycles(conv16(**fields), ARCH)
        assert int16 - setup == 2 * (int8 - setup)
    assert cycles(conv16(ih=10, iw=10, ic=32, oc=40, kh=3, kw=3), ARCH) == setup + 2 * 64 * 18 * 3


def test_int16_preproc_costs_the_same_cycles():
    assert cycles(preproc16(height=20, width=30), ARCH) == cycles(preproc16(height=20, width=30, out_i16=0), ARCH)
    assert cycles(preproc16(height=20, width=30), ARCH) == ARCH.compute_setup_cycles + -(-20 * 30 * 3 // ARCH.vector_lanes)


def test_int16_eltw_and_pool_cost_the_same_cycles():
    """Vector instructions cost by element count: an int16 operand takes no extra cycle."""
    assert cycles(eltw16(count=100), ARCH) == cycles(eltw16(count=100, a_i16=0), ARCH) == ARCH.compute_setup_cycles + -(-800 // ARCH.vector_lanes)
    assert cycles(pool16(), ARCH) == cycles(pool16(in_i16=0), ARCH) == ARCH.compute_setup_cycles + -(-128 // ARCH.vector_lanes)


def test_version_2_record_layout():
    post = isa.FORMATS[Opcode.POST]
    layout = {f.name: (f.offset, f.type) for f in post.fields}
    assert layout == {
        "acc": (4, "<u4"), "par": (8, "<u4"), "out": (12, "<u4"), "lut": (16, "<u4"), "count": (20, "<u4"),
        "channels": (24, "<u2"), "act_min": (26, "<i2"), "act_max": (28, "<i2"), "zp_out": (30, "i1"),
        "use_lut": (31, "u1"), "out_i16": (32, "u1"),
    }  # fmt: skip
    assert isa.FORMATS[Opcode.CONV].field("in_i16").offset == 34
    raw = isa.encode([post16(act_min=-300, act_max=0x1234, zp_out=-1, out_i16=1, use_lut=2)])
    assert raw[26:33] == bytes([0xD4, 0xFE, 0x34, 0x12, 0xFF, 2, 1])


def test_version_3_record_layout():
    """ISA version 3 appends PREPROC's `out_i16` after `order`; the other fields stay put."""
    layout = {f.name: (f.offset, f.type) for f in isa.FORMATS[Opcode.PREPROC].fields}
    assert layout == {
        "inp": (4, "<u4"), "uv": (8, "<u4"), "out": (12, "<u4"), "lut": (16, "<u4"), "height": (20, "<u2"),
        "width": (22, "<u2"), "pixel_format": (24, "u1"), "order": (25, "u1"), "out_i16": (26, "u1"),
    }  # fmt: skip
    raw = isa.encode([preproc16(pixel_format=PixelFormat.NV12, order=ChannelOrder.BGR)])
    assert raw[24:28] == bytes([2, 1, 1, 0])


def test_version_4_record_layout():
    """ISA version 4 appends ELTW's `a_i16` and POOL's `in_i16` (byte 44); the other fields stay put."""
    eltw, pool = isa.FORMATS[Opcode.ELTW], isa.FORMATS[Opcode.POOL]
    assert [(f.name, f.offset, f.type) for f in eltw.fields[-3:]] == [("mode", 42, "u1"), ("broadcast_b", 43, "u1"), ("a_i16", 44, "u1")]
    assert [(f.name, f.offset, f.type) for f in pool.fields[-3:]] == [("use_lut", 42, "u1"), ("accumulate", 43, "u1"), ("in_i16", 44, "u1")]
    raw = isa.encode([eltw16(), pool16(accumulate=1)])
    assert raw[40:45] == bytes([0x80, 0x7F, 1, 1, 1]) and raw[64 + 41 : 64 + 45] == bytes([2, 0, 1, 1])


@pytest.mark.parametrize("old", [1, 2, 3])
def test_the_loader_refuses_older_isa_versions(tile_program, old):
    prog = tile_program()
    prog.load(Buffer.INP, 0, np.zeros(16, dtype=np.int8))
    data = bytearray(ebin.to_bytes(prog.ebin(Buffer.INP, 0, (16,))))
    assert isa.ISA_VERSION == 4 and struct.unpack_from("<H", data, 12) == (4,)
    struct.pack_into("<H", data, 12, old)
    with pytest.raises(EmberError) as err:
        ebin.parse(bytes(data), "old.ebin")
    assert str(err.value) == f"old.ebin: ISA version {old}, this tool runs ISA version 4; recompile the model"


# ------------------------------------------------------------ ELTW mul and POOL sum of int16 tiles


def int16_values(rng, shape) -> np.ndarray:
    """Random int16 values with both extremes present."""
    x = rng.integers(INT16.min, INT16.max + 1, shape).astype(np.int16)
    x.flat[:2] = INT16.min, INT16.max
    return x


@pytest.mark.parametrize("broadcast", [True, False], ids=["broadcast gate", "full b"])
@pytest.mark.parametrize("real", [2e-5, 3e-4], ids=["small multiplier", "saturating"])
def test_eltw_mul_of_an_int16_operand_matches_the_reference(tile_program, broadcast, real):
    """ELTW mul with `a_i16` on the simulator equals `quant.mul`'s reference on the same
    integers: requantize(a * (b - zp_b)) into the int8 result."""
    rng = np.random.default_rng(int(real * 1e6) + broadcast)
    n, c = 24, 10
    a = int16_values(rng, (n, c))
    b = rng.integers(-128, 128, (1 if broadcast else n, c)).astype(np.int8)
    (m,), (s,) = quantize_multiplier(np.array([real]))
    prog = tile_program()
    prog.load(Buffer.INP, 0, b)
    prog.load(Buffer.INP, 1024, a.view(np.int8))
    prog.op(Opcode.ELTW, a=1024, b=0, out=4096, count=n, channels=c, mult_out=int(m), shift_out=int(s), zp_b=-7, zp_out=3,
            act_min=-120, act_max=127, mode=EltwMode.MUL, broadcast_b=int(broadcast), a_i16=1)  # fmt: skip
    got = prog.run(Buffer.INP, 4096, (1, n, c))[0]
    expected = quant_mul(a, 0, b, -7, int(m), int(s), 3, -120, 127)
    assert got.dtype == np.int8 and np.array_equal(got, expected)
    assert len(np.unique(expected)) > 20


@pytest.mark.parametrize("window", ["global", "2x2 stride 2"])
def test_pool_sum_of_int16_tiles_accumulates_exactly(tile_program, window):
    """POOL sum with `in_i16` over two tiles (the second accumulating): the int64 sums of the
    int16 values, which no int8 tile could reach."""
    rng = np.random.default_rng(5)
    h, w, c = 6, 8, 5
    x1, x2 = int16_values(rng, (h, w, c)), int16_values(rng, (h, w, c))
    k, stride = ((h, w), (1, 1)) if window == "global" else ((2, 2), (2, 2))
    prog = tile_program()
    prog.load(Buffer.INP, 0, x1.view(np.int8))
    prog.load(Buffer.INP, 2048, x2.view(np.int8))
    for t, inp in enumerate((0, 2048)):
        prog.op(Opcode.POOL, inp=inp, out=0, ih=h, iw=w, channels=c, kh=k[0], kw=k[1], sh=stride[0], sw=stride[1],
                act_min=-128, act_max=127, mode=PoolMode.SUM, accumulate=t, in_i16=1)  # fmt: skip
    oh, ow = (h - k[0]) // stride[0] + 1, (w - k[1]) // stride[1] + 1
    got = prog.run(Buffer.ACC, 0, (oh, ow, c))
    total = (x1.astype(np.int64) + x2).reshape(oh, k[0], ow, k[1], c).sum(axis=(1, 3))
    assert np.array_equal(got, total) and np.abs(total).max() > 2**16

