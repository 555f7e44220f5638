"""`npu-schedule`: dependency tokens between the load, compute and store engines.

The lowering emits a sequential program: running it in program order gives the right
result. The engines, however, run concurrently, each in its own program order, so every
pair of instructions on different engines whose memory footprints overlap (one writing)
needs a happens-before path of tokens. This pass adds the fewest tokens that make every
such hazard ordered while keeping the engines free otherwise:

- Walking the program in order, each instruction's hazards are found against the latest
  conflicting instruction of each other engine (per memory segment, as the checker in
  `ember.target.schedule` does).
- A vector clock per engine says what each engine already waits for (through earlier
  tokens, transitively); a hazard already covered adds nothing.
- Otherwise the conflicting instruction pushes a token to this engine and this
  instruction pops it. Load and store have no queue between them: a SYNC on the compute
  engine relays the token (it pops from one side and pushes to the other).

Tokens only ever point forward in program order, so the result cannot deadlock. With the
ping-pong placement of tiles and accumulator halves in the lowering this lets the load
engine fetch tile k+1 and the store engine requantize (POST) and write tile k-1 while
tile k computes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, UnitAttr
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from ember.dialects.npu import NpuInstructionOp, SyncOp, op_from_instruction
from ember.target import isa
from ember.target.isa import Engine, Instruction, Opcode, Token
from ember.target.program import accesses

# (from engine, to engine) -> (push flag on the producer, pop flag on the consumer)
_QUEUE_FLAGS = {
    (Engine.LOAD, Engine.COMPUTE): (Token.PUSH_NEXT, Token.POP_PREV),
    (Engine.COMPUTE, Engine.LOAD): (Token.PUSH_PREV, Token.POP_NEXT),
    (Engine.COMPUTE, Engine.STORE): (Token.PUSH_NEXT, Token.POP_PREV),
    (Engine.STORE, Engine.COMPUTE): (Token.PUSH_PREV, Token.POP_NEXT),
}


class _Hazards:
    """For every memory segment: the last position (1-based, per engine) of each
    engine's readers and writers, over boundaries compressed from all accesses."""

    def __init__(self, footprints: list[list]):
        self.bounds: dict[int, np.ndarray] = {}
        for space in {a.space for accs in footprints for a in accs}:
            self.bounds[space] = np.unique([x for accs in footprints for a in accs if a.space == space
                                            for x in (a.start, a.stop)])  # fmt: skip
        # last[space][kind, engine, segment], kind 0 = write, 1 = read
        self.last = {s: np.zeros((2, 3, max(len(b) - 1, 1)), dtype=np.int64) for s, b in self.bounds.items()}

    def _segments(self, access) -> tuple[np.ndarray, int, int]:
        seg = self.bounds[access.space]
        return self.last[access.space], int(np.searchsorted(seg, access.start)), int(np.searchsorted(seg, access.stop))

    def conflicts(self, accs, engine: int) -> list[int]:
        """Per engine: the latest position that conflicts with `accs` (0 = none)."""
        need = [0, 0, 0]
        for a in accs:
            if a.start == a.stop:
                continue
            table, lo, hi = self._segments(a)
            kinds = (0, 1) if a.write else (0,)
            for other in range(3):
                if other != engine:
                    for kind in kinds:
                        need[other] = max(need[other], int(table[kind, other, lo:hi].max()))
        return need

    def record(self, accs, engine: int, position: int) -> None:
        for a in accs:
            if a.start == a.stop:
                continue
            table, lo, hi = self._segments(a)
            table[0 if a.write else 1, engine, lo:hi] = position


