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
from kaudit.rules import Rule

_HEADER = re.compile(r"^(?:--- |\+\+\+ |rename from |rename to |copy from |copy to )(\S+)")
_GIT_HEADER = re.compile(r"^diff --git (\S+) (\S+)$")
_VCS = (".git", ".hg", ".svn")


def patch_paths(text: str) -> list[str]:
    """The tree-relative paths a unified or git diff touches (strip level 1),
    refusing anything that could reach outside the tree."""
    paths: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("GIT binary patch", "Binary files ")):
            raise UsageError("binary patches are not accepted")
        if re.match(r"^(new file mode|new mode|old mode|deleted file mode) 120000", line):
            raise UsageError("patches that create or change symlinks are not accepted")
        names: tuple[str, ...] = ()
        if match := _GIT_HEADER.match(line):
            names = match.groups()
        elif match := _HEADER.match(line):
            names = (match.group(1),)
        for name in names:
            if name == "/dev/null":
                continue
            is_header = line.startswith(("---", "+++", "diff --git"))
            path = PurePosixPath(name.split("/", 1)[1] if is_header and "/" in name else name)
            if name.startswith("/") or ".." in path.parts or not path.parts:
                raise UsageError(f"patch path {name!r} leaves the tree")
            if set(path.parts) & set(_VCS):
                raise UsageError(f"patch path {name!r} touches version-control metadata")
            paths.add(str(path))
    if not paths:
        raise UsageError("not a patch: no file headers found")
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

    shutil.copytree(root, work, symlinks=True, copy_function=link_or_copy, ignore=shutil.ignore_patterns(*_VCS))
    for path in touched:
        target = work / path
        if not target.resolve().is_relative_to(work.resolve()):
            raise UsageError(f"patch path {path!r} leaves the work copy")
        if target.is_file():
            target.unlink()
            shutil.copy2(root / path, target)


def _snapshot(work: Path, touched: list[str]) -> dict[str, bytes | None]:
    return {path: (work / path).read_bytes() if (work / path).is_file() else None for path in touched}


def _apply(patch: Path, work: Path, touched: list[str]) -> None:
    """git apply in the work copy, isolated from any repository or config
    around it (so it cannot pick up a repo above the scratch directory)."""
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(work.resolve().parent), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "HOME": str(work.resolve().parent)}
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    before = _snapshot(work, touched)
    proc = subprocess.run(["git", "apply", "-p1", "--whitespace=nowarn", str(patch.resolve())],
                          cwd=work, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["git apply failed"])[0]
        raise UsageError(f"{patch}: does not apply to the tree: {reason}")
    if _snapshot(work, touched) == before:
        raise UsageError(f"{patch}: applying it changed nothing in the work copy")


def _moved_compdb(compdb: Path, root: Path, work: Path, scratch: Path) -> Path:
    """The compile database with the tree's paths pointing at the work copy
    (whole path components only: /src/linux is not /src/linux-headers)."""
    try:
        entries = json.loads(compdb.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"{compdb}: cannot read compile database: {err}") from err
    pattern = re.compile(rf"(?<![\w.-]){re.escape(str(root.resolve()))}(?=/|$|\s|[\"'])")
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
    root = root.resolve()
    try:
        touched = patch_paths(patch.read_text(errors="replace"))
    except OSError as err:
        raise UsageError(f"{patch}: cannot read patch: {err.strerror}") from err
    work = scratch / "tree"
    _work_tree(root, work, touched)
    _apply(patch, work, touched)
    moved = _moved_compdb(compdb, root, work, scratch) if compdb else None
    before = audit_tree(root, rules, jobs, cache_dir, model, compdb)
    after = audit_tree(work, rules, jobs, cache_dir, model, moved)
    report = build_report(after)
    report["tree"]["root"] = str(root)
    old = {f["id"]: f for f in build_report(before)["findings"]}
    new = {f["id"] for f in report["findings"]}
    report["patch"] = {
        "file": str(patch),
        "touched": touched,
        "introduced": sorted(new - old.keys()),
        "fixed": [old[i] for i in sorted(old.keys() - new)],
        "unchanged": sorted(new & old.keys()),
    }
    return PatchCheck(before, after, report)
