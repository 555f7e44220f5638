"""The simulator's engines on threads (`Simulator.run(threads=2 or 3)`) give the
sequential result bit for bit, raise the sequential mode's error, and neither hang nor
leave threads behind when an instruction fails. (Every `TileProgram` of tests/target
also runs in all three modes: see conftest.)"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ember.support.diagnostics import EmberError
from ember.target import isa, simulator
from ember.target.arch import load_arch
from ember.target.ebin import Ebin, parse
from ember.target.isa import Buffer, Opcode, PoolMode, Token
from ember.target.simulator import Simulator
from tests.lowering.test_real_models import MODELS, compile_shared_model

from .conftest import dense_load, dense_store, two_layer_model

T = Token
MODES = (2, 3)
TIMEOUT_S = 60


def run_in_time(call):
    """`call()` on a helper thread, failing the test instead of hanging on a deadlock."""
    result: dict[str, object] = {}

    def target():
        try:
            result["value"] = call()
        except BaseException as err:  # handed to the test below
            result["error"] = err

    before = threading.active_count()
    runner = threading.Thread(target=target, daemon=True)
    runner.start()
    runner.join(TIMEOUT_S)
    assert not runner.is_alive(), "the simulation hangs"
    assert threading.active_count() == before, "the simulation left threads running"
    if "error" in result:
        raise result["error"]
    return result["value"]


def final_state(sim: Simulator, threads: int, inputs) -> list[np.ndarray]:
    """DRAM and every on-chip buffer after one inference: all intermediate tensors too."""
    machine = simulator._Machine(sim, inputs)
    if threads == 1:
        sim._run(machine, None, None)
    else:
        run_in_time(lambda: sim._run_threaded(machine, simulator._ENGINE_GROUPS[threads]))
    return [machine.dram, *machine.buffers.values()]


@pytest.mark.parametrize("case", ["ppocrv4_det", "ppocr_mobile_v2_cls"])
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_models_end_in_the_same_state_in_every_mode(case):
    _, data = compile_shared_model(MODELS[case])
    sim = Simulator(parse(data, "model.ebin"))
    (x_desc,) = sim.ebin.iodesc["inputs"]
    inputs = {x_desc["name"]: np.random.default_rng(3).integers(-128, 128, size=x_desc["shape"]).astype(np.int8)}
    expected = final_state(sim, 1, inputs)
    outputs = sim.run(inputs, threads=1)
    for threads in MODES:
        got = final_state(sim, threads, inputs)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True)), f"threads={threads}"
        again = run_in_time(lambda threads=threads: sim.run(inputs, threads=threads))
        assert all(np.array_equal(again[name], y) for name, y in outputs.items())


def test_hand_written_model_outputs_and_dumps_agree():
    model, x, y = two_layer_model()
    sim = Simulator(model, "model.ebin")
    dumps: dict[str, np.ndarray] = {}
    sim.run({"images": x}, dump=dumps.__setitem__, threads=3)  # a dump runs sequentially
    assert dumps["y"].tolist() == y.tolist()
    for threads in (1, *MODES):
        assert run_in_time(lambda threads=threads: sim.run({"images": x}, threads=threads))["y"].tolist() == y.tolist()
    for threads in (0, 4):
        with pytest.raises(EmberError, match=f"threads must be 1, 2 or 3, not {threads}"):
            sim.run({"images": x}, threads=threads)


def failing_program() -> Simulator:
    """A POOL whose first window covers padding only (compute engine, instruction 3) and
    a POST with a negative multiplier (store engine, instruction 4), independent of each
    other and both released by the SYNC at 2: they start at the same cycle, and the POOL
    comes first in schedule order by its lower index."""
    x = np.zeros((2, 2, 4), np.int8)
    par = np.array([[0] * 4, [-1] * 4, [30] * 4], "<i4")
    program = [
        dense_load(Buffer.INP, 0, 0, (2, 2, 4)),
        dense_load(Buffer.PAR, 0, 16, (1, 1, 12), T.PUSH_NEXT),
        isa.make(Opcode.SYNC, T.POP_PREV | T.PUSH_NEXT, engine=isa.Engine.COMPUTE),
        isa.make(Opcode.POOL, T.PUSH_NEXT, inp=0, out=100, ih=2, iw=2, channels=4, kh=2, kw=2, sh=1, sw=1, pad_top=2,
                 mode=PoolMode.MAX, multiplier=1 << 30, shift=30, act_min=-128, act_max=127),  # fmt: skip
        isa.make(Opcode.POST, T.POP_PREV, acc=0, par=0, out=200, count=4, channels=4, act_min=-128, act_max=127),
        dense_store(Buffer.INP, 100, 64, (3, 1, 4), T.POP_PREV),
        isa.make(Opcode.END),
    ]
    model = Ebin(
        arch=load_arch("ember16"),
        program=program,
        const=x.tobytes() + par.tobytes(),
        memmap={"dram_size": 128, "const_offset": 0, "regions": []},
        iodesc={"inputs": [], "outputs": []},
        debug=[("test.op", f"node{i}") for i in range(len(program))],
    )
    return Simulator(model, "test.ebin")


POOL_ERROR = "test.ebin: instruction 3 (pool, node 'node3'): a pooling window covers padding only"


def test_the_first_failure_in_schedule_order_is_reported_in_every_mode(monkeypatch):
    sim = failing_program()
    pool, post = 3, 4
    assert sim.schedule.order.index(pool) < sim.schedule.order.index(post)
    with pytest.raises(EmberError) as err:
        sim.run({}, threads=1)
    assert str(err.value) == POOL_ERROR
    # the POOL fails later in wall-clock time than the POST: still the POOL is reported
    slow_pool = simulator._HANDLERS[Opcode.POOL]

    def pool_after_a_while(machine, fields):
        time.sleep(0.05)
        slow_pool(machine, fields)

    monkeypatch.setitem(simulator._HANDLERS, Opcode.POOL, pool_after_a_while)
    sim = failing_program()
    for threads in (*MODES, *MODES):
        with pytest.raises(EmberError) as err:
            run_in_time(lambda threads=threads: sim.run({}, threads=threads))
        assert str(err.value) == POOL_ERROR


def test_a_failing_load_releases_the_waiting_engines(monkeypatch):
    """The compute and store threads wait for tokens the failed LOAD never pushes."""
    model, x, _ = two_layer_model()
    real_load = simulator._HANDLERS[Opcode.LOAD]

    def load(machine, fields):
        if fields.buf == Buffer.INP:
            raise ValueError("DMA error")
        real_load(machine, fields)

    monkeypatch.setitem(simulator._HANDLERS, Opcode.LOAD, load)
    sim = Simulator(model, "model.ebin")
    for threads in (1, *MODES):
        with pytest.raises(EmberError) as err:
            run_in_time(lambda threads=threads: sim.run({"images": x}, threads=threads))
        assert str(err.value) == "model.ebin: instruction 2 (load, node 'conv1'): DMA error"


def test_an_unexpected_exception_in_a_worker_reaches_the_caller(monkeypatch):
    model, x, _ = two_layer_model()

    def broken(machine, fields):
        raise RuntimeError("kernel bug")

    monkeypatch.setitem(simulator._HANDLERS, Opcode.POST, broken)
    sim = Simulator(model, "model.ebin")
    for threads in MODES:
        with pytest.raises(RuntimeError, match="^kernel bug$"):
            run_in_time(lambda threads=threads: sim.run({"images": x}, threads=threads))
