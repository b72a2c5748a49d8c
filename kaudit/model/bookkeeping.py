"""The protocol's own bookkeeping, and where vCPUs decide they need the key.

Bookkeeping is state the protocol keeps about who needs the key: the
inhibit word itself, counts of requests (state moved by a constant whose
value decides the key's bit: `atomic_add_return(...) == 1`, `!!count`,
`set_or_clear(&new, KEY, atomic_read(&count))`) and flags (state a test
on the way to an action reads and the path past the test writes before it
acts: the vCPU records that it has asked, whatever the value written).

An action is where a vCPU acts on the key: an API call with the key, or an
update of one of its counts. A vCPU's demand is decided there, or, when a
test of bookkeeping makes the path skip the action, by a dry run of the
path as if every bookkeeping test had let it through: every other
condition on the way (`!is_guest_mode(vcpu)`, the vCPU's own state) still
decides. So a request skipped because another vCPU's flag is set, or a
flag that was never reset, still creates demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kaudit.ir.evaluate import evaluate, fold, truth_operand
from kaudit.ir.names import subexprs
from kaudit.ir.nodes import Binary, Expr
from kaudit.model.code import Action, Loc, Op
from kaudit.model.flat import decided_by, deciders, post_dominators, reachable, reaching, successors

State = tuple[str, int]  # ("vm" | "cpu", slot)


def reads(expr: Expr | None) -> list[Loc]:
    return [e for e in subexprs(expr) if isinstance(e, Loc)] if expr is not None else []


def op_reads(op: Op) -> list[Loc]:
    kind, args = op.kind, op.args
    if kind == "set":
        return reads(args[1]) + _ref_of(args[0])
    if kind == "atomic":
        return [args[1], *reads(args[2]), *reads(args[4])]
    if kind == "bit":
        return [args[0], *reads(args[1]), *reads(args[2])]
    if kind == "branch":
        return reads(args[0])
    if kind == "each":
        return [args[0]]
    if kind == "input" and args[3]:  # a repeated read keeps the value of the first
        return [args[0]]
    if kind in ("acquire", "release") and isinstance(args[-1], Loc) and args[-1].kind == "local":
        return [args[-1]]  # the other vCPU whose lock it is
    return []


def op_writes(op: Op) -> list[Loc]:
    kind, args = op.kind, op.args
    if kind in ("set", "input"):
        return [args[0]] if args[0] is not None else []
    if kind == "atomic":
        return [x for x in (args[0], args[1]) if x is not None]
    if kind == "bit":
        return [args[0]] + ([args[3]] if args[3] is not None else [])
    if kind in ("each", "pick"):
        return [args[0]]
    return []


def _ref_of(loc: Loc) -> list[Loc]:
    return [Loc("local", loc.ref)] if isinstance(loc, Loc) and loc.ref >= 0 else []


def state_of(loc: Loc) -> State | None:
    if loc.kind == "vm":
        return ("vm", loc.slot)
    if loc.kind in ("mine", "cpu"):
        return ("cpu", loc.slot)
    return None


class Dataflow:
    """Facts about linked code used by the decisions and the slicer."""

    def __init__(self, code: list[Op]) -> None:
        self.code = code
        self.constants = self._constants()
        self.taint = self._taint()

    def _constants(self) -> dict[int, int]:
        """Local slots assigned exactly once, with a value that folds."""
        defs: dict[int, list[Op]] = {}
        for op in self.code:
            for loc in op_writes(op):
                if loc.kind == "local":
                    defs.setdefault(loc.slot, []).append(op)
        found: dict[int, int] = {}
        changed = True
        while changed:
            changed = False
            for slot, ops in defs.items():
                if slot in found or len(ops) != 1 or ops[0].kind != "set":
                    continue
                value = self.fold(ops[0].args[1], found)
                if isinstance(value, int):
                    found[slot] = value
                    changed = True
        return found

    def fold(self, expr: Expr, constants: dict[int, int] | None = None) -> int | None:
        constants = self.constants if constants is None else constants

        def leaf(e: Expr) -> int | None:
            return constants.get(e.slot) if isinstance(e, Loc) and e.kind == "local" else None

        value = evaluate(expr, leaf)
        return value if isinstance(value, int) else None

    def _taint(self) -> dict[int, set[State]]:
        """Per local slot: the shared state its value may come from."""
        taint: dict[int, set[State]] = {}
        changed = True
        while changed:
            changed = False
            for op in self.code:
                sources = self.state_read(op_reads(op), taint) if op.kind in ("set", "atomic", "bit") else set()
                for loc in op_writes(op):
                    if loc.kind == "local" and not sources <= taint.setdefault(loc.slot, set()):
                        taint[loc.slot] |= sources
                        changed = True
        return taint

    def state_read(self, locs: list[Loc], taint: dict[int, set[State]] | None = None) -> set[State]:
        taint = self.taint if taint is None else taint
        out: set[State] = set()
        for loc in locs:
            state = state_of(loc)
            if state is not None:
                out.add(state)
            elif loc.kind == "local":
                out |= taint.get(loc.slot, set())
        return out

    def step(self, op: Op) -> int | None:
        """The constant a count-like update moves its target by."""
        if op.kind == "atomic":
            return self.fold(op.args[2])
        if op.kind == "set" and isinstance(op.args[1], Binary) and op.args[1].op in ("+", "-") \
                and op.args[1].left == op.args[0] and state_of(op.args[0]) is not None:
            amount = self.fold(op.args[1].right)
            return None if amount is None else (amount if op.args[1].op == "+" else -amount)
        return None


@dataclass
class Bookkeeping:
    word: State
    counts: set[State] = field(default_factory=set)
    flags: set[State] = field(default_factory=set)

    @property
    def all(self) -> set[State]:
        return {self.word, *self.counts, *self.flags}


def diverting(code: list[Op], goals: list[int]) -> dict[int, tuple[int, int]]:
    """Branches that can skip the goals: pc -> (successor that still reaches one, the other)."""
    can = reaching(code, goals)
    out = {}
    for pc, op in enumerate(code):
        if op.kind in ("branch", "each"):
            a, b = successors(code, pc)
            if (a in can) != (b in can):
                out[pc] = (a, b) if a in can else (b, a)
    return out


def find_bookkeeping(flow: Dataflow, word: State, points: list[int], key_value: int) -> Bookkeeping:
    code = flow.code
    books = Bookkeeping(word)
    decisive: set[State] = set()  # state the key's actions depend on
    for pc in diverting(code, points):
        decisive |= flow.state_read(reads(code[pc].args[0]) if code[pc].kind == "branch" else [])
    for op in code:
        if op.kind == "bit" and flow.fold(op.args[1]) == key_value:
            decisive |= flow.state_read(reads(op.args[2]))
    for pc, op in enumerate(code):
        if pc in points:
            decisive |= flow.state_read(op_reads(op))
    moved = {state_of(op_writes(op)[-1]) for op in code if op.kind in ("atomic", "set")
             and flow.step(op) not in (None, 0) and op_writes(op) and state_of(op_writes(op)[-1])}
    books.counts = {s for s in moved if s is not None and s[0] == "vm" and s in decisive} - {word}
    count_pcs = [pc for pc, op in enumerate(code) if op.kind in ("atomic", "set") and not op.api
                 and op_writes(op) and state_of(op_writes(op)[-1]) in books.counts]
    goals = points + count_pcs
    on_way = reaching(code, goals)
    marked = {op.args[3].slot: state_of(op.args[0]) for op in code if op.kind == "bit" and op.args[3] is not None}
    for pc, (toward, away) in diverting(code, goals).items():
        if code[pc].kind != "branch":
            continue
        tested = flow.state_read(reads(code[pc].args[0])) - books.counts - {word}
        # on the way to the action, or after it on the way taken only (the flag written after the count)
        taken = reachable(code, [toward])
        region = (taken & on_way) | (taken - reachable(code, [away]))
        for inner in region:
            books.flags |= tested & {state_of(loc) for loc in op_writes(code[inner])}
        # a test of what test_and_set_bit() returned: the bit was marked in the step that read it
        books.flags |= tested & {marked[loc.slot] for loc in reads(code[pc].args[0]) if loc.kind == "local"
                                 and loc.slot in marked}
    return books


def direction_of(flow: Dataflow, books: Bookkeeping, value: Expr | None, constant: str | None,
                 loops: dict[int, tuple[int, int]]) -> str:
    """How an action decides: request / release (fixed), value (its truth),
    contribution (a disjunction over every vCPU: this vCPU's part), none
    (the value is the bookkeeping itself: its counts decide), or mixed."""
    if constant is not None:
        return constant
    if value is None:
        return "none"
    folded = flow.fold(value)
    if folded is not None:
        return "request" if folded else "release"
    if truth_of_local(value) in loops:
        return "contribution"
    sources = flow.state_read(reads(value))
    if sources and sources <= books.all:
        return "none"
    if not sources & books.all:
        return "value"
    return "mixed"


def loop_values(code: list[Op]) -> dict[int, tuple[int, int]]:
    """Locals a loop over every vCPU only makes true: assigned a true value (`wait = true`) or counted up
    (`n++`) in its body. slot -> (pc of the loop head, iterator slot). Their truth is a disjunction over
    the vCPUs."""
    out = {}
    for pc, op in enumerate(code):
        if op.kind != "each":
            continue
        body = reachable(code, [op.args[1]]) - reachable(code, [op.args[2]]) - {pc}
        for inner in sorted(body):
            other = code[inner]
            if other.kind == "set" and other.args[0].kind == "local" and _makes_true(other.args[0], other.args[1]):
                out[other.args[0].slot] = (pc, op.args[0].slot)
    return out


def _makes_true(local: Loc, value: Expr) -> bool:
    if isinstance(value, Binary) and value.op == "+" and value.left == local:  # `n++`, `n += 2`
        step = evaluate(value.right)
        return isinstance(step, int) and step > 0
    return bool(fold(value))


def truth_of_local(value: Expr | None) -> int | None:
    """The local slot whose truth a value is (`n`, `n != 0`, `!!n`), None for any other value."""
    inner = truth_operand(value) if value is not None else None
    return inner.slot if isinstance(inner, Loc) and inner.kind == "local" else None


def actions_of(flow: Dataflow, books: Bookkeeping, points: list[tuple]) -> list[Action]:
    """Every action: the key's API calls (pc, fixed direction, value, stack,
    where) and the updates of its counts."""
    code = flow.code
    loops = loop_values(code)
    actions = []
    for pc, constant, value, stack, where, text in points:
        direction = direction_of(flow, books, value, constant, loops)
        actions.append(Action(len(actions), pc, "site", direction, stack, value, where, text))
    for pc, op in enumerate(code):
        if op.api or op.kind not in ("atomic", "set") or not op_writes(op):
            continue
        if state_of(op_writes(op)[-1]) in books.counts:
            delta = flow.step(op)
            direction = "request" if delta and delta > 0 else "release" if delta and delta < 0 else "delta"
            actions.append(Action(len(actions), pc, "count", direction, (), op.args[2] if op.kind == "atomic"
                                  else op.args[1], (op.function, op.file, op.line), op.text))
    return actions


@dataclass
class ReachingDefs:
    """Which writes of locals reach each op, for the locals written at more than one place (a local
    written once depends on that write wherever it is read)."""

    index: dict[int, int]  # pc of a write of a many-written local -> its bit
    into: list[int]  # per op, the bits of the writes that reach it

    def reaches(self, write: int, pc: int) -> bool:
        bit = self.index.get(write)
        return bit is None or bool(self.into[pc] >> bit & 1)


def reaching_local_defs(code: list[Op]) -> ReachingDefs:
    """A local's value at a read comes only from the writes that reach it (the slicer follows no
    other). Forward passes over bit sets of the many-written locals' writes, until nothing changes."""
    writes = [{loc.slot for loc in op_writes(op) if loc.kind == "local"} for op in code]
    count: dict[int, int] = {}
    for slots in writes:
        for slot in slots:
            count[slot] = count.get(slot, 0) + 1
    index: dict[int, int] = {}
    of_slot: dict[int, int] = {}
    for pc, slots in enumerate(writes):
        for slot in slots:
            if count[slot] > 1:
                index.setdefault(pc, len(index))
                of_slot[slot] = of_slot.get(slot, 0) | (1 << index[pc])
    gen = [1 << index[pc] if pc in index else 0 for pc in range(len(code))]
    kill = [0] * len(code)
    for pc, slots in enumerate(writes):
        for slot in slots:
            kill[pc] |= of_slot.get(slot, 0)
    into = [0] * (len(code) + 1)
    succ = [successors(code, pc) for pc in range(len(code))]
    changed = True
    while changed:
        changed = False
        for pc in range(len(code)):
            out = gen[pc] | (into[pc] & ~kill[pc])
            for nxt in succ[pc]:
                if out & ~into[nxt]:
                    into[nxt] |= out
                    changed = True
    return ReachingDefs(index, into)


