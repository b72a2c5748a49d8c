"""Engine `counter-transition`: VM-wide (or host-wide) counts changed from
per-vCPU context move only on a per-vCPU state transition.

A count is a field of a VM-wide struct, or a global (a static key), that the
code both increments and decrements (or resets): statistics that only grow
are not counts. Each increment/decrement in a per-vCPU function must be
guarded by a test of per-vCPU state that the same function then updates
(`if (apic->sw_enabled != enabled) { apic->sw_enabled = enabled; inc/dec }`),
so that each vCPU contributes at most once; otherwise a repeated call
counts twice and the count drifts.
"""

from __future__ import annotations

import networkx as nx

from kaudit.analysis.context import infer_scopes, path_from_vcpu, per_vcpu_functions
from kaudit.analysis.discipline import DisciplineFinder, Verdict
from kaudit.analysis.inhibit_balance import Analysis, Finding, JudgedSite, all_events
from kaudit.analysis.sites import Hop, Site
from kaudit.facts import Event, deref, field_key, owner_record, render
from kaudit.kernel_api import ATOMIC_UPDATE
from kaudit.program import Program
from kaudit.rules import Rule


def _update(ev: Event) -> tuple[str, str] | None:
    """(counted object, "inc" | "dec" | "reset") of an event, if it updates one."""
    expr = ev.expr
    if ev.kind == "incdec":
        key = field_key(expr["arg"])
        return (key, "inc" if expr["op"] == "++" else "dec") if key else None
    if ev.kind == "assign" and expr["op"] in ("+=", "-=", "="):
        key = field_key(expr["l"])
        if not key:
            return None
        if expr["op"] == "=":
            return (key, "reset") if expr["r"].get("k") == "int" and expr["r"].get("v") == 0 else None
        return key, "inc" if expr["op"] == "+=" else "dec"
    if ev.kind == "call" and expr.get("callee") in ATOMIC_UPDATE and expr["args"]:
        key = field_key(expr["args"][-1]) or field_key(expr["args"][0])
        if not key:
            return None
        name = expr["callee"]
        return key, "dec" if ("dec" in name or "sub" in name) else "inc"
    return None


def _shared(key: str, program: Program, vm_wide: frozenset[str]) -> bool:
    """A VM-wide field, or a global (host-wide state such as a static key):
    field keys start with the owning struct, globals with their name."""
    head = key.split(".", 1)[0]
    return head in vm_wide or head not in program.structs


def _writes(events: list[Event], per_vcpu: frozenset[str]) -> set[str]:
    """Per-vCPU fields a function updates: assigned, or passed to a call
    (`__set_bit(v, synic->auto_eoi_bitmap)`)."""
    written = set()
    for ev in events:
        if ev.kind == "assign" and owner_record(ev.expr["l"]) in per_vcpu:
            written.add(field_key(ev.expr["l"]))
        elif ev.kind == "call":
            for arg in ev.expr["args"]:
                arg = deref(arg)
                if arg.get("k") == "member" and owner_record(arg) in per_vcpu:
                    written.add(field_key(arg))
    return written


def run(program: Program, graph: nx.DiGraph, rule: Rule) -> Analysis:
    scopes = infer_scopes(program, rule.per_vcpu_types, rule.vm_types)
    events = all_events(program)
    finder = DisciplineFinder(scopes, events, rule.update_lock)
    updates: dict[str, list[tuple[str, Event, str]]] = {}
    for fid in sorted(events):
        for ev in events[fid]:
            found = _update(ev)
            if found and _shared(found[0], program, scopes.vm_wide):
                updates.setdefault(found[0], []).append((fid, ev, found[1]))
    vcpu_fns = per_vcpu_functions(program, scopes)
    judged: list[JudgedSite] = []
    findings: list[Finding] = []
    for key, uses in sorted(updates.items()):
        kinds = {kind for _, _, kind in uses}
        if "inc" not in kinds or not kinds & {"dec", "reset"}:
            continue  # grows only: a statistic, not a count
        for fid, ev, kind in uses:
            if kind == "reset":
                continue
            path = path_from_vcpu(graph, vcpu_fns, fid) or []
            if not path:
                continue
            site = Site(key, kind, fid, (Hop(fid, ev),), None, False)
            guard = _transition_guard(finder, ev, fid, _writes(events[fid], scopes.per_vcpu))
            if guard:
                verdict = Verdict("transition-guarded", f"changes only when per-vCPU state changes: {guard}")
            else:
                verdict = Verdict("unguarded", "per-vCPU code changes a shared count with no per-vCPU "
                                               "transition guard: a repeated call counts twice")
            item = JudgedSite(site, "per-vcpu", verdict, path)
            judged.append(item)
            if not guard:
                findings.append(Finding(rule, rule.severity, "unguarded-counter", key,
                                        f"{kind} of shared count {key} from per-vCPU code without a per-vCPU "
                                        "state transition guarding it: the count drifts when the call repeats",
                                        item))
    judged.sort(key=lambda j: (j.site.key, program.functions[j.site.function]["file"], j.site.event.line))
    return Analysis(program, graph, scopes, events, judged, findings)


def _transition_guard(finder: DisciplineFinder, ev: Event, fid: str, written: set[str]) -> str | None:
    for guard in ev.guards:
        for expr in finder.reads(guard.atom, fid):
            if expr["k"] == "member" and field_key(expr) in written:
                return render(guard.atom)
    return None
