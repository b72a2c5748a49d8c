"""The values an input may take: enough to make every test on it go both ways.

An input (an unmodelled read, an opaque call's result, an entry's scalar
parameter) is chosen by the explorer from a small set read off how the
code uses it: a boolean is 0 or 1; a pointer is NULL or the object its type
says (this vCPU's, the VM's, something else); an integer is 0, 1, each mask
it is tested with and their union, and the neighbours of each constant it
is compared with. Uses are followed through the locals and the state it is
copied into.
"""

from __future__ import annotations

from kaudit.analysis.context import Scopes
from kaudit.ir.names import subexprs
from kaudit.ir.nodes import Binary, Const, CType, Expr
from kaudit.model.bookkeeping import op_reads, op_writes, state_of
from kaudit.model.code import Loc, Op
from kaudit.model.resolve import SELF, VMOBJ, Slots

OBJECT = ("obj",)
MAX_VALUES = 8
_COMPARE = frozenset({"==", "!=", "<", ">", "<=", ">="})


def _exprs(op: Op) -> list[Expr]:
    return [a for a in op.args if isinstance(a, Expr)]


def _name(loc: Loc) -> tuple:
    return ("local", loc.slot) if loc.kind == "local" else ("state", state_of(loc))


class _Uses:
    """Constants that an input meets, following the locals and state it flows into: one pass over
    the code indexes, for each local and each piece of state, the tests that mention it and the
    places its value is copied to."""

    def __init__(self, code: list[Op]) -> None:
        self.tests: dict[tuple, set[tuple[str, int]]] = {}
        self.copies: dict[tuple, list[Loc]] = {}
        for op in code:
            for expr in _exprs(op):
                for sub in subexprs(expr):
                    if not isinstance(sub, Binary) or (sub.op != "&" and sub.op not in _COMPARE):
                        continue
                    const = sub.right if isinstance(sub.right, Const) else sub.left \
                        if isinstance(sub.left, Const) else None
                    if const is None or not isinstance(const.value, int):
                        continue
                    for name in _mentioned(sub):
                        self.tests.setdefault(name, set()).add((sub.op, const.value))
            if op.kind == "set":
                for read in op_reads(op):
                    self.copies.setdefault(_name(read), []).extend(op_writes(op))

    def of(self, start: Loc) -> tuple[set[int], set[int], set[int]]:
        """(comparison points with their neighbours, masks, the constants compared with as they are)."""
        points, masks, exact = set(), set(), set()
        seen, todo = set(), [start]
        while todo:
            name = _name(todo.pop())
            if name in seen:
                continue
            seen.add(name)
            for op, value in self.tests.get(name, ()):
                if op == "&":
                    masks.add(value)
                else:
                    points |= {value - 1, value, value + 1}
                    exact.add(value)
            todo.extend(self.copies.get(name, ()))
        return points, masks, exact


def _mentioned(expr: Binary) -> set[tuple]:
    """What a test is about: a location on either side, or inside a computed side."""
    out = set()
    for side in (expr.left, expr.right):
        if isinstance(side, Loc):
            out.add(_name(side))
        elif isinstance(side, Binary):
            out |= {_name(x) for x in subexprs(side) if isinstance(x, Loc)}
    return out


def _values(ctype: CType, scopes: Scopes, points: set[int], masks: set[int], exact: set[int]) -> tuple:
    if ctype.ptr:
        if ctype.record in scopes.per_vcpu:
            return (0, SELF)
        if ctype.record in scopes.vm_wide:
            return (0, VMOBJ)
        return (0, OBJECT)
    if ctype.is_bool:
        return (0, 1)
    if ctype.spelling.startswith("enum ") and exact:  # an enum is one of its enumerators the code names
        return tuple(sorted(exact))
    values = {0, 1} | {p for p in points if p >= -1}
    ordered = sorted(masks)[:3]
    union = 0
    for mask in ordered:
        values.add(mask)
        union |= mask
    if union:
        values.add(union)
    return tuple(sorted(values)[:MAX_VALUES])


def domains(code: list[Op], slots: Slots, scopes: Scopes) -> tuple[dict[int, tuple], dict[int, tuple]]:
    """(input op pc -> values, per-vCPU constant slot -> values)."""
    uses = _Uses(code)
    inputs = {}
    for pc, op in enumerate(code):
        if op.kind == "input" and op.args[0] is not None:
            if op.args[1] is not None:
                inputs[pc] = tuple(op.args[1])
                continue
            loc = op.args[0]
            inputs[pc] = _values(slots.input_types.get(loc.slot, CType()), scopes, *uses.of(loc))
    read = {loc.slot for op in code for loc in op_reads(op) if loc.kind in ("mine", "cpu")}
    constants = {slot: _values(ctype, scopes, *uses.of(Loc("mine", slot))) for slot, ctype in
                 slots.cpu_constant.items() if slot in read}  # a constant nothing reads any more is no state
    return inputs, constants
