"""Dependency tokens, the race checker, bounds checks and the cycle schedule."""

from __future__ import annotations

import numpy as np
import pytest

from ember.support.diagnostics import EmberError
from ember.target import isa
from ember.target.arch import load_arch
from ember.target.cost import cycles
from ember.target.ebin import Ebin
from ember.target.isa import Buffer, Opcode, Token
from ember.target.simulator import Simulator

ARCH = load_arch("ember16")
T = Token


def load(sram, dram=0, tokens=0, n=16, buf=Buffer.INP):
    return isa.make(Opcode.LOAD, tokens, dram=dram, sram=sram, stride0=n, stride1=n, stride2=1,
                    size0=1, size1=1, size2=n, buf=buf)  # fmt: skip


def store(sram, dram=512, tokens=0, n=16):
    return isa.make(Opcode.STORE, tokens, dram=dram, sram=sram, stride0=n, stride1=n, stride2=1,
                    size0=1, size1=1, size2=n, buf=Buffer.INP)  # fmt: skip


def copy(src, dst, tokens=0, n=16):
    """A 1x1 identity max-pool: an int8 copy on the compute engine."""
    return isa.make(Opcode.POOL, tokens, inp=src, out=dst, ih=1, iw=1, channels=n, kh=1, kw=1, sh=1, sw=1,
                    multiplier=1 << 30, shift=30, act_min=-128, act_max=127)  # fmt: skip


def simulator(program, dram_size=1024):
    program = [*program, isa.make(Opcode.END)]
    model = Ebin(
        arch=ARCH,
        program=program,
        const=bytes(range(256)),
        memmap={"dram_size": dram_size, "const_offset": 0, "regions": []},
        iodesc={"inputs": [], "outputs": [{"name": "y", "offset": 512, "shape": [16], "dtype": "int8"}]},
        debug=[("quant.op", f"layer{i}") for i in range(len(program))],
    )
    return Simulator(model, "t.ebin")


def test_a_correct_pipeline_runs():
    sim = simulator([load(0, tokens=T.PUSH_NEXT), copy(0, 64, T.POP_PREV | T.PUSH_NEXT), store(64, tokens=T.POP_PREV)])
    assert sim.run({})["y"].tolist() == list(range(16))


def test_missing_token_between_load_and_compute_is_a_race():
    with pytest.raises(EmberError) as err:
        simulator([load(0), copy(0, 64, T.PUSH_NEXT), store(64, tokens=T.POP_PREV)])
    assert str(err.value) == (
        "t.ebin: instruction 1 (pool, node 'layer1'): inp [0, 16) overlaps memory used by t.ebin: instruction 0"
        " (load, node 'layer0') on the load engine with no dependency-token path between them; add a push/pop pair"
    )


def test_write_after_read_needs_a_token_too():
    # The second load overwrites the tile that the store may still be reading: compute
    # is ordered before it, the store is not.
    program = [
        load(0, tokens=T.PUSH_NEXT),
        copy(0, 64, T.POP_PREV | T.PUSH_NEXT | T.PUSH_PREV),
        store(64, tokens=T.POP_PREV),
        load(64, dram=16, tokens=T.POP_NEXT),
    ]
    with pytest.raises(EmberError, match=r"instruction 3 \(load, node 'layer3'\): inp \[64, 80\) overlaps memory used"
                                         r" by t.ebin: instruction 2 \(store, node 'layer2'\) on the store engine"):  # fmt: skip
        simulator(program)
    # ordered by store -> compute -> load tokens it is fine
    program = [
        load(0, tokens=T.PUSH_NEXT),
        copy(0, 64, T.POP_PREV | T.PUSH_NEXT),
        store(64, tokens=T.POP_PREV | T.PUSH_PREV),
        isa.make(Opcode.SYNC, T.POP_NEXT | T.PUSH_PREV, engine=isa.Engine.COMPUTE),
        load(64, dram=16, tokens=T.POP_NEXT),
    ]
    assert simulator(program).run({})["y"].tolist() == list(range(16))


def test_pop_without_push():
    with pytest.raises(EmberError) as err:
        simulator([copy(0, 64, T.POP_PREV)])
    assert str(err.value) == (
        "t.ebin: instruction 0 (pool, node 'layer0'): pops a token from queue load->compute that is never pushed (deadlock)"
    )


def test_push_without_pop():
    with pytest.raises(EmberError, match=r"instruction 0 \(load, node 'layer0'\): pushes a token to queue"
                                         r" load->compute that is never popped$"):  # fmt: skip
        simulator([load(0, tokens=T.PUSH_NEXT)])


