"""Dependency tokens: matching, deadlock and race checks, and the cycle schedule.

The three engines (load, compute, store) each run their instructions in program order.
Four FIFO token queues connect neighbours, as in VTA: load->compute, compute->load,
compute->store, store->compute. An instruction pops its tokens before it starts and pushes
after it finishes. Since each queue has one producer and one consumer engine, the k-th pop
of a queue receives the k-th push: the whole synchronisation is static.

`schedule` checks that every pop has a push and every push a pop, that no engine waits on
itself in a cycle (deadlock), and that any two instructions of different engines that touch
overlapping memory, one of them writing, are ordered by a path of program order and
tokens. It then times every instruction (an engine starts an instruction when the engine
is free and its tokens have arrived) and gives an execution order consistent with that
timing; since all conflicting accesses are ordered, executing in that order gives the
result of any legal interleaving.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ember.support.diagnostics import EmberError
from ember.target.arch import Arch
from ember.target.cost import cycles
from ember.target.isa import Engine, Instruction, Token
from ember.target.program import SPACE_NAMES, Access

# queue -> (pushing engine, push flag, popping engine, pop flag)
QUEUES = {
    "load->compute": (Engine.LOAD, Token.PUSH_NEXT, Engine.COMPUTE, Token.POP_PREV),
    "compute->load": (Engine.COMPUTE, Token.PUSH_PREV, Engine.LOAD, Token.POP_NEXT),
    "compute->store": (Engine.COMPUTE, Token.PUSH_NEXT, Engine.STORE, Token.POP_PREV),
    "store->compute": (Engine.STORE, Token.PUSH_PREV, Engine.COMPUTE, Token.POP_NEXT),
}


@dataclass(frozen=True)
class Schedule:
    """Cycle timing of every instruction and an execution order that respects it."""

    order: list[int]
    start: np.ndarray
    end: np.ndarray
    cost: np.ndarray
    engines: np.ndarray

    @property
    def total_cycles(self) -> int:
        return int(self.end.max()) if self.end.size else 0


def _token_edges(program: Sequence[Instruction], describe: Callable[[int], str]) -> list[list[int]]:
    """For each instruction, the instructions whose pushed tokens it pops."""
    waits: list[list[int]] = [[] for _ in program]
    for queue, (push_engine, push_flag, pop_engine, pop_flag) in QUEUES.items():
        pushes = [i for i, insn in enumerate(program) if insn.engine == push_engine and insn.tokens & push_flag]
        pops = [i for i, insn in enumerate(program) if insn.engine == pop_engine and insn.tokens & pop_flag]
        if len(pops) > len(pushes):
            i = pops[len(pushes)]
            raise EmberError(f"{describe(i)}: pops a token from queue {queue} that is never pushed (deadlock)")
        if len(pushes) > len(pops):
            i = pushes[len(pops)]
            raise EmberError(f"{describe(i)}: pushes a token to queue {queue} that is never popped")
        for push, pop in zip(pushes, pops, strict=True):
            waits[pop].append(push)
    return waits


def schedule(
    program: Sequence[Instruction],
    footprints: Sequence[Sequence[Access]],
    arch: Arch,
    describe: Callable[[int], str],
) -> Schedule:
    """Check the token discipline and memory ordering; time the program.

    Raises EmberError on an unmatched token, a deadlock, or a race between engines."""
    n = len(program)
    engines = np.array([int(insn.engine) for insn in program], dtype=np.int64)
    cost = np.array([cycles(insn, arch) for insn in program], dtype=np.int64)
    waits = _token_edges(program, describe)

    # Predecessors: the previous instruction of the same engine, and the token pushers.
    preds: list[list[int]] = [list(w) for w in waits]
    succs: list[list[int]] = [[] for _ in range(n)]
    position = np.zeros(n, dtype=np.int64)  # 1-based position within its engine
    last = [-1, -1, -1]
    for i, e in enumerate(engines.tolist()):
        if last[e] >= 0:
            preds[i].append(last[e])
        position[i] = (position[last[e]] if last[e] >= 0 else 0) + 1
        last[e] = i
    for i, ps in enumerate(preds):
        for p in ps:
            succs[p].append(i)

    # Kahn's algorithm, lowest index first: timing, vector clocks, deadlock detection.
    pending = np.array([len(ps) for ps in preds], dtype=np.int64)
    ready = [i for i in range(n) if pending[i] == 0]
    heapq.heapify(ready)
    start = np.zeros(n, dtype=np.int64)
    end = np.zeros(n, dtype=np.int64)
    clock = np.zeros((n, 3), dtype=np.int64)  # clock[i, e]: last position of engine e that happens before i
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        ps = preds[i]
        if ps:
            start[i] = end[ps].max()
            clock[i] = clock[ps].max(axis=0)
        clock[i, engines[i]] = position[i]
        end[i] = start[i] + cost[i]
        order.append(i)
        for s in succs[i]:
            pending[s] -= 1
            if pending[s] == 0:
                heapq.heappush(ready, s)
    if len(order) < n:
        stuck = min(set(range(n)) - set(order))
        raise EmberError(f"{describe(stuck)}: waits for a token that can only be pushed after it runs (deadlock)")

    _check_races(program, footprints, order, engines, position, clock, describe)
    order.sort(key=lambda i: (start[i], i))
    return Schedule(order, start, end, cost, engines)


def _check_races(
    program: Sequence[Instruction],
    footprints: Sequence[Sequence[Access]],
    order: Sequence[int],
    engines: np.ndarray,
    position: np.ndarray,
    clock: np.ndarray,
    describe: Callable[[int], str],
) -> None:
    """Report two instructions of different engines that touch overlapping memory (one
    writing) without a happens-before path. Works on compressed coordinates: every access
    boundary of a memory space becomes a segment edge, so the check is exact and its
    memory is proportional to the program, not to DRAM."""
    bounds: dict[int, np.ndarray] = {}
    for space in {acc.space for accs in footprints for acc in accs}:
        edges = [x for accs in footprints for acc in accs if acc.space == space for x in (acc.start, acc.stop)]
        bounds[space] = np.unique(edges)
    # last[space][kind][engine]: per segment, the engine position of its last writer/reader
    last = {
        space: np.zeros((2, 3, max(len(b) - 1, 1)), dtype=np.int64) for space, b in bounds.items()
    }
    engine_members = [np.flatnonzero(engines == e) for e in range(3)]
    for i in order:
        e = engines[i]
        for acc in footprints[i]:
            if acc.start == acc.stop:
                continue
            seg = bounds[acc.space]
            lo = int(np.searchsorted(seg, acc.start))
            hi = int(np.searchsorted(seg, acc.stop))
            table = last[acc.space]
            kinds = (0, 1) if acc.write else (0,)  # a write conflicts with writes and reads
            for other in range(3):
                if other == e:
                    continue
                for kind in kinds:
                    latest = int(table[kind, other, lo:hi].max())
                    if latest > clock[i, other]:
                        j = int(engine_members[other][latest - 1])
                        raise EmberError(
                            f"{describe(i)}: {SPACE_NAMES[acc.space]} [{acc.start}, {acc.stop}) overlaps memory"
                            f" used by {describe(j)} on the {Engine(other).name.lower()} engine with no"
                            " dependency-token path between them; add a push/pop pair"
                        )
            table[1 if not acc.write else 0, e, lo:hi] = position[i]
