"""The lowered program: every function's CFG and events, made once and shared.

Rules and model both read functions through this object, so a function is
lowered once per run whoever asks first.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

from kaudit.ir.effects import Effects
from kaudit.ir.flow import Event, LockTracker, events
from kaudit.ir.lower import embedding_paths, lower_function
from kaudit.ir.names import lock_key, subexprs
from kaudit.ir.nodes import Assign, Call, CallOp, FuncRef, Function, Var
from kaudit.ir.slots import give_slots, own_slots
from kaudit.kernel_api import LOCK_ACQUIRE
from kaudit.program import Program


class LoweredProgram:
    def __init__(self, program: Program) -> None:
        self.program = program
        self._functions: dict[str, Function] = {}
        self._unslotted: dict[str, Function] = {}  # lowered to find own_slots, not yet given them
        self._events: dict[str, list[Event]] = {}
        self._specialised: dict[tuple, list[Event]] = {}
        self.tracker = LockTracker(self.guard_lock)
        self.paths = embedding_paths(program.structs)

    def function(self, fid: str) -> Function:
        if fid not in self._functions:
            function = self._unslotted.pop(fid, None) or self._lower(fid)
            give_slots(function, self.own_slots)
            self._functions[fid] = function
        return self._functions[fid]

    def _lower(self, fid: str, bound: dict[str, int] | None = None) -> Function:
        return lower_function(fid, self.program.functions[fid], bound, self.paths)

    @cached_property
    def own_slots(self) -> frozenset[str]:
        """VM storage every vCPU reaches only at its own identity (kaudit.ir.slots): a question about the
        whole program, so every function is lowered to answer it before any is handed out."""
        with _no_collection():
            self._unslotted = {fid: self._lower(fid) for fid in sorted(self.program.functions)}
        return own_slots(self._unslotted.values())

    def events(self, fid: str) -> list[Event]:
        if fid not in self._events:
            self._events[fid] = events(self.function(fid), self.tracker)
        return self._events[fid]

    def specialised_events(self, fid: str, bound: dict[str, int]) -> list[Event]:
        """The events of a function called with constants for some parameters
        (those it never assigns): guards and paths as that caller sees them."""
        assigned = {instr.target.name for _, instr in self.function(fid).instructions()
                    if isinstance(instr, Assign) and isinstance(instr.target, Var) and instr.target.scope == "param"}
        bound = {name: value for name, value in bound.items() if name not in assigned}
        if not bound:
            return self.events(fid)
        key = (fid, *sorted(bound.items()))
        if key not in self._specialised:
            function = self._lower(fid, bound)
            give_slots(function, self.own_slots)
            self._specialised[key] = events(function, self.tracker)
        return self._specialised[key]

    @cached_property
    def effects(self) -> Effects:
        """What every function writes and reads, transitively; made when first asked for."""
        return Effects(self)

    @cached_property
    def all_events(self) -> dict[str, list[Event]]:
        """Every function's events (what the rules search), in function-id order."""
        with _no_collection():
            return {fid: self.events(fid) for fid in sorted(self.program.functions)}

    @cached_property
    def address_taken(self) -> frozenset[str]:
        """Names of functions used as values (a table entry, a callback): called by more than their name."""
        return self.escaped | {entry["function"] for table in self.program.tables for entry in table["entries"]}

    @cached_property
    def escaped(self) -> frozenset[str]:
        """Names of functions the code uses as values (a callback passed or stored): callable from
        anywhere. A table entry is not one: the calls of its slot are the graph's edges to it."""
        names: set[str] = set()
        for fid in self.program.functions:
            function = self.function(fid)
            exprs = [e for call in function.temps.values() for e in call.args]
            for block in function.blocks:
                for instr in block.instrs:
                    if isinstance(instr, Assign):
                        exprs += (instr.target, instr.value)
                    elif isinstance(instr, CallOp):
                        exprs += instr.call.args
                exprs += [e for e in (getattr(block.term, "cond", None), getattr(block.term, "value", None)) if e]
            names |= {e.name for expr in exprs for e in subexprs(expr) if isinstance(e, FuncRef)}
        return frozenset(names)

    def guard_lock(self, call: Call) -> tuple[str, str] | None:
        """(lock, mode) a scoped guard takes: `guard(x)(&lock)` declares a
        variable initialised by `class_x_constructor(&lock)`, whose body (in
        the tree) takes the lock it is given."""
        if not call.callee or not call.args:
            return None
        for fid in self.program.functions_named(call.callee):
            for _, instr in self.function(fid).instructions():
                if isinstance(instr, CallOp) and instr.call.callee in LOCK_ACQUIRE:
                    return lock_key(call.args[0]), LOCK_ACQUIRE[instr.call.callee]
        return None

    def targets(self, caller: str, call: Call) -> list[str]:
        """The function ids a call can reach (direct, or through the tree's tables)."""
        via = call.via
        if via is None:
            return self.program.resolve(caller, call.callee)[1]
        return self.program.resolve(caller, call.callee, via.kind, via.name, via.record, via.field)[1]


@contextmanager
def _no_collection() -> Iterator[None]:
    """Building many new, acyclic objects: a collection would rescan every fact for nothing."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
