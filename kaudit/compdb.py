"""Compile-database mode: the kernel's compile_commands.json, made safe for libclang.

Kernel builds use gcc; its command lines carry flags clang rejects, and a
compile database is input we do not trust. So each command keeps what
parsing needs (defines, include paths inside the tree, forced includes,
language and target options) and loses the rest: gcc-only code-generation
flags, warnings (and -Werror), dependency-file output, -c/-o, plugins
(-fplugin, -Xclang -load) and @response files. Paths that lead outside the
tree are dropped, and entries for files outside it are skipped.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from kaudit.errors import UsageError

# Flags gcc accepts and clang does not (or that only change code generation).
GCC_ONLY_PREFIXES = (
    "-mpreferred-stack-boundary=", "-mindirect-branch=", "-mindirect-branch-register", "-mfunction-return=",
    "-mindirect-branch-cs-prefix", "-mharden-sls=", "-mrecord-mcount", "-mskip-rax-setup",
    "-fno-allow-store-data-races", "-fconserve-stack", "-falign-jumps=", "-falign-loops=",
    "-falign-functions=", "-fno-ipa-sra", "-fmin-function-alignment=", "-fzero-call-used-regs=",
    "-fpatchable-function-entry=", "-fsanitize", "-fno-var-tracking-assignments", "-fstack-clash-protection",
    "-fno-delete-null-pointer-checks", "-fno-tree-loop-im", "-fno-inline-functions-called-once",
)
_DROP_EXACT = {"-c", "-Werror", "-pipe", "-g", "-gdwarf-4", "-gdwarf-5"}
_WITH_VALUE = {"-o", "-MF", "-MT", "-MQ"}
_PATH_FLAGS = {"-I", "-isystem", "-iquote", "-include", "-idirafter"}


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def translate(argv: list[str], directory: Path, root: Path) -> list[str]:
    """Clang-safe parse flags from one compile command's argv (no compiler, no file)."""
    out: list[str] = []
    i = 1  # argv[0] is the compiler
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in _WITH_VALUE:
            i += 1
            continue
        if arg == "-Xclang":  # -Xclang -load -Xclang plugin.so, and anything else passed raw
            i += 1
            continue
        if (arg in _DROP_EXACT or arg.startswith(("@", "-Wp,", "-W", "-fplugin", "-MD", "-MMD", "-M"))
                or arg.startswith(GCC_ONLY_PREFIXES) or arg.endswith((".c", ".S"))):
            continue
        flag, value = next(((f, arg[len(f):]) for f in _PATH_FLAGS if arg.startswith(f) and arg != f), (arg, None))
        if flag in _PATH_FLAGS:
            if value is None:
                if i >= len(argv):
                    break
                value = argv[i]
                i += 1
            path = Path(value) if Path(value).is_absolute() else directory / value
            if _inside(path, root):
                out += [flag, str(path.resolve())]
            continue
        out.append(arg)
    return out


def load(compdb: Path, root: Path, wanted: list[Path]) -> dict[Path, list[str]]:
    """Flags per wanted source file, from the compile database."""
    root = root.resolve()
    try:
        entries = json.loads(compdb.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"{compdb}: cannot read compile database: {err}") from err
    if not isinstance(entries, list):
        raise UsageError(f"{compdb}: a compile database is a JSON list")
    want = {p.resolve() for p in wanted}
    flags: dict[Path, list[str]] = {}
    for entry in entries:
        directory = Path(entry.get("directory", root))
        source = Path(entry.get("file", ""))
        source = (source if source.is_absolute() else directory / source).resolve()
        if source not in want or not _inside(source, root):
            continue
        argv = entry.get("arguments") or shlex.split(entry.get("command", ""))
        flags[source] = translate(argv, directory, root)
    return flags