def test_circular_wait_is_a_deadlock():
    # compute waits for the load that itself waits for compute's later push
    program = [
        copy(0, 64, T.POP_PREV),
        isa.make(Opcode.SYNC, T.PUSH_PREV, engine=isa.Engine.COMPUTE),
        load(0, tokens=T.POP_NEXT | T.PUSH_NEXT),
    ]
    with pytest.raises(EmberError, match=r"instruction 0 \(pool, node 'layer0'\): waits for a token that can only be"
                                         r" pushed after it runs \(deadlock\)$"):  # fmt: skip
        simulator(program)


def test_token_on_a_queue_the_engine_does_not_have():
    with pytest.raises(EmberError, match=r"instruction 0 \(load, node 'layer0'\): the load engine has no queue for"
                                         r" tokens 0x1$"):  # fmt: skip
        simulator([load(0, tokens=T.POP_PREV)])


@pytest.mark.parametrize(
    "insn,message",
    [
        (load(0, dram=1020), "out-of-range read of DRAM [1020, 1036) (size 1024)"),
        (load(262140), "out-of-range write of inp [262140, 262156) (size 262144)"),
        (store(0, dram=1010, tokens=0), "out-of-range write of DRAM [1010, 1026) (size 1024)"),
        (load(65530, buf=Buffer.ACC), "out-of-range write of acc [65530, 65546) (size 65536)"),
    ],
)
def test_out_of_range_dma_names_instruction_op_and_node(insn, message):
    with pytest.raises(EmberError) as err:
        simulator([load(0), insn])
    mnemonic = insn.format.mnemonic
    assert str(err.value) == f"t.ebin: instruction 1 ({mnemonic}, node 'layer1'): {message}"


def test_malformed_instruction():
    bad = isa.make(Opcode.CONV, T.POP_PREV, ih=3, iw=3, ic=6, oc=4, groups=4, kh=1, kw=1, sh=1, sw=1, dh=1, dw=1)
    with pytest.raises(EmberError, match=r"instruction 1 \(conv, node 'layer1'\): groups = 4 must divide ic = 6 and"):
        simulator([load(0, tokens=T.PUSH_NEXT), bad])


def test_program_must_end_with_end():
    model = simulator([load(0)]).ebin
    with pytest.raises(EmberError, match=r"^CODE: a program must end with exactly one END instruction$"):
        Simulator(Ebin(model.arch, model.program[:-1], model.const, model.memmap, model.iodesc, model.debug[:-1]))


def test_engines_overlap_through_tokens():
    """Double buffering: loads of tile k+1 overlap compute of tile k, so the total is
    well below the sum of all instruction costs, and each engine is in program order."""
    program = []
    for k in range(4):
        buf = 128 * (k % 2)
        refill = k < 2  # tiles k and k + 2 share buffers
        program.append(load(buf, dram=16 * k, tokens=T.PUSH_NEXT | (0 if refill else T.POP_NEXT)))
        program.append(copy(buf, 64 + buf, T.POP_PREV | T.PUSH_NEXT | (T.PUSH_PREV if refill else T.POP_NEXT)))
        program.append(store(64 + buf, dram=512 if k == 3 else 600 + 16 * k, tokens=T.POP_PREV | (T.PUSH_PREV if refill else 0)))
    sim = simulator(program)
    sched = sim.schedule
    total_busy = int(sched.cost.sum())
    assert sched.total_cycles < total_busy
    for e in range(3):
        mine = np.flatnonzero(sched.engines == e)
        assert np.all(sched.start[mine][1:] >= sched.end[mine][:-1])
    assert sim.run({})["y"].tolist() == list(range(48, 64))
    stats = sim.stats()
    assert stats.instructions == {"END": 1, "LOAD": 4, "POOL": 4, "STORE": 4}
    assert stats.dram_read_bytes == stats.dram_write_bytes == 64
    assert stats.total_cycles == sched.total_cycles


def test_conv_cycles_follow_the_mac_array():
    conv = isa.make(Opcode.CONV, ih=10, iw=10, ic=32, oc=40, groups=1, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1)
    # 8x8 outputs, ceil(288 / 16) = 18 row passes, ceil(40 / 16) = 3 column passes
    assert cycles(conv, ARCH) == ARCH.compute_setup_cycles + 64 * 18 * 3
    dw = isa.make(Opcode.CONV, ih=10, iw=10, ic=32, oc=32, groups=32, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1)
    assert cycles(dw, ARCH) == ARCH.compute_setup_cycles + 64 * 1 * 2
    dma = load(0, n=100)
    assert cycles(dma, ARCH) == ARCH.dma_setup_cycles + 7


