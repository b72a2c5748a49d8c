"""The one expression evaluator, shared by the lowering, the rules and the model.

`evaluate(expr, leaf)` computes a pure expression with C's integer
semantics. Leaves (variables, fields, dereferences, opaque constructs) are
asked of `leaf`; without one, only constants fold. Pointers are whatever
`leaf` returns for them: any value that is not an int counts as a non-null
pointer, 0 is NULL. An unknown operand makes the result unknown (None),
except where C's short-circuit rules decide without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaudit.ir.nodes import Binary, Const, Expr, Select, Unary

Value = Any  # an int, or a pointer the caller's leaf function made
Leaf = Callable[[Expr], Value]

_COMPARE = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
}
_ARITH = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b,
    "<<": lambda a, b: a << b if 0 <= b < 128 else None, ">>": lambda a, b: a >> b if 0 <= b < 128 else None,
    "/": lambda a, b: int(a / b) if b else None, "%": lambda a, b: a - b * int(a / b) if b else None,
}


def truth(value: Value) -> bool:
    return bool(value) if isinstance(value, int) else True


def truth_operand(expr: Expr) -> Expr:
    """The operand whose truth an expression is: `n` of `n`, `n != 0`, `!!n`, and of `n > 0` (a count
    of vCPUs, never negative)."""
    while True:
        if isinstance(expr, Binary) and expr.op in ("!=", ">") and evaluate(expr.right) == 0:
            expr = expr.left
        elif isinstance(expr, Unary) and expr.op == "!" and isinstance(expr.arg, Unary) and expr.arg.op == "!":
            expr = expr.arg.arg
        else:
            return expr


def _no_leaf(expr: Expr) -> Value:
    return None


def evaluate(expr: Expr, leaf: Leaf = _no_leaf) -> Value:
    kind = type(expr)  # the model evaluates millions of these: exact type tests, most frequent first
    if kind is Const:
        return expr.value
    if kind is Binary:
        return _binary(expr, leaf)
    if kind is Unary and expr.op in ("!", "-", "~", "+"):
        arg = evaluate(expr.arg, leaf)
        if arg is None:
            return None
        if expr.op == "!":
            return int(not truth(arg))
        if not isinstance(arg, int):
            return None
        return -arg if expr.op == "-" else ~arg if expr.op == "~" else arg
    if kind is Select:
        test = evaluate(expr.test, leaf)
        if test is None:
            return None
        return evaluate(expr.then if truth(test) else expr.orelse, leaf)
    return leaf(expr)


def _binary(expr: Binary, leaf: Leaf) -> Value:
    op = expr.op
    left = evaluate(expr.left, leaf)
    if op in ("&&", "||"):
        if left is not None and truth(left) == (op == "||"):
            return int(op == "||")
        right = evaluate(expr.right, leaf)
        if right is not None and truth(right) == (op == "||"):
            return int(op == "||")
        if left is None or right is None:
            return None
        return int(truth(right))
    right = evaluate(expr.right, leaf)
    if left is None or right is None:
        return None
    if op in _COMPARE:
        if isinstance(left, int) and isinstance(right, int):
            return int(_COMPARE[op](left, right))
        if op in ("==", "!="):  # pointers: equal only to themselves
            return int((left == right) == (op == "=="))
        return None
    if op == "-" and not isinstance(left, int) and isinstance(right, int):
        return left  # container_of(): pointer minus an offset is the same object
    if op in _ARITH and isinstance(left, int) and isinstance(right, int):
        return _ARITH[op](left, right)
    return None


def fold(expr: Expr) -> int | None:
    """The constant an expression folds to, if it is one."""
    value = evaluate(expr)
    return value if isinstance(value, int) else None
