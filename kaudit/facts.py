"""Reading the fact trees: events with the guards that dominate them.

Pure Python over the dicts the front end produced (docs/facts.md). A guard is
an atom (an expression dict that is not a conjunction or a negation) with a
polarity: `if (!a && b) f();` gives f the guards (a, False) and (b, True).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kaudit.kernel_api import LOCK_ACQUIRE, LOCK_RELEASE

Expr = dict[str, Any]
Stmt = dict[str, Any]


@dataclass(frozen=True)
class Guard:
    """An atom and its polarity; `branch` identifies the whole condition (the
    identity of its fact dict) and the side taken (`if (!a || b)` on its else
    side gives atoms a and !b, both with branch (id, False)), so two sites
    can be told to sit on the two sides of one condition."""

    atom: Expr
    polarity: bool
    branch: tuple[int, bool] = field(default=(0, True), compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"expr": render(self.atom), "polarity": self.polarity}


@dataclass
class Event:
    """A call, assignment or increment, with its dominating guards and the
    locks (rendered lock expressions) held at that point."""

    kind: str  # "call" | "assign" | "incdec"
    expr: Expr
    line: int
    guards: tuple[Guard, ...]
    locks: tuple[str, ...]
    in_loop: tuple[int, ...] = field(default=())  # lines of enclosing loops


def guards_of(cond: Expr, polarity: bool, branch: tuple[int, bool] | None = None) -> list[Guard]:
    """Split a condition into atoms: a && b (true) and a || b (false) split."""
    branch = branch or (id(cond), polarity)
    kind = cond.get("k")
    if kind == "unary" and cond["op"] == "!":
        return guards_of(cond["arg"], not polarity, branch)
    if kind == "binary" and cond["op"] in ("&&", "||"):
        splits = (cond["op"] == "&&") == polarity
        if splits:
            return guards_of(cond["l"], polarity, branch) + guards_of(cond["r"], polarity, branch)
    return [Guard(cond, polarity, branch)]


def const_value(expr: Expr | None) -> int | None:
    """Fold integer constants: literals, enumerators, !, -, ~ and arithmetic."""
    if expr is None:
        return None
    kind = expr.get("k")
    if kind in ("int", "enum"):
        return expr.get("v")
    if kind == "unary":
        arg = const_value(expr["arg"])
        if arg is None:
            return None
        return {"!": int(not arg), "-": -arg, "~": ~arg, "+": arg}.get(expr["op"])
    if kind == "binary":
        left, right = const_value(expr["l"]), const_value(expr["r"])
        if left is None or right is None:
            return None
        ops = {
            "+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
            "|": lambda: left | right, "&": lambda: left & right, "<<": lambda: left << right,
            "==": lambda: int(left == right), "!=": lambda: int(left != right),
            "&&": lambda: int(bool(left and right)), "||": lambda: int(bool(left or right)),
        }
        op = ops.get(expr["op"])
        return op() if op else None
    if kind == "cond":
        test = const_value(expr["c"])
        return None if test is None else const_value(expr["t"] if test else expr["f"])
    return None


def render(expr: Expr | None) -> str:
    """C-like spelling of an atom, for messages and reports."""
    if expr is None:
        return ""
    kind = expr.get("k")
    if kind == "int":
        return str(expr.get("v"))
    if kind in ("enum", "var", "func"):
        return expr["name"]
    if kind == "member":
        return f"{render(expr['base'])}{'->' if expr['arrow'] else '.'}{expr['field']}"
    if kind == "call":
        return f"{callee_name(expr)}({', '.join(render(a) for a in expr['args'])})"
    if kind == "unary":
        op = expr["op"]
        return f"{render(expr['arg'])}{op}" if op in ("++", "--") and expr.get("post") else f"{op}{render(expr['arg'])}"
    if kind == "binary":
        return f"{render(expr['l'])} {expr['op']} {render(expr['r'])}"
    if kind == "cond":
        return f"{render(expr['c'])} ? {render(expr['t'])} : {render(expr['f'])}"
    if kind == "index":
        return f"{render(expr['base'])}[{render(expr['index'])}]"
    return "..."


def callee_name(call: Expr) -> str:
    if call.get("callee"):
        return call["callee"]
    via = call.get("via") or {}
    if via.get("kind") == "static_call":
        return f"static_call({via['name']})"
    if via.get("kind") == "member":
        return f"<{via['record']}>.{via['field']}"
    if via.get("kind") == "array":
        return f"{via['name']}[]"
    return "(*fn)"


def subexprs(expr: Any) -> Iterator[Expr]:
    """Every expression dict inside expr (itself included), pre-order."""
    if isinstance(expr, dict):
        if "k" in expr:
            yield expr
        for value in expr.values():
            if isinstance(value, (dict, list)):
                yield from subexprs(value)
    elif isinstance(expr, list):
        for item in expr:
            yield from subexprs(item)


def terminates(body: list[Stmt]) -> bool:
    """Whether a statement list always leaves the enclosing block."""
    if not body:
        return False
    last = body[-1]
    kind = last["s"]
    if kind in ("return", "goto", "break", "continue"):
        return True
    if kind == "block":
        return terminates(last["body"])
    if kind == "if":
        return terminates(last["then"]) and terminates(last["else"])
    return False


class EventWalker:
    """Walks a function body in order, tracking guards, held locks and loops.

    `lock_of_guard(call)` maps the initialiser of a scoped-lock declaration
    (`guard(rwsem_write)(&lock)`) to the lock it takes, or None.
    """

    def __init__(self, lock_of_guard: Any = None) -> None:
        self.lock_of_guard = lock_of_guard or (lambda call: None)

    def walk(self, body: list[Stmt]) -> list[Event]:
        events: list[Event] = []
        self._block(body, (), [], (), events)
        return events

    def _block(self, body: list[Stmt], guards: tuple[Guard, ...], locks: list[str],
               loops: tuple[int, ...], out: list[Event]) -> None:
        scoped: list[str] = []
        entry = guards
        for stmt in body:
            if stmt["s"] == "label":  # a goto target: paths that skipped ahead join here
                guards = entry
            guards = self._stmt(stmt, guards, locks, loops, out, scoped)
        for lock in scoped:
            if lock in locks:
                locks.remove(lock)

    def _stmt(self, stmt: Stmt, guards: tuple[Guard, ...], locks: list[str], loops: tuple[int, ...],
              out: list[Event], scoped: list[str]) -> tuple[Guard, ...]:
        kind = stmt["s"]
        line = stmt["line"]
        if kind == "expr" or (kind == "return" and stmt["e"] is not None):
            self._expr(stmt["e"], guards, locks, loops, line, out)
        elif kind == "decl" and stmt["init"] is not None:
            self._expr(stmt["init"], guards, locks, loops, line, out)
            lock = self.lock_of_guard(stmt["init"]) if stmt["cleanup"] else None
            if lock is not None:
                locks.append(lock)
                scoped.append(lock)
            else:
                target = {"k": "var", "name": stmt["name"], "scope": "local", "type": stmt["type"],
                          "record": stmt["record"], "ptr": stmt["ptr"], "array": stmt["array"]}
                out.append(Event("assign", {"k": "binary", "op": "=", "l": target, "r": stmt["init"]},
                                 line, guards, tuple(locks), loops))
        elif kind == "if":
            self._expr(stmt["c"], guards, locks, loops, line, out)
            then_guards = guards + tuple(guards_of(stmt["c"], True))
            else_guards = guards + tuple(guards_of(stmt["c"], False))
            self._block(stmt["then"], then_guards, list(locks), loops, out)
            self._block(stmt["else"], else_guards, list(locks), loops, out)
            then_exits, else_exits = terminates(stmt["then"]), terminates(stmt["else"])
            if then_exits and not else_exits:
                return else_guards
            if else_exits and not then_exits:
                return then_guards
        elif kind == "loop":  # one scope: scoped_guard() declares its lock in the header
            self._block(stmt["header"] + stmt["body"], guards, locks, (*loops, line), out)
        elif kind == "switch":
            self._expr(stmt["c"], guards, locks, loops, line, out)
            self._block(stmt["body"], guards, list(locks), loops, out)
        elif kind == "case" or kind == "block":
            self._block(stmt["body"], guards, locks, loops, out)
        return guards

    def _expr(self, expr: Expr, guards: tuple[Guard, ...], locks: list[str], loops: tuple[int, ...],
              line: int, out: list[Event]) -> None:
        kind = expr.get("k")
        if kind == "binary" and expr["op"] in ("&&", "||"):
            self._expr(expr["l"], guards, locks, loops, line, out)
            self._expr(expr["r"], guards + tuple(guards_of(expr["l"], expr["op"] == "&&")), locks, loops, line, out)
            return
        if kind == "cond":
            self._expr(expr["c"], guards, locks, loops, line, out)
            self._expr(expr["t"], guards + tuple(guards_of(expr["c"], True)), locks, loops, line, out)
            self._expr(expr["f"], guards + tuple(guards_of(expr["c"], False)), locks, loops, line, out)
            return
        if kind == "block":
            self._block(expr["body"], guards, locks, loops, out)
            return
        for child in children(expr):
            self._expr(child, guards, locks, loops, line, out)
        if kind == "call":
            out.append(Event("call", expr, expr.get("line", line), guards, tuple(locks), loops))
            name = expr.get("callee")
            lock = lock_key(expr["args"][0]) if expr["args"] else ""
            if name in LOCK_ACQUIRE:
                locks.append(lock)
            elif name in LOCK_RELEASE and lock in locks:
                locks.remove(lock)
        elif kind == "binary" and expr["op"].endswith("=") and expr["op"] not in ("==", "!=", "<=", ">="):
            out.append(Event("assign", expr, line, guards, tuple(locks), loops))
        elif kind == "unary" and expr["op"] in ("++", "--"):
            out.append(Event("incdec", expr, line, guards, tuple(locks), loops))


_CHILD_KEYS = {
    "member": ("base",), "call": ("args",), "unary": ("arg",), "binary": ("l", "r"),
    "cond": ("c", "t", "f"), "index": ("base", "index"), "other": ("sub",),
}


def children(expr: Expr) -> Iterator[Expr]:
    """The direct subexpressions of an expression."""
    for key in _CHILD_KEYS.get(expr.get("k", ""), ()):
        value = expr.get(key)
        if isinstance(value, dict):
            yield value
        elif isinstance(value, list):
            yield from value


def deref(expr: Expr) -> Expr:
    """`&x` -> x: lock and atomic calls take their object by address."""
    if expr.get("k") == "unary" and expr["op"] == "&":
        return expr["arg"]
    return expr


def field_key(expr: Expr) -> str | None:
    """Where a field lives, independent of how it was reached:
    `vcpu->kvm->arch.apicv_update_lock` and `kvm->arch.apicv_update_lock`
    are both `kvm.arch.apicv_update_lock` (struct that owns the storage,
    then the embedded path). Globals are their name; other things None."""
    expr = deref(expr)
    kind = expr.get("k")
    if kind == "member":
        if expr["arrow"]:
            return f"{expr['record']}.{expr['field']}"
        base = field_key(expr["base"])
        return f"{base}.{expr['field']}" if base else None
    if kind == "var" and expr["scope"] == "global":
        return expr["name"]
    return None


def owner_record(expr: Expr) -> str | None:
    """The struct whose object holds a field's storage (None for globals)."""
    key = field_key(expr)
    if key is None or "." not in key:
        return None
    return key.split(".", 1)[0]


def lock_key(expr: Expr) -> str:
    return field_key(expr) or render(deref(expr))
