"""Generation counters: values that only identify, so only their order matters.

`kvm->arch.cur_tsc_generation++` makes a new generation; a vCPU copies it
(`vcpu->arch.this_tsc_generation = kvm->arch.cur_tsc_generation`) and later
tests whether it is still current (`!=`). Nothing else reads them. Such a
class of slots behaves the same whatever the numbers, as long as equality
and order are kept: each state holds them as dense ranks (0, 1, 2... in the
order of their values), so a counter that grows without end gives finitely
many states. The increment is always of the largest value (every copy is an
earlier value of the counter), so it still makes a value no copy holds.
"""

from __future__ import annotations

from kaudit.ir.names import subexprs
from kaudit.ir.nodes import Binary, Const, Expr
from kaudit.model.bookkeeping import op_writes
from kaudit.model.code import Generations, Loc, Op

Slot = tuple[str, int]  # ("vm" | "cpu" | "local", slot): a vCPU's own and another vCPU's field are one slot


def _slot(loc: Loc) -> Slot:
    return ("cpu" if loc.kind in ("mine", "cpu") else loc.kind, loc.slot)


def _increment(op: Op) -> bool:
    """`g = g + 1` on VM-wide state."""
    target, value = op.args
    return target.kind == "vm" and isinstance(value, Binary) and value.op == "+" and value.left == target \
        and isinstance(value.right, Const) and value.right.value == 1


def _read_exprs(op: Op) -> list[Expr]:
    """Every expression an op holds but a set's target: wider than extract._read_exprs on purpose, so a
    member met anywhere else (an atomic's target, an input's destination) disqualifies its class."""
    if op.kind == "set":
        return [op.args[1]]
    return [a for a in op.args if isinstance(a, Expr)]


def generations(code: list[Op], extra: list[Expr], kept: set[int]) -> Generations:
    """The generation counters of the code and the slots their values are copied to: each counter
    whose values are only copied, incremented or compared for equality with one another (`extra`:
    other expressions the explorer evaluates, which must not read them). `kept`: VM slots the checks
    read as numbers (the word, the counts), never ranks."""
    found: set[Slot] = set()
    for counter in sorted({_slot(op.args[0]) for op in code if op.kind == "set" and _increment(op)}):
        if counter[1] in kept:
            continue
        members = {counter}
        changed = True
        while changed:  # what a member is copied into is a member
            changed = False
            for op in code:
                if op.kind == "set" and isinstance(op.args[1], Loc) and _slot(op.args[1]) in members \
                        and isinstance(op.args[0], Loc) and _slot(op.args[0]) not in members:
                    members.add(_slot(op.args[0]))
                    changed = True
        if not any(kind == "vm" and slot in kept for kind, slot in members) \
                and _only_identified(code, members, {counter}, extra):
            found |= members
    return Generations(*(frozenset(s for kind, s in found if kind == want) for want in ("vm", "cpu", "local")))


def _only_identified(code: list[Op], members: set[Slot], counters: set[Slot], extra: list[Expr]) -> bool:
    def member(expr: Expr) -> bool:
        return isinstance(expr, Loc) and _slot(expr) in members

    for op in code:
        writes = [loc for loc in op_writes(op) if _slot(loc) in members]
        if writes:
            copy = op.kind == "set" and member(op.args[1]) and _slot(op.args[0]) not in counters  # none back
            if not (copy or (op.kind == "set" and _increment(op) and _slot(op.args[0]) in counters)):
                return False
        allowed: set[int] = set()  # ids of member reads in an allowed place
        if op.kind == "set" and (member(op.args[1]) or _increment(op)):
            allowed.add(id(op.args[1] if member(op.args[1]) else op.args[1].left))
        for expr in _read_exprs(op):
            for sub in subexprs(expr):
                if isinstance(sub, Binary) and sub.op in ("==", "!=") and member(sub.left) and member(sub.right):
                    allowed |= {id(sub.left), id(sub.right)}
            for sub in subexprs(expr):
                if member(sub) and id(sub) not in allowed:
                    return False
    return not any(member(sub) for expr in extra for sub in subexprs(expr))


def ranked(state: tuple, gens: Generations) -> tuple:
    """The state with every generation value replaced by its rank among those the state holds."""
    vm, threads, vm_demand = state
    values = {vm[s] for s in gens.vm} | {t[3][s] for t in threads for s in gens.cpu if s < len(t[3])} \
        | {v for t in threads for k, v in t[2] if k in gens.local}
    if any(type(v) is not int for v in values):
        return state
    rank = {v: i for i, v in enumerate(sorted(values))}
    if all(rank[v] == v for v in values):
        return state
    new_vm = tuple(rank[v] if i in gens.vm else v for i, v in enumerate(vm))
    new_threads = tuple(
        (t[0], t[1], tuple((k, rank[v] if k in gens.local else v) for k, v in t[2]),
         tuple(rank[v] if i in gens.cpu else v for i, v in enumerate(t[3])), *t[4:])
        for t in threads)
    return (new_vm, new_threads, vm_demand)