# ----------------------------------------------------- POST on the store engine


def conv1x1(inp, acc, tokens, pixels=64, n=16):
    """CONV of a [1, pixels, n] tile with n 1x1 filters into `acc`."""
    return isa.make(Opcode.CONV, tokens, inp=inp, wgt=0, acc=acc, ih=1, iw=pixels, ic=n, oc=n, groups=1,
                    kh=1, kw=1, sh=1, sw=1, dh=1, dw=1)  # fmt: skip


def post(acc, out, tokens, pixels=64, n=16):
    return isa.make(Opcode.POST, tokens, acc=acc, par=0, out=out, count=pixels, channels=n, act_min=-128, act_max=127)


def two_tiles(acc1, post0_tokens, conv1_tokens, conv0_tokens=T.POP_PREV | T.PUSH_NEXT):
    """Two 64-pixel tiles of a 1x1 conv: LOADs, then per tile CONV (compute), POST and
    STORE (store engine). Tile 0 accumulates at 0, tile 1 at `acc1`."""
    tile = (1, 64, 16)
    strides = dict(stride0=1024, stride1=16, stride2=1)
    loads = [
        load(0, buf=Buffer.WGT, n=256),
        load(0, buf=Buffer.PAR, n=48),
        isa.make(Opcode.LOAD, T.PUSH_NEXT, dram=0, sram=0, buf=Buffer.INP, **strides,
                 size0=1, size1=64, size2=16),  # fmt: skip
        isa.make(Opcode.LOAD, T.PUSH_NEXT, dram=1024, sram=1024, buf=Buffer.INP, **strides,
                 size0=1, size1=64, size2=16),  # fmt: skip
    ]
    stores = [isa.make(Opcode.STORE, 0, dram=4096 + 1024 * k, sram=8192 + 1024 * k, buf=Buffer.INP, **strides,
                       size0=tile[0], size1=tile[1], size2=tile[2]) for k in range(2)]  # fmt: skip
    return [
        *loads,
        conv1x1(0, 0, conv0_tokens),
        post(0, 8192, post0_tokens),
        stores[0],
        conv1x1(1024, acc1, conv1_tokens),
        post(acc1, 9216, T.POP_PREV),
        stores[1],
    ]


def test_post_on_the_store_engine_overlaps_the_next_conv():
    """Scale-on-store: with the two tiles in different accumulator halves, the store
    engine requantizes tile 0 while the compute engine convolves tile 1."""
    assert isa.FORMATS[Opcode.POST].engine == isa.Engine.STORE
    sched = simulator(two_tiles(32768, T.POP_PREV, T.POP_PREV | T.PUSH_NEXT), dram_size=8192).schedule
    conv0, post0, conv1 = 4, 5, 7
    assert sched.engines[post0] == isa.Engine.STORE and sched.engines[conv1] == isa.Engine.COMPUTE
    assert sched.start[post0] == sched.end[conv0]
    assert sched.start[post0] < sched.end[conv1] and sched.start[conv1] < sched.end[post0]


def test_post_without_a_token_from_its_conv_is_a_race():
    with pytest.raises(EmberError) as err:
        simulator(two_tiles(32768, 0, T.POP_PREV | T.PUSH_NEXT, conv0_tokens=T.POP_PREV), dram_size=8192)
    assert str(err.value) == (
        "t.ebin: instruction 5 (post, node 'layer5'): acc [0, 1024) overlaps memory used by t.ebin: instruction 4"
        " (conv, node 'layer4') on the compute engine with no dependency-token path between them; add a push/pop pair"
    )


def test_one_accumulator_tile_needs_a_store_to_compute_token_and_serializes():
    """Without ping-pong, the next CONV overwrites the accumulator the POST still reads:
    a race unless the POST pushes a token back, and then the two cannot overlap."""
    with pytest.raises(EmberError, match=r"^t.ebin: instruction 7 \(conv, node 'layer7'\): acc \[0, 1024\) overlaps"
                                         r" memory used by t.ebin: instruction 5 \(post, node 'layer5'\) on the store"
                                         r" engine"):  # fmt: skip
        simulator(two_tiles(0, T.POP_PREV, T.POP_PREV | T.PUSH_NEXT), dram_size=8192)
    sched = simulator(two_tiles(0, T.POP_PREV | T.PUSH_PREV, T.POP_PREV | T.POP_NEXT | T.PUSH_NEXT),
                      dram_size=8192).schedule  # fmt: skip
    assert sched.start[7] == sched.end[5]
