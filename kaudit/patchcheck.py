"""Pre-submit check: what each change of a series does to kaudit's verdicts.

The changes (patches.py: patches; gitchanges.py: commits and the work tree
read from git) are applied in turn to one work copy of the tree (hard links for files
none of them touches, real copies for those they do, so the tree itself is
never written). The work copy is audited before the first change and after
each, and consecutive audits are compared by stable finding ids: what each
change introduces, fixes and leaves unchanged. A series that is already
applied to the tree (it reverse-applies cleanly, as on the tip `b4 prep
--check` runs on) is first reverse-applied, so it is checked as the change
from its pre-image to the tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kaudit.audit import AuditResult, audit_tree
from kaudit.compdb import read_compdb
from kaudit.errors import UsageError
from kaudit.gitchanges import Snapshot
from kaudit.gitrun import first_error_line, git
from kaudit.model.check import ModelSettings
from kaudit.patches import VCS_DIRS, Patch, patch_paths
from kaudit.report.json_report import build_report
from kaudit.rules import Rule, rule_sources
from kaudit.scan import find_sources

Change = Patch | Snapshot


def _no_symlink_on_the_way(root: Path, path: str) -> None:
    """Refuse a touched path if it, or any directory on the way to it, is a
    symlink: writing there could land outside the work copy."""
    current = root
    for part in PurePosixPath(path).parts:
        current = current / part
        if current.is_symlink():
            raise UsageError(f"patch touches {path} through the symlink {current.relative_to(root)}")


def _work_tree(root: Path, work: Path, touched: Sequence[str]) -> None:
    """Hard-link copy of root without its VCS metadata (a tree's .git config
    must never run anything); files the changes touch are copied for real,
    so changing them never writes into the tree's own files."""
    for path in touched:
        _no_symlink_on_the_way(root, path)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    try:
        shutil.copytree(root, work, symlinks=True, copy_function=link_or_copy,
                        ignore=shutil.ignore_patterns(*VCS_DIRS))
        for directory in [work, *(p for p in work.rglob("*") if p.is_dir() and not p.is_symlink())]:
            directory.chmod(directory.stat().st_mode | 0o700)  # a read-only tree gives a writable copy
    except OSError as err:
        raise UsageError(f"{root}: cannot make a work copy: {err}") from err
    for path in touched:
        target = work / path
        if not target.resolve().is_relative_to(work.resolve()):
            raise UsageError(f"patch path {path!r} leaves the work copy")
        if target.is_file():
            target.unlink()
            shutil.copy2(root / path, target)


def _snapshot(work: Path, touched: Sequence[str]) -> dict[str, bytes | None]:
    return {path: (work / path).read_bytes() if (work / path).is_file() else None for path in touched}


def _git_apply(patch: Patch, work: Path, reverse: bool = False, check: bool = False) -> str | None:
    """Apply (or with check, only test) a patch in the work copy; the reason it does not apply, or None."""
    flags = [*(["-R"] if reverse else []), *(["--check"] if check else [])]
    proc = git(["apply", "-p1", "--whitespace=nowarn", *flags, "-"], work, patch.text)
    return None if proc.returncode == 0 else first_error_line(proc, "git apply failed")


def _write(work: Path, files: dict[str, bytes | None]) -> None:
    for path, data in files.items():
        _no_symlink_on_the_way(work, path)
        target = work / path
        if target.exists():
            target.unlink()  # never write through a link
        if data is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def _apply(change: Change, work: Path, touched: Sequence[str], reverse: bool = False) -> None:
    before = _snapshot(work, touched)
    if isinstance(change, Snapshot):
        _write(work, change.files)
    else:
        reason = _git_apply(change, work, reverse)
        if reason is not None:
            raise UsageError(f"{change.name}: the patch does not apply to the tree: {reason}")
    for path in touched:
        _no_symlink_on_the_way(work, path)  # whatever git made, no symlink may stand on a touched path
    if _snapshot(work, touched) == before:
        raise UsageError(f"{change.name}: applying it changed nothing in the work copy")


def _applies(patches: Sequence[Patch], work: Path, reverse: bool) -> str | None:
    """Apply the patches in turn (reversed: last first, backwards); the first failure, or None."""
    for patch in reversed(patches) if reverse else patches:
        reason = _git_apply(patch, work, reverse)
        if reason is not None:
            return f"{patch.name}: the patch does not apply to the tree: {reason}"
    return None


def _already_applied(changes: Sequence[Change], work: Path, touched: Sequence[str]) -> bool:
    """Whether the patches are already in the tree (the whole series does not apply, but reverse-applies):
    then the work copy is left at their pre-image."""
    patches = [c for c in changes if isinstance(c, Patch)]
    if not patches:
        return False
    start = _snapshot(work, touched)
    forward = _applies(patches, work, reverse=False)
    _write(work, start)
    if forward is None:
        return False
    if _applies(patches, work, reverse=True) is not None:
        raise UsageError(forward)
    return True


