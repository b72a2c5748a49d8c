"""What every rule engine produces: judged sites, findings, the analysis.

Shared by the engines (kaudit.analysis.*), the runtime model and the
reports, so none of them depends on another engine's module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import networkx as nx

from kaudit.analysis.context import Scopes
from kaudit.analysis.discipline import Verdict
from kaudit.analysis.sites import Site
from kaudit.ir.names import render_call
from kaudit.ir.program import LoweredProgram
from kaudit.program import Program
from kaudit.rules import Rule


@dataclass
class JudgedSite:
    site: Site
    context: str  # "per-vcpu" | "vm"
    verdict: Verdict
    call_path: list[str]
    model: dict = field(default_factory=lambda: {"status": "not-run"})


@dataclass
class Finding:
    rule: Rule
    severity: str
    kind: str
    key: str
    message: str
    at: JudgedSite
    related: list[JudgedSite] = field(default_factory=list)
    model: dict = field(default_factory=lambda: {"status": "not-run"})

    def fingerprint(self, program: Program) -> str:
        """Stable across unrelated edits: no line numbers, only names and the
        call's text (two identical calls in one function share an id)."""
        site = self.at.site
        call = site.event.call
        parts = [self.rule.id, self.kind, self.key, site.action, program.functions[site.function]["file"],
                 *(hop.function for hop in site.hops), render_call(call) if call else ""]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


@dataclass
class Analysis:
    lowered: LoweredProgram
    graph: nx.DiGraph
    scopes: Scopes
    sites: list[JudgedSite]
    findings: list[Finding]
    model: dict[str, dict] = field(default_factory=dict)  # per key, filled by kaudit.model.check

    @property
    def program(self) -> Program:
        return self.lowered.program
