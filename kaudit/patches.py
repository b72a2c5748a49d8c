"""Patches for check-patch: from files, mboxes (a `git format-patch` series,
`b4 am` output) or stdin, split into messages by git's own mailsplit and
mailinfo, and the paths each touches as git's patch parser reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kaudit.errors import UsageError
from kaudit.gitrun import first_error_line, git
from kaudit.reading import read_input

VCS_DIRS = (".git", ".hg", ".svn")
_MODE = re.compile(r"^(?:new file mode|new mode|old mode|deleted file mode)\s+([0-7]+)\s*$")


def checked_path(name: str) -> str:
    """A tree-relative path a change may touch: never absolute, `..` or VCS metadata."""
    path = PurePosixPath(name)
    if name.startswith("/") or ".." in path.parts or not path.parts:
        raise UsageError(f"patch path {name!r} leaves the tree")
    if set(path.parts) & set(VCS_DIRS):
        raise UsageError(f"patch path {name!r} touches version-control metadata")
    return str(path)


@dataclass(frozen=True)
class Patch:
    """One patch of a series: a message of an mbox, a patch file, or stdin."""

    name: str
    subject: str
    text: bytes


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
    proc = git(["apply", "-p1", "--numstat", "-z", "-"], scratch, text)
    if proc.returncode != 0:
        raise UsageError(f"not a usable patch: {first_error_line(proc, 'not a patch')}")
    names = [n for f in proc.stdout.split(b"\0") for n in [f.split(b"\t")[-1]] if n]
    paths = {checked_path(raw.decode("utf-8", errors="replace")) for raw in names}
    if not paths:
        raise UsageError("not a patch: no file changes found")
    return sorted(paths)


def _messages(name: str, text: bytes, scratch: Path) -> list[Patch]:
    """The patches of one input: each message of an mbox (a plain diff is one), cover letters skipped."""
    split = scratch / f"split-{len(list(scratch.glob('split-*')))}"
    split.mkdir(parents=True)
    source = split / "input"
    source.write_bytes(text)
    proc = git(["mailsplit", "-b", f"-o{split}", str(source)], scratch)
    if proc.returncode != 0:
        raise UsageError(f"{name}: cannot split into messages: {first_error_line(proc, 'mailsplit failed')}")
    patches = []
    for message in sorted(p for p in split.iterdir() if p.name.isdigit()):
        info = git(["mailinfo", str(split / "msg"), str(split / "patch")], scratch, message.read_bytes())
        if info.returncode != 0:
            raise UsageError(f"{name}: unreadable message: {first_error_line(info, 'mailinfo failed')}")
        body = (split / "patch").read_bytes()
        if not body.strip():
            continue  # a cover letter: no diff
        subject = next((line[len(b"Subject: "):] for line in info.stdout.splitlines()
                        if line.startswith(b"Subject: ")), b"")
        patches.append(Patch(name, subject.decode("utf-8", errors="replace").strip(), body))
    return patches


def read_patches(sources: list[Path], stdin: bytes | None, scratch: Path) -> list[Patch]:
    """Every patch of the inputs, in order; `-` names stdin (read once: what is checked is what is applied)."""
    patches: list[Patch] = []
    for source in sources:
        if str(source) == "-":
            if stdin is None:
                raise UsageError("- (stdin) given twice")
            text, stdin = stdin, None
        else:
            text = read_input(source, "patch", pipes=True)
        _check_text(text)
        found = _messages(str(source), text, scratch)
        if not found:
            raise UsageError(f"{source}: no patch in it")
        patches += found
    if len(patches) > 1:  # name each by its place in the series
        patches = [Patch(f"{p.name} [{n}/{len(patches)}]", p.subject, p.text) for n, p in enumerate(patches, 1)]
    return patches
