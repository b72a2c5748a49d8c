"""Engine `inhibit-balance`: every VM-wide key set from per-vCPU context has a
balanced clear under a sound discipline.

Per key: the sites (kaudit.analysis.sites), each site's context (per-vCPU if
its function, or a caller of it, reaches a vCPU) and discipline. A key never
cleared is `sticky` (a note, never an error). A premature clear is a
per-vCPU clear without a discipline while some per-vCPU set has none either.
"""

from __future__ import annotations

import networkx as nx

from kaudit.analysis.context import Scopes, infer_scopes, path_from_vcpu, per_vcpu_functions
from kaudit.analysis.discipline import DisciplineFinder, Verdict
from kaudit.analysis.results import Analysis, Finding, JudgedSite
from kaudit.analysis.sites import find_sites
from kaudit.ir.program import LoweredProgram
from kaudit.program import Program
from kaudit.rules import Rule

PREMATURE = frozenset({"unguarded", "flag-without-counter"})  # shapes where a clear drops another's request


def judge_sites(lowered: LoweredProgram, graph: nx.DiGraph, rule: Rule, scopes: Scopes) -> list[JudgedSite]:
    program = lowered.program
    vcpu_fns = per_vcpu_functions(program, scopes)
    finder = DisciplineFinder(lowered, graph, scopes, rule.update_lock)
    sites = find_sites(lowered, rule, scopes)
    cleared = {s.key for s in sites if s.action != "set"}
    judged = []
    for site in sites:
        path = path_from_vcpu(graph, vcpu_fns, site.function) or []
        context = "per-vcpu" if path else "vm"
        if site.key not in cleared:
            verdict = Verdict("sticky", "set and never cleared anywhere in the analysed code")
        else:
            peers = [s for s in sites if s.key == site.key and s.function == site.function]
            verdict = finder.classify(site, context, peers, path)
        judged.append(JudgedSite(site, context, verdict, path))
    return judged


def _findings(program: Program, rule: Rule, judged: list[JudgedSite]) -> list[Finding]:
    findings = []
    for j in judged:
        if j.verdict.discipline in ("counter-without-flag", "flag-counter-unlocked"):
            findings.append(Finding(rule, "warning", j.verdict.discipline, j.site.key,
                                    f"{j.site.key}: {j.verdict.why}", j))
    for j in judged:
        if j.verdict.discipline == "sticky":
            findings.append(Finding(rule, "info", "sticky", j.site.key,
                                    f"{j.site.key} is set here and never cleared (sticky): not a premature "
                                    "clear, noted so a reviewer sees it was judged", j))
    unsafe = [j for j in judged if j.context == "per-vcpu" and j.verdict.discipline in PREMATURE]
    for clear in (j for j in unsafe if j.site.action == "clear"):
        sets = [j for j in unsafe if j.site.key == clear.site.key and j.site.action == "set"]
        if not sets:
            continue
        setters = ", ".join(sorted({program.functions[s.site.function]["name"] for s in sets}))
        message = (f"premature clear of VM-wide {clear.site.key}: this per-vCPU clear also drops the "
                   f"request of any other vCPU that set it ({setters}); no per-vCPU flag or count "
                   "tracks who still needs it")
        findings.append(Finding(rule, "error", "premature-clear", clear.site.key, message, clear, sets))
    return findings


def run(lowered: LoweredProgram, graph: nx.DiGraph, rule: Rule) -> Analysis:
    scopes = infer_scopes(lowered.program, rule.per_vcpu_types, rule.vm_types)
    judged = judge_sites(lowered, graph, rule, scopes)
    return Analysis(lowered, graph, scopes, judged, _findings(lowered.program, rule, judged))
