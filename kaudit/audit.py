"""The main job: tree -> facts -> call graph -> rules -> report."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from kaudit import warm
from kaudit.analysis import counter_transition, inhibit_balance
from kaudit.analysis.results import Analysis
from kaudit.cache import Store
from kaudit.callgraph import build_call_graph
from kaudit.compdb import load as load_compdb
from kaudit.errors import UsageError
from kaudit.ir.program import LoweredProgram
from kaudit.kbuild import configured_sources, kernel_config, nobuild_args, synthesize
from kaudit.model.check import ModelSettings, apply_model
from kaudit.program import Program
from kaudit.progress import Progress
from kaudit.rules import Rule, rule_sources
from kaudit.scan import ParseJob, TreeReader, find_sources, refused_jobs
from kaudit.timings import Timings

ENGINES = {"inhibit-balance": inhibit_balance.run, "counter-transition": counter_transition.run}


@dataclass
class AuditResult:
    root: Path
    program: Program
    graph: nx.DiGraph
    rules: list[Rule]
    analyses: list[Analysis]
    config: str  # the configuration the files were parsed under (config_used)
    store: Store | None = None  # the cache, for memos of derived results (Store.memo), None with --no-cache


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
    include paths. Which files: those the rules' `sources` globs cover;
    each one that cannot be read is a job refused up front (a fatal parse error)."""
    found = find_sources(root, globs)
    return [*_readable_jobs(root, cache_dir, compdb, globs, objtree, found.files), *refused_jobs(found)]


def _readable_jobs(root: Path, cache_dir: Path, compdb: Path | None, globs: tuple[str, ...], objtree: Path | None,
                   sources: list[Path]) -> list[ParseJob]:
    if not sources:
        return []
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
                 pch: bool = True) -> Loaded:
    """The merged program and call graph of a tree, and the cache store.
    With every TU's facts cached, program and graph come from the cache
    whole (kaudit/warm.py)."""
    timings = timings if timings is not None else Timings()
    with tempfile.TemporaryDirectory(prefix="kaudit-") as scratch:
        work = cache_dir if cache_dir is not None else Path(scratch)
        with timings.phase("cache lookup"):
            reader = TreeReader(root, parse_jobs(root, work, compdb, globs, objtree), jobs, cache_dir, progress, pch)
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
               pch: bool = True) -> AuditResult:
    """Audit a tree; with model settings, also run the runtime model. objtree: an O= build's
    object tree, whose generated headers the compile database names."""
    timings = timings if timings is not None else Timings()
    root = root.resolve()
    if objtree is not None and (compdb is None or not objtree.is_dir()):
        raise UsageError(f"--objtree {objtree}: needs --compdb and an existing directory")
    unknown = sorted({r.engine for r in rules} - ENGINES.keys())
    if unknown:
        raise UsageError(f"unknown rule engine(s): {', '.join(unknown)}")
    loaded = read_program(root, rule_sources(rules), jobs, cache_dir, compdb, objtree, progress, timings, pch)
    program, graph = loaded.program, loaded.graph
    with timings.phase("rules"):
        lowered = LoweredProgram(program)
        analyses = [ENGINES[rule.engine](lowered, graph, rule) for rule in rules]
    if model is not None:
        with timings.phase("model and cost simulation"):
            for rule, analysis in zip(rules, analyses, strict=True):
                apply_model(analysis, rule, model, loaded.store)
    return AuditResult(root, program, graph, rules, analyses, config_used(root, compdb), loaded.store)
