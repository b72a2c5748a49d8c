"""A local pointer that holds one place's address wherever it is read is that place.

`bool *f = &vcpu->arch.counted; ... if (!*f) { *f = true; ... }` tests and
sets vcpu->arch.counted: the rules (a transition guard) and the model must
both read the field, not a pointer they each resolve their own way. The
lowered form says so: where every assignment reaching a read of the local
stores the same address, `*f`, `f->m` and `f[0]` are that place. A local
that may hold several addresses at a read (reassigned on another path,
`c ? &a : &b`) stays a pointer there; the model tells its places apart when
it runs (kaudit.model.resolve).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from kaudit.ir.names import subexprs, uses
from kaudit.ir.nodes import (
    Assign,
    CallOp,
    Cleanup,
    Const,
    Expr,
    Field,
    Function,
    Index,
    Opaque,
    Unary,
    Var,
)
from kaudit.ir.rewrite import args_mapped, instr_mapped, rebuilt, term_mapped

UNSET = Var("(unset)", "local")  # what a local holds before any assignment reaches it
Held = dict[str, frozenset[Expr]]  # local -> the addresses the assignments reaching here stored


def resolve_addresses(function: Function) -> None:
    """Rewrite, in place, reads through locals that hold one address where they are read."""
    locals_ = _address_locals(function)
    if not locals_:
        return
    at_entry = _reaching(function, locals_)
    for block in function.blocks:
        held = dict(at_entry[block.id])
        place = partial(_expr, held=held)
        instrs = []
        for instr in block.instrs:
            instr = instr_mapped(instr, place, args_mapped(place))
            if isinstance(instr, Assign) and isinstance(instr.target, Var) and instr.target.name in locals_:
                held[instr.target.name] = frozenset({instr.value})
            instrs.append(instr)
        block.instrs = instrs
        block.term = term_mapped(block.term, place)


def _address_locals(function: Function) -> set[str]:
    """Local pointers only ever assigned the address of a place that names the same storage all
    through the function (its variables are parameters never assigned, globals, or results of calls
    evaluated once), and whose own address is never taken (nothing else can store into them)."""
    assigned_params = {i.target.name for _, i in function.instructions()
                       if isinstance(i, Assign) and isinstance(i.target, Var) and i.target.scope == "param"}
    once = _single_valued_temps(function)
    good: set[str] = set()
    bad = {sub.arg.name for expr in _all_exprs(function) for sub in subexprs(expr)
           if isinstance(sub, Unary) and sub.op == "&" and isinstance(sub.arg, Var)}
    for _, instr in function.instructions():
        if isinstance(instr, Cleanup):
            bad.add(instr.var.name)
        if not (isinstance(instr, Assign) and isinstance(instr.target, Var) and instr.target.scope == "local"):
            continue
        name, value = instr.target.name, instr.value
        if instr.target.ctype.ptr and isinstance(value, Unary) and value.op == "&" and \
                _stable(value.arg, assigned_params, once):
            good.add(name)
        else:
            bad.add(name)
    return good - bad


def _stable(place: Expr, assigned_params: set[str], once: set[str]) -> bool:
    return isinstance(place, Field) and all(
        not isinstance(sub, Var) or sub.scope == "global" or (sub.scope == "param" and sub.name not in assigned_params)
        or (sub.scope == "temp" and sub.name in once)
        for sub in subexprs(place)) and not any(isinstance(sub, (Index, Opaque)) for sub in subexprs(place))


def _single_valued_temps(function: Function) -> set[str]:
    """Results of calls evaluated at most once in a run of the function (`to_svm(vcpu)` outside any loop):
    once a place built on one has been addressed, the result it names never changes."""
    out = set()
    for block in function.blocks:
        if any(isinstance(i, CallOp) and i.result is not None for i in block.instrs) and \
                not _on_a_cycle(function, block.id):
            out |= {i.result.name for i in block.instrs if isinstance(i, CallOp) and i.result is not None}
    return out


def _on_a_cycle(function: Function, start: int) -> bool:
    seen, todo = set(), list(function.successors(function.blocks[start]))
    while todo:
        block = todo.pop()
        if block == start:
            return True
        if block not in seen:
            seen.add(block)
            todo.extend(function.successors(function.blocks[block]))
    return False


def _reaching(function: Function, locals_: set[str]) -> dict[int, Held]:
    """Per block, the addresses each local may hold on entry (a forward union of assignments)."""
    entry: dict[int, Held] = {block.id: {} for block in function.blocks}
    entry[0] = {name: frozenset({UNSET}) for name in locals_}
    todo = [0]
    while todo:
        block = function.blocks[todo.pop()]
        held = dict(entry[block.id])
        for instr in block.instrs:
            if isinstance(instr, Assign) and isinstance(instr.target, Var) and instr.target.name in locals_:
                held[instr.target.name] = frozenset({instr.value})
        for nxt in function.successors(block):
            merged = {name: entry[nxt].get(name, frozenset()) | values for name, values in held.items()}
            if merged != entry[nxt]:
                entry[nxt] = merged
                todo.append(nxt)
    return entry


def _all_exprs(function: Function) -> list[Expr]:
    """Every expression of the function: its instructions' and its tests' and returned values."""
    return [e for expr, call in uses(function) for e in ((expr,) if call is None else call.args)]


def _expr(expr: Expr, held: Held) -> Expr:
    """expr with each dereference of a local holding one address replaced by the place."""
    if isinstance(expr, Unary) and expr.op == "*" and (place := _held(expr.arg, held)) is not None:
        return place
    if isinstance(expr, Index) and (place := _held(expr.base, held)) is not None and \
            _is_zero(expr.index):
        return place
    if isinstance(expr, Field) and expr.arrow and (place := _held(expr.base, held)) is not None:
        return replace(expr, base=place, arrow=False)
    return rebuilt(expr, lambda sub: _expr(sub, held))


def _held(pointer: Expr, held: Held) -> Expr | None:
    """The place a local pointer holds the address of, when that is one place."""
    if not isinstance(pointer, Var) or pointer.name not in held:
        return None
    values = held[pointer.name]
    if len(values) != 1:
        return None
    (value,) = values
    return value.arg if isinstance(value, Unary) and value.op == "&" else None


def _is_zero(expr: Expr) -> bool:
    return isinstance(expr, Const) and expr.value == 0
