"""VM storage that every vCPU reaches only at its own identity is per-vCPU storage.

KVM code keeps some per-vCPU state in VM-wide arrays and bitmaps indexed by a
vCPU's identity: `kvm->arch.waiting[vcpu->vcpu_idx]`,
`test_and_set_bit(vcpu->vcpu_idx, kvm->arch.pending)`. No two vCPUs of a VM
share an identity (kernel_api.VCPU_IDENTITIES), so where the whole program
reaches that storage in no other way, each element belongs to one vCPU
exactly as a field of struct kvm_vcpu does. The lowered form says so once,
for the program: each such access becomes a `Slot`, a field of the vCPU, so
the rules (a per-vCPU flag) and the model (per-vCPU state) read it alike.
Storage reached any other way (at another index, as a whole by
`bitmap_empty()`, `memset()` or a call it is passed to) stays VM-wide, and so
does a global array (vCPUs of two VMs share identities).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import partial

from kaudit.ir.names import children, deref, field_key, pointee, uses, with_outer
from kaudit.ir.nodes import (
    Call,
    Const,
    CType,
    Expr,
    Field,
    Function,
    Index,
    Slot,
    Unary,
)
from kaudit.ir.rewrite import map_function, rebuilt
from kaudit.kernel_api import (
    BIT_CLEAR,
    BIT_SET,
    BIT_TEST,
    BIT_TEST_AND_CLEAR,
    BIT_TEST_AND_SET,
    MEM_COPY,
    MEM_FILL,
    VCPU_IDENTITIES,
)

BIT_OPS = BIT_SET | BIT_CLEAR | BIT_TEST | BIT_TEST_AND_SET | BIT_TEST_AND_CLEAR
_BIT_WORD = CType("unsigned long")


def own_slots(functions: Iterable[Function]) -> frozenset[str]:
    """The keys of VM storage the program reaches only at the accessing vCPU's identity."""
    at_identity: set[str] = set()
    otherwise: set[str] = set()
    filled: set[str] = set()  # storage a block copy or fill writes whole, with every field inside it
    for function in functions:
        for expr, call in uses(function):
            if call is None:
                _scan(expr, at_identity, otherwise)
                continue
            if (key := _bit_storage(call)) is not None:
                at_identity.add(key)
                _scan(call.args[0], at_identity, otherwise)
                _scan_inside(pointee(call.args[1]), at_identity, otherwise)
                continue
            if (call.callee in MEM_COPY or call.callee in MEM_FILL) and call.args:
                filled.add(field_key(pointee(call.args[0])) or "")
            for arg in call.args:
                _scan(arg, at_identity, otherwise)
    return frozenset(key for key in at_identity - otherwise if not with_outer([key]) & filled)


def give_slots(function: Function, own: frozenset[str]) -> None:
    """Rewrite, in place, the function's accesses of own storage as the accessing vCPU's Slots."""
    if own:
        map_function(function, partial(_expr, own=own), partial(_call, own=own))


def _identity(expr: Expr) -> Field | None:
    """`vcpu->vcpu_idx` (or another identity field), reached from any vCPU."""
    return expr if isinstance(expr, Field) and field_key(expr) in VCPU_IDENTITIES else None


def _storage(expr: Expr) -> str | None:
    """The key of a struct field's storage (a global's is shared by every VM: never a slot)."""
    expr = deref(expr)
    return field_key(expr) if isinstance(expr, Field) and not isinstance(expr, Slot) else None


def _indexed(expr: Expr) -> str | None:
    """The storage `S[ident]` indexes, when its index is a vCPU's identity."""
    return _storage(expr.base) if isinstance(expr, Index) and _identity(expr.index) else None


def _bit_storage(call: Call) -> str | None:
    """The bitmap a bit operation at a vCPU's identity tests or changes."""
    if call.callee in BIT_OPS and len(call.args) > 1 and _identity(call.args[0]):
        return _storage(pointee(call.args[1]))
    return None


def _scan(expr: Expr, at_identity: set[str], otherwise: set[str]) -> None:
    """Sort the storage expr reaches: at an identity, or some other way."""
    if (key := _indexed(expr)) is not None:
        at_identity.add(key)
        _scan_inside(deref(expr.base), at_identity, otherwise)
        _scan(expr.index, at_identity, otherwise)
        return
    if (key := _storage(expr)) is not None:
        otherwise.add(key)
        _scan_inside(deref(expr), at_identity, otherwise)
        return
    for sub in children(expr):
        _scan(sub, at_identity, otherwise)


def _scan_inside(place: Expr, at_identity: set[str], otherwise: set[str]) -> None:
    """The expressions a place is reached through (`vcpu` in `vcpu->kvm->arch.x`), not the place's
    containers themselves: reaching a field is no use of the struct that holds it."""
    while isinstance(place, Field):
        place = place.base
    _scan(place, at_identity, otherwise)


def _slot(storage: Expr, ident: Field, ctype: CType, own: frozenset[str]) -> Slot:
    key = _storage(storage)
    return Slot(_expr(ident.base, own), f"{key}[{ident.name}]".replace(".", "/"), ident.arrow, ident.owner,
                ctype, ident.path, storage, ident)


def _element(array: CType) -> CType:
    spelling = array.spelling.split("[", 1)[0].strip()
    return replace(array, spelling=spelling, array=False)


def _expr(expr: Expr, own: frozenset[str]) -> Expr:
    if isinstance(expr, Index) and _indexed(expr) in own:
        storage = deref(expr.base)
        return _slot(storage, _identity(expr.index), _element(storage.ctype), own)
    return rebuilt(expr, partial(_expr, own=own))


def _call(call: Call, own: frozenset[str]) -> Call:
    args = tuple(_expr(arg, own) for arg in call.args)
    if (key := _bit_storage(call)) is not None and key in own:
        slot = _slot(deref(pointee(call.args[1])), _identity(call.args[0]), _BIT_WORD, own)
        args = (Const(0), Unary("&", slot), *args[2:])
    return replace(call, args=args)
