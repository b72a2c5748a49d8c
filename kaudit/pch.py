"""Shared precompiled headers: which TUs share one, and what it holds.

Kernel files start alike (`#define pr_fmt ...`, `#include <linux/kvm_host.h>`)
and those headers are most of each parse. TUs that are parsed with the same
flags (after dropping the per-file `-DKBUILD_BASENAME=`) and start with the
same directives share a PCH of those directives, built once per run into
kaudit's scratch space (an empty directory of its own); the front end parses
each of them against it, and falls back to a plain parse wherever the PCH
parse reports any error. Only `#define`s and `#include`s make a prefix, and
a quoted include only when it names the same file from the TU's directory
as from the include path alone (the shared header has no directory of the
TU's). Planning needs no clang: it reads the sources as text.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from kaudit.includes import SearchPath

_SKIP = re.compile(rb"(?:\s+|/\*.*?\*/|//[^\n]*)*", re.S)
_LINE = re.compile(rb"#(?:[^\n\\]|\\.)*", re.S)  # a directive, with its backslash-continued lines
_SHAREABLE = re.compile(rb'#\s*(?:include\s*<[^>\n]+>|include\s*"([^"\n]+)"|define\s)')
_PER_FILE = ("-DKBUILD_BASENAME=",)
MIN_GROUP = 2  # a PCH for one TU costs more than it saves


def leading_directives(source: bytes, quoted_ok: Callable[[str], bool] = lambda _: False) -> list[str]:
    """The shareable directives a file starts with, as written."""
    found: list[str] = []
    pos = 0
    while True:
        pos = _SKIP.match(source, pos).end()
        line = _LINE.match(source, pos)
        shareable = _SHAREABLE.match(line.group()) if line is not None else None
        if shareable is None or (shareable.group(1) and not quoted_ok(shareable.group(1).decode(errors="replace"))):
            return found
        found.append(line.group().decode("utf-8", errors="replace").rstrip())
        pos = line.end()


def quoted_resolver(directory: str, args: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether `#include "name"` finds the same file from a TU in directory
    as from a header in a directory of its own (quote dirs, then -I...)."""
    search = SearchPath.of(args)
    path = [*search.quote, *search.angled]

    def first(dirs: list[str], name: str) -> str | None:
        return next((os.path.join(d, name) for d in dirs if os.path.isfile(os.path.join(d, name))), None)

    def same(name: str) -> bool:
        found = first(path, name)
        local = first([directory], name)
        return found is not None and (local is None or os.path.samefile(local, found))

    return same


def shared_flags(args: tuple[str, ...]) -> tuple[str, ...]:
    """The flags a PCH is built with: the TU's, less its per-file name define."""
    return tuple(arg for arg in args if not arg.startswith(_PER_FILE))


@dataclass(frozen=True)
class PchGroup:
    """TUs (job indexes) that share one PCH of `header` built with `flags`."""

    flags: tuple[str, ...]
    header: str
    members: tuple[int, ...]


def plan(units: list[tuple[tuple[str, ...], list[str]]]) -> list[PchGroup]:
    """Groups for (flags, leading directives) of each TU: same shared flags,
    same directives up to the first #include; the PCH holds the longest
    prefix they all share. TUs left alone are parsed plainly."""
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for index, (args, directives) in enumerate(units):
        first = next((i for i, d in enumerate(directives) if "include" in d.split(None, 1)[0]), None)
        if first is not None:
            buckets[(shared_flags(args), tuple(directives[:first + 1]))].append(index)
    groups = []
    for (flags, _), members in sorted(buckets.items()):
        if len(members) < MIN_GROUP:
            continue
        lists = [units[i][1] for i in members]
        common = 0
        while all(len(d) > common and d[common] == lists[0][common] for d in lists):
            common += 1
        groups.append(PchGroup(flags, "\n".join(lists[0][:common]) + "\n", tuple(members)))
    return groups


@dataclass(frozen=True)
class Pch:
    """A PCH built this run, as the TUs of its group use it."""

    path: str  # the AST file
    files: frozenset[str]  # every header it holds, as clang named them
    inclusions: tuple[tuple[str, int, str], ...]  # its #includes, as front end Parsed.inclusions
    warnings: int  # warnings its build reported (a plain parse reports them too)

    def tu_args(self, args: tuple[str, ...]) -> list[str]:
        """A member's flags against the PCH: its forced includes are in it."""
        out: list[str] = []
        skip = False
        for arg in args:
            if skip:
                skip = False
            elif arg in ("-include", "-imacros"):
                skip = True
            else:
                out.append(arg)
        return [*out, "-include-pch", self.path]
