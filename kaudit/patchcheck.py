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
            paths.add(str(path))
    if not paths:
        raise UsageError("not a patch: no file headers found")
    return sorted(paths)


def _work_tree(root: Path, work: Path, touched: list[str]) -> None:
    """Hard-link copy of root (files the patch touches copied for real)."""
    for path in touched:
        if (root / path).is_symlink():
            raise UsageError(f"patch touches {path}, a symlink in the tree")

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(root, work, symlinks=True, copy_function=link_or_copy)
    for path in touched:
        target = work / path
        if target.is_file():
            target.unlink()
            shutil.copy2(root / path, target)


def _apply(patch: Path, work: Path) -> None:
    proc = subprocess.run(["git", "apply", "-p1", "--whitespace=nowarn", str(patch.resolve())],
                          cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["git apply failed"])[0]
        raise UsageError(f"{patch}: does not apply to the tree: {reason}")


def _moved_compdb(compdb: Path, root: Path, work: Path, scratch: Path) -> Path:
    """The compile database with the tree's paths pointing at the work copy."""
    text = compdb.read_text().replace(str(root.resolve()), str(work.resolve()))
    moved = scratch / "compile_commands.json"
    moved.write_text(text)
    json.loads(text)  # fail here, not later, if it is not JSON
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
    _apply(patch, work)
    moved = _moved_compdb(compdb, root, work, scratch) if compdb else None
    before = audit_tree(root, rules, jobs, cache_dir, None, compdb)
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
