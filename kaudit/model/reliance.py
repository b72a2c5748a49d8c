"""What a counterexample relies on: the guesses on its way.

Some values the model makes up are guesses about code in the tree rather
than the environment's choice: what a summarised call returns or writes,
and memory it cannot name (`*(apic->regs + 848)`); their input ops name
them. A trace whose path turns on one (a branch, a decision, the result of
a create reads it, through locals and state) shows what may happen, not
what does: the verdict is inconclusive, not a confirmation.
"""

from __future__ import annotations

from kaudit.ir.nodes import Expr
from kaudit.model.bookkeeping import op_reads, op_writes, reads
from kaudit.model.code import Loc, Op

Cell = tuple  # ("local", thread, slot) | ("cpu", thread or None, slot) | ("vm", slot)


def _cell(loc: Loc, thread: int) -> Cell:
    if loc.kind == "local":
        return ("local", thread, loc.slot)
    if loc.kind == "mine":
        return ("cpu", thread, loc.slot)
    if loc.kind == "cpu":  # another vCPU's field: which one is a value the trace does not keep
        return ("cpu", None, loc.slot)
    return ("vm", loc.slot)


class Reliance:
    """Taint of the guessed values, step by step along one trace."""

    def __init__(self, decided: dict[int, Expr | None], result_slot: int) -> None:
        self.decided = decided  # action id -> the value its decision reads
        self.result_slot = result_slot
        self.taint: dict[Cell, frozenset[str]] = {}
        self.relied: list[str] = []

    def _read(self, thread: int, locs: list[Loc]) -> frozenset[str]:
        out: set[str] = set()
        for loc in locs:
            cell = _cell(loc, thread)
            if cell[0] == "cpu" and cell[1] is None:  # another vCPU's field: any vCPU's write of it
                out |= {g for c, t in self.taint.items() if c[0] == "cpu" and c[2] == loc.slot for g in t}
            else:
                out |= self.taint.get(cell, frozenset())
                if cell[0] == "cpu":
                    out |= self.taint.get(("cpu", None, loc.slot), frozenset())
        return frozenset(out)

    def call(self, thread: int) -> None:
        """An entry starts: its locals are fresh."""
        self.taint = {c: t for c, t in self.taint.items() if not (c[0] == "local" and c[1] == thread)}

    def step(self, thread: int, op: Op, creating: bool = False) -> None:
        """One op run by `thread`; `creating`: in a create entry, whose result decides its failure."""
        if op.kind in ("branch", "decide", "end"):
            locs = op_reads(op)
            if op.kind == "decide":
                locs = locs + reads(self.decided.get(op.args[0]))
            elif op.kind == "end" and creating:
                locs = [*locs, Loc("local", self.result_slot)]
            self.relied += [g for g in sorted(self._read(thread, locs)) if g not in self.relied]
            return
        if op.kind == "input":
            tainted = frozenset({op.args[4]}) if op.args[4] else frozenset()
        else:
            tainted = self._read(thread, op_reads(op))
        for loc in op_writes(op):
            cell = _cell(loc, thread)
            if tainted:
                self.taint[cell] = tainted
            else:
                self.taint.pop(cell, None)