def on_behalf(code: list[Op]) -> dict[int, int]:
    """pc -> the local holding the vCPU a move of a count there is made for: the innermost loop over every
    vCPU the move is in; else a vCPU picked (`kvm->vcpus[dest]`) whose state alone decides whether the
    move runs (`if (!test_and_set_bit(0, &target->arch.flags)) atomic_inc(...)`: the target's share)."""
    out = _loop_bodies(code)
    picks = {op.args[0].slot for op in code if op.kind == "pick"}
    if not picks:
        return out
    through: dict[int, set[int]] = {}  # local -> the picked vCPUs whose state the ops writing it read
    for op in code:
        picked = {loc.ref for loc in op_reads(op) if loc.kind == "cpu" and loc.ref in picks}
        for loc in op_writes(op):
            if loc.kind == "local":
                through.setdefault(loc.slot, set()).update(picked)
    control = deciders(code, post_dominators(code))
    for pc, op in enumerate(code):
        if pc in out or op.kind not in ("atomic", "set"):
            continue
        found: set[int] = set()
        for decider in decided_by([pc], control):
            for loc in op_reads(code[decider]):
                if loc.kind == "cpu":
                    found |= {loc.ref} & picks
                elif loc.kind == "local":  # a local written from a picked vCPU's state
                    found |= through.get(loc.slot, set())
        if len(found) == 1:
            out[pc] = found.pop()
    return out


def _loop_bodies(code: list[Op]) -> dict[int, int]:
    """pc -> the iterator slot of the innermost loop over every vCPU whose body holds it."""
    out: dict[int, tuple[int, int]] = {}  # pc -> (body size, iterator slot)
    for head, op in enumerate(code):
        if op.kind != "each":
            continue
        body = reachable(code, [op.args[1]]) - reachable(code, [op.args[2]]) - {head}  # not what it jumps out to
        for pc in body:
            if pc not in out or len(body) < out[pc][0]:
                out[pc] = (len(body), op.args[0].slot)
    return {pc: slot for pc, (_, slot) in out.items()}
