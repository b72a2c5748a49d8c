"""Engine `counter-transition`: VM-wide (or host-wide) counts changed from
per-vCPU context move only on a per-vCPU state transition.

A count of vCPUs is a field of a VM-wide struct, or a global (a static key),
that one function moves by one both ways (or raises and resets) depending
on some mode: statistics that only grow, and resource accounting moved by
amounts or in separate acquire/release helpers, are not counts of vCPUs.
Each such increment/decrement in a per-vCPU function (one with a per-vCPU
parameter: the vCPU it runs for is the one that contributes) must be
guarded by a test of per-vCPU state that the same function then updates
(`if (apic->sw_enabled != enabled) { apic->sw_enabled = enabled; inc/dec }`),
so that each vCPU contributes at most once; otherwise a repeated call
counts twice and the count drifts.
"""

from __future__ import annotations

import networkx as nx

from kaudit.analysis.context import infer_scopes, path_from_vcpu, per_vcpu_functions
from kaudit.analysis.discipline import DisciplineFinder, Verdict
from kaudit.analysis.results import Analysis, Finding, JudgedSite
from kaudit.analysis.sites import Hop, Site
from kaudit.facts import Event, const_value, deref, field_key, owner_record, render
from kaudit.kernel_api import ATOMIC_UPDATE, STATIC_KEY_UPDATE
from kaudit.program import Program
from kaudit.rules import Rule


def _update(ev: Event) -> tuple[str, str] | None:
    """(counted object, "inc" | "dec" | "reset") of an event that moves it by
    one (or resets it to zero)."""
    expr = ev.expr
    if ev.kind == "incdec":
        key = _count_key(expr["arg"])
        return (key, "inc" if expr["op"] == "++" else "dec") if key else None
    if ev.kind == "assign" and expr["op"] in ("+=", "-=", "="):
        key = _count_key(expr["l"])
        value = const_value(expr["r"])
        if not key or value != (0 if expr["op"] == "=" else 1):
            return None
        return key, {"=": "reset", "+=": "inc", "-=": "dec"}[expr["op"]]
    name = expr.get("callee") or ""
    if ev.kind == "call" and expr["args"] and ATOMIC_UPDATE.get(name) in (1, -1):
        key = _count_key(expr["args"][-1])
        return (key, "inc" if ATOMIC_UPDATE[name] == 1 else "dec") if key else None
    if ev.kind == "call" and expr["args"] and name in STATIC_KEY_UPDATE:
        key = _count_key(expr["args"][0])
        return (key, "inc" if STATIC_KEY_UPDATE[name] == 1 else "dec") if key else None
    return None


def _count_key(expr: dict) -> str | None:
    """A global is counted as a whole (`&(&apic_sw_disabled.key)->key` and
    `&apic_sw_disabled` are one static key); a field by its field key."""
    node = expr
    while node.get("k") in ("unary", "member"):
        node = node["arg"] if node["k"] == "unary" else node["base"]
    if node.get("k") == "var" and node["scope"] == "global":
        return node["name"]
    return field_key(expr)


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


def run(program: Program, graph: nx.DiGraph, rule: Rule, events: dict[str, list[Event]]) -> Analysis:
    scopes = infer_scopes(program, rule.per_vcpu_types, rule.vm_types)
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
        kinds_in: dict[str, set[str]] = {}
        for fid, _, kind in uses:
            kinds_in.setdefault(fid, set()).add(kind)
        toggling = {fid for fid, kinds in kinds_in.items() if "inc" in kinds and kinds & {"dec", "reset"}}
        for fid, ev, kind in uses:
            if kind == "reset" or fid not in toggling:
                continue
            if fid not in vcpu_fns:
                continue  # a VM-scope helper reached from vCPU code counts VM objects, not vCPUs
            path = path_from_vcpu(graph, vcpu_fns, fid) or [fid]
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
