"""Which discipline a set/clear site has the shape of, read off the code.

This is the static reading; the runtime model then judges the site and,
when it proves it sound, names the discipline from what the proof relied
on (kaudit.model.check). Each shape, in the site's hops (the call in the
per-vCPU function, then every wrapper down to the API):
- per-vCPU flag: the site is guarded by a per-vCPU field that the same
  branch updates (`if (!svm->flag) { svm->flag = true; get(); }`);
- VM-wide counter: a wrapper acts only on a counted transition
  (`atomic_add_return(...) == 1`, or a test of a VM-wide field it changes);
- locked counter: the value is computed from a VM-wide count that the same
  function changes under the update lock (`!!hv->synic_auto_eoi_used`);
- recompute over all vCPUs: the value is a local set inside a loop over
  every vCPU that reads the vCPU's state, under the update lock;
- VM-state recompute: one function sets the key on one side of a condition
  and clears it on the other, nothing else guarding either, and the
  condition reads no state of the running vCPU: the bit is a function of
  VM-wide state (the APIC map built over all vCPUs), whoever runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import networkx as nx

from kaudit.analysis.context import Scopes, held_by_callers
from kaudit.analysis.sites import Hop, Site
from kaudit.ir.evaluate import truth_operand
from kaudit.ir.flow import Event
from kaudit.ir.names import deref, field_key, owner_record, render, subexprs
from kaudit.ir.nodes import Assign, Branch, Call, Expr, Field, Var
from kaudit.ir.program import LoweredProgram
from kaudit.kernel_api import ATOMIC_UNLESS, ATOMIC_UPDATE

# Static shapes that predict a violation (the model then confirms it, or says the two disagree).
UNSAFE = frozenset({"unguarded", "flag-without-counter", "counter-without-flag", "flag-counter-unlocked"})
Read = Expr | Call


@dataclass(frozen=True)
class Verdict:
    discipline: str
    why: str
    flag: str | None = None
    counter: str | None = None


def counter_object(call: Call) -> str | None:
    """The field an atomic operation works on (its last pointer argument)."""
    for arg in reversed(call.args):
        key = field_key(arg)
        if key is not None:
            return key
    return None


def changed_fields(events: list[Event]) -> dict[str, frozenset[str]]:
    """Fields a function updates (++, --, compound assignment, atomics),
    with the locks held at every one of its updates."""
    changed: dict[str, frozenset[str]] = {}
    for ev in events:
        target = None
        if isinstance(ev.instr, Assign) and ev.instr.op not in ("=", "copy"):
            target = field_key(ev.instr.target)
        elif ev.call is not None and (ev.call.callee in ATOMIC_UPDATE or ev.call.callee in ATOMIC_UNLESS):
            target = counter_object(ev.call)
        if target is not None:
            changed[target] = changed.get(target, frozenset(ev.locks)) & frozenset(ev.locks)
    return changed


class DisciplineFinder:
    def __init__(self, lowered: LoweredProgram, graph: nx.DiGraph, scopes: Scopes, update_lock: str) -> None:
        self.lowered = lowered
        self.graph = graph
        self.scopes = scopes
        self.update_lock = update_lock
        self._count_locks: dict[str, frozenset[str]] = {}

    def _vm_field(self, expr: Expr) -> str | None:
        return field_key(expr) if owner_record(expr) in self.scopes.vm_wide else None

    def flag(self, site: Site, path: list[str]) -> str | None:
        """A per-vCPU field that a guard on the way to the API reads (itself
        or through an accessor) and the guarded path writes (itself or
        through a helper), whatever the value: the vCPU records that it
        asked. The way runs from the per-vCPU caller (`path`) down the hops. A test that writes what
        it reads (`test_and_set_bit(0, &vcpu->arch.flags)`) records it in the same step."""
        if site.action == "computed":
            return None
        for hop in (*site.hops, *self.callers(path)):
            for guard in hop.event.guards:
                tested = self.vcpu_state(guard.atom, hop.function)
                calls = [read for read in self.reads(guard.atom, hop.function) if isinstance(read, Call)]
                if written := tested & self._per_vcpu(set().union(
                        *(self.lowered.effects.of_call(hop.function, call)[0] for call in calls))):
                    return min(written)
                for ev in self.events(hop):
                    written = tested & self.vcpu_writes(ev, hop.function) if guard in ev.guards else set()
                    if written:
                        return min(written)
        return None

    def events(self, hop: Hop) -> list[Event]:
        """The events of the hop's function as the caller sees them: those its event is one of."""
        return self.lowered.specialised_events(hop.function, dict(hop.bound))

    def callers(self, path: list[str]) -> list[Hop]:
        """The calls down a call path (per-vCPU entry first) to its last function, innermost first."""
        hops = []
        for caller, callee in pairwise(path):
            hops += [Hop(caller, ev) for ev in self.lowered.events(caller)
                     if ev.call is not None and callee in self.lowered.targets(caller, ev.call)]
        return hops[::-1]

    def _per_vcpu(self, keys: set[str]) -> set[str]:
        return {k for k in keys if k.split(".", 1)[0] in self.scopes.per_vcpu}

    def vcpu_state(self, expr: Expr, fid: str) -> set[str]:
        """The per-vCPU fields a condition reads, through locals and calls."""
        keys = set()
        for read in self.reads(expr, fid):
            if isinstance(read, Call):
                keys |= self.lowered.effects.of_call(fid, read)[1]
            elif (key := field_key(read)) is not None:
                keys.add(key)
        return self._per_vcpu(keys)

    def vcpu_writes(self, ev: Event, fid: str) -> set[str]:
        """The per-vCPU fields one event writes, itself or in what it calls."""
        if isinstance(ev.instr, Assign):
            key = field_key(ev.instr.target)
            return self._per_vcpu({key}) if key else set()
        return self._per_vcpu(self.lowered.effects.of_call(fid, ev.call)[0]) if ev.call is not None else set()

    def counter(self, site: Site, path: list[str]) -> tuple[str, str] | None:
        """(counter field, the lock under which its transition and the API call
        run and that serialises them: the update lock, or a lock held at every
        update of the count; "" for none)."" The transition may also guard the call to
        the site's function in a per-vCPU caller (`if (atomic_inc_return(&c) ==
        1) recheck(kvm);`) when the way to the site in its function tests that
        count (the recheck decides the bit from it): the lock must then be
        held where the count moves."""
        callers = self.callers(path)  # innermost first
        held: set[str] = set().union(*(hop.event.locks for hop in callers),
                                     held_by_callers(self.lowered, self.graph, path[0] if path else site.function))
        for hop in site.hops:
            held |= set(hop.event.locks)
            found = self._counter_guard(hop)
            if found is not None:
                return found, self._serialising(held, found)
        for index, hop in enumerate(callers):
            found = self._counter_guard(hop)
            if found is not None and self._decided_by(site, found):
                there = set().union(*(outer.event.locks for outer in callers[index:]))
                return found, self._serialising(there, found)
        return None

    def _serialising(self, held: set[str], key: str) -> str:
        """The lock among `held` that serialises the moves of count `key` ("" for none): the update lock
        first, else one held at every update of the count."""
        serialising = held & ({self.update_lock} | self.count_locks(key))
        return self.update_lock if self.update_lock in serialising else min(serialising, default="")

    def _decided_by(self, site: Site, key: str) -> bool:
        """Whether a test on the way to the site's API call in its own function reads the count `key`."""
        return any(key in {counter_object(r) if isinstance(r, Call) else field_key(r)
                           for r in self.reads(guard.atom, site.function)} for guard in site.event.guards)

    def count_locks(self, key: str) -> frozenset[str]:
        """The locks held at every update of a count, in the functions that update it or by all their
        callers."""
        if key not in self._count_locks:
            changed = ((fid, changed_fields(events)) for fid, events in self.lowered.all_events.items())
            held = [locks[key] | held_by_callers(self.lowered, self.graph, fid) for fid, locks in changed
                    if key in locks]
            self._count_locks[key] = frozenset.intersection(*held) if held else frozenset()
        return self._count_locks[key]

    def _counter_guard(self, hop: Hop) -> str | None:
        changed = changed_fields(self.events(hop))
        for guard in hop.event.guards:
            for read in self.reads(guard.atom, hop.function):
                if isinstance(read, Call) and (read.callee in ATOMIC_UPDATE or read.callee in ATOMIC_UNLESS):
                    # its new or old value, or whether it moved: a transition
                    key = counter_object(read)
                    if key is not None and self._vm_key(key):
                        return key
                elif isinstance(read, Call):  # a helper that moves a VM-wide count and returns its test
                    writes, reads = self.lowered.effects.of_call(hop.function, read)
                    if moved := sorted(k for k in writes & reads if self._vm_key(k)):
                        return moved[0]
                if isinstance(read, Field) and self._vm_field(read) in changed:
                    return field_key(read)
        return None

    def reads(self, expr: Expr, fid: str, depth: int = 2) -> list[Read]:
        """What an expression reads: its subexpressions, the calls whose
        results it uses, and (to `depth`) what its locals were assigned
        (`nr = atomic_add_return(...); if (nr == 1)`)."""
        function = self.lowered.function(fid)
        found: list[Read] = []
        locals_read = set()
        for sub in subexprs(expr):
            found.append(sub)
            if isinstance(sub, Var) and sub.scope == "temp" and sub.name in function.temps:
                call = function.temps[sub.name]
                found.append(call)
                for arg in call.args:  # `is_x2apic(old)`: what `old` was assigned, too
                    found += self.reads(arg, fid, depth)
            elif isinstance(sub, Var) and sub.scope in ("local", "temp"):
                locals_read.add(sub)
        if depth:
            for ev in self.lowered.events(fid):
                if isinstance(ev.instr, Assign) and ev.instr.target in locals_read:
                    found += self.reads(ev.instr.value, fid, depth - 1)
        return found

    def _vm_key(self, key: str) -> bool:
        return key.split(".", 1)[0] in self.scopes.vm_wide

    def locked_counter(self, site: Site) -> str | None:
        if site.value is None:
            return None
        changed = changed_fields(self.lowered.events(site.api_hop.function))
        locks = set(site.api_hop.event.locks)
        for expr in subexprs(site.value):
            key = self._vm_field(expr) if isinstance(expr, Field) else None
            if key in changed and self.update_lock in locks and self.update_lock in changed[key]:
                return key
        return None

    def recompute_loop(self, site: Site) -> str | None:
        value = truth_operand(deref(site.value)) if site.value is not None else None
        if not isinstance(value, Var) or value.scope != "local":
            return None
        if self.update_lock not in site.api_hop.event.locks:
            return None
        function = self.lowered.function(site.api_hop.function)
        for ev in self.lowered.events(site.api_hop.function):
            if not isinstance(ev.instr, Assign) or ev.instr.target != value:
                continue
            if not any(function.loops[loop].kind == "vcpus" for loop in ev.loops):
                continue
            for guard in ev.guards:
                if self.vcpu_state(guard.atom, site.api_hop.function):
                    return render(guard.atom, function.temps)
        return None

    def vm_recompute(self, site: Site, peers: list[Site]) -> str | None:
        """The condition that picks set or clear, when a peer site reached by the same calls does the
        opposite on the other side of exactly that condition in the same function (the site's own, or a
        helper on the way down: `kvm_pit_set_reinject(pit, val & 1)`), nothing else guarding either, and
        the condition does not read the running vCPU's own state, there or in what the calls above pass."""
        opposite = {"set": "clear", "clear": "set"}.get(site.action)
        for peer in peers:
            if peer.action != opposite:
                continue
            depth = _split_depth(site, peer)
            if depth is None:
                continue
            mine, theirs = site.hops[depth].event.sides, peer.hops[depth].event.sides
            if not mine or len(theirs) != len(mine):
                continue
            source, side = mine[-1]
            if theirs[:-1] != mine[:-1] or theirs[-1] != (source, not side):
                continue
            fid = site.hops[depth].function
            function = self.lowered.function(fid)
            atoms = [b.term.cond for b in function.blocks if isinstance(b.term, Branch) and b.term.source == source]
            if atoms and not any(self._reads_own_vcpu(site, depth, atom) for atom in atoms):
                condition = " && ".join(render(a, function.temps) for a in atoms)
                return condition if side else f"!({condition})"
        return None

    def _reads_own_vcpu(self, site: Site, depth: int, expr: Expr) -> bool:
        """Whether an expression in the function of site.hops[depth] reads the state of the vCPU it runs
        on: through a vCPU parameter, or through a parameter whose argument in the call above does (state
        of vCPUs it iterates over is VM-wide knowledge)."""
        fid = site.hops[depth].function
        params = [p.name for p in self.lowered.function(fid).params]
        for read in self.reads(expr, fid):
            if not (isinstance(read, Var) and read.scope == "param"):
                continue
            if read.ctype.record in self.scopes.per_vcpu:
                return True
            if depth and read.name in params:
                call = site.hops[depth - 1].event.call
                index = params.index(read.name)
                if call is None or index >= len(call.args) or self._reads_own_vcpu(site, depth - 1, call.args[index]):
                    return True
        return False

    def classify(self, site: Site, context: str, peers: list[Site], path: list[str]) -> Verdict:
        if context == "vm":
            return Verdict("vm-scope", "changed only from VM-scope code (no vCPU parameter, no per-vCPU caller)")
        if site.action == "computed":
            loop = self.recompute_loop(site)
            if loop:
                return Verdict("recompute-all-vcpus",
                               f"value recomputed from every vCPU ({loop}) under {self.update_lock}")
            counter = self.locked_counter(site)
            if counter:
                return Verdict("locked-counter",
                               f"value is !!{counter}, a VM-wide count changed under {self.update_lock}",
                               counter=counter)
        flag = self.flag(site, path)
        counted = self.counter(site, path)
        condition = self.vm_recompute(site, peers)
        if condition and not counted:  # reached through a count of requests, the bit is theirs: not VM state
            return Verdict("vm-recompute", f"set if ({condition}), cleared otherwise: recomputed from VM-wide "
                                           "state by whichever vCPU runs it")
        if flag and counted:
            counter, lock = counted
            if lock:
                return Verdict("per-vcpu-flag-counter",
                               f"per-vCPU flag {flag} makes the request idempotent; VM-wide count "
                               f"{counter} changes the bit on 0<->1 under {lock}",
                               flag=flag, counter=counter)
            return Verdict("flag-counter-unlocked",
                           f"flag {flag} and count {counter}, but no one lock covers both the counted "
                           "transition and the change of the bit", flag=flag, counter=counter)
        if counted:
            return Verdict("counter-without-flag",
                           f"VM-wide count {counted[0]} without a per-vCPU flag: a repeated request "
                           "is counted twice and released once", counter=counted[0])
        if flag:
            return Verdict("flag-without-counter",
                           f"per-vCPU flag {flag}, but the VM-wide bit is not counted: another "
                           "vCPU's release still clears it", flag=flag)
        if site.action == "computed":
            return Verdict("unguarded", f"per-vCPU code computes the VM-wide bit from state it does not hold "
                                        f"{self.update_lock} for")
        return Verdict("unguarded", "per-vCPU code changes the VM-wide bit with no per-vCPU guard or count")


def _split_depth(site: Site, peer: Site) -> int | None:
    """The hop where two sites reached by the same calls part: the depth of the first event they do not
    share, in a function both are in (None where they part between functions)."""
    for depth, (mine, theirs) in enumerate(zip(site.hops, peer.hops, strict=False)):
        if mine.function != theirs.function:
            return None
        if mine.event.instr != theirs.event.instr:
            return depth
    return None
