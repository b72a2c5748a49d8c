"""Find the C files of a tree, parse them in worker processes, cache their facts.

The cache (kaudit/factscache.py) lives outside the analysed tree (never
written into it). A TU is parsed only when no manifest of its entry holds; the parse
runs in a bounded worker (kaudit/workers.py), so a TU that crashes or hangs
libclang is a fatal parse error of that TU, never a crash of the run.
"""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaudit.cache import Store
from kaudit.errors import UsageError
from kaudit.factscache import FactsCache
from kaudit.frontend.failed import failed_tu
from kaudit.includes import Inclusion, SearchPath, UnsafeHeaders, overlay, probes
from kaudit.packed import PackedUnit
from kaudit.pch import Pch, leading_directives, plan, quoted_resolver
from kaudit.progress import Progress
from kaudit.reading import read_regular
from kaudit.treewalk import Found, escaped_headers, shown, walk
from kaudit.workers import Failed, Limits, run_tasks

PARSE_LIMITS = Limits()  # per TU: a hang or a runaway include is named, not waited for


def parse_failure(err: BaseException, limits: Limits) -> str:
    """What ended a parse task, in words for the TU's diagnostic."""
    from pebble import ProcessExpired

    if isinstance(err, FutureTimeout):
        return f"kaudit: libclang took longer than {limits.seconds:g} s on this file; stopped"
    if isinstance(err, ProcessExpired):
        code = err.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            bound = f", or hit the {limits.memory >> 20} MiB memory bound" if -code in (6, 9) else ""  # ABRT, KILL
            return f"kaudit: libclang crashed ({name}{bound}) on this file"
        return f"kaudit: the parse worker died (exit status {code}) on this file"
    if isinstance(err, MemoryError):
        return f"kaudit: parsing this file needed more than {limits.memory >> 20} MiB; stopped"
    return f"kaudit: internal error while reading this file: {type(err).__name__}: {err}"


Facts = dict[str, Any]


@dataclass(frozen=True)
class ParseJob:
    path: Path
    args: tuple[str, ...]
    refused: str | None = None  # why the file is not parsed: then a fatal parse error of it


@dataclass
class ParseStats:
    """Where the time of parse_tree went, and how the cache did."""

    parsed: int = 0
    cached: int = 0
    pchs: int = 0  # PCHs built
    with_pch: int = 0  # TUs parsed against one
    parse_seconds: float = 0.0  # libclang, summed over workers
    walk_seconds: float = 0.0  # facts extraction, summed over workers
    wall_seconds: float = 0.0


def find_sources(root: Path, globs: Sequence[str]) -> Found:
    """The C files the rules' `sources` globs cover (rules.rule_sources), and those that cannot be read."""
    if not root.is_dir():
        raise UsageError(f"{root}: no such directory")
    found = walk(root, globs)
    if not found.files and not found.unread:
        raise UsageError(f"{root}: no C files under {' or '.join(globs)}")
    return found


def refused_jobs(found: Found) -> list[ParseJob]:
    return [ParseJob(u.path, (), f"kaudit: not read: {u.why}") for u in found.unread]


@dataclass(frozen=True)
class _Task:
    path: Path
    args: tuple[str, ...]
    root: Path
    pch: Pch | None = None


@dataclass(frozen=True)
class _PchTask:
    header: Path  # the group's shared directives, written to scratch space
    flags: tuple[str, ...]


@dataclass
class _Result:
    unit: PackedUnit  # packed in the worker: the main process neither encodes nor decodes it
    absent: list[str]
    parse_seconds: float
    walk_seconds: float
    used_pch: bool


