"""Engine `counter-transition`: VM-wide (or host-wide) counts of vCPUs that
per-vCPU code moves must move only on a per-vCPU state transition, or once
per vCPU lifetime.

A count of vCPUs is a field of a VM-wide struct, or a global (a static key),
that per-vCPU code (functions with a per-vCPU parameter: the vCPU they run
for is the one that contributes) moves by one, both up and down (or up and
back to zero), directly or through a thin helper that does nothing else
(`lint1_get(kvm) { atomic_inc(&kvm->arch.n); }`). Statistics that only
grow, and resource accounting moved by amounts, are not counts of vCPUs.
Each update is judged:
- `lifecycle`: its function runs only within the rule's vCPU lifecycle
  entry points (create, destroy), once per vCPU;
- `transition-guarded`: guarded by a test of per-vCPU state that the same
  function then updates (`if (apic->sw_enabled != enabled) {
  apic->sw_enabled = enabled; inc/dec }`), so each vCPU contributes once;
- `recount`: the count is rebuilt from zero under a lock, counted up once for
  each vCPU whose state a loop over every vCPU tests (`n = 0;
  kvm_for_each_vcpu(i, v, kvm) if (v->arch.f) n++;`);
- `unguarded`: a repeated call counts twice and the count drifts.
The runtime model then runs every vCPU's lifetime (kaudit.model).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from kaudit.analysis.context import calls_of, infer_scopes, only_callers, path_from_vcpu, per_vcpu_functions
from kaudit.analysis.discipline import DisciplineFinder, Verdict
from kaudit.analysis.results import Analysis, Finding, JudgedSite
from kaudit.analysis.sites import Hop, Site
from kaudit.ir.evaluate import fold
from kaudit.ir.flow import Event, step
from kaudit.ir.names import counted_key, deref, field_key, owner_record, render
from kaudit.ir.nodes import Assign, Field, Return
from kaudit.ir.program import LoweredProgram
from kaudit.kernel_api import ATOMIC_UNLESS, ATOMIC_UPDATE, STATIC_KEY_UPDATE
from kaudit.rules import Rule


@dataclass(frozen=True)
class Update:
    """A count moved at `event` of `function` (itself, or through `hops` of helpers)."""

    key: str
    kind: str  # inc | dec | reset
    function: str
    hops: tuple[Hop, ...]


def update_of(ev: Event) -> tuple[str, str] | None:
    """(counted object, "inc" | "dec" | "reset") of an event that moves it by
    one (or resets it to zero)."""
    instr = ev.instr
    if isinstance(instr, Assign):
        delta = step(instr)
        key = counted_key(instr.target)
        if key and delta in (1, -1):
            return key, "inc" if delta == 1 else "dec"
        if key and instr.op == "=" and fold(instr.value) == 0:
            return key, "reset"
        return None
    call = ev.call
    if call is None or not call.args:
        return None
    name = call.callee or ""
    if ATOMIC_UPDATE.get(name) in (1, -1):
        key = counted_key(call.args[-1])
        return (key, "inc" if ATOMIC_UPDATE[name] == 1 else "dec") if key else None
    if name in ATOMIC_UNLESS:
        delta = ATOMIC_UNLESS[name][0]
        delta = fold(call.args[1]) if delta is None and len(call.args) > 1 else delta
        key = counted_key(call.args[0])
        return (key, "inc" if delta == 1 else "dec") if key and delta in (1, -1) else None
    if name in STATIC_KEY_UPDATE:
        key = counted_key(call.args[0])
        return (key, "inc" if STATIC_KEY_UPDATE[name] == 1 else "dec") if key else None
    return None


def _shared(key: str, lowered: LoweredProgram, vm_wide: frozenset[str]) -> bool:
    """A VM-wide field, or a global (host-wide state such as a static key):
    field keys start with the owning struct, globals with their name."""
    head = key.split(".", 1)[0]
    return head in vm_wide or head not in lowered.program.structs


def _writes(lowered: LoweredProgram, fid: str, per_vcpu: frozenset[str]) -> set[str]:
    """Per-vCPU fields a function updates: assigned, passed to a call (`__set_bit(v,
    synic->auto_eoi_bitmap)`), or written by a call (a helper that records the new state)."""
    written = set()
    for ev in lowered.events(fid):
        if isinstance(ev.instr, Assign) and owner_record(ev.instr.target) in per_vcpu:
            written.add(field_key(ev.instr.target))
        elif ev.call is not None:
            for arg in ev.call.args:
                arg = deref(arg)
                if isinstance(arg, Field) and owner_record(arg) in per_vcpu:
                    written.add(field_key(arg))
            written |= {w for w in lowered.effects.of_call(fid, ev.call)[0] if w.split(".", 1)[0] in per_vcpu}
    return written


def collect_updates(lowered: LoweredProgram, per_vcpu_fns: set[str]) -> list[Update]:
    """Every count update in per-vCPU code, thin helpers followed to a fixpoint."""
    direct: dict[str, list[tuple[str, str, Event]]] = {}
    for fid, evs in lowered.all_events.items():
        for ev in evs:
            found = update_of(ev)
            if found:
                direct.setdefault(fid, []).append((*found, ev))
    helpers: dict[str, list[tuple[str, str, tuple[Hop, ...]]]] = {}
    for fid, found in direct.items():
        body = [i for _, i in lowered.function(fid).instructions() if not isinstance(i, Return)]
        if fid not in per_vcpu_fns and len(found) == len(body) == 1:
            key, kind, ev = found[0]
            helpers[fid] = [(key, kind, (Hop(fid, ev),))]
    changed = True
    updates: list[Update] = []
    while changed:
        changed = False
        updates = []
        for fid, evs in lowered.all_events.items():
            own = [(k, kind, (Hop(fid, ev),)) for k, kind, ev in direct.get(fid, [])]
            for ev in evs:
                if ev.call is None or not ev.call.callee:
                    continue
                target = lowered.program.resolve_name(fid, ev.call.callee)
                own += [(k, kind, (Hop(fid, ev), *hops)) for k, kind, hops in helpers.get(target, [])]
            if fid in per_vcpu_fns:
                updates += [Update(k, kind, fid, hops) for k, kind, hops in own]
            elif fid not in helpers and len(own) == 1 and len(list(lowered.function(fid).instructions())) == 1:
                helpers[fid] = own
                changed = True
    return updates


def lifecycle_only(graph: nx.DiGraph, lowered: LoweredProgram, rule: Rule) -> set[str]:
    """Functions that run only inside the rule's lifecycle entry points (the vCPU's create and destroy,
    the VM's): the entries, and every function all of whose callers are such functions, directly or
    through a table's slot (`kvm_x86_ops.vcpu_create`), and that no caller the graph does not show
    can reach (_called_from_outside)."""
    program = lowered.program
    inside = {fid for name in (*rule.lifecycle.create, *rule.lifecycle.destroy, *rule.lifecycle.vm)
              for fid in program.functions_named(name)}
    changed = True
    while changed:
        changed = False
        for fid in sorted(program.functions):
            callers = set(graph.predecessors(fid)) if fid in graph else set()
            if fid not in inside and callers and callers <= inside \
                    and not _called_from_outside(graph, lowered, fid, callers):
                inside.add(fid)
                changed = True
    return inside


def _called_from_outside(graph: nx.DiGraph, lowered: LoweredProgram, fid: str, callers: set[str]) -> bool:
    """Whether code the graph does not show may call a function: one the code passes as a value (a
    callback), or a table's entry none of whose slot's calls is in the tree (the slot is called from
    elsewhere: an exit the tree does not hold). A table's slot the tree calls is called where it does."""
    name = lowered.program.functions[fid]["name"]
    if name in lowered.escaped:
        return True
    return name in lowered.address_taken and all(graph[caller][fid]["kind"] == "direct" for caller in callers)


