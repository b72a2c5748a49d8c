"""Names of lowered expressions: where a field lives, how to spell it.

`field_key` names storage independently of the path that reached it:
`vcpu->kvm->arch.apicv_update_lock` and `kvm->arch.apicv_update_lock` are
both `kvm.arch.apicv_update_lock` (the struct that owns the storage, then
the embedded path). Globals are their name. The memory a pointer field points
at (`apic->regs`) is one buffer, `kvm_lapic.regs[]`; the
model names its elements at constant offsets (`element_key`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kaudit.ir.evaluate import evaluate
from kaudit.ir.nodes import (
    Assign,
    Binary,
    Branch,
    Call,
    CallOp,
    Cleanup,
    Const,
    EachVcpu,
    Expr,
    Field,
    FuncRef,
    Function,
    Index,
    LockAssert,
    Opaque,
    Return,
    Select,
    Slot,
    Unary,
    Var,
)


def deref(expr: Expr) -> Expr:
    """`&x` -> x: lock, atomic and bit calls take their object by address."""
    while isinstance(expr, Unary) and expr.op == "&":
        expr = expr.arg
    return expr


def root(expr: Expr) -> Expr:
    """The variable a place is reached from: `x` of `x->a.b`, `&x.a`, `*(x + 4)`."""
    while True:
        if isinstance(expr, Field):
            expr = expr.base
        elif isinstance(expr, Unary) and expr.op in ("&", "*"):
            expr = expr.arg
        elif isinstance(expr, Binary) and expr.op in ("+", "-"):
            expr = expr.left
        else:
            return expr


def buffer_access(expr: Expr) -> tuple[Field, Expr] | None:
    """`*(P + i)`, `*P`, `P[i]` where P is a field holding a pointer (`apic->regs`): that field and the
    offset, in P's elements (casts are not in the lowered form). An array field stays one piece of
    storage (a bitmap is tested and set as a whole)."""
    if isinstance(expr, Index):
        base, offset = expr.base, expr.index
    elif isinstance(expr, Unary) and expr.op == "*":
        base, offset = expr.arg, Const(0)
        while isinstance(base, Binary) and base.op in ("+", "-"):
            term = base.right if base.op == "+" else Unary("-", base.right)
            offset = term if offset == Const(0) else Binary("+", term, offset)
            base = base.left
    else:
        return None
    if isinstance(base, Field) and base.ctype.ptr and not base.ctype.array and field_key(base) is not None:
        return base, offset
    return None


def element_key(expr: Expr) -> str | None:
    """An element of a buffer at a constant offset (`kvm_lapic.regs[848]`), None for any other place.
    Elements at different offsets are taken not to overlap (the APIC page's registers are 16 bytes apart)."""
    access = buffer_access(deref(expr))
    if access is None:
        return None
    offset = evaluate(access[1])
    return f"{field_key(access[0])}[{offset}]" if isinstance(offset, int) else None


def pointee(pointer: Expr) -> Expr:
    """The storage a pointer argument designates, from where it points on: `&x` is x, an array (or a
    global) itself, `p` and `p + off` what p points at, `*p` (a pointer field's: its buffer)."""
    if isinstance(pointer, Unary) and pointer.op == "&":
        return pointer.arg
    if isinstance(pointer, (Field, Var)) and (pointer.ctype.array or not pointer.ctype.ptr
                                              or (isinstance(pointer, Var) and pointer.scope == "global")):
        return pointer
    while isinstance(pointer, Binary) and pointer.op in ("+", "-"):
        pointer = pointer.left
    return Unary("*", pointer)


def field_key(expr: Expr) -> str | None:
    expr = deref(expr)
    if (access := buffer_access(expr)) is not None:
        return f"{field_key(access[0])}[]"
    if isinstance(expr, Field):
        if expr.path:
            return f"{expr.path}.{expr.name}"
        if expr.arrow:
            return f"{expr.owner}.{expr.name}"
        base = field_key(expr.base)
        return f"{base}.{expr.name}" if base else None
    if isinstance(expr, Var) and expr.scope == "global":
        return expr.name
    return None


def owner_record(expr: Expr) -> str | None:
    """The struct whose object holds a field's storage (None for globals)."""
    key = field_key(expr)
    if key is None or "." not in key:
        return None
    return key.split(".", 1)[0]


def counted_key(expr: Expr) -> str | None:
    """A global is counted as a whole (`&(&apic_sw_disabled.key)->key` and
    `&apic_sw_disabled` are one static key); a field by its field key."""
    node = expr
    while isinstance(node, (Unary, Field)):
        node = node.arg if isinstance(node, Unary) else node.base
    if isinstance(node, Var) and node.scope == "global":
        return node.name
    return field_key(expr)


def with_outer(keys: Iterable[str]) -> frozenset[str]:
    """The keys and every struct that holds one."""
    return frozenset(found for key in keys for found in (key, *_outer(key)))


def _outer(key: str) -> Iterator[str]:
    """The storage that holds a field, innermost first: `vcpu_svm.irq`, then `vcpu_svm`, for
    `vcpu_svm.irq.window_requested`."""
    at = key.rfind(".")
    while at > 0:
        key = key[:at]
        yield key
        at = key.rfind(".")


class Keys:
    """Field keys, asked what a write changes of them: storage overlaps its members, so writing a struct
    changes every field in it (INIT's `memset(&svm->irq, 0, ...)` clears `vcpu_svm.irq.window_requested`)
    and writing a field changes the struct that holds it."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = frozenset(keys)
        self.holding = frozenset(outer for key in self.keys for outer in _outer(key))
        self._touched: dict[str, bool] = {}

    def touched(self, written: str) -> bool:
        """Whether writing `written` changes one of the keys."""
        if written not in self._touched:
            self._touched[written] = written in self.keys or written in self.holding \
                or any(outer in self.keys for outer in _outer(written))
        return self._touched[written]

    def touched_by(self, writes: Iterable[str]) -> set[str]:
        """The keys some of these writes change."""
        out = set()
        for written in writes:
            if written in self.keys:
                out.add(written)
            if written in self.holding:
                out |= {key for key in self.keys if key.startswith(f"{written}.")}
            out |= {outer for outer in _outer(written) if outer in self.keys}
        return out


def lock_key(expr: Expr) -> str:
    return field_key(expr) or render(deref(expr))


def children(expr: Expr) -> tuple[Expr, ...]:
    if isinstance(expr, Field):
        return (expr.base,)
    if isinstance(expr, Unary):
        return (expr.arg,)
    if isinstance(expr, Binary):
        return (expr.left, expr.right)
    if isinstance(expr, Select):
        return (expr.test, expr.then, expr.orelse)
    if isinstance(expr, Index):
        return (expr.base, expr.index)
    if isinstance(expr, Opaque):
        return expr.subs
    return ()


def subexprs(expr: Expr) -> Iterator[Expr]:
    """expr and everything inside it, pre-order."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


def uses(function: Function) -> Iterator[tuple[Expr | None, Call | None]]:
    """Every expression a function evaluates, as (expr, None), and every call it makes, as (None, call):
    its instructions', its tests' and its returned values, in block order."""
    for block in function.blocks:
        for instr in block.instrs:
            if isinstance(instr, Assign):
                yield instr.target, None
                yield instr.value, None
            elif isinstance(instr, CallOp):
                yield None, instr.call
            elif isinstance(instr, Cleanup):
                yield None, instr.init
            elif isinstance(instr, LockAssert):
                yield instr.lock, None
        if isinstance(block.term, Branch):
            yield block.term.cond, None
        elif isinstance(block.term, Return) and block.term.value is not None:
            yield block.term.value, None


def callee_name(call: Call) -> str:
    if call.callee:
        return call.callee
    via = call.via
    if via is None:
        return "(*fn)"
    if via.kind == "static_call":
        return f"static_call({via.name})"
    if via.kind == "member":
        return f"<{via.record}>.{via.field}"
    if via.kind == "array":
        return f"{via.name}[]"
    return "(*fn)"


def render(expr: Expr | None, temps: dict[str, Call] | None = None) -> str:
    """C-like spelling, for messages; temps are spelt as the call they hold."""
    if expr is None:
        return ""
    if isinstance(expr, Const):
        return expr.name or str(expr.value)
    if isinstance(expr, Var):
        if expr.scope == "temp" and temps and expr.name in temps:
            return render_call(temps[expr.name], temps)
        return expr.name
    if isinstance(expr, FuncRef):
        return expr.name
    if isinstance(expr, Slot):
        return f"{render(expr.storage, temps)}[{render(expr.index, temps)}]"
    if isinstance(expr, Field):  # `(&key)->key`, not `&key->key`, which is another place
        base = render(expr.base, temps)
        base = f"({base})" if isinstance(expr.base, (Unary, Binary, Select)) else base
        return f"{base}{'->' if expr.arrow else '.'}{expr.name}"
    if isinstance(expr, Unary):
        inner = render(expr.arg, temps)
        return f"{expr.op}({inner})" if isinstance(expr.arg, (Binary, Select)) else f"{expr.op}{inner}"
    if isinstance(expr, Binary):
        return f"{render(expr.left, temps)} {expr.op} {render(expr.right, temps)}"
    if isinstance(expr, Select):
        return f"{render(expr.test, temps)} ? {render(expr.then, temps)} : {render(expr.orelse, temps)}"
    if isinstance(expr, Index):
        return f"{render(expr.base, temps)}[{render(expr.index, temps)}]"
    name = getattr(expr, "name", "")  # a place the model made (kaudit.model.code.Loc): its variable's name
    return name.rsplit(":", 1)[-1] if isinstance(name, str) and name else "..."


def render_call(call: Call, temps: dict[str, Call] | None = None) -> str:
    return f"{callee_name(call)}({', '.join(render(a, temps) for a in call.args)})"


def returned_only(function: Function) -> frozenset[str]:
    """The locals and temps a function uses only to return them (`ret = f(); return ret;`, `return f();`):
    when its caller drops its value, what the calls put there is never read."""
    used: dict[str, int] = {}
    returned: dict[str, int] = {}

    def count(expr: Expr | None) -> None:
        for sub in subexprs(expr) if expr is not None else ():
            if isinstance(sub, Var) and sub.scope in ("local", "temp"):
                used[sub.name] = used.get(sub.name, 0) + 1

    for block in function.blocks:
        for instr in block.instrs:
            if isinstance(instr, Assign):
                count(instr.value)
                if not (isinstance(instr.target, Var) and instr.target.scope in ("local", "temp")):
                    count(instr.target)
            elif isinstance(instr, CallOp):
                for arg in instr.call.args:
                    count(arg)
            elif isinstance(instr, Cleanup):
                count(instr.var)
        term = block.term
        if isinstance(term, Return) and isinstance(term.value, Var):
            returned[term.value.name] = returned.get(term.value.name, 0) + 1
        elif isinstance(term, Return):
            count(term.value)
        elif isinstance(term, Branch):
            count(term.cond)
        elif isinstance(term, EachVcpu):
            count(term.iterator)
    return frozenset(name for name, n in returned.items() if used.get(name, 0) == 0)
