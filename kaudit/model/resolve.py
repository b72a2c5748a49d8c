"""Draft code -> code over storage slots: what is modelled, what is an input.

State the compiled code writes is modelled: a per-vCPU field gets a slot in
every simulated vCPU, VM-wide and host-wide state a slot in the VM. A read
of anything else is an explicit `input` op just before its use (the
explorer chooses its value). The exceptions: host settings (global scalars
the code never writes) are chosen once for every vCPU where they may decide
whether a count moves, and read as enabled (all bits set) elsewhere;
per-vCPU fields that no per-vCPU code anywhere in the program writes
(`vcpu->vcpu_idx`) are per-vCPU constants chosen when the vCPU starts (those
KVM gives each vCPU its own value of, `vcpu_idx` and `vcpu_id`, differ
between vCPUs). A buffer a pointer field points at (`apic->regs`) is
modelled element by element, at the
constant offsets the code uses: a write at an offset the code computes
writes whichever element it names, a copy into the buffer gives every
element any value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from kaudit.analysis.context import Scopes
from kaudit.ir.evaluate import evaluate, fold
from kaudit.ir.names import (
    buffer_access,
    counted_key,
    deref,
    element_key,
    field_key,
    pointee,
    render,
    root,
    subexprs,
)
from kaudit.ir.nodes import Binary, Const, CType, Expr, Field, FuncRef, Index, Select, Unary, Var
from kaudit.kernel_api import VCPU_IDENTITIES
from kaudit.model.code import Loc, Op
from kaudit.model.inline import Draft, bit_of

SELF = Loc("self", 0, name="vcpu")  # this vCPU's object, as the code names it
VMOBJ = Loc("vmobj", 0, name="kvm")
ENABLED = Const(-1)  # a configuration value the code never writes: every feature on


@dataclass
class Slots:
    locals: dict[str, int] = field(default_factory=dict)
    vm: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, int] = field(default_factory=dict)
    cpu_constant: dict[int, CType] = field(default_factory=dict)  # per-vCPU constants to choose at start
    vm_constant: set[int] = field(default_factory=set)  # those of them that are the VM's: one value on every vCPU
    identity: set[int] = field(default_factory=set)  # those no two vCPUs share (kernel_api.VCPU_IDENTITIES)
    stored_in: dict[str, str] = field(default_factory=dict)  # a buffer element's slot name -> the buffer's key
    input_types: dict[int, CType] = field(default_factory=dict)  # local slot -> type of the input it holds

    def local(self, name: str) -> int:
        return self.locals.setdefault(name, len(self.locals))


def local_field(expr: Expr) -> str | None:
    """`msr.index`, `(&msr)->index`: a field of a struct that is itself a local, named as a local."""
    if not isinstance(expr, Field):
        return None
    base = expr.base
    if expr.arrow:
        if not (isinstance(base, Unary) and base.op == "&"):
            return None
        base = base.arg
    if isinstance(base, Var) and base.scope == "local" and not base.ctype.ptr:
        return f"{base.name}.{expr.name}"
    inner = local_field(base)
    return f"{inner}.{expr.name}" if inner else None


def _written(op: Op) -> Expr | None:
    if op.kind == "fill":
        return pointee(op.args[0])
    if op.kind == "set":
        return op.args[0]
    if op.kind in ("atomic", "bit"):
        return op.args[1] if op.kind == "atomic" else op.args[0]
    return None


def _elements(ops: list[Op]) -> dict[str, list[int]]:
    """Per buffer (`kvm_lapic.regs[]`), the constant offsets at which the code names its elements."""
    found: dict[str, set[int]] = {}
    for op in ops:
        for arg in op.args:
            if not isinstance(arg, Expr):
                continue
            for sub in subexprs(arg):
                if (access := buffer_access(deref(sub))) is not None and isinstance(offset := evaluate(access[1]), int):
                    found.setdefault(field_key(sub), set()).add(offset)
    return {buffer: sorted(offsets) for buffer, offsets in found.items()}


def _pointers(ops: list[Op]) -> dict[str, list[Expr]]:
    """Locals only ever assigned addresses of fields (`bool *f = &vcpu->arch.flag`, and perhaps later
    `f = &vcpu->arch.other`): the fields each may point at, in order. One field: `*f` is that field; more:
    `*f` is whichever the local holds the address of when it runs (Resolver._through, _scatter)."""
    assigned: dict[str, list[Expr]] = {}
    for op in ops:
        if op.kind == "set" and isinstance(op.args[0], Var) and op.args[0].scope == "local":
            assigned.setdefault(op.args[0].name, []).append(op.args[1])
    out = {}
    for name, values in assigned.items():
        fields = [_addressed(v) for v in values]
        if all(f is not None for f in fields):
            out[name] = list(dict.fromkeys(field for found in fields for field in found))
    return out


def _addressed(value: Expr) -> list[Expr] | None:
    """The fields an address value may be of: `&x`, or `c ? &x : &y`; None for anything else."""
    if isinstance(value, Unary) and value.op == "&" and field_key(value.arg) is not None:
        return [value.arg]
    if isinstance(value, Select):
        then, orelse = _addressed(value.then), _addressed(value.orelse)
        return then + orelse if then is not None and orelse is not None else None
    return None


def _through_local(expr: Expr) -> Var | None:
    """The local `*f` and `f[0]` read through."""
    if isinstance(expr, Index) and fold(expr.index) == 0:
        expr = Unary("*", expr.base)
    if isinstance(expr, Unary) and expr.op == "*" and isinstance(expr.arg, Var) and expr.arg.scope == "local":
        return expr.arg
    return None


ADDRESS = 1 << 48  # the value of the address of a local's i-th possible field: ADDRESS + i (never NULL)


class Resolver:
    def __init__(self, draft: Draft, scopes: Scopes, vcpu_writes: Callable[[str], bool],
                 written: Callable[[str], bool], count: str = "", entry_writes: frozenset[str] = frozenset()
                 ) -> None:
        self.draft = draft
        # the host's settings that take any value: those the functions that move the count read (they may
        # decide whether it moves), wherever they are read; the others, and for an inhibit all, read as enabled
        moving = {op.function for op in draft.ops if count and (t := _written(op)) is not None
                  and not isinstance(t, Loc) and count in (field_key(t), counted_key(t))}
        self.settings = {field_key(e) for op in draft.ops if op.function in moving for arg in op.args
                         if isinstance(arg, Expr) for e in subexprs(arg) if isinstance(e, (Var, Field))
                         and isinstance(root(e), Var) and root(e).scope == "global"}
        self.scopes = scopes
        self.vcpu_writes = vcpu_writes  # does some per-vCPU function of the program write this key?
        self.written = written  # does any function of the program write it?
        self.entry_writes = entry_writes  # what the entries' code writes, with what it calls
        self.slots = Slots()
        self.modelled: set[str] = set()
        self.local_fields: set[str] = set()  # fields of local structs the code assigns: locals of their own
        self.pointers = _pointers(draft.ops)
        self.elements = _elements(draft.ops)
        for op in draft.ops:
            target = _written(op)
            if target is None or isinstance(target, Loc):
                continue
            for candidate in self._pointees(target):  # a write through a local that points at one of these
                if self._scope(candidate) is not None:
                    self.modelled.add(field_key(candidate))
            if (name := local_field(target)) is not None:  # a local struct's field is the local's, whatever its type
                if op.kind == "set":
                    self.local_fields.add(name)
                continue
            key = field_key(target)
            if key and self._scope(target) is not None:
                self.modelled.add(key)
        # State written only where the inliner left code out is still state, not configuration: a read of it
        # is a slot the widening then sees read, so the next compile keeps those writes.
        self.modelled |= draft.skipped
        self.defs: dict[str, list[Expr]] = {}  # local -> the values assigned to it (_vcpu_refs)
        self.picked: set[str] = set()  # locals given some vCPU of the VM (_vcpu_refs)
        self.refs = self._vcpu_refs()
        self.pending: list[Op] = []
        self.current: Op | None = None
        self.memo: dict[Expr, int] = {}

    def _scope(self, expr: Expr) -> str | None:
        """"cpu" or "vm" for storage the model can own, None for the rest."""
        base = root(expr)
        if (isinstance(expr, Var) and expr.scope == "global") or (isinstance(base, Var) and base.scope == "global"):
            return "vm"
        key = field_key(expr)
        owner = key.split(".", 1)[0] if key and "." in key else None
        if owner in self.scopes.per_vcpu:
            return "cpu"
        if owner in self.scopes.vm_wide:
            return "vm"
        return None

    def _vcpu_refs(self) -> set[str]:
        """Locals that may hold another vCPU: loop iterators, locals given a vCPU pointer the VM stores
        (`kvm->vcpus[dest]`: `picked`, some vCPU of the VM), and pointers derived from those
        (`to_svm(v)`)."""
        sets = [op.args for op in self.draft.ops if op.kind == "set" and isinstance(op.args[0], Var)
                and op.args[0].scope == "local"]
        for target, value in sets:
            self.defs.setdefault(target.name, []).append(value)
        self.picked = {target.name for target, value in sets if target.ctype.ptr == 1
                       and target.ctype.record in self.scopes.per_vcpu and self._picks(value)}
        refs = {op.args[0].name for op in self.draft.ops if op.kind == "each"} | self.picked
        changed = True
        while changed:
            changed = False
            for target, value in sets:
                base = root(value)
                if target.name not in refs and isinstance(base, Var) and base.name in refs \
                        and _holds_pointer(target, value):
                    refs.add(target.name)
                    changed = True
        return refs

    def _picks(self, value: Expr, seen: frozenset[str] = frozenset()) -> bool:
        """Whether a vCPU pointer assigned `value` is one the VM stores (`kvm->vcpus[dest]`,
        `kvm->arch.last_vcpu`), itself or through what an inlined helper returned: any vCPU of the VM.
        A pointer the vCPU reaches in its own state (`apic->vcpu`), a new object, an unknown call's
        result are not."""
        while isinstance(value, Binary) and value.op in ("+", "-"):
            value = value.left
        if isinstance(value, Var) and value.scope == "local" and value.name not in seen:
            return any(self._picks(v, seen | {value.name}) for v in self.defs.get(value.name, ()))
        place = value.base if isinstance(value, Index) else value
        return isinstance(value, (Index, Field)) and self._scope(place) == "vm"

    # -- expressions ----------------------------------------------------------

    def place(self, expr: Expr) -> Loc | None:
        """The slot of modelled storage, or None."""
        if isinstance(expr, Var):
            if expr.scope == "local":
                return Loc("local", self.slots.local(expr.name), name=expr.name)
            if expr.name in self.modelled:
                return Loc("vm", self.slots.vm.setdefault(expr.name, len(self.slots.vm)), name=expr.name)
            return None
        fields = self._pointees(expr)
        if fields:  # several possible fields: _through, _scatter
            return self.place(fields[0]) if len(fields) == 1 else None
        if isinstance(expr, Unary) and expr.op == "*" and isinstance(expr.arg, Var) and expr.arg.scope == "local":
            return None
        if (name := local_field(expr)) is not None:  # unassigned here: filled by code not run, any value
            return Loc("local", self.slots.local(name), name=name) if name in self.local_fields else None
        key = field_key(expr)
        if key is None:
            return None
        name = element_key(expr) if key.endswith("[]") else key  # a buffer's element, at a known offset
        if name is None:
            return None
        if name != key:
            self.slots.stored_in[name] = key
        scope = self._scope(expr)
        ctype = getattr(deref(expr), "ctype", CType())  # `*&field` is the field
        constant = scope == "cpu" and not self.vcpu_writes(key) and not ctype.ptr
        if key not in self.modelled and not ctype.ptr and key.split(".", 1)[0] in self.scopes.vm_wide \
                and not self.written(key):  # the VM's, set before it runs (`kvm->arch.irqchip_mode`): one value
            slot = self.slots.cpu.setdefault(name, len(self.slots.cpu))
            self.slots.cpu_constant[slot] = ctype
            self.slots.vm_constant.add(slot)
            return Loc("mine", slot, name=name)
        if key in self.modelled or constant:
            if scope == "vm":
                return Loc("vm", self.slots.vm.setdefault(name, len(self.slots.vm)), name=name)
            if scope == "cpu":
                slot = self.slots.cpu.setdefault(name, len(self.slots.cpu))
                if key not in self.modelled:
                    self.slots.cpu_constant[slot] = ctype
                    if key in VCPU_IDENTITIES:
                        self.slots.identity.add(slot)
                ref = self._through_loop(expr)
                return Loc("cpu", slot, self.slots.local(ref), name=name) if ref else Loc("mine", slot, name=name)
        return None

    def _pointees(self, expr: Expr) -> list[Expr]:
        """The fields `*f` (or `f[0]`) may be, for a local f that only ever holds addresses of fields."""
        pointer = _through_local(expr)
        return self.pointers.get(pointer.name, []) if pointer is not None else []

    def _holds(self, expr: Expr, i: int) -> Expr:
        """Whether the local that `*f` goes through holds the address of its i-th possible field."""
        pointer = _through_local(expr)
        assert pointer is not None, expr
        return Binary("==", self.place(pointer), Const(ADDRESS + i))

    def _through(self, expr: Expr) -> Expr | None:
        """A read of `*f` for a local that may point at several fields: the one whose address it holds
        (None when one of them is not modelled: an input, as any unmodelled read)."""
        fields = self._pointees(expr) if self.pointers else []
        if len(fields) < 2:
            return None
        places = [self.place(candidate) for candidate in fields]
        if None in places:
            return None
        out: Expr = places[-1]
        for i in range(len(places) - 2, -1, -1):
            out = Select(self._holds(expr, i), places[i], out)
        return out

    def address(self, target: Expr, value: Expr) -> Expr | None:
        """What `f = &field` stores for a local that may point at several fields: that field's number."""
        fields = self.pointers.get(target.name, []) if isinstance(target, Var) and target.scope == "local" else []
        if len(fields) < 2:
            return None
        if isinstance(value, Select):
            return Select(self.value(value.test), self.address(target, value.then), self.address(target, value.orelse))
        return Const(ADDRESS + fields.index(value.arg), render(value))

    def value(self, expr: Expr) -> Expr:
        if isinstance(expr, (Const, Loc)):
            return expr
        if (through := self._through(expr)) is not None:
            return through
        if isinstance(expr, FuncRef):
            return ENABLED
        if isinstance(expr, Unary):
            if expr.op == "&":
                return ENABLED
            if expr.op != "*":
                return Unary(expr.op, self.value(expr.arg))
        if isinstance(expr, Binary):
            return Binary(expr.op, self.value(expr.left), self.value(expr.right))
        if isinstance(expr, Select):
            return Select(self.value(expr.test), self.value(expr.then), self.value(expr.orelse))
        if isinstance(expr, (Var, Field, Unary)):
            found = self.place(expr)
            if found is not None:
                return found
            base = root(expr)
            if isinstance(base, Var) and base.scope == "global" and not self._reads_modelled(expr):
                return self._setting(expr)
            ctype = getattr(expr, "ctype", CType())
            if ctype.ptr and ctype.record:
                if ctype.record in self.scopes.vm_wide:
                    return VMOBJ
                if ctype.record in self.scopes.per_vcpu and isinstance(expr, Field):
                    ref = self._through_loop(expr)
                    if ref:
                        return Loc("local", self.slots.local(ref))
                    if field_key(expr) not in self.entry_writes:
                        return SELF
                    # a holder the entries set or clear (kvm_create_lapic() sets vcpu->arch.apic, its failure
                    # path clears it): whether the object is there is state, read as such once widening models it
        return self.hoist(expr)

    def pure(self, expr: Expr) -> Expr | None:
        """An expression over slots, if it needs no input (a decision re-reads it)."""
        pending = self.pending
        self.pending = []
        try:
            resolved = self.value(expr)
            return None if self.pending else resolved
        finally:
            self.pending = pending

    def _setting(self, expr: Expr) -> Expr:
        """A host's setting (a module parameter, `kvm_caps.has_tsc_control`): global scalar state the
        protocol's code never writes is set before any VM runs. One that a function moving the count
        reads is chosen once, the same on every vCPU and wherever it is read, among the values its tests
        tell apart; any other, and anything else global, reads as enabled."""
        ctype, key = getattr(expr, "ctype", CType()), field_key(expr)
        if key is None or key not in self.settings or ctype.ptr or ctype.array or \
                (ctype.record and not ctype.spelling.startswith("enum ")):
            return ENABLED
        slot = self.slots.cpu.setdefault(key, len(self.slots.cpu))
        self.slots.cpu_constant[slot] = ctype
        self.slots.vm_constant.add(slot)
        return Loc("mine", slot, name=key)

    def _reads_modelled(self, expr: Expr) -> bool:
        return field_key(expr) in self.modelled

    def hoist(self, expr: Expr) -> Loc:
        """An unmodelled read: an input op just before the current one. The
        same read again in the same call reads the same value (`memo`):
        nothing in the model changes it meanwhile. Not one through a loop's
        reference to a vCPU (`v->arch.apic_id` in kvm_for_each_vcpu): each
        time it runs, it may read another vCPU's."""
        if expr not in self.memo:
            self.memo[expr] = self.slots.local(f"%in{len(self.slots.locals)}")
        slot = self.memo[expr]
        self.slots.input_types[slot] = getattr(expr, "ctype", CType())
        op = self.current
        # a local struct's field filled by code not run is no state; like memory it cannot name (`*(p + 848)`)
        # or an element of a modelled buffer at an offset it computes, its value is a guess
        reads = (field_key(expr),) if field_key(expr) and local_field(expr) is None else ()
        guess = "" if reads and reads[0] not in self.modelled else re.sub(r"\b\d+:", "", render(expr))
        once = self._through_loop(expr) is None
        self.pending.append(Op("input", (Loc("local", slot), None, reads, once, guess), op.function,
                               op.file, op.line, f"reads {render(expr)} (not modelled)", op.api, op.origin))
        return Loc("local", slot)

    # -- ops --------------------------------------------------------------------

    def op(self, op: Op) -> Op | None:
        kind, args = op.kind, op.args
        if kind == "fill":
            return self._fill(op)
        if kind == "set" and isinstance(args[0], Var) and args[0].name in self.picked and self._picks(args[1]):
            return op.but(kind="pick", args=(self.place(args[0]),))
        if kind == "set":
            target = self.place(args[0]) if not isinstance(args[0], Loc) else args[0]
            if target is None:
                return self._scatter(op, args[0], self.value(args[1]))
            value = self.address(args[0], args[1]) or self.value(args[1])
            if getattr(args[0], "ctype", CType()).is_bool:  # C converts to bool on store
                value = Unary("!", Unary("!", value))
            return op.but(args=(target, value))
        if kind == "atomic":
            dst, loc, amount, returns, unless = args
            target = self.place(loc)
            dst_loc = self.place(dst) if dst is not None else None
            if target is None:
                guess = "" if field_key(loc) else re.sub(r"\b\d+:", "", render(loc))  # memory it cannot name
                return op.but(kind="input", args=(dst_loc, None, (), False, guess)) if dst_loc is not None \
                    else None
            return op.but(args=(dst_loc, target, self.value(amount), returns,
                                None if unless is None else self.value(unless)))
        if kind == "bit":
            word, nr, on, dst = args
            target, old = self.place(word), self.place(dst) if dst is not None else None
            if target is None:
                if old is not None:  # test_and_set_bit() on a word nothing models: its old bit is read as any
                    self.pending.append(op.but(kind="set", args=(old, self.value(bit_of(word, nr)))))
                return self._scatter(op, word, None)
            return op.but(args=(target, self.value(nr), self.value(on), old))
        if kind == "input":
            target = self.place(args[0])
            if isinstance(args[0], Var) and args[0].scope == "local":
                self.slots.input_types[target.slot] = args[0].ctype
            elif target is None:  # a summarised write of state nothing here models: its reads are inputs anyway
                return None
            elif target.kind != "local":  # a summarised write: any value
                slot = self.slots.local(f"%in{len(self.slots.locals)}")
                self.pending.append(op.but(args=(Loc("local", slot), None, (), False, args[4])))
                return op.but(kind="set", args=(target, Loc("local", slot)))
            return op.but(args=(target, args[1], args[2], False, args[4]))
        if kind == "branch":
            return op.but(args=(self.value(args[0]), args[1], args[2]))
        if kind == "each":
            return op.but(args=(self.place(args[0]), args[1], args[2]))
        if kind in ("acquire", "release"):
            return op.but(args=(*args[:-1], self._lock_owner(args[-1])))
        return op

    def _lock_owner(self, lock: Expr | None) -> Loc | None:
        """Whose lock a lock in a per-vCPU object is (`vcpu->arch.irq_lock`, `svm->lock`): each vCPU has
        its own, so holding one's excludes nobody from another's. SELF, or the local holding the other
        vCPU; None for a lock of the VM or the host, one instance for all."""
        if lock is None or self._scope(lock) != "cpu":
            return None
        ref = self._through_loop(lock)
        return Loc("local", self.slots.local(ref)) if ref else SELF

    def _through_loop(self, expr: Expr) -> str | None:
        """The local holding a loop's reference to a vCPU that `expr` is reached through
        (`v->arch.lock` in kvm_for_each_vcpu), if it is."""
        base = root(expr)
        return base.name if isinstance(base, Var) and base.name in self.refs else None

    def _buffer_offsets(self, place: Expr) -> list[int]:
        """The offsets of the elements of a modelled buffer a place may be, none if it is no such buffer's."""
        key = field_key(place)
        return self.elements.get(key, []) if key in self.modelled and key.endswith("[]") else []

    def _element(self, place: Expr, offset: int) -> Loc:
        found = self.place(Unary("*", Binary("+", buffer_access(deref(place))[0], Const(offset))))
        assert found is not None, (place, offset)
        return found

    def _scatter(self, op: Op, place: Expr, value: Expr | None) -> None:
        """A write of a buffer at an offset the code computes: each element the code names takes the
        value if the offset is its own (`value` None: an update it does not follow, any value); a write
        through a local that may point at several fields: each takes it if the local holds its address."""
        fields = self._pointees(place)
        if len(fields) > 1:
            for i, candidate in enumerate(fields):
                element = self.place(candidate)
                if element is None:
                    continue
                if value is None:
                    self._havoc(op, element, render(place))
                    continue
                hit = self._holds(place, i)
                self.pending.append(op.but(kind="set", args=(element, Select(hit, value, element))))
            return None
        for offset in self._buffer_offsets(place):
            element = self._element(place, offset)
            if value is None:
                self._havoc(op, element, render(place))
                continue
            hit = Binary("==", self.value(buffer_access(deref(place))[1]), Const(offset))
            self.pending.append(op.but(kind="set", args=(element, Select(hit, value, element))))
        return None

    def _havoc(self, op: Op, element: Loc, guess: str) -> None:
        slot = self.slots.local(f"%in{len(self.slots.locals)}")
        self.pending.append(op.but(kind="input", args=(Loc("local", slot), None, (), False, guess)))
        self.pending.append(op.but(kind="set", args=(element, Loc("local", slot))))

    def _fill(self, op: Op) -> None:
        """A block copy or fill: every modelled element of the buffer, the field, or the fields of the
        struct it writes is zero for a zero fill (`memset(&svm->irq, 0, sizeof(svm->irq))`), else any
        value: a guess unless it copies from memory the model does not hold (data from user space)."""
        dest, source, byte = op.args
        target = pointee(dest)
        copied = source is not None and field_key(pointee(source)) not in self.modelled
        guess = "" if copied else re.sub(r"\b\d+:", "", op.text)
        zeroed = byte is not None and fold(byte) == 0
        key = field_key(target)
        places = [self.place(target)] if key and not key.endswith("[]") else []
        for member in sorted(m for m in self.modelled if key and m.startswith(f"{key}.") and "[" not in m):
            inner: Expr = target  # a struct filled whole: each of its modelled fields too
            for name in member[len(key) + 1:].split("."):
                inner = Field(inner, name, False, "")
            places.append(self.place(inner))
        places += [self._element(target, offset) for offset in self._buffer_offsets(target)]
        for place in filter(None, places):
            if zeroed:
                self.pending.append(op.but(kind="set", args=(place, Const(0))))
            else:
                self._havoc(op, place, guess)
        return None

    def run(self) -> tuple[list[Op], dict[int, int]]:
        """Resolved ops (targets still labels) and the labels moved to them."""
        out: list[Op] = []
        new_at = []
        for op in self.draft.ops:
            new_at.append(len(out))
            self.current = op
            self.pending = []
            resolved = self.op(op)
            out.extend(self.pending)
            if resolved is not None:
                out.append(resolved)
        new_at.append(len(out))
        return out, {label: new_at[index] for label, index in self.draft.labels.items()}


def _holds_pointer(target: Var, value: Expr) -> bool:
    """Whether a local holds a pointer after `target = value`: by its type, or, for an untyped one (the
    result of an inlined call), by the value's (`__mptr - offsetof(...)`, container_of's)."""
    if target.ctype.ptr or target.ctype.spelling:
        return bool(target.ctype.ptr)
    while isinstance(value, Binary) and value.op in ("+", "-"):
        value = value.left
    return (isinstance(value, Unary) and value.op == "&") or bool(getattr(value, "ctype", CType()).ptr)
