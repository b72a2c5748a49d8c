"""What each function touches, transitively: the storage it writes and reads.

A summary names storage by field key (kaudit.ir.names), a lock as
`lock:<key>`, and what a function does through a pointer parameter as
`param:<i>` until a caller's argument says what it points at. The model
uses the summaries to inline exactly the calls that can matter to the
state it checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from kaudit.ir.flow import lock_moves
from kaudit.ir.names import (
    Keys,
    counted_key,
    deref,
    field_key,
    lock_key,
    owner_record,
    pointee,
    root,
    subexprs,
    with_outer,
)
from kaudit.ir.nodes import Assign, Binary, Call, CallOp, Const, Expr, Field, Function, Index, Unary, Var
from kaudit.kernel_api import (
    ATOMIC_READ,
    ATOMIC_SET,
    ATOMIC_UNLESS,
    ATOMIC_UPDATE,
    BIT_CLEAR,
    BIT_SET,
    BIT_TEST,
    BIT_TEST_AND_CLEAR,
    BIT_TEST_AND_SET,
    BITMAP_EMPTY,
    LOCK_ACQUIRE,
    LOCK_RELEASE,
    MEM_COPY,
    MEM_FILL,
    STATIC_KEY_READ,
    STATIC_KEY_UPDATE,
)

if TYPE_CHECKING:  # the lowered program makes its summaries
    from kaudit.ir.program import LoweredProgram


def _place(expr: Expr, params: list[str]) -> str | None:
    """The storage an assignment writes: a field key, or what a parameter points at (`*p`, `p[i]`,
    `*(p + off)`)."""
    expr = deref(expr)
    key = field_key(expr)
    if key is not None:
        return key
    if isinstance(expr, Unary) and expr.op == "*":
        expr = expr.arg
        while isinstance(expr, Binary) and expr.op in ("+", "-"):  # `*(p + off)`
            expr = expr.left
    elif isinstance(expr, Index):
        expr = expr.base
    if isinstance(expr, Var) and expr.scope == "param" and expr.name in params:
        return f"param:{params.index(expr.name)}"
    return None


def _designated(arg: Expr, params: list[str]) -> str | None:
    """The storage a pointer argument designates (kaudit.ir.names.pointee), by key."""
    return _place(pointee(arg), params)


def written_operand(call: Call) -> Expr | None:
    """The operand whose storage a writing kernel primitive changes (the lock a lock call moves)."""
    name, args = call.callee or "", call.args
    if not args:
        return None
    if name in LOCK_ACQUIRE or name in LOCK_RELEASE or name in STATIC_KEY_UPDATE or name in ATOMIC_SET:
        return args[0]
    if name in ATOMIC_UPDATE:
        return args[-1]
    if name in ATOMIC_UNLESS:
        return args[0]
    if (name in BIT_SET or name in BIT_CLEAR or name in BIT_TEST_AND_SET or name in BIT_TEST_AND_CLEAR) \
            and len(args) > 1:
        return args[1]
    if name in MEM_COPY or name in MEM_FILL:  # the memory the destination pointer points at
        return Unary("&", pointee(args[0]))
    return None


def primitive_effects(call: Call, params: list[str]) -> tuple[set[str], set[str]] | None:
    """(writes, reads) of a kernel primitive call, None if it is not one."""
    name = call.callee or ""
    args = call.args
    if not args:
        return None
    if name in LOCK_ACQUIRE or name in LOCK_RELEASE:
        return {f"lock:{_lock_place(args[0], params)}"}, set()
    if name in STATIC_KEY_UPDATE or name in STATIC_KEY_READ:
        key = counted_key(args[0])
        return ({key} if name in STATIC_KEY_UPDATE else set()) if key else set(), {key} if key else set()
    if name in ATOMIC_UPDATE or name in ATOMIC_SET or name in ATOMIC_UNLESS:
        place = _designated(args[-1] if name in ATOMIC_UPDATE else args[0], params)
        return ({place} if place else set()), ({place} if place else set())
    if name in ATOMIC_READ or name in BITMAP_EMPTY:
        place = _designated(args[0], params)
        return set(), {place} if place else set()
    if name in MEM_COPY or name in MEM_FILL:
        place = _designated(args[0], params)
        source = _designated(args[1], params) if name in MEM_COPY and len(args) > 1 else None
        return ({place} if place else set()), ({source} if source else set())
    if name in BIT_SET or name in BIT_CLEAR or name in BIT_TEST or name in BIT_TEST_AND_SET or \
            name in BIT_TEST_AND_CLEAR:
        place = _designated(args[1], params) if len(args) > 1 else None
        return ({place} if place and name not in BIT_TEST else set()), {place} if place else set()
    return None


@dataclass
class Summary:
    writes: set[str] = field(default_factory=set)
    reads: set[str] = field(default_factory=set)
    calls: list[tuple[list[str], tuple[Expr, ...]]] = field(default_factory=list)  # (targets, args)
    makes: set[str] = field(default_factory=set)  # structs it sets a holder pointer to (Effects.seen_by_callers)
    holders: set[str] = field(default_factory=set)  # the holder pointers it sets to an object it makes


def _existing(value: Expr) -> bool:
    """A pointer to an object the caller already holds (`apic->vcpu = vcpu` links the new LAPIC back to
    its vCPU; it makes no vCPU)."""
    base = root(value)
    return isinstance(base, Var) and base.scope == "param"


def _direct(lowered: LoweredProgram, fid: str, function: Function) -> Summary:
    params = [p.name for p in function.params]
    summary = Summary()
    for _, instr in function.instructions():
        if isinstance(instr, Assign):
            target = _place(instr.target, params) if not isinstance(instr.target, Var) or \
                instr.target.scope == "global" else None
            if target:
                summary.writes.add(target)
            ctype = getattr(instr.target, "ctype", None)
            if isinstance(instr.target, Field) and ctype is not None and ctype.ptr and ctype.record \
                    and ctype.record != owner_record(instr.target) and not isinstance(instr.value, Const) \
                    and not _existing(instr.value):
                summary.makes.add(ctype.record)  # `vcpu->arch.hyperv = hv_vcpu`
                if (key := field_key(instr.target)) is not None:
                    summary.holders.add(key)
            for expr in subexprs(instr.value):
                if isinstance(expr, (Field, Var)) and (key := field_key(expr)):
                    summary.reads.add(key)
        elif isinstance(instr, CallOp):
            prim = primitive_effects(instr.call, params)
            if prim is not None:
                summary.writes |= prim[0]
                summary.reads |= prim[1]
            else:
                summary.calls.append((lowered.targets(fid, instr.call), instr.call.args))
    for block in function.blocks:
        for expr in _conditions(block):
            for sub in subexprs(expr):
                if isinstance(sub, (Field, Var)) and (key := field_key(sub)):
                    summary.reads.add(key)
    return summary


def _conditions(block) -> list[Expr]:
    """What a block's terminator reads: a branch's condition, a returned value."""
    read = getattr(block.term, "cond", None) or getattr(block.term, "value", None)
    return [read] if read is not None else []


class Effects:
    """Transitive write and read summaries of every function of the program."""

    def __init__(self, lowered: LoweredProgram) -> None:
        self.lowered = lowered
        functions = {fid: lowered.function(fid) for fid in sorted(lowered.program.functions)}
        self._direct = {fid: _direct(lowered, fid, fn) for fid, fn in functions.items()}
        self.writes = {fid: set(s.writes) for fid, s in self._direct.items()}
        self.reads = {fid: set(s.reads) for fid, s in self._direct.items()}
        self._propagate({fid: [p.name for p in fn.params] for fid, fn in functions.items()})
        self._locks: dict[str, LockEffect] = {}
        self._plain_reads: dict[str, frozenset[str]] = {}
        self._plain_writes: dict[str, frozenset[str]] = {}
        self._reads_closed: dict[str, frozenset[str]] = {}
        self._writes_closed: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._of_call: dict[tuple[str, Call], tuple[frozenset[str], frozenset[str]]] = {}
        self.vcpu_written: set[str] | None = None  # filled by the model: what per-vCPU functions write

    def _propagate(self, params: dict[str, list[str]]) -> None:
        """Close the summaries over the calls, semi-naively: only what a callee newly gained is bound
        into its callers, so each place crosses each call once."""
        callers: dict[str, list[tuple[str, tuple[Expr, ...]]]] = {}
        for fid, summary in self._direct.items():
            for targets, args in summary.calls:
                for target in targets:
                    if target in self._direct:
                        callers.setdefault(target, []).append((fid, args))
        new = {fid: (set(self.writes[fid]), set(self.reads[fid])) for fid in self._direct}
        work = sorted(new)
        while work:
            target = work.pop()
            gained = new.pop(target, None)
            if gained is None:
                continue
            for fid, args in callers.get(target, ()):
                for mine, theirs, index in ((self.writes[fid], self.seen_by_callers(target, gained[0]), 0),
                                            (self.reads[fid], gained[1], 1)):
                    added = _bind(theirs, args, params[fid]) - mine
                    if added:
                        mine |= added
                        if fid not in new:
                            new[fid] = (set(), set())
                            work.append(fid)
                        new[fid][index].update(added)

    def of_call(self, caller: str, call: Call) -> tuple[frozenset[str], frozenset[str]]:
        """(writes, reads) of one call, in its caller's terms; computed once per call (the model's
        widening compiles asks again for every call it meets)."""
        memo = (caller, call)
        if memo not in self._of_call:
            params = [p.name for p in self.lowered.function(caller).params]
            prim = primitive_effects(call, params)
            writes, reads = prim if prim is not None else (set(), set())
            if prim is None:
                for target in self.lowered.targets(caller, call):
                    writes |= _bind(self.seen_by_callers(target), call.args, params)
                    reads |= _bind(self.reads.get(target, ()), call.args, params)
            self._of_call[memo] = (frozenset(writes), frozenset(reads))
        return self._of_call[memo]

    def target_writes(self, target: str, args: tuple[Expr, ...]) -> set[str]:
        """The storage (no parameter; a lock by its name) a callee writes when called with these arguments,
        which name what they point at themselves (`drop(&vcpu->arch.flag)` writes the flag; the model's
        inliner passes arguments already in its outermost caller's terms, however deep the call)."""
        return _plain(_bind(self.seen_by_callers(target), args, []))

    def data_writes(self, caller: str, call: Call) -> set[str]:
        """The storage (no lock, no parameter) one call writes, in its caller's terms."""
        return {p for p in self.of_call(caller, call)[0] if not p.startswith(("lock:", "param:"))}

    def callees(self, fid: str) -> list[str]:
        """The functions a function may call directly (through tables too)."""
        return sorted({t for targets, _ in self._direct[fid].calls for t in targets} & self._direct.keys()) \
            if fid in self._direct else []

    def writes_besides(self, fid: str, callee: str) -> set[str]:
        """What a function writes itself or through calls of anything but `callee` (no parameters, no locks)."""
        if fid not in self._direct:
            return set()
        direct = self._direct[fid]
        params = [p.name for p in self.lowered.function(fid).params]
        out = _plain(direct.writes)
        for targets, args in direct.calls:
            for target in targets:
                if target != callee:
                    out |= _plain(_bind(self.seen_by_callers(target), args, params))
        return out

    @cached_property
    def holders(self) -> frozenset[str]:
        """The pointers some function sets to an object it makes (`vcpu->arch.hyperv`): each holds its
        object, made and filled by its maker, or NULL."""
        return frozenset(key for summary in self._direct.values() for key in summary.holders)

    @cached_property
    def written_anywhere(self) -> frozenset[str]:
        """Everything some function of the program writes."""
        return frozenset(w for writes in self.writes.values() for w in writes)

    def seen_by_callers(self, fid: str, writes: set[str] | None = None) -> set[str]:
        """What a function's callers see it write: all it writes, but the fields of a struct it sets a
        holder pointer to (kvm_hv_vcpu_init() sets `vcpu->arch.hyperv` to the context it allocates and
        fills): those are a new object's, not the one a caller holds. An assumption, as Extractor.makes."""
        writes = self.writes.get(fid, set()) if writes is None else writes
        made = self._made(fid)
        return {w for w in writes if not w.startswith(made)} if made else writes

    def own_writes(self, fid: str) -> set[str]:
        """The storage a function writes itself, not through its calls (no parameters; a lock by its name)."""
        return _plain(self._direct[fid].writes) if fid in self._direct else set()

    def plain_reads(self, fid: str) -> frozenset[str]:
        """The storage a function reads, with what it calls (no parameters; a lock by its name)."""
        if fid not in self._plain_reads:
            self._plain_reads[fid] = frozenset(_plain(self.reads.get(fid, ())))
        return self._plain_reads[fid]

    def plain_writes(self, fid: str) -> frozenset[str]:
        if fid not in self._plain_writes:  # asked for each call the model compiles: once per function
            self._plain_writes[fid] = frozenset(_plain(self.writes.get(fid, ())))
        return self._plain_writes[fid]

    def writes_any(self, fid: str, interesting: Keys) -> bool:
        """Whether a function (with what it calls) writes any interesting storage: a key itself, or a
        struct that holds one, but for a struct of the object it makes (the synic kvm_hv_vcpu_init()
        clears is the new context's, seen_by_callers)."""
        writes = self.plain_writes(fid)
        if writes & interesting.keys:
            return True
        if fid not in self._writes_closed:  # the writes but a made object's, with the structs holding them
            kept = frozenset(self.seen_by_callers(fid, writes))
            self._writes_closed[fid] = (kept, with_outer(kept))
        kept, closed = self._writes_closed[fid]
        return bool(closed & interesting.keys or kept & interesting.holding)

    def _made(self, fid: str) -> tuple[str, ...]:
        return tuple(f"{record}." for record in sorted(self._direct[fid].makes)) if fid in self._direct else ()

    def reads_any(self, fid: str, interesting: Keys) -> bool:
        if fid not in self._reads_closed:
            self._reads_closed[fid] = with_outer(self.plain_reads(fid))
        # a read names every struct on its path (`kvm->arch` in `kvm->arch.x`), which reads no field but
        # the one named: a read reads a key, or a field inside one, not the struct that holds one
        return bool(self._reads_closed[fid] & interesting.keys)

    def changes_locks(self, fid: str) -> bool:
        """Whether a call of the function can leave the locks held otherwise than it found them: a lock or
        unlock helper (`class_mutex_constructor`, `mmap_read_lock()`), or a function that calls one
        unpaired. A function that takes and drops its own locks, touching nothing of interest, can
        only delay the caller: the model need not run it."""
        effect = self.lock_effect(fid)
        return bool(effect.takes or effect.drops)

    def lock_effect(self, fid: str) -> LockEffect:
        if fid not in self._locks:
            self._locks[fid] = LockEffect(frozenset(), frozenset())  # recursion: assume paired
            self._locks[fid] = self._lock_flow(self.lowered.function(fid))
        return self._locks[fid]

    def _lock_flow(self, function: Function) -> LockEffect:
        """What is held at every return without having been held at entry was taken for the caller;
        what is released where no path took it was the caller's. Locks taken and dropped under the
        same local test (`if (!locked) { spin_lock(); locked = true; }`) are neither."""
        params = [p.name for p in function.params]
        moves = [[m for instr in block.instrs for m in self._lock_moves(function.fid, instr, params)]
                 for block in function.blocks]
        may = _held(function, moves, frozenset.__or__)
        must = _held(function, moves, frozenset.__and__)
        takes: frozenset[str] | None = None
        drops: set[str] = set()
        for block in function.blocks:
            if may[block.id] is None:
                continue
            held = set(may[block.id])
            for key, taken in moves[block.id]:
                if not taken and key not in held:
                    drops.add(key)
                (held.add if taken else held.discard)(key)
            if not function.successors(block):
                at_exit = _after(must[block.id], moves[block.id])
                takes = at_exit if takes is None else takes & at_exit
        return LockEffect(takes or frozenset(), frozenset(drops))

    def _lock_moves(self, fid: str, instr, params: list[str]) -> list[tuple[str, bool]]:
        """(lock, taken?) for each lock an instruction takes or drops, itself or through a callee that
        leaves them changed, in the function's own terms."""
        own = lock_moves(instr, self.lowered.guard_lock)
        if own or not isinstance(instr, CallOp):  # a lock only a local points at is none the caller can name
            return [(_lock_place(lock, params), taken) for lock, taken in own if not _local_lock(lock)]
        moves = []
        for target in self.lowered.targets(fid, instr.call):
            if target in self._direct:
                effect = self.lock_effect(target)
                moves += [(_bind_lock(k, instr.call.args, params), True) for k in sorted(effect.takes)]
                moves += [(_bind_lock(k, instr.call.args, params), False) for k in sorted(effect.drops)]
        return moves


@dataclass(frozen=True)
class LockEffect:
    """What one run of a function leaves changed in the locks its caller holds."""

    takes: frozenset[str]  # may be held at a return without having been held at entry
    drops: frozenset[str]  # released without having been taken here: the caller's


def _after(held: frozenset[str] | None, moves: list[tuple[str, bool]]) -> frozenset[str]:
    out = set(held or ())
    for key, taken in moves:
        (out.add if taken else out.discard)(key)
    return frozenset(out)


def _held(function: Function, moves: list[list[tuple[str, bool]]], meet) -> list[frozenset[str] | None]:
    """The locks held on entry to each block since the function's entry, joined by `meet`
    (union: may be held; intersection: held on every path); None where no path goes."""
    entry: list[frozenset[str] | None] = [None] * len(function.blocks)
    entry[0] = frozenset()
    work = [0]
    while work:
        block = function.blocks[work.pop()]
        out = _after(entry[block.id], moves[block.id])
        for nxt in function.successors(block):
            new = out if entry[nxt] is None else meet(entry[nxt], out)
            if new != entry[nxt]:
                entry[nxt] = new
                work.append(nxt)
    return entry


def _local_lock(expr: Expr) -> bool:
    """`spin_unlock(ptl)` after `follow_pte(..., &ptl)`: the lock a local pointer holds."""
    inner = deref(expr)
    return isinstance(inner, Var) and inner.scope == "local"


def _lock_place(expr: Expr, params: list[str]) -> str:
    return _place(expr, params) or lock_key(expr)


def _bind_lock(key: str, args: tuple[Expr, ...], params: list[str]) -> str:
    if key.startswith("param:") and int(key[6:]) < len(args):
        return _lock_place(args[int(key[6:])], params)
    return key


def _plain(places: set[str] | tuple) -> set[str]:
    return {p[5:] if p.startswith("lock:") else p for p in places if not p.startswith("param:")}


def _bind(places, args: tuple[Expr, ...], params: list[str]) -> set[str]:
    """A callee's places in the caller's terms (`param:i` -> what argument i points at)."""
    out = set()
    for place in places:
        if "param:" not in place:
            out.add(place)
            continue
        prefix = "lock:" if place.startswith("lock:") else ""
        bare = place[len(prefix):]
        index = int(bare[6:])
        if index < len(args) and (bound := _designated(args[index], params)):
            out.add(prefix + bound)
    return out