def run(lowered: LoweredProgram, graph: nx.DiGraph, rule: Rule) -> Analysis:
    program = lowered.program
    scopes = infer_scopes(program, rule.per_vcpu_types, rule.vm_types)
    finder = DisciplineFinder(lowered, graph, scopes, rule.update_lock)
    vcpu_fns = per_vcpu_functions(program, scopes)
    updates = [u for u in collect_updates(lowered, vcpu_fns) if _shared(u.key, lowered, scopes.vm_wide)]
    kinds: dict[str, set[str]] = {}
    for u in updates:
        kinds.setdefault(u.key, set()).add(u.kind)
    counts = {key for key, found in kinds.items() if "inc" in found and found & {"dec", "reset"}}
    lifecycle = lifecycle_only(graph, lowered, rule)
    resets = {(u.key, u.function): u.hops[-1].event for u in updates if u.kind == "reset" and len(u.hops) == 1}
    judged: list[JudgedSite] = []
    findings: list[Finding] = []
    for u in updates:
        if u.key not in counts or u.kind == "reset":
            continue
        path = path_from_vcpu(graph, vcpu_fns, u.function) or [u.function]
        site = Site(u.key, u.kind, u.function, u.hops, None, False)
        guard = _transition_guard(finder, lowered, graph, u.hops[0].event, u.function, scopes.per_vcpu)
        recount = _recount(finder, lowered, u, resets.get((u.key, u.function)))
        if u.function in lifecycle:
            verdict = Verdict("lifecycle", "runs once per vCPU, within its lifecycle (create/destroy)")
        elif recount:
            verdict = Verdict("recount", f"rebuilt from zero, one for each vCPU where {recount}")
        elif guard:
            verdict = Verdict("transition-guarded", f"changes only when per-vCPU state changes: {guard}")
        else:
            verdict = Verdict("unguarded", "per-vCPU code changes a shared count with no per-vCPU "
                                           "transition guard: a repeated call counts twice")
        item = JudgedSite(site, "per-vcpu", verdict, path)
        judged.append(item)
        if verdict.discipline == "unguarded":
            findings.append(Finding(rule, rule.kind("unguarded-counter").severity, "unguarded-counter", u.key,
                                    rule.kind("unguarded-counter").text(key=u.key, action=u.kind), item))
    judged.sort(key=lambda j: (j.site.key, program.functions[j.site.function]["file"], j.site.event.line))
    return Analysis(lowered, graph, scopes, judged, findings)


