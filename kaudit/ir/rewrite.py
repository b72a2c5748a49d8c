"""Rebuilding lowered code with some of its expressions replaced.

The lowered form's passes (kaudit.ir.addresses, kaudit.ir.slots) each decide
which expressions become what; how an instruction, a call or a terminator is
rebuilt around the new expressions is written once, here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from kaudit.ir.nodes import (
    Assign,
    Binary,
    Branch,
    Call,
    CallOp,
    Cleanup,
    Expr,
    Field,
    Function,
    Index,
    LockAssert,
    Opaque,
    Return,
    Select,
    Unary,
)

ExprMap = Callable[[Expr], Expr]
CallMap = Callable[[Call], Call]


def rebuilt(expr: Expr, inner: ExprMap) -> Expr:
    """expr with `inner` applied to each of its direct subexpressions."""
    if isinstance(expr, Field):
        return replace(expr, base=inner(expr.base))
    if isinstance(expr, Unary):
        return Unary(expr.op, inner(expr.arg))
    if isinstance(expr, Binary):
        return Binary(expr.op, inner(expr.left), inner(expr.right))
    if isinstance(expr, Select):
        return Select(inner(expr.test), inner(expr.then), inner(expr.orelse))
    if isinstance(expr, Index):
        return Index(inner(expr.base), inner(expr.index))
    if isinstance(expr, Opaque):
        return Opaque(expr.what, tuple(inner(sub) for sub in expr.subs))
    return expr


def args_mapped(expr_map: ExprMap) -> CallMap:
    """The call map that applies expr_map to every argument."""
    return lambda call: replace(call, args=tuple(expr_map(arg) for arg in call.args))


def instr_mapped(instr, expr_map: ExprMap, call_map: CallMap):
    """One instruction with its expressions and calls mapped."""
    if isinstance(instr, Assign):
        return replace(instr, target=expr_map(instr.target), value=expr_map(instr.value))
    if isinstance(instr, CallOp):
        return replace(instr, call=call_map(instr.call))
    if isinstance(instr, Cleanup):
        return replace(instr, init=call_map(instr.init))
    if isinstance(instr, LockAssert):
        return replace(instr, lock=expr_map(instr.lock))
    return instr


def term_mapped(term, expr_map: ExprMap):
    """A terminator with its tested or returned expression mapped."""
    if isinstance(term, Branch):
        return replace(term, cond=expr_map(term.cond))
    if isinstance(term, Return) and term.value is not None:
        return replace(term, value=expr_map(term.value))
    return term


def map_function(function: Function, expr_map: ExprMap, call_map: CallMap) -> None:
    """Rewrite, in place, every expression and call of a function (the calls its temps name too)."""
    for block in function.blocks:
        block.instrs = [instr_mapped(instr, expr_map, call_map) for instr in block.instrs]
        block.term = term_mapped(block.term, expr_map)
    function.temps = {name: call_map(call) for name, call in function.temps.items()}
