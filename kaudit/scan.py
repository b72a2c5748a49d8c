"""Find the C files of a tree, parse them in parallel, cache their facts.

The cache lives outside the analysed tree (never written into it). An entry
is keyed by the file's tree-relative path, its compiler flags and the kaudit
front end and libclang versions, and is valid while the TU's file and every
tree file it included keep their content (compared by digest, so another
tree with the same names, sizes and times cannot pass its facts off).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaudit import __version__
from kaudit.errors import UsageError
from kaudit.frontend.clang_ops import clang_version
from kaudit.frontend.tu import extract_tu


@dataclass(frozen=True)
class ParseJob:
    path: Path
    args: tuple[str, ...]


def find_sources(root: Path, globs: Sequence[str]) -> list[Path]:
    """The C files the rules' `sources` globs cover (rules.rule_sources)."""
    if not root.is_dir():
        raise UsageError(f"{root}: no such directory")
    files = sorted({p for pattern in globs for p in root.glob(pattern) if p.is_file()})
    if not files:
        raise UsageError(f"{root}: no C files under {' or '.join(globs)}")
    return files


def _frontend_digest() -> str:
    """The front end's own source: facts made by other code are not reused."""
    sources = sorted(Path(__file__).with_name("frontend").glob("*.py"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]


class FactsCache:
    def __init__(self, directory: Path | None, root: Path) -> None:
        self.directory = directory
        self.root = root
        self.salt = f"{__version__}\0{clang_version()}\0{_frontend_digest()}" if directory else ""
        self._digests: dict[str, str] = {}

    def _entry(self, job: ParseJob) -> Path:
        """Keyed by tree-relative path and flags, so a copy of the tree (a
        patched work tree) reuses the facts of every file it did not change."""
        assert self.directory is not None
        root = str(self.root)
        relative = [arg.replace(root, "<tree>") for arg in (str(job.path), *job.args)]
        key = "\0".join([self.salt, *relative])
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def _digest(self, rel: str) -> str:
        """Content digest of an included file (tree-relative, or absolute for
        generated headers), once per run: headers are shared by many TUs."""
        if rel not in self._digests:
            self._digests[rel] = hashlib.sha1((self.root / rel).read_bytes()).hexdigest()
        return self._digests[rel]

    def _deps(self, rels: Iterable[str]) -> dict[str, str]:
        return {rel: self._digest(rel) for rel in rels}

    def get(self, job: ParseJob) -> dict[str, Any] | None:
        if self.directory is None:
            return None
        try:
            entry = json.loads(self._entry(job).read_text())
            if self._deps(entry["deps"]) == entry["deps"]:
                return entry["facts"]
        except (OSError, ValueError, KeyError):
            pass
        return None

    def put(self, job: ParseJob, facts: dict[str, Any]) -> None:
        if self.directory is None or facts["diagnostics"] or not facts["file"]:
            return  # a failed TU may depend on a header that is missing now: parse it again next time
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            entry = self._entry(job)
            tmp = entry.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"deps": self._deps([facts["file"], *facts["includes"]]), "facts": facts}))
            tmp.replace(entry)
        except OSError as err:  # the cache directory named is unusable: say so, do not guess another
            raise UsageError(f"{self.directory}: cannot write the facts cache: {err.strerror}") from err


def _parse(job_root: tuple[ParseJob, Path]) -> dict[str, Any]:
    job, root = job_root
    return extract_tu(job.path, list(job.args), root)


def parse_tree(root: Path, jobs: list[ParseJob], workers: int, cache_dir: Path | None) -> list[dict[str, Any]]:
    """Facts of every job, in job order (so output never depends on --jobs)."""
    cache = FactsCache(cache_dir, root)
    results: list[dict[str, Any] | None] = [cache.get(job) for job in jobs]
    missing = [i for i, facts in enumerate(results) if facts is None]
    work = [(jobs[i], root) for i in missing]
    if workers > 1 and len(work) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parsed = list(pool.map(_parse, work, chunksize=1))
    else:
        parsed = [_parse(item) for item in work]
    for i, facts in zip(missing, parsed, strict=True):
        cache.put(jobs[i], facts)
        results[i] = facts
    return [facts for facts in results if facts is not None]