def _work(task: _Task | _PchTask) -> _Result | Pch | None:
    """In a worker: build a PCH, or parse a TU, extract its facts and list
    the paths searched in vain."""
    from kaudit.frontend.tu import build_pch, parse_tu  # libclang is loaded in workers only

    if isinstance(task, _PchTask):
        return build_pch(task.header, list(task.flags), task.header.with_suffix(".pch"))
    parsed = parse_tu(task.path, list(task.args), task.root, task.pch)
    parsed.facts["diagnostics"] += escaped_headers(task.root, [found for _, _, found in parsed.inclusions])
    searched = SearchPath.of(task.args)
    absent = probes(searched, (Inclusion(*inc) for inc in parsed.inclusions if inc[0]))
    return _Result(PackedUnit.of(parsed.facts), absent, parsed.parse_seconds, parsed.walk_seconds, parsed.used_pch)


class TreeReader:
    """A tree's TU facts: from the cache where a manifest holds, from bounded
    workers for the rest. `keys` names each TU's facts by content, in job
    order, so callers can cache what they derive from all of them."""

    def __init__(self, root: Path, jobs: list[ParseJob], workers: int, cache_dir: Path | None,
                 progress: Progress | None = None, pch: bool = True) -> None:
        self.root = root
        self.jobs = jobs
        self.workers = workers
        self.progress = progress
        self.pch = pch
        self.stats = ParseStats()
        self.store = Store(cache_dir) if cache_dir is not None else None
        self.cache = FactsCache(self.store, root)
        self.keys: list[str | None] = [None if job.refused else self.cache.find(job) for job in jobs]
        self._units: list[PackedUnit | None] = [None] * len(jobs)  # facts held in memory, by job

    def cached_keys(self) -> list[str] | None:
        """Every TU's facts key, when the cache holds them all."""
        keys = [key for key in self.keys if key is not None]
        return keys if len(keys) == len(self.jobs) else None

    def units(self) -> list[Facts]:
        """Facts of every job, in job order (so output never depends on --jobs)."""
        return [unit.facts() for unit in self.packed_units()]

    def parse_missing(self) -> None:
        """Parse the TUs the cache does not hold, so that every key names its TU's facts. Keys are the
        facts' content: an edit that leaves them as they were (a comment) leaves the keys as they were,
        and what is cached under them (the program, the report) still holds."""
        start = time.perf_counter()
        self._parse([i for i, key in enumerate(self.keys) if key is None])
        self.stats.wall_seconds += time.perf_counter() - start

    def packed_units(self) -> list[PackedUnit]:
        """Every job's facts, packed, in job order."""
        start = time.perf_counter()
        cached = [(i, key) for i, key in enumerate(self.keys) if key is not None and self._units[i] is None]
        with ThreadPoolExecutor(1) as loader:  # cached facts load while the workers parse the rest
            loading = loader.submit(self._load, cached)
            self._parse([i for i, key in enumerate(self.keys) if key is None])
            bad = loading.result()
        self._parse(bad)  # cached entries that turned out bad
        self.stats.cached = len(self.jobs) - self.stats.parsed
        self.stats.wall_seconds += time.perf_counter() - start
        return [unit for unit in self._units if unit is not None]

    def _load(self, cached: list[tuple[int, str]]) -> list[int]:
        """Load cached units; the indexes of those that did not load."""
        bad = []
        for i, key in cached:
            self._units[i] = self.cache.load(key)
            if self._units[i] is None:
                bad.append(i)
        return bad

    def _parse(self, missing: list[int]) -> None:
        for i in missing:
            refused = self.jobs[i].refused
            if refused is not None:
                self._take(i, Failed(refused))
        missing = [i for i in missing if self.jobs[i].refused is None]
        if not missing:
            return
        progress = self.progress or Progress(enabled=False)
        progress.start(len(missing))
        with tempfile.TemporaryDirectory(prefix="kaudit-parse-") as scratch:
            plan = _Plan(self, missing, Path(scratch))
            for phase in plan.phases():
                for n, outcome in run_tasks(_work, phase, self.workers, PARSE_LIMITS, parse_failure):
                    task = phase[n]
                    if isinstance(task, _PchTask):
                        plan.built(task, outcome if isinstance(outcome, Pch) else None)
                        self.stats.pchs += isinstance(outcome, Pch)
                        continue
                    i = plan.index[task.path]
                    if isinstance(outcome, Failed) and task.pch is not None and not outcome.timed_out:
                        plan.retry.append(i)  # a crash against the PCH: a plain parse decides (a hang would hang again)
                        continue
                    self._take(i, outcome)
                    progress.advance(str(task.path.relative_to(self.root)))
        progress.close()

    def _take(self, i: int, outcome: _Result | Failed) -> None:
        rel = shown(str(self.jobs[i].path.relative_to(self.root)))
        if isinstance(outcome, Failed):
            unit = PackedUnit.of(failed_tu(rel, outcome.message))
            self.keys[i] = "facts:" + unit.content_key()
        else:
            unit = outcome.unit
            self.stats.parse_seconds += outcome.parse_seconds
            self.stats.walk_seconds += outcome.walk_seconds
            self.stats.with_pch += outcome.used_pch
            self.keys[i] = self.cache.put(self.jobs[i], unit, outcome.absent)
        self._units[i] = unit
        self.stats.parsed += 1


