"""Compile-database mode: the kernel's compile_commands.json, made safe for libclang.

Kernel builds use gcc; its command lines carry flags clang rejects, and a
compile database is input we do not trust. So each command keeps only what
an allowlist says parsing needs (defines, include paths and forced includes
inside the tree, language and target options) and loses the rest. Entries
for files outside the tree are skipped. An `O=` build keeps its generated
headers in the object tree: include paths there are kept when it is named
(--objtree).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from kaudit.errors import UsageError
from kaudit.reading import MAX_COMPDB, read_text_input

# Allowlist: the flags that change how a TU parses (macros, language,
# target). Everything else is dropped: gcc-only code-generation flags
# (-mpreferred-stack-boundary=, -mindirect-branch=, -fconserve-stack, ...),
# warnings and -Werror, dependency output, -c/-o, plugins, --config files,
# modules caches (which would write), and @response files.
_KEEP_EXACT = {
    "-nostdinc", "-ffreestanding", "-m64", "-m32", "-fshort-wchar", "-funsigned-char", "-fsigned-char",
    "-fno-common", "-fno-PIE", "-fno-pie", "-fno-PIC", "-fno-pic", "-fms-extensions", "-fno-strict-aliasing",
    "-mno-red-zone", "-mno-sse", "-mno-sse2", "-mno-mmx", "-mno-3dnow", "-mno-avx", "-mno-80387",
    "-mno-fp-ret-in-387", "-mskip-rax-setup", "-O0", "-O1", "-O2", "-O3", "-Os", "-Oz",
}
_KEEP_PREFIXES = ("-D", "-U", "-std=", "-mcmodel=", "-march=", "-fcf-protection", "-fno-builtin")
# A target triple only: clang derives a config file name from it (--target=x86_64-x/../evil)
_TARGET = re.compile(r"^--target=[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*$")
# Flags that name a file or directory: kept only when it lies inside the tree.
_PATH_FLAGS = ("-I", "-isystem", "-iquote", "-idirafter", "-include", "-imacros")
# One shell word: unquoted characters, quoted strings and escapes, run together (POSIX sh).
_WORD = re.compile(r"""(?:[^\s'"\\]|'[^']*'|"(?:[^"\\]|\\.)*"|\\.)+""", re.DOTALL)


def split_command(command: str) -> list[str]:
    """shlex.split(command), word by word: shlex reads every character of a command line in Python
    (a kernel's runs to thousands), and only the few words that quote or escape (`-DKBUILD_MODNAME=
    '"kvm"'`) need it. A command that is not whole words (an unclosed quote) goes to shlex whole,
    which refuses it as before."""
    words, end = [], 0
    for match in _WORD.finditer(command):
        if command[end:match.start()].strip():
            return shlex.split(command)
        word = match.group()
        words.append(shlex.split(word)[0] if any(c in word for c in "'\"\\") else word)
        end = match.end()
    return words if not command[end:].strip() else shlex.split(command)


def _inside(path: Path, *roots: Path | None) -> bool:
    if "\0" in str(path):  # names no file (and os.path.realpath refuses it)
        return False
    return any(root is not None and path.resolve().is_relative_to(root) for root in roots)


def translate(argv: list[str], directory: Path, root: Path, objtree: Path | None = None) -> list[str]:
    """Clang-safe parse flags from one compile command's argv (no compiler, no file);
    paths must lie in the source tree root or the object tree."""
    out: list[str] = []
    args = iter(argv[1:])  # argv[0] is the compiler
    for arg in args:
        flag = next((f for f in _PATH_FLAGS if arg == f or (arg.startswith(f) and f in ("-I",))), None)
        if flag is not None:
            value = arg[len(flag):] or next(args, "")
            path = Path(value) if Path(value).is_absolute() else directory / value
            if value and _inside(path, root, objtree):
                out += [flag, str(path.resolve())]
        elif arg in _KEEP_EXACT or _TARGET.match(arg) or (arg.startswith(_KEEP_PREFIXES) and arg not in ("-D", "-U")):
            out.append(arg)
        elif arg in ("-D", "-U"):
            out += [arg, next(args, "")]
    return out


def read_compdb(compdb: Path) -> object:
    """The compile database's JSON; UsageError in one line for anything else."""
    text = read_text_input(compdb, "compile database", MAX_COMPDB)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise UsageError(f"{compdb}: cannot read compile database: {str(err)[:200]}") from err


def load(compdb: Path, root: Path, wanted: list[Path], objtree: Path | None = None) -> dict[Path, list[str]]:
    """Flags per wanted source file, from the compile database."""
    root = root.resolve()
    objtree = objtree.resolve() if objtree is not None else None
    entries = read_compdb(compdb)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UsageError(f"{compdb}: a compile database is a JSON list of objects")
    want = {p.resolve() for p in wanted}
    flags: dict[Path, list[str]] = {}
    for number, entry in enumerate(entries, 1):
        try:
            directory = Path(entry.get("directory", root))
            source = Path(entry.get("file", ""))
            source = (source if source.is_absolute() else directory / source).resolve()
            if source not in want or not _inside(source, root):
                continue
            argv = entry.get("arguments") or split_command(str(entry.get("command", "")))
            if not isinstance(argv, list) or not all(isinstance(a, str) and "\0" not in a for a in argv):
                raise ValueError("malformed arguments")
            flags[source] = translate(argv, directory, root, objtree)
        except (TypeError, ValueError) as err:
            raise UsageError(f"{compdb}: entry {number} is malformed: {err}") from err
    return flags
