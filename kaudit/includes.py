"""What the preprocessor can reach: a TU's include search path, without clang.

Two uses:
- `UnsafeHeaders` finds files on the search path that are no regular file
  (FIFOs, devices, sockets, links to them) or are oversized. libclang's file
  access cannot be intercepted, and it would block on a FIFO or read
  /dev/zero until memory runs out; so they are found before it runs, and a
  VFS overlay (`-ivfsoverlay`) puts in place of each a header whose #error
  names it. A TU that includes one fails with that error; the others never
  notice.
- `probes` lists, for each file a TU included, the paths searched before the
  one found. The facts cache records them as absent, so a new header that
  shadows one further down the path invalidates the entry.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kaudit.reading import tree_text

MAX_HEADER = 64 << 20  # bytes; the largest kernel header is a few MB

_DIRECTIVE = re.compile(r'\s*#\s*include(_next)?\s*([<"])([^>"]+)[>"]')
_QUOTE_FLAGS, _ANGLED_FLAGS = ("-iquote",), ("-I", "-isystem", "-idirafter")


@dataclass(frozen=True)
class SearchPath:
    quote: tuple[str, ...]  # -iquote: searched for "..." only, after the includer's directory
    angled: tuple[str, ...]  # -I, then -isystem, then -idirafter: searched for both forms

    @classmethod
    def of(cls, args: Sequence[str]) -> SearchPath:
        found: dict[str, list[str]] = {flag: [] for flag in (*_QUOTE_FLAGS, *_ANGLED_FLAGS)}
        pending = None
        for arg in args:
            if pending is not None:
                found[pending].append(os.path.normpath(arg))
                pending = None
            elif arg in found:
                pending = arg
            elif arg.startswith("-I") and len(arg) > 2:
                found["-I"].append(os.path.normpath(arg[2:]))
        return cls(tuple(found["-iquote"]), tuple(d for flag in _ANGLED_FLAGS for d in found[flag]))

    def directories(self) -> tuple[str, ...]:
        return (*self.quote, *self.angled)


@dataclass(frozen=True)
class Inclusion:
    """One #include as clang resolved it: who included what, from which line."""

    includer: str
    line: int
    found: str


def probes(path: SearchPath, inclusions: Iterable[Inclusion]) -> list[str]:
    """Paths the preprocessor looked at, and found absent, before the file it
    took (a superset is harmless: it only invalidates more). Computed
    includes (`#include MACRO`) are not read back, so they record none."""
    lines: dict[str, list[str]] = {}
    absent: set[str] = set()
    for inc in inclusions:
        if inc.includer not in lines:
            lines[inc.includer] = (tree_text(inc.includer) or "").splitlines()
        text = lines[inc.includer]
        match = _DIRECTIVE.match(text[inc.line - 1]) if 0 < inc.line <= len(text) else None
        if match is None:
            continue
        _, bracket, name = match.groups()
        dirs = ([os.path.dirname(inc.includer), *path.quote] if bracket == '"' else []) + list(path.angled)
        found = os.path.normpath(inc.found)
        candidates = [os.path.normpath(os.path.join(d, name)) for d in dirs]
        if found not in candidates:
            continue
        absent.update(c for c in candidates[:candidates.index(found)] if not os.path.lexists(c))
    return sorted(absent)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


class UnsafeHeaders:
    """Files under search-path directories that libclang must not open:
    each directory tree is walked once per run (links followed, loops cut)."""

    def __init__(self) -> None:
        self._scanned: dict[str, dict[str, str]] = {}

    def under(self, directory: str) -> dict[str, str]:
        """{path: why it is refused} below directory."""
        if directory not in self._scanned:
            self._scanned[directory] = self._scan(directory)
        return self._scanned[directory]

    @staticmethod
    def _scan(top: str) -> dict[str, str]:
        bad: dict[str, str] = {}
        seen: set[tuple[int, int]] = set()
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                info = os.stat(directory)
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
                entries = list(os.scandir(directory))
            except OSError:
                continue  # unreadable or vanished: clang cannot open it either
            for entry in entries:
                try:
                    if entry.is_dir():
                        stack.append(entry.path)
                    elif entry.is_file():
                        if entry.stat().st_size > MAX_HEADER:
                            bad[entry.path] = f"larger than {MAX_HEADER >> 20} MiB"
                    elif os.path.exists(entry.path):  # a dangling link is merely not found
                        bad[entry.path] = _kind(entry.stat().st_mode)
                except OSError:
                    continue
        return bad

    def for_args(self, args: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for directory in SearchPath.of(args).directories():
            found.update(self.under(directory))
        return found


def overlay(bad: dict[str, str], root: Path, into: Path) -> Path:
    """A clang VFS overlay that maps each refused file to a header whose
    #error names it; written into `into` (kaudit's scratch space)."""
    into.mkdir(parents=True, exist_ok=True)
    roots = []
    for number, (path, why) in enumerate(sorted(bad.items())):
        shown = os.path.relpath(path, root) if path.startswith(f"{root}{os.sep}") else path
        stand_in = into / f"refused-{number}.h"
        stand_in.write_text(f"#error {json.dumps(f'kaudit: {shown} is {why}: not read')}\n")
        roots.append({"type": "file", "name": path, "external-contents": str(stand_in)})
    target = into / "overlay.yaml"
    target.write_text(json.dumps({"version": 0, "case-sensitive": "true", "roots": roots}))
    return target
