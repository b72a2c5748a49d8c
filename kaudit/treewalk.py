"""Find the C files the rules' globs cover, and account for every one not read.

`Path.glob` skips what it cannot read without a word: an unreadable
directory, a FIFO or a dangling link named `*.c`, a directory linked from
outside the tree. A checker that skips input silently reports clean what it
never saw, so this walk names each such path with the reason; the caller
counts it as a fatal parse error of that file (never exit 0).
Links inside the tree are followed (loops cut); links leaving it are not.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from kaudit.output import kind

MAX_SOURCE = 64 << 20  # bytes; the largest kernel C file is well under 1 MB


@dataclass(frozen=True)
class Unread:
    """A path the globs cover that is not read, and why."""

    path: Path
    why: str


@dataclass
class Found:
    files: list[Path] = field(default_factory=list)
    unread: list[Unread] = field(default_factory=list)


def shown(rel: str) -> str:
    """A tree-relative name fit for a report: bytes that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _matches(pattern: Sequence[str], parts: Sequence[str], prefix: bool) -> bool:
    """Whether parts match the glob's components (`**`: any number of
    directories), or, with prefix, could lead to a match below them."""
    while True:
        if not parts:
            return bool(pattern) if prefix else all(p == "**" for p in pattern)
        if not pattern:
            return False
        if pattern[0] == "**":
            return _matches(pattern[1:], parts, prefix) or _matches(pattern, parts[1:], prefix)
        if not fnmatchcase(parts[0], pattern[0]):
            return False
        pattern, parts = pattern[1:], parts[1:]


def _leaves(path: str, real_root: str) -> bool:
    return not os.path.realpath(path).startswith(real_root + os.sep)


def _not_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _entries(directory: str, unread: list[Unread]) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as scan:
            yield from sorted(scan, key=lambda e: e.name)
    except FileNotFoundError:
        return  # vanished while the walk ran: nothing of it was found
    except OSError as err:
        unread.append(Unread(Path(directory), f"directory cannot be read ({err.strerror})"))


def walk(root: Path, globs: Sequence[str]) -> Found:
    """The regular files under root that a glob matches, sorted, and the matching paths that are not read."""
    real_root = os.path.realpath(root)
    patterns = [tuple(g.split("/")) for g in globs]
    found = Found()
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[str, tuple[str, ...]]] = [(str(root), ())]
    while stack:
        directory, rel = stack.pop()
        for entry in _entries(directory, found.unread):
            parts = (*rel, entry.name)
            whole = any(_matches(p, parts, False) for p in patterns)
            below = any(_matches(p, parts, True) for p in patterns)
            if not (whole or below):
                continue
            why, info = _refusal(entry, "/".join(parts), real_root, whole)
            if why == "directory":
                if below and (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    stack.append((entry.path, parts))
            elif why == "file":
                found.files.append(Path(entry.path))
            elif why is not None:
                found.unread.append(Unread(Path(entry.path), why))
    found.files.sort()
    found.unread.sort(key=lambda u: u.path)
    return found


def _refusal(entry: os.DirEntry[str], rel: str, real_root: str, whole: bool) -> tuple[str | None, os.stat_result]:
    """("directory" | "file", its stat) for what the walk takes, else why a
    matching path is not read (None: not a match, ignored)."""
    none = os.stat_result((0,) * 10)
    try:
        info = entry.stat()
    except FileNotFoundError:
        return ("a dangling symlink" if entry.is_symlink() and whole else None), none
    except OSError as err:
        return (f"cannot be read ({err.strerror})" if whole else None), none
    if entry.is_symlink() and _leaves(entry.path, real_root):
        return ("a symlink leaving the tree" if whole or stat.S_ISDIR(info.st_mode) else None), info
    if stat.S_ISDIR(info.st_mode):
        return "directory", info
    if not whole:
        return None, info
    if _not_utf8(rel):
        return "named in bytes that are not UTF-8", info
    if not stat.S_ISREG(info.st_mode):
        return kind(info.st_mode), info
    if info.st_size > MAX_SOURCE:
        return f"larger than {MAX_SOURCE >> 20} MiB", info
    return "file", info


def escaped_headers(root: Path, included: Sequence[str]) -> list[dict[str, object]]:
    """Diagnostics for headers a TU reached under the tree through a link
    leaving it: the front end drops facts from outside the tree, so
    their declarations and bodies would be lost without a word."""
    top = os.path.abspath(root)
    real_root = os.path.realpath(root)
    out = []
    for name in sorted(set(included)):
        path = os.path.abspath(name)
        if path.startswith(top + os.sep) and _leaves(path, real_root):
            rel = shown(os.path.relpath(path, top))
            out.append({"severity": "error", "file": rel, "line": 0, "column": 0,
                        "message": f"kaudit: {rel} is reached through a symlink leaving the tree: not analysed"})
    return out