def _moved_compdb(compdb: Path, root: Path, work: Path, scratch: Path) -> Path:
    """The compile database with the tree's paths pointing at the work copy
    (whole path components only: /src/linux is not /src/linux-headers)."""
    entries = read_compdb(compdb)
    roots = sorted({str(root), str(root.resolve())}, key=len, reverse=True)  # as given, and resolved
    pattern = re.compile(rf"(?:(?<![\w.-])|(?<=-I)|(?<=-include)|(?<=-isystem)|(?<=-iquote)|(?<=-imacros))"
                         rf"(?:{'|'.join(re.escape(r) for r in roots)})(?=/|$|\s|[\"'])")
    moved_root = str(work.resolve())

    def move(value: Any) -> Any:
        if isinstance(value, str):
            return pattern.sub(lambda _: moved_root, value)
        if isinstance(value, list):
            return [move(item) for item in value]
        return value

    moved = scratch / "compile_commands.json"
    moved.write_text(json.dumps([{k: move(v) for k, v in e.items()} if isinstance(e, dict) else e
                                 for e in entries] if isinstance(entries, list) else entries))
    return moved


@dataclass
class Verdict:
    """What one change of the series does."""

    change: Change
    touched: list[str]
    already_applied: bool
    before: dict[str, Any]  # reports of the work copy before and after the change
    after: dict[str, Any]
    not_analyzed: list[str]

    def to_json(self) -> dict[str, Any]:
        old = {f["id"] for f in self.before["findings"]}
        new = {f["id"] for f in self.after["findings"]}
        failed_before = {d["tu"] for d in self.before["tree"]["diagnostics"]}
        return {
            "name": self.change.name,
            "subject": self.change.subject,
            "already_applied": self.already_applied,
            "touched": self.touched,
            "introduced": [f for f in self.after["findings"] if f["id"] not in old],  # in report order
            "fixed": [f for f in self.before["findings"] if f["id"] not in new],
            "unchanged": sorted(new & old),
            "new_parse_errors": sorted({d["tu"] for d in self.after["tree"]["diagnostics"]} - failed_before),
            "parse_errors": self.after["tree"]["parse_errors"],
            # KVM sources the change touches that the build does not compile (so they were not parsed)
            "not_analyzed": self.not_analyzed,
        }


@dataclass
class SeriesCheck:
    final: AuditResult
    report: dict[str, Any]  # the report of the tree after the whole series, with a "patches" section
    states: list[dict[str, Any]]  # the report of the work copy after each change, in turn


@dataclass(frozen=True)
class Audit:
    """How to audit each state of the work copy."""

    rules: list[Rule]
    jobs: int
    cache_dir: Path | None
    model: ModelSettings | None
    compdb: Path | None
    objtree: Path | None = None


def _touched(change: Change, scratch: Path) -> list[str]:
    return sorted(change.files) if isinstance(change, Snapshot) else patch_paths(change.text, scratch)


def check_series(root: Path, changes: Sequence[Change], how: Audit, scratch: Path,
                 base: dict[str, bytes | None] | None = None) -> SeriesCheck:
    """Audit the work copy at base (the tree itself by default) and after each change; compare in turn."""
    given_root, root = root, root.resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    per_change = [_touched(change, scratch) for change in changes]
    touched = sorted({*(base or {}), *(p for paths in per_change for p in paths)})
    work = scratch / "tree"
    _work_tree(root, work, touched)
    if base:
        _write(work, base)
    already_applied = _already_applied(changes, work, touched)
    moved = _moved_compdb(how.compdb, given_root, work, scratch) if how.compdb else None
    globs = rule_sources(how.rules)

    def audit() -> tuple[AuditResult, dict[str, Any]]:
        # A state with other files than the tree (added, removed, renamed) may shadow headers the cache
        # cannot see: audit it afresh then.
        structural = any((root / path).exists() != (work / path).exists() for path in touched)
        result = audit_tree(work, how.rules, how.jobs, None if structural else how.cache_dir, how.model, moved,
                            how.objtree)
        return result, build_report(result)

    result, report = audit()
    verdicts = []
    for change, paths in zip(changes, per_change, strict=True):
        _apply(change, work, touched)
        previous = report
        result, report = audit()
        scanned = {p.relative_to(work).as_posix() for p in find_sources(work, globs).files}
        not_analyzed = sorted(set(paths) & scanned - set(result.program.files))
        verdicts.append(Verdict(change, paths, already_applied, previous, report, not_analyzed))
    report["tree"]["root"] = str(root)
    report["patches"] = [v.to_json() for v in verdicts]
    return SeriesCheck(result, report, [v.after for v in verdicts])
