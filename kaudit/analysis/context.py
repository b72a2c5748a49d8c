"""Which objects are per-vCPU and which are VM-wide; which functions run on a vCPU.

Inferred from the struct definitions in the facts, starting from the rule's
seed types (`kvm_vcpu` per vCPU, `kvm` VM-wide):
- VM-wide: the seeds, a struct that embeds a seed (the vendor's container
  `kvm_svm`: container_of reaches the VM), and every struct embedded (by
  value) in a VM-wide one.
- per-vCPU: the seeds; a struct that embeds a per-vCPU struct (vcpu_svm);
  one embedded in a per-vCPU struct (container_of reaches the vCPU); one
  with a single back-pointer to a per-vCPU struct (kvm_lapic::vcpu).
  VM-wide structs never become per-vCPU (an array of vCPU pointers in a
  VM-wide table does not make the table per-vCPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx

from kaudit.program import Program

if TYPE_CHECKING:
    from kaudit.ir.flow import Event
    from kaudit.ir.program import LoweredProgram


@dataclass(frozen=True)
class Scopes:
    per_vcpu: frozenset[str]
    vm_wide: frozenset[str]


def infer_scopes(program: Program, per_vcpu_seeds: list[str], vm_seeds: list[str]) -> Scopes:
    structs = program.structs
    vm = set(vm_seeds) | {name for name, struct in structs.items() if name not in per_vcpu_seeds and any(
        f["record"] in vm_seeds and f["ptr"] == 0 and not f["array"] for f in struct["fields"])}
    changed = True
    while changed:
        changed = False
        for name in sorted(vm):
            for f in structs.get(name, {}).get("fields", []):
                if f["record"] and f["ptr"] == 0 and f["record"] not in vm:
                    vm.add(f["record"])
                    changed = True
    embedders: dict[str, set[str]] = {}
    for name, struct in structs.items():
        for f in struct["fields"]:
            if f["record"] and f["ptr"] == 0:
                embedders.setdefault(f["record"], set()).add(name)
    per_vcpu = set(per_vcpu_seeds)
    changed = True
    while changed:
        changed = False
        for name, struct in sorted(structs.items()):
            if name in per_vcpu or name in vm:
                continue
            reaches_vcpu = any(
                f["record"] in per_vcpu and (f["ptr"] == 0 or (f["ptr"] == 1 and not f["array"]))
                for f in struct["fields"]
            )
            contained = bool(embedders.get(name)) and embedders[name] <= per_vcpu
            if reaches_vcpu or contained:
                per_vcpu.add(name)
                changed = True
    return Scopes(frozenset(per_vcpu), frozenset(vm))


def holder(program: Program, record: str, seeds: tuple[str, ...]) -> str | None:
    """The field key of the one pointer through which a vCPU reaches a per-vCPU struct it does not
    embed (`kvm_vcpu.arch.apic` for `kvm_lapic`, `kvm_vcpu.arch.hyperv` for the synic inside
    `kvm_vcpu_hv`): such an object can be absent (no in-kernel APIC), and code that takes it runs only
    while it is there. None for a struct the vCPU embeds, or reaches by more than one pointer."""
    structs = program.structs
    inside: set[str] = set()
    found: list[str] = []
    todo = [(seed, seed) for seed in seeds]
    while todo:
        name, path = todo.pop()
        if name in inside:
            continue
        inside.add(name)
        for f in structs.get(name, {}).get("fields", []):
            if f["record"] and not f["array"] and f["ptr"] == 0:
                todo.append((f["record"], f"{path}.{f['name']}"))
            elif f["record"] == record and not f["array"] and f["ptr"] == 1:
                found.append(f"{path}.{f['name']}")
    if record in inside:
        return None
    if found:
        return found[0] if len(found) == 1 else None
    embedders = [name for name, struct in structs.items()
                 if any(f["record"] == record and f["ptr"] == 0 for f in struct["fields"])]
    return holder(program, embedders[0], seeds) if len(embedders) == 1 and embedders[0] != record else None


def vcpu_param(program: Program, fid: str, scopes: Scopes) -> str | None:
    """The first parameter through which the function reaches a vCPU."""
    for param in program.functions[fid]["params"]:
        if param["ptr"] >= 1 and param["record"] in scopes.per_vcpu:
            return param["name"]
    return None


def per_vcpu_functions(program: Program, scopes: Scopes) -> set[str]:
    return {fid for fid in program.functions if vcpu_param(program, fid, scopes)}


def only_callers(lowered: LoweredProgram, graph: nx.DiGraph, fid: str, besides: frozenset[str] = frozenset()
                 ) -> list[str] | None:
    """The functions that call `fid` by name, when `fid` is static and its address never taken: `fid`
    then runs only as their part, under what each tests and holds at its call. Callers in `besides`
    (run in their own right: create, reset) do not count. None where something else may call it."""
    function = lowered.function(fid)
    if not function.static or function.name in lowered.address_taken or fid not in graph:
        return None
    callers = sorted(c for c in graph.predecessors(fid) if c not in besides)
    return callers if all(graph[c][fid]["kind"] == "direct" for c in callers) else None



def held_by_callers(lowered: LoweredProgram, graph: nx.DiGraph, fid: str) -> frozenset[str]:
    """The locks every caller of a static helper holds at each of its calls: the helper runs inside
    their critical section, even where it is an entry of its own."""
    calls = [ev for caller in only_callers(lowered, graph, fid) or () for ev in calls_of(lowered, caller, fid)]
    return frozenset.intersection(*(frozenset(ev.locks) for ev in calls)) if calls else frozenset()


def calls_of(lowered: LoweredProgram, caller: str, fid: str) -> list[Event]:
    """The events of `caller` that call `fid` (directly or through a table)."""
    return [ev for ev in lowered.events(caller) if ev.call is not None and fid in lowered.targets(caller, ev.call)]


def path_from_vcpu(graph: nx.DiGraph, vcpu_functions: set[str], target: str) -> list[str] | None:
    """A shortest call path that starts at a per-vCPU entry (a per-vCPU
    function no per-vCPU function calls) and ends at target; None when no
    per-vCPU function reaches target."""
    reverse = graph.reverse(copy=False)
    parents: dict[str, str | None] = {target: None}
    frontier = [target]
    first_vcpu: str | None = None

    def path(node: str) -> list[str]:
        steps = [node]
        while parents[steps[-1]] is not None:
            steps.append(parents[steps[-1]])  # type: ignore[arg-type]
        return steps

    while frontier:
        nxt = []
        for node in frontier:
            callers = sorted(reverse.successors(node))
            if node in vcpu_functions:
                first_vcpu = first_vcpu or node
                callers = [c for c in callers if c in vcpu_functions]
                if not callers:
                    return path(node)
            for caller in callers:
                if caller not in parents:
                    parents[caller] = node
                    nxt.append(caller)
        frontier = nxt
    return path(first_vcpu) if first_vcpu else None
