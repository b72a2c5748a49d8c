"""Pre-submit check: what a patch changes in kaudit's verdicts.

The patch is applied to a work copy of the tree (hard links for files it does
not touch, real copies for those it does, so the tree itself is never
written), both trees are audited, and findings are compared by their stable
ids: introduced, fixed, unchanged. A patch may name only relative paths
inside the tree: no absolute paths, no `..`, no symlinks, no binary hunks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kaudit.audit import AuditResult, audit_tree
from kaudit.errors import UsageError
from kaudit.model.check import ModelSettings
from kaudit.report.json_report import build_report
from kaudit.rules import Rule, rule_sources
from kaudit.scan import find_sources

_VCS = (".git", ".hg", ".svn")
_MODE = re.compile(r"^(?:new file mode|new mode|old mode|deleted file mode)\s+([0-7]+)\s*$")


def _git(args: list[str], cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """git, isolated: no repository around cwd (not even a bare one a tree
    could smuggle in: safe.bareRepository), no system or user config."""
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(cwd.resolve().parent), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "HOME": str(cwd.resolve().parent)}
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_EXEC_PATH"):
        env.pop(name, None)
    return subprocess.run(["git", "-c", "safe.bareRepository=explicit", *args], cwd=cwd, input=stdin,
                          capture_output=True, env=env)


def _check_text(text: bytes) -> None:
    if b"\0" in text:
        raise UsageError("patch contains a NUL byte")
    for line in text.decode("utf-8", errors="replace").splitlines():
        if line.startswith(("GIT binary patch", "Binary files ")):
            raise UsageError("binary patches are not accepted")
        mode = _MODE.match(line)
        if mode and int(mode.group(1), 8) & 0o170000 == 0o120000:
            raise UsageError("patches that create or change symlinks are not accepted")


def patch_paths(text: bytes, scratch: Path) -> list[str]:
    """The tree-relative paths a patch touches, as git's own parser reads
    them (quoted names, renames), refusing any that could leave the tree."""
    _check_text(text)
    proc = _git(["apply", "-p1", "--numstat", "-z", "-"], scratch, text)
    if proc.returncode != 0:
        reason = (proc.stderr.decode("utf-8", errors="replace").strip().splitlines() or ["not a patch"])[0]
        raise UsageError(f"not a usable patch: {reason}")
    names = [n for field in proc.stdout.split(b"\0") for n in [field.split(b"\t")[-1]] if n]
    paths: set[str] = set()
    for raw in names:
        name = raw.decode("utf-8", errors="replace")
        path = PurePosixPath(name)
        if name.startswith("/") or ".." in path.parts or not path.parts:
            raise UsageError(f"patch path {name!r} leaves the tree")
        if set(path.parts) & set(_VCS):
            raise UsageError(f"patch path {name!r} touches version-control metadata")
        paths.add(str(path))
    if not paths:
        raise UsageError("not a patch: no file changes found")
    return sorted(paths)


def _no_symlink_on_the_way(root: Path, path: str) -> None:
    """Refuse a touched path if it, or any directory on the way to it, is a
    symlink: writing there could land outside the work copy."""
    current = root
    for part in PurePosixPath(path).parts:
        current = current / part
        if current.is_symlink():
            raise UsageError(f"patch touches {path} through the symlink {current.relative_to(root)}")


def _work_tree(root: Path, work: Path, touched: list[str]) -> None:
    """Hard-link copy of root without its VCS metadata (a tree's .git config
    must never run anything); files the patch touches are copied for real,
    so applying it never writes into the tree's own files."""
    for path in touched:
        _no_symlink_on_the_way(root, path)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    try:
        shutil.copytree(root, work, symlinks=True, copy_function=link_or_copy, ignore=shutil.ignore_patterns(*_VCS))
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


def _snapshot(work: Path, touched: list[str]) -> dict[str, bytes | None]:
    return {path: (work / path).read_bytes() if (work / path).is_file() else None for path in touched}


def _apply(patch: bytes, work: Path, touched: list[str]) -> None:
    before = _snapshot(work, touched)
    proc = _git(["apply", "-p1", "--whitespace=nowarn", "-"], work, patch)
    if proc.returncode != 0:
        reason = (proc.stderr.decode("utf-8", errors="replace").strip().splitlines() or ["git apply failed"])[0]
        raise UsageError(f"the patch does not apply to the tree: {reason}")
    for path in touched:
        _no_symlink_on_the_way(work, path)  # whatever git made, no symlink may stand on a touched path
    if _snapshot(work, touched) == before:
        raise UsageError("applying the patch changed nothing in the work copy")


def _moved_compdb(compdb: Path, root: Path, work: Path, scratch: Path) -> Path:
    """The compile database with the tree's paths pointing at the work copy
    (whole path components only: /src/linux is not /src/linux-headers)."""
    try:
        entries = json.loads(compdb.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"{compdb}: cannot read compile database: {err}") from err
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
class PatchCheck:
    before: AuditResult
    after: AuditResult
    report: dict[str, Any]  # the patched tree's report, with a "patch" section


def check_patch(root: Path, patch: Path, rules: list[Rule], scratch: Path, jobs: int, cache_dir: Path | None,
                model: ModelSettings | None, compdb: Path | None) -> PatchCheck:
    given_root = root
    root = root.resolve()
    try:
        text = patch.read_bytes()  # read once: what is checked is what is applied
    except OSError as err:
        raise UsageError(f"{patch}: cannot read patch: {err.strerror}") from err
    scratch.mkdir(parents=True, exist_ok=True)
    touched = patch_paths(text, scratch)
    work = scratch / "tree"
    _work_tree(root, work, touched)
    _apply(text, work, touched)
    moved = _moved_compdb(compdb, given_root, work, scratch) if compdb else None
    before = audit_tree(root, rules, jobs, cache_dir, model, compdb)
    # A patch that adds, removes or renames files may shadow headers the cache
    # cannot see: audit the patched tree afresh then.
    structural = any((root / path).exists() != (work / path).exists() for path in touched)
    after = audit_tree(work, rules, jobs, None if structural else cache_dir, model, moved)
    report = build_report(after)
    report["tree"]["root"] = str(root)
    old = {f["id"]: f for f in build_report(before)["findings"]}
    new = {f["id"] for f in report["findings"]}
    failed_before = {d["tu"] for d in before.program.diagnostics}
    scanned = {p.relative_to(work).as_posix() for p in find_sources(work, rule_sources(rules))}
    report["patch"] = {
        "file": str(patch),
        "touched": touched,
        "introduced": sorted(new - old.keys()),
        "fixed": [old[i] for i in sorted(old.keys() - new)],
        "unchanged": sorted(new & old.keys()),
        "new_parse_errors": sorted({d["tu"] for d in after.program.diagnostics} - failed_before),
        # KVM sources the patch touches that the build does not compile (so they were not parsed)
        "not_analyzed": sorted(set(touched) & scanned - set(after.program.files)),
    }
    return PatchCheck(before, after, report)