def schedule_program(program: list[Instruction]) -> tuple[list[Instruction], list[int]]:
    """The program with tokens (and relay SYNCs) added; for each output instruction, the
    index of the input instruction it stands for (-1 for an inserted SYNC)."""
    footprints = [accesses(insn) for insn in program]
    hazards = _Hazards(footprints)
    out: list[Instruction] = []
    origin: list[int] = []
    tokens: list[Token] = []
    members: list[list[int]] = [[], [], []]  # output indices of each engine's instructions
    clocks: list[np.ndarray] = []  # vector clock after each output instruction
    engine_clock = [np.zeros(3, dtype=np.int64) for _ in range(3)]

    def append(insn: Instruction, source: int) -> int:
        e = int(insn.engine)
        index = len(out)
        out.append(insn)
        origin.append(source)
        tokens.append(Token(insn.tokens))
        members[e].append(index)
        clock = engine_clock[e].copy()
        clock[e] = len(members[e])
        clocks.append(clock)
        engine_clock[e] = clock
        return index

    last_compute_push = {Engine.LOAD: -1, Engine.STORE: -1}  # output index of the latest push

    def link(producer: int, consumer_engine: Engine) -> None:
        """Token from output instruction `producer` to the next instruction of
        `consumer_engine` (whose pop flag the caller sets)."""
        push, _ = _QUEUE_FLAGS[(out[producer].engine, consumer_engine)]
        tokens[producer] |= push
        engine_clock[consumer_engine] = np.maximum(engine_clock[consumer_engine], clocks[producer])
        if out[producer].engine == Engine.COMPUTE:
            last_compute_push[consumer_engine] = producer

    def carrier(needs: list[tuple[Engine, int]], consumer: Engine) -> int | None:
        """The earliest compute instruction that already waits for every (engine,
        position) in `needs` and may still push to `consumer` (FIFO order), if any."""
        cm = members[Engine.COMPUTE]
        first = bisect.bisect_right(cm, last_compute_push[consumer])
        for engine, position in needs:
            first = max(first, bisect.bisect_left(range(len(cm)), position, key=lambda k: clocks[cm[k]][engine]))
        return cm[first] if first < len(cm) else None

    for source, insn in enumerate(program):
        e = insn.engine
        need = hazards.conflicts(footprints[source], int(e))
        pops = Token(0)
        direct: dict[Engine, int] = {}
        relay: list[tuple[Engine, int]] = []
        for other in (Engine.LOAD, Engine.COMPUTE, Engine.STORE):
            position = need[other]
            if other == e or position <= engine_clock[e][other]:
                continue
            producer = members[other][position - 1]
            if (other, e) in _QUEUE_FLAGS:
                direct[other] = producer
            else:
                relay.append((other, position))
        if relay:
            # load <-> store has no queue: the token goes through the compute engine, from
            # the first compute instruction that already waits for the producer, or else
            # from a SYNC appended now (which also follows every compute instruction so far)
            if Engine.COMPUTE in direct:
                relay.append((Engine.COMPUTE, need[Engine.COMPUTE]))
            via = carrier(relay, e)
            if via is None:
                sync_pops = Token(0)
                for other, position in relay:
                    if other != Engine.COMPUTE and position > engine_clock[Engine.COMPUTE][other]:
                        link(members[other][position - 1], Engine.COMPUTE)
                        sync_pops |= _QUEUE_FLAGS[(other, Engine.COMPUTE)][1]
                via = append(isa.make(Opcode.SYNC, sync_pops, engine=Engine.COMPUTE), -1)
            direct[Engine.COMPUTE] = via
        for other, producer in direct.items():
            link(producer, e)
            pops |= _QUEUE_FLAGS[(other, e)][1]
        index = append(insn, source)
        tokens[index] |= pops
        hazards.record(footprints[source], int(e), len(members[e]))
    return [Instruction(i.opcode, t, i.fields) for i, t in zip(out, tokens, strict=True)], origin


def schedule_module(module: ModuleOp) -> None:
    """Replace the module's npu ops by the scheduled program (tokens, relay SYNCs).
    Tokens and SYNCs already present are dropped first, so scheduling is idempotent."""
    ops = [op for op in module.ops if isinstance(op, NpuInstructionOp) and not isinstance(op, SyncOp)]
    for op in ops:
        for name in isa.TOKEN_NAMES:
            op.properties.pop(name, None)
    scheduled, origin = schedule_program([op.instruction() for op in ops])
    new_ops: list[Operation] = []
    for index, (insn, source) in enumerate(zip(scheduled, origin, strict=True)):
        if source < 0:
            # a relay belongs to the layer of the instruction it releases
            node = ops[origin[index + 1]].attributes.get("node")
            new_ops.append(op_from_instruction(insn, node.data if node else "", "npu-schedule"))
            continue
        op = ops[source]
        for name in isa.token_names(insn.tokens):
            op.properties[name] = UnitAttr()
        new_ops.append(op)
    for op in list(module.ops):
        if isinstance(op, NpuInstructionOp):
            op.detach()
            if isinstance(op, SyncOp):
                op.erase()
    module.body.block.add_ops(new_ops)


@dataclass(frozen=True)
class NpuSchedulePass(ModulePass):
    """Add dependency tokens so the engines overlap safely."""

    name = "npu-schedule"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        schedule_module(op)
