"""Dataflow over a lowered function: the guards and locks of each instruction.

A guard is a branch atom with the polarity of the edge taken; an
instruction's guards are the ones that hold on every path to it (a must
analysis, so early returns, gotos and loops need no special case). Locks
are the ones held on every path: lock calls, scoped guards (whose
constructor the `guard_lock` callback reads) and lockdep assertions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kaudit.ir.names import lock_key
from kaudit.ir.nodes import Assign, Binary, Branch, Call, CallOp, Cleanup, Const, Expr, Function, Instr, LockAssert
from kaudit.kernel_api import LOCK_ACQUIRE, LOCK_RELEASE

GuardLock = Callable[[Call], "tuple[str, str] | None"]  # scoped-guard constructor -> (lock, mode)


@dataclass(frozen=True, slots=True)
class Guard:
    """The atom, the polarity it has on this path, and the C condition
    (`Branch.source`) it belongs to."""

    atom: Expr
    polarity: bool
    source: int


@dataclass(frozen=True, slots=True)
class Event:
    """An instruction with what holds whenever it runs."""

    function: Function
    instr: Instr
    guards: tuple[Guard, ...]
    locks: tuple[str, ...]  # lock keys held
    loops: tuple[int, ...]  # enclosing loop ids
    sides: tuple[tuple[int, bool], ...]  # enclosing if-bodies (Block.sides)

    @property
    def line(self) -> int:
        return self.instr.line

    @property
    def call(self) -> Call | None:
        return self.instr.call if isinstance(self.instr, CallOp) else None


def step(instr: Instr) -> int | None:
    """+c / -c for `x = x + c` and `x = x - c` (also ++, --, +=, -=), else None."""
    if not isinstance(instr, Assign) or not isinstance(instr.value, Binary):
        return None
    value = instr.value
    if value.op in ("+", "-") and value.left == instr.target and isinstance(value.right, Const) \
            and isinstance(value.right.value, int):
        return value.right.value if value.op == "+" else -value.right.value
    return None


def _order(function: Function) -> list[int]:
    """Blocks in reverse postorder from the entry."""
    seen, order, stack = {0}, [], [(0, iter(function.successors(function.blocks[0])))]
    while stack:
        node, successors = stack[-1]
        for nxt in successors:
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, iter(function.successors(function.blocks[nxt]))))
                break
        else:
            order.append(node)
            stack.pop()
    return order[::-1]


def _meet(a: tuple | None, b: tuple) -> tuple:
    if a is None:
        return b
    keep = set(b)
    return tuple(x for x in a if x in keep)


def block_guards(function: Function) -> list[tuple[Guard, ...]]:
    """The guards holding on entry to each block."""
    preds: dict[int, list[tuple[int, tuple[Guard, ...]]]] = {b.id: [] for b in function.blocks}
    for block in function.blocks:
        term = block.term
        if isinstance(term, Branch) and term.then != term.orelse:
            preds[term.then].append((block.id, (Guard(term.cond, True, term.source),)))
            preds[term.orelse].append((block.id, (Guard(term.cond, False, term.source),)))
        else:
            for nxt in function.successors(block):
                preds[nxt].append((block.id, ()))
    order = _order(function)
    state: list[tuple[Guard, ...] | None] = [None] * len(function.blocks)
    state[0] = ()
    changed = True
    while changed:
        changed = False
        for b in order[1:]:
            new = None
            for p, edge in preds[b]:
                if state[p] is not None:
                    new = _meet(new, state[p] + tuple(g for g in edge if g not in state[p]))
            if new is not None and new != state[b]:
                state[b] = new
                changed = True
    return [s or () for s in state]


def lock_moves(instr: Instr, guard_lock: GuardLock) -> list[tuple[Expr, bool]]:
    """(lock object, taken?) for what an instruction itself does to the locks held: a lock or unlock
    call, a scoped guard's constructor, the end of its scope. The one reading of lock instructions."""
    if isinstance(instr, CallOp):
        call = instr.call
        name = call.callee or ""
        if (name in LOCK_ACQUIRE or name in LOCK_RELEASE) and call.args:
            return [(call.args[0], name in LOCK_ACQUIRE)]
        if instr.result is not None and instr.result.scope == "local" and guard_lock(call) is not None:
            return [(call.args[0], True)]
    elif isinstance(instr, Cleanup) and guard_lock(instr.init) is not None:
        return [(instr.init.args[0], False)]
    return []


class LockTracker:
    """Which locks an instruction takes or drops."""

    def __init__(self, guard_lock: GuardLock) -> None:
        self.guard_lock = guard_lock

    def apply(self, held: tuple[str, ...], instr: Instr) -> tuple[str, ...]:
        if isinstance(instr, LockAssert):
            return _add(held, lock_key(instr.lock))
        for lock, taken in lock_moves(instr, self.guard_lock):
            key = lock_key(lock)
            held = _add(held, key) if taken else tuple(x for x in held if x != key)
        return held


def _add(held: tuple[str, ...], lock: str) -> tuple[str, ...]:
    return held if lock in held else (*held, lock)


def block_locks(function: Function, tracker: LockTracker) -> list[tuple[str, ...]]:
    """The locks held on entry to each block (on every path)."""
    order = _order(function)
    entry: list[tuple[str, ...] | None] = [None] * len(function.blocks)
    entry[0] = ()
    changed = True
    while changed:
        changed = False
        for b in order:
            held = entry[b]
            if held is None:
                continue
            block = function.blocks[b]
            for instr in block.instrs:
                held = tracker.apply(held, instr)
            for nxt in function.successors(block):
                new = _meet(entry[nxt], held)
                if new != entry[nxt]:
                    entry[nxt] = new
                    changed = True
    return [e or () for e in entry]


def events(function: Function, tracker: LockTracker) -> list[Event]:
    """Every instruction of the function with its guards, locks and loops."""
    guards = block_guards(function)
    locks = block_locks(function, tracker)
    out = []
    for block in function.blocks:
        held = locks[block.id]
        for instr in block.instrs:
            out.append(Event(function, instr, guards[block.id], held, block.loops, block.sides))
            held = tracker.apply(held, instr)
    return out
