"""The tree as kaudit reads it: which files, with which flags, under which configuration.

Light on purpose (no analysis, no graph library): a warm re-run needs only
this to find its cached report (kaudit.report_cache).
"""

from __future__ import annotations

from pathlib import Path

from kaudit.compdb import load as load_compdb
from kaudit.errors import UsageError
from kaudit.kbuild import configured_sources, kernel_config, nobuild_args, synthesize
from kaudit.progress import Progress
from kaudit.rules import Rule
from kaudit.scan import ParseJob, TreeReader, find_sources, refused_jobs

ENGINE_NAMES = frozenset({"inhibit-balance", "counter-transition"})  # kaudit.audit.ENGINES runs them


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


def open_tree(root: Path, globs: tuple[str, ...], jobs: int, cache_dir: Path, compdb: Path | None = None,
              objtree: Path | None = None, progress: Progress | None = None, pch: bool = True) -> TreeReader:
    """A reader of the tree's TUs through the cache in cache_dir (its keys are known at once)."""
    return TreeReader(root, parse_jobs(root, cache_dir, compdb, globs, objtree), jobs, cache_dir, progress, pch)


def check_inputs(rules: list[Rule], compdb: Path | None, objtree: Path | None) -> None:
    """Refuse what no audit can run with (UsageError)."""
    if objtree is not None and (compdb is None or not objtree.is_dir()):
        raise UsageError(f"--objtree {objtree}: needs --compdb and an existing directory")
    unknown = sorted({r.engine for r in rules} - ENGINE_NAMES)
    if unknown:
        raise UsageError(f"unknown rule engine(s): {', '.join(unknown)}")
