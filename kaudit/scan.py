"""Find the C files of a tree, parse them in worker processes, cache their facts.

The cache (kaudit/cache.py) lives outside the analysed tree (never written
into it). A TU is parsed only when no manifest of its entry holds; the parse
runs in a bounded worker (kaudit/workers.py), so a TU that crashes or hangs
libclang is a fatal parse error of that TU, never a crash of the run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kaudit.cache import MAX_MANIFESTS, Manifest, Store, digest_bytes, encode, frontend_digest, read_regular, salt
from kaudit.errors import UsageError
from kaudit.frontend.clang_ops import clang_version
from kaudit.frontend.failed import failed_tu
from kaudit.includes import Inclusion, SearchPath, UnsafeHeaders, overlay, probes
from kaudit.workers import Failed, run_tasks

# What a KVM audit covers: the x86 module and the generic KVM code it calls.
SOURCE_GLOBS = ("arch/x86/kvm/**/*.c", "virt/kvm/*.c")
Facts = dict[str, Any]


@dataclass(frozen=True)
class ParseJob:
    path: Path
    args: tuple[str, ...]


@dataclass
class ParseStats:
    """Where the time of parse_tree went, and how the cache did."""

    parsed: int = 0
    cached: int = 0
    parse_seconds: float = 0.0  # libclang, summed over workers
    walk_seconds: float = 0.0  # facts extraction, summed over workers
    cache_seconds: float = 0.0
    wall_seconds: float = 0.0
    failed: list[str] = field(default_factory=list)


def is_source(rel: str) -> bool:
    """Whether a tree-relative path is one SOURCE_GLOBS covers."""
    path = PurePosixPath(rel)
    return path.suffix == ".c" and (rel.startswith("arch/x86/kvm/")
                                    or (path.parent == PurePosixPath("virt/kvm")))


def find_sources(root: Path) -> list[Path]:
    if not root.is_dir():
        raise UsageError(f"{root}: no such directory")
    files = sorted({p for pattern in SOURCE_GLOBS for p in root.glob(pattern) if p.is_file()})
    if not files:
        raise UsageError(f"{root}: no C files under {' or '.join(SOURCE_GLOBS)}")
    return files


def _name(path: str, root: str) -> str:
    """How a manifest names a file: tree-relative inside the tree (so a copy
    of the tree matches), absolute outside it (generated headers)."""
    return path[len(root) + 1:] if path.startswith(root + "/") else path


class FactsCache:
    """TU facts by content (see kaudit/cache.py for the scheme)."""

    def __init__(self, store: Store | None, root: Path) -> None:
        self.store = store
        self.root = root
        self.salt = salt(clang_version(), frontend_digest()) if store is not None else ""
        self._digests: dict[str, str | None] = {}

    def digest(self, name: str) -> str | None:
        """Content digest of a manifest name, once per run (None: absent or unreadable)."""
        if name not in self._digests:
            path = self.root / name
            try:
                self._digests[name] = digest_bytes(read_regular(path))[:40]
            except OSError:
                self._digests[name] = None
        return self._digests[name]

    def _key(self, job: ParseJob) -> str | None:
        source = self.digest(str(job.path.relative_to(self.root)))
        if source is None:
            return None
        root = str(self.root)
        flags = [arg.replace(root, "<tree>") for arg in (str(job.path), *job.args)]
        return "tu:" + digest_bytes("\0".join([self.salt, source, *flags]).encode())

    def _holds(self, manifest: Manifest) -> bool:
        return all(self.digest(name) == digest for name, digest in manifest.deps.items())

    def _manifests(self, key: str) -> list[Manifest]:
        raw = self.store.get(key) if self.store is not None else None
        found = [Manifest.load(item) for item in raw] if isinstance(raw, list) else []
        return [m for m in found if m is not None]

    def get(self, job: ParseJob) -> Facts | None:
        key = self._key(job) if self.store is not None else None
        if key is None or self.store is None:
            return None
        for manifest in self._manifests(key):
            if self._holds(manifest):
                facts = self.store.get(manifest.facts)
                if _is_facts(facts):
                    return facts
                self.store.discard(manifest.facts)
        return None

    def put(self, job: ParseJob, facts: Facts, absent: list[str]) -> None:
        """Store facts of a TU that parsed cleanly (a failed TU may depend on
        a header missing now: it is parsed again next time)."""
        key = self._key(job) if self.store is not None else None
        if key is None or self.store is None or facts["diagnostics"] or not facts["file"]:
            return
        deps: dict[str, str | None] = {name: self.digest(name) for name in (facts["file"], *facts["includes"])}
        if None in deps.values():
            return  # a file it read is gone already: nothing to validate against
        root = str(self.root)
        deps.update((_name(path, root), None) for path in absent)
        blob_key = "facts:" + digest_bytes(encode(facts))
        self.store.put(blob_key, facts)
        manifest = Manifest(deps, blob_key)
        others = [m for m in self._manifests(key) if m != manifest]
        self.store.put(key, [m.to_json() for m in [manifest, *others][:MAX_MANIFESTS]])


_FACT_LISTS = ("diagnostics", "includes", "functions", "structs", "tables")


def _is_facts(raw: object) -> bool:
    """The typed loader's check of a cached TU: the documented top-level
    shape (docs/facts.md), every list item of the right type."""
    if not isinstance(raw, dict) or not isinstance(raw.get("file"), str) or not isinstance(raw.get("warnings"), int):
        return False
    if not all(isinstance(raw.get(key), list) for key in _FACT_LISTS):
        return False
    named = [item for key in ("functions", "structs", "tables") for item in raw[key]]
    return (all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in named)
            and all(isinstance(item, dict) for item in raw["diagnostics"])
            and all(isinstance(item, str) for item in raw["includes"]))


@dataclass(frozen=True)
class _Task:
    path: Path
    args: tuple[str, ...]
    root: Path


@dataclass
class _Result:
    facts: Facts
    absent: list[str]
    parse_seconds: float
    walk_seconds: float


def _parse(task: _Task) -> _Result:
    """In a worker: parse, extract, and list the paths searched in vain."""
    from kaudit.frontend.tu import parse_tu  # libclang is loaded in workers only

    parsed = parse_tu(task.path, list(task.args), task.root)
    searched = SearchPath.of(task.args)
    absent = probes(searched, (Inclusion(*inc) for inc in parsed.inclusions if inc[0]))
    return _Result(parsed.facts, absent, parsed.parse_seconds, parsed.walk_seconds)


def parse_tree(root: Path, jobs: list[ParseJob], workers: int, cache_dir: Path | None,
               progress: Callable[[str], None] | None = None, stats: ParseStats | None = None) -> list[Facts]:
    """Facts of every job, in job order (so output never depends on --jobs)."""
    stats = stats if stats is not None else ParseStats()
    start = time.perf_counter()
    cache = FactsCache(Store(cache_dir) if cache_dir is not None else None, root)
    results: list[Facts | None] = [cache.get(job) for job in jobs]
    missing = [i for i, facts in enumerate(results) if facts is None]
    stats.cached = len(jobs) - len(missing)
    stats.cache_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="kaudit-parse-") as scratch:
        unsafe = UnsafeHeaders()
        tasks = []
        for i in missing:
            args = jobs[i].args
            refused = unsafe.for_args(args)
            if refused:  # FIFOs, devices, huge files on the include path: a named error if included
                args = (*args, "-ivfsoverlay", str(overlay(refused, root, Path(scratch) / str(i))))
            tasks.append(_Task(jobs[i].path, args, root))
        for n, outcome in run_tasks(_parse, tasks, workers):
            i = missing[n]
            rel = str(jobs[i].path.relative_to(root))
            if isinstance(outcome, Failed):
                results[i] = failed_tu(rel, outcome.message)
                stats.failed.append(rel)
            else:
                results[i] = outcome.facts
                stats.parse_seconds += outcome.parse_seconds
                stats.walk_seconds += outcome.walk_seconds
                cache.put(jobs[i], outcome.facts, outcome.absent)
            stats.parsed += 1
            if progress is not None:
                progress(rel)
    stats.wall_seconds = time.perf_counter() - start
    return [facts for facts in results if facts is not None]
