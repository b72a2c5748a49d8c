"""The main job: tree -> facts -> call graph -> rules -> report."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from kaudit.analysis import counter_transition, inhibit_balance
from kaudit.analysis.results import Analysis
from kaudit.callgraph import build_call_graph
from kaudit.compdb import load as load_compdb
from kaudit.errors import UsageError
from kaudit.ir.program import LoweredProgram
from kaudit.kbuild import configured_sources, kernel_config, nobuild_args, synthesize
from kaudit.model.check import ModelSettings, apply_model
from kaudit.program import Program
from kaudit.rules import Rule, rule_sources
from kaudit.scan import ParseJob, find_sources, parse_tree

ENGINES = {"inhibit-balance": inhibit_balance.run, "counter-transition": counter_transition.run}


@dataclass
class AuditResult:
    root: Path
    program: Program
    graph: nx.DiGraph
    rules: list[Rule]
    analyses: list[Analysis]
    config: str  # the configuration the files were parsed under (config_used)


def _small_tree(root: Path) -> bool:
    """A small kernel-style tree such as the sample: its own headers are complete."""
    return not (root / "arch/x86/include/asm/Kbuild").is_file()


def config_used(root: Path, compdb: Path | None) -> str:
    """Which configuration the files were parsed under, for the report."""
    if compdb is not None:
        return "the compile database"
    return "none (the tree's own headers)" if _small_tree(root) else kernel_config(root).origin


def parse_jobs(root: Path, cache_dir: Path, compdb: Path | None, globs: tuple[str, ...],
               objtree: Path | None = None) -> list[ParseJob]:
    """What to parse with which flags: from the compile database, or (a
    kernel tree without one) Kbuild's flags over synthesised generated
    headers, or (a small kernel-style tree such as the sample) plain
    include paths. Which files: those the rules' `sources` globs cover."""
    sources = find_sources(root, globs)
    if compdb is not None:
        flags = load_compdb(compdb, root, sources, objtree)
        if not flags:
            raise UsageError(f"{compdb}: no entry for any file under {', '.join(globs)}")
        return [ParseJob(path, tuple(flags[path.resolve()])) for path in sources if path.resolve() in flags]
    if _small_tree(root):
        return [ParseJob(path, tuple(nobuild_args(root, None))) for path in sources]
    args = tuple(nobuild_args(root, synthesize(root, cache_dir)))
    configured = configured_sources(root)
    if configured is not None:
        wanted = set(configured)
        sources = [path for path in sources if path.resolve() in wanted]
        if not sources:
            raise UsageError(f"{root}: the KVM Makefiles list no C file that exists under "
                             f"{kernel_config(root).origin}")
    return [ParseJob(path, args) for path in sources]


def load_program(root: Path, globs: tuple[str, ...], jobs: int, cache_dir: Path | None, compdb: Path | None = None,
                 objtree: Path | None = None) -> tuple[Program, nx.DiGraph]:
    with tempfile.TemporaryDirectory(prefix="kaudit-") as scratch:
        work = cache_dir if cache_dir is not None else Path(scratch)
        units = parse_tree(root, parse_jobs(root, work, compdb, globs, objtree), jobs, cache_dir)
    program = Program.from_facts(units)
    return program, build_call_graph(program)


def audit_tree(root: Path, rules: list[Rule], jobs: int = 1, cache_dir: Path | None = None,
               model: ModelSettings | None = None, compdb: Path | None = None,
               objtree: Path | None = None) -> AuditResult:
    """Audit a tree; with model settings, also run the runtime model. objtree: an O= build's
    object tree, whose generated headers the compile database names."""
    root = root.resolve()
    if objtree is not None and (compdb is None or not objtree.is_dir()):
        raise UsageError(f"--objtree {objtree}: needs --compdb and an existing directory")
    unknown = sorted({r.engine for r in rules} - ENGINES.keys())
    if unknown:
        raise UsageError(f"unknown rule engine(s): {', '.join(unknown)}")
    program, graph = load_program(root, rule_sources(rules), jobs, cache_dir, compdb, objtree)
    lowered = LoweredProgram(program)
    analyses = [ENGINES[rule.engine](lowered, graph, rule) for rule in rules]
    if model is not None:
        for rule, analysis in zip(rules, analyses, strict=True):
            apply_model(analysis, rule, model)
    return AuditResult(root, program, graph, rules, analyses, config_used(root, compdb))
