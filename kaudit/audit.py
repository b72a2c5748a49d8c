"""The main job: tree -> facts -> call graph -> rules -> report."""

from __future__ import annotations

import gc
import tempfile
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from kaudit import warm
from kaudit.analysis import counter_transition, inhibit_balance
from kaudit.analysis.results import Analysis
from kaudit.cache import Store
from kaudit.callgraph import build_call_graph
from kaudit.gctune import rare_collections
from kaudit.ir.program import LoweredProgram
from kaudit.model.run import judge_all
from kaudit.model.settings import ModelSettings
from kaudit.program import Program
from kaudit.progress import Progress
from kaudit.rules import Rule, rule_sources
from kaudit.scan import TreeReader
from kaudit.timings import Timings
from kaudit.tree import ENGINE_NAMES, check_inputs, config_used, parse_jobs

ENGINES = {"inhibit-balance": inhibit_balance.run, "counter-transition": counter_transition.run}
assert ENGINES.keys() == ENGINE_NAMES


@dataclass
class AuditResult:
    root: Path
    program: Program
    graph: nx.DiGraph
    rules: list[Rule]
    analyses: list[Analysis]
    config: str  # the configuration the files were parsed under (config_used)
    store: Store | None = None  # the cache, for memos of derived results (Store.memo), None with --no-cache


@dataclass
class Loaded:
    program: Program
    graph: nx.DiGraph
    store: Store | None  # the cache, None with --no-cache


def load_program(root: Path, globs: tuple[str, ...], jobs: int, cache_dir: Path | None, compdb: Path | None = None,
                 objtree: Path | None = None) -> tuple[Program, nx.DiGraph]:
    loaded = read_program(root, globs, jobs, cache_dir, compdb, objtree)
    return loaded.program, loaded.graph


def read_program(root: Path, globs: tuple[str, ...], jobs: int, cache_dir: Path | None, compdb: Path | None = None,
                 objtree: Path | None = None, progress: Progress | None = None, timings: Timings | None = None,
                 pch: bool = True, reader: TreeReader | None = None) -> Loaded:
    """The merged program and call graph of a tree, and the cache store.
    With every TU's facts cached, program and graph come from the cache
    whole (kaudit/warm.py). `reader`: the tree opened already (open_tree)."""
    timings = timings if timings is not None else Timings()
    with tempfile.TemporaryDirectory(prefix="kaudit-") as scratch:
        work = cache_dir if cache_dir is not None else Path(scratch)
        with timings.phase("cache lookup"):
            if reader is None:
                reader = TreeReader(root, parse_jobs(root, work, compdb, globs, objtree), jobs, cache_dir, progress,
                                    pch)
            keys = reader.cached_keys()
            loaded = warm.load(reader.store, warm.program_key(keys)) if keys and reader.store else None
        if loaded is not None:
            return Loaded(*loaded, reader.store)
        units = reader.packed_units()
    stats = reader.stats
    timings.add(f"parse+walk ({stats.parsed} TU(s), {stats.with_pch} against {stats.pchs} PCH(s), "
                f"{reader.workers} worker(s)), wall", stats.wall_seconds)
    timings.add("  libclang parse, summed over workers", stats.parse_seconds)
    timings.add("  facts walk, summed over workers", stats.walk_seconds)
    with timings.phase("merge"):
        program = Program.from_packed(units)
    with timings.phase("call graph"):
        graph = build_call_graph(program)
    if reader.store is not None:
        with timings.phase("cache store"):
            warm.save(reader.store, warm.program_key([k for k in reader.keys if k]), program, graph)
    return Loaded(program, graph, reader.store)


def audit_tree(root: Path, rules: list[Rule], jobs: int = 1, cache_dir: Path | None = None,
               model: ModelSettings | None = None, compdb: Path | None = None,
               objtree: Path | None = None, progress: Progress | None = None, timings: Timings | None = None,
               pch: bool = True, reader: TreeReader | None = None) -> AuditResult:
    """Audit a tree; with model settings, also run the runtime model. objtree: an O= build's
    object tree, whose generated headers the compile database names."""
    timings = timings if timings is not None else Timings()
    root = root.resolve()
    check_inputs(rules, compdb, objtree)
    loaded = read_program(root, rule_sources(rules), jobs, cache_dir, compdb, objtree, progress, timings, pch, reader)
    program, graph = loaded.program, loaded.graph
    gc.freeze()  # the program lives through the audit: collections that rescan its millions of objects find nothing
    try:
        with rare_collections():  # the analyses build long-lived objects by the million
            with timings.phase("rules"):
                lowered = LoweredProgram(program)
                analyses = [ENGINES[rule.engine](lowered, graph, rule) for rule in rules]
            gc.freeze()  # ... and so do its lowered form and the analyses the model reads
            if model is not None:
                with timings.phase("model and cost simulation"):
                    judge_all(rules, analyses, model, loaded.store, jobs)
    finally:
        gc.unfreeze()  # frozen objects are never collected: a caller that audits again must get them back
    return AuditResult(root, program, graph, rules, analyses, config_used(root, compdb), loaded.store)
