"""Which discipline keeps a set/clear site sound, read off the code.

Each detector looks for the shape of one discipline in the site's hops
(the call in the per-vCPU function, then every wrapper down to the API):
- per-vCPU flag: the site is guarded by a per-vCPU field that the same
  branch updates (`if (!svm->flag) { svm->flag = true; get(); }`);
- VM-wide counter: a wrapper acts only on a counted transition
  (`atomic_add_return(...) == 1`, or a test of a VM-wide field it changes);
- locked counter: the value is computed from a VM-wide count that the same
  function changes under the update lock (`!!hv->synic_auto_eoi_used`);
- recompute over all vCPUs: the value is a local set inside a loop that
  reads per-vCPU state, under the update lock;
- VM-state recompute: one function sets the key under a condition and clears
  it under the negation of the same condition, which does not read the
  running vCPU's own state: the bit is a function of VM-wide state (the
  APIC map built over all vCPUs), whoever runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaudit.analysis.context import Scopes
from kaudit.analysis.sites import Hop, Site
from kaudit.facts import Event, const_value, deref, field_key, owner_record, render, subexprs
from kaudit.kernel_api import ATOMIC_RETURNS_NEW, ATOMIC_UPDATE

UNSAFE = frozenset({"unguarded", "flag-without-counter"})


@dataclass(frozen=True)
class Verdict:
    discipline: str
    why: str
    flag: str | None = None
    counter: str | None = None


def _counter_object(call: dict) -> str | None:
    """The field an atomic operation works on (its last pointer argument)."""
    for arg in reversed(call["args"]):
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
        if ev.kind == "incdec":
            target = field_key(ev.expr["arg"])
        elif ev.kind == "assign" and ev.expr["op"] != "=":
            target = field_key(ev.expr["l"])
        elif ev.kind == "call" and ev.expr.get("callee") in ATOMIC_UPDATE:
            target = _counter_object(ev.expr)
        if target is not None:
            changed[target] = changed.get(target, frozenset(ev.locks)) & frozenset(ev.locks)
    return changed


class DisciplineFinder:
    def __init__(self, scopes: Scopes, events: dict[str, list[Event]], update_lock: str) -> None:
        self.scopes = scopes
        self.events = events
        self.update_lock = update_lock

    def _vm_field(self, expr: dict) -> str | None:
        return field_key(expr) if owner_record(expr) in self.scopes.vm_wide else None

    def flag(self, site: Site) -> str | None:
        if site.action == "computed":
            return None
        want = site.action == "clear"  # a clear runs while the flag is set
        for guard in site.event.guards:
            atom = guard.atom
            if guard.polarity != want or atom.get("k") != "member":
                continue
            if owner_record(atom) not in self.scopes.per_vcpu:
                continue
            key = field_key(atom)
            for ev in self.events[site.function]:
                if (ev.kind == "assign" and ev.expr["op"] == "=" and field_key(ev.expr["l"]) == key
                        and const_value(ev.expr["r"]) == int(not want) and guard in ev.guards):
                    return key
        return None

    def counter(self, site: Site) -> tuple[str, bool] | None:
        """(counter field, whether the transition runs under the update lock)."""
        held: set[str] = set()
        for hop in site.hops:
            held |= set(hop.event.locks)
            found = self._counter_guard(hop)
            if found is not None:
                return found, self.update_lock in held
        return None

    def _counter_guard(self, hop: Hop) -> str | None:
        changed = changed_fields(self.events[hop.function])
        for guard in hop.event.guards:
            for expr in self.reads(guard.atom, hop.function):
                if expr["k"] == "call" and expr.get("callee") in ATOMIC_RETURNS_NEW:
                    key = _counter_object(expr)
                    if key is not None and self._vm_key(key):
                        return key
                if expr["k"] == "member" and self._vm_field(expr) in changed:
                    return field_key(expr)
        return None

    def reads(self, expr: dict, fid: str, depth: int = 2) -> list[dict]:
        """Subexpressions of expr, locals replaced by what was assigned to
        them (`nr = atomic_add_return(...); if (nr == 1)`)."""
        found = list(subexprs(expr))
        if depth == 0:
            return found
        local_names = {e["name"] for e in found if e["k"] == "var" and e["scope"] == "local"}
        for ev in self.events[fid]:
            target = ev.expr.get("l") if ev.kind == "assign" else None
            if target and target.get("k") == "var" and target["name"] in local_names:
                found += self.reads(ev.expr["r"], fid, depth - 1)
        return found

    def _vm_key(self, key: str) -> bool:
        return key.split(".", 1)[0] in self.scopes.vm_wide

    def locked_counter(self, site: Site) -> str | None:
        if site.value is None:
            return None
        changed = changed_fields(self.events[site.api_hop.function])
        locks = set(site.api_hop.event.locks)
        for expr in subexprs(site.value):
            key = self._vm_field(expr) if expr["k"] == "member" else None
            if key in changed and self.update_lock in locks and self.update_lock in changed[key]:
                return key
        return None

    def recompute_loop(self, site: Site) -> str | None:
        value = deref(site.value) if site.value else None
        if value is None or value.get("k") != "var" or value["scope"] != "local":
            return None
        if self.update_lock not in site.api_hop.event.locks:
            return None
        for ev in self.events[site.api_hop.function]:
            if ev.kind != "assign" or not ev.in_loop:
                continue
            target = ev.expr["l"]
            if target.get("k") != "var" or target["name"] != value["name"]:
                continue
            for guard in ev.guards:
                for expr in subexprs(guard.atom):
                    if expr["k"] == "member" and owner_record(expr) in self.scopes.per_vcpu:
                        return render(guard.atom)
        return None

    def vm_recompute(self, site: Site, peers: list[Site]) -> str | None:
        """The condition that picks set or clear, when a peer site in the same
        function does the opposite under its negation."""
        opposite = {"set": "clear", "clear": "set"}.get(site.action)
        mine = {g.branch: g for g in site.event.guards}
        for peer in peers:
            if peer.action != opposite or peer.function != site.function:
                continue
            for guard in peer.event.guards:
                condition, taken = guard.branch
                match = mine.get((condition, not taken))
                if match is None:
                    continue
                side = [g for g in site.event.guards if g.branch == match.branch]
                if not any(self._reads_own_vcpu(g.atom, site.function) for g in side):
                    return " && ".join(render(g.atom) if g.polarity else f"!({render(g.atom)})" for g in side)
        return None

    def _reads_own_vcpu(self, atom: dict, fid: str) -> bool:
        """Whether a condition reads the state of the vCPU the function runs
        on (through its vCPU parameter); state of vCPUs it iterates over is
        VM-wide knowledge."""
        return any(e["k"] == "var" and e["scope"] == "param" and e.get("record") in self.scopes.per_vcpu
                   for e in self.reads(atom, fid))

    def classify(self, site: Site, context: str, peers: list[Site]) -> Verdict:
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
        condition = self.vm_recompute(site, peers)
        if condition:
            return Verdict("vm-recompute", f"set if ({condition}), cleared otherwise: recomputed from VM-wide "
                                           "state by whichever vCPU runs it")
        flag = self.flag(site)
        counted = self.counter(site)
        if flag and counted:
            counter, locked = counted
            if locked:
                return Verdict("per-vcpu-flag-counter",
                               f"per-vCPU flag {flag} makes the request idempotent; VM-wide count "
                               f"{counter} changes the bit on 0<->1 under {self.update_lock}",
                               flag=flag, counter=counter)
            return Verdict("flag-counter-unlocked",
                           f"flag {flag} and count {counter}, but the counted transition is not "
                           f"under {self.update_lock}", flag=flag, counter=counter)
        if counted:
            return Verdict("counter-without-flag",
                           f"VM-wide count {counted[0]} without a per-vCPU flag: a repeated request "
                           "is counted twice and released once", counter=counted[0])
        if flag:
            return Verdict("flag-without-counter",
                           f"per-vCPU flag {flag}, but the VM-wide bit is not counted: another "
                           "vCPU's release still clears it", flag=flag)
        return Verdict("unguarded", "per-vCPU code changes the VM-wide bit with no per-vCPU guard or count")