def _recount(finder: DisciplineFinder, lowered: LoweredProgram, u: Update, reset: Event | None) -> str | None:
    """The per-vCPU test of a count rebuilt from scratch: the update counts up in a loop over every vCPU,
    under a test of state read through the loop's vCPU, and its function first set the count to zero,
    with a lock held at both that it holds throughout. What the test reads, and that lock, by name."""
    if reset is None or u.kind != "inc" or len(u.hops) != 1:
        return None
    ev, function = u.hops[0].event, lowered.function(u.function)
    held = sorted(set(ev.locks) & set(reset.locks))
    if not held or not any(function.loops[loop].kind == "vcpus" for loop in ev.loops):
        return None
    tests = [g.atom for g in ev.guards if finder.vcpu_state(g.atom, u.function)]
    return f"{render(tests[0], function.temps)}, under {held[0]}" if tests else None


def _transition_guard(finder: DisciplineFinder, lowered: LoweredProgram, graph: nx.DiGraph, ev: Event, fid: str,
                      per_vcpu: frozenset[str]) -> str | None:
    """A test of per-vCPU state the update's function (or a caller it is part of) writes, guarding the
    update: in its function, or at the calls in its callers (a static helper called only where each
    caller saw the state change: VMRUN and KVM_SET_NESTED_STATE test guest mode before
    enter_guest_mode()), up the chain of callers; every path up must have one."""
    return _guarded_up(finder, lowered, graph, [(ev, fid)], fid, _writes(lowered, fid, per_vcpu), per_vcpu,
                       frozenset({fid}))


def _guarded_up(finder: DisciplineFinder, lowered: LoweredProgram, graph: nx.DiGraph, at: list[tuple[Event, str]],
                fid: str, written: set[str], per_vcpu: frozenset[str], seen: frozenset[str]) -> str | None:
    """_transition_guard on one path: each guard on the way, against what the path so far writes (the
    caller may record it after); else the same for each caller the path may go on to."""
    for event, where in at:
        for guard in event.guards:
            if finder.vcpu_state(guard.atom, where) & written:  # read itself, through locals or calls
                return render(guard.atom, event.function.temps)
    callers = only_callers(lowered, graph, fid)
    if not callers or any(caller in seen for caller in callers):
        return None
    found = [_guarded_up(finder, lowered, graph, at + [(e, caller) for e in calls_of(lowered, caller, fid)], caller,
                         written | _writes(lowered, caller, per_vcpu), per_vcpu, seen | {caller})
             for caller in callers]
    return found[0] if all(found) else None
