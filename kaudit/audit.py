"""The main job: tree -> facts -> call graph -> rules -> report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from kaudit.analysis import counter_transition, inhibit_balance
from kaudit.callgraph import build_call_graph
from kaudit.errors import UsageError
from kaudit.model.check import ModelSettings, apply_model
from kaudit.program import Program
from kaudit.rules import Rule
from kaudit.scan import ParseJob, find_sources, kernel_include_args, parse_tree

ENGINES = {"inhibit-balance": inhibit_balance.run, "counter-transition": counter_transition.run}


@dataclass
class AuditResult:
    root: Path
    program: Program
    graph: nx.DiGraph
    rules: list[Rule]
    analyses: list[inhibit_balance.Analysis]


def load_program(root: Path, jobs: int, cache_dir: Path | None) -> tuple[Program, nx.DiGraph]:
    sources = find_sources(root)
    args = tuple(kernel_include_args(root))
    units = parse_tree(root, [ParseJob(path, args) for path in sources], jobs, cache_dir)
    program = Program.from_facts(units)
    return program, build_call_graph(program)


def audit_tree(root: Path, rules: list[Rule], jobs: int = 1, cache_dir: Path | None = None,
               model: ModelSettings | None = None) -> AuditResult:
    """Audit a tree; with model settings, also run the runtime model."""
    root = root.resolve()
    unknown = sorted({r.engine for r in rules} - ENGINES.keys())
    if unknown:
        raise UsageError(f"unknown rule engine(s): {', '.join(unknown)}")
    program, graph = load_program(root, jobs, cache_dir)
    analyses = [ENGINES[rule.engine](program, graph, rule) for rule in rules]
    if model is not None:
        for rule, analysis in zip(rules, analyses, strict=True):
            apply_model(analysis, rule, model)
    return AuditResult(root, program, graph, rules, analyses)