class _Plan:
    """The worker tasks of one parse: first the PCH builds with the TUs that
    share none, then the TUs of each group against its PCH (or plainly,
    if it could not be built), then plainly any whose worker failed against
    it. Largest files first, for an even finish."""

    def __init__(self, reader: TreeReader, missing: list[int], scratch: Path) -> None:
        self.reader = reader
        self.scratch = scratch
        self.unsafe = UnsafeHeaders()
        self.index = {reader.jobs[i].path: i for i in missing}
        jobs = reader.jobs
        groups = plan([(jobs[i].args, leading_directives(_head(jobs[i].path),
                                                         quoted_resolver(str(jobs[i].path.parent), jobs[i].args)))
                       for i in missing]) if reader.pch else []
        self.members: dict[_PchTask, list[int]] = {}
        for number, group in enumerate(groups):
            header = scratch / f"pch-{number}" / "shared.h"  # alone in its directory: "..." finds nothing there
            header.parent.mkdir()
            header.write_text(group.header)
            self.members[_PchTask(header, self._safe(group.flags, number))] = [missing[m] for m in group.members]
        grouped = {i for members in self.members.values() for i in members}
        self.alone = [i for i in missing if i not in grouped]
        self.pchs: dict[_PchTask, Pch | None] = {}
        self.retry: list[int] = []  # members whose worker failed against the PCH

    def _safe(self, args: tuple[str, ...], tag: object) -> tuple[str, ...]:
        refused = self.unsafe.for_args(args)
        if not refused:
            return args
        # FIFOs, devices, huge files on the include path: each a named error if included
        return (*args, "-ivfsoverlay", str(overlay(refused, self.reader.root, self.scratch / f"overlay-{tag}")))

    def _task(self, i: int, pch: Pch | None) -> _Task:
        job = self.reader.jobs[i]
        return _Task(job.path, self._safe(job.args, i), self.reader.root, pch)

    def _by_size(self, indexes: list[int]) -> list[int]:
        jobs = self.reader.jobs
        return sorted(indexes, key=lambda i: (-_size(jobs[i].path), i))

    def built(self, task: _PchTask, pch: Pch | None) -> None:
        self.pchs[task] = pch

    def phases(self) -> Iterator[list[_Task | _PchTask]]:
        yield [*self.members, *(self._task(i, None) for i in self._by_size(self.alone))]
        pch_of = {i: self.pchs.get(task) for task, members in self.members.items() for i in members}
        yield [self._task(i, pch_of[i]) for i in self._by_size(list(pch_of))]
        yield [self._task(i, None) for i in self.retry]


def _head(path: Path) -> bytes:
    """The start of a source file, where its shared directives are."""
    try:
        return read_regular(path)[:1 << 16]
    except OSError:
        return b""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def parse_tree(root: Path, jobs: list[ParseJob], workers: int, cache_dir: Path | None) -> list[Facts]:
    """Facts of every job, in job order."""
    return TreeReader(root, jobs, workers, cache_dir).units()
