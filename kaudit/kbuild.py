"""No-build mode: what `make prepare` would generate, synthesised in the cache.

Given only a source tree, kaudit writes, into its own cache directory (never
into the tree, and without running the tree's Makefiles or scripts):
- include/generated/autoconf.h from the tree's own .config when it has one,
  else from a bundled KVM-oriented x86_64 config;
- the asm-generic wrapper headers that the tree's own Kbuild lists name
  (`generic-y`, and `mandatory-y` headers the arch does not provide);
- the few computed headers (bounds, asm-offsets, syscall tables...) as
  neutral stubs with the values the C code needs to parse.
Then it gives the flags Kbuild would give a KVM object, pointing at them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from kaudit import __version__
from kaudit.errors import UsageError
from kaudit.output import replace_with
from kaudit.reading import tree_text

_KBUILD_ITEM = re.compile(r"^\s*(generic-y|mandatory-y|generated-y)\s*\+=\s*(\S+)", re.MULTILINE)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.h$")  # a plain file name: the tree names it

# Computed headers: values that only need to be plausible for parsing.
_COMPUTED = {
    "include/generated/bounds.h": (
        "#define NR_PAGEFLAGS 23\n#define MAX_NR_ZONES 5\n#define NR_CPUS_BITS 13\n"
        "#define SPINLOCK_SIZE 4\n#define LRU_GEN_WIDTH 0\n#define __LRU_REFS_WIDTH 0\n"
        "#define LRU_REFS_WIDTH 0\n#define __LRU_GEN_WIDTH 0\n"
    ),
    "include/generated/timeconst.h": (
        "#define HZ_TO_MSEC_MUL32 0x80000000\n#define HZ_TO_MSEC_ADJ32 0x0\n#define HZ_TO_MSEC_SHR32 29\n"
        "#define MSEC_TO_HZ_MUL32 0x80000000\n#define MSEC_TO_HZ_ADJ32 0x0\n#define MSEC_TO_HZ_SHR32 33\n"
        "#define HZ_TO_MSEC_NUM 4\n#define HZ_TO_MSEC_DEN 1\n#define MSEC_TO_HZ_NUM 1\n#define MSEC_TO_HZ_DEN 4\n"
        "#define HZ_TO_USEC_MUL32 0x80000000\n#define HZ_TO_USEC_ADJ32 0x0\n#define HZ_TO_USEC_SHR32 19\n"
        "#define USEC_TO_HZ_MUL32 0x80000000\n#define USEC_TO_HZ_ADJ32 0x0\n#define USEC_TO_HZ_SHR32 43\n"
        "#define HZ_TO_USEC_NUM 4000\n#define HZ_TO_USEC_DEN 1\n#define USEC_TO_HZ_NUM 1\n#define USEC_TO_HZ_DEN 4000\n"
        "#define HZ_TO_NSEC_NUM 4000000\n#define HZ_TO_NSEC_DEN 1\n#define NSEC_TO_HZ_NUM 1\n"
        "#define NSEC_TO_HZ_DEN 4000000\n"
    ),
    "include/generated/utsrelease.h": '#define UTS_RELEASE "kaudit"\n',
    "include/generated/compile.h": '#define UTS_MACHINE "x86_64"\n#define UTS_VERSION "kaudit"\n',
    "include/generated/asm-offsets.h": "",
    "include/generated/randstruct_hash.h": "",
    "include/generated/rq-offsets.h": "",
    "arch/x86/include/generated/asm/cpufeaturemasks.h": "",
}


def _config_header(config: str) -> str:
    """autoconf.h from .config text, the way Kconfig writes it."""
    lines = ["#define AUTOCONF_INCLUDED"]
    for raw in config.splitlines():
        if not raw.startswith("CONFIG_") or "=" not in raw:
            continue
        name, value = raw.split("=", 1)
        if value == "y":
            lines.append(f"#define {name} 1")
        elif value == "m":
            lines.append(f"#define {name}_MODULE 1")
        elif value != "n":
            lines.append(f"#define {name} {value}")
    return "\n".join(lines) + "\n"


def _kbuild_items(path: Path, kind: str) -> list[str]:
    if not path.is_file():
        return []
    names = [name for k, name in _KBUILD_ITEM.findall(tree_text(path) or "") if k == kind]
    return [name for name in names if _HEADER_NAME.match(name)]  # never a path that leaves the cache


def _wrappers(root: Path) -> dict[str, str]:
    """asm-generic wrappers and generated-y stubs, from the tree's Kbuild lists."""
    files: dict[str, str] = {}
    for arch_dir, generic_kbuild, out in (
        ("arch/x86/include/asm", "include/asm-generic/Kbuild", "arch/x86/include/generated/asm"),
        ("arch/x86/include/uapi/asm", "include/uapi/asm-generic/Kbuild", "arch/x86/include/generated/uapi/asm"),
    ):
        arch_kbuild = root / arch_dir / "Kbuild"
        wanted = set(_kbuild_items(arch_kbuild, "generic-y"))
        wanted |= {h for h in _kbuild_items(root / generic_kbuild, "mandatory-y") if not (root / arch_dir / h).exists()}
        for header in sorted(wanted):
            files[f"{out}/{header}"] = f"#include <asm-generic/{header}>\n"
        for header in _kbuild_items(arch_kbuild, "generated-y"):
            files[f"{out}/{header}"] = ""
    return files


def _syscall_table(path: Path) -> list[tuple[int, str, str]]:
    rows = []
    if path.is_file():
        for line in (tree_text(path) or "").splitlines():
            fields = line.split()
            if len(fields) >= 3 and re.fullmatch(r"[0-9]+", fields[0]):
                rows.append((int(fields[0]), fields[1], fields[2]))
    return rows


def _header(guard: str, defines: list[str]) -> str:
    return f"#ifndef {guard}\n#define {guard}\n" + "".join(f"{d}\n" for d in defines) + "#endif\n"


def _syscall_headers(root: Path) -> dict[str, str]:
    """The syscall-number headers, read off the tree's syscall tables (data,
    not scripts): what arch/x86/entry/syscalls/Makefile would generate."""
    table64 = _syscall_table(root / "arch/x86/entry/syscalls/syscall_64.tbl")
    table32 = _syscall_table(root / "arch/x86/entry/syscalls/syscall_32.tbl")
    if not table64 or not table32:
        return {}

    def numbers(rows: list[tuple[int, str, str]], abis: tuple[str, ...], prefix: str, base: str = "") -> list[str]:
        return [f"#define __NR_{prefix}{name} {base}{nr}" for nr, abi, name in rows if abi in abis]

    def count(name: str, rows: list[tuple[int, str, str]]) -> list[str]:
        return ["#ifdef __KERNEL__", f"#define {name} {max(nr for nr, _, _ in rows) + 1}", "#endif"]

    uapi, kernel = "arch/x86/include/generated/uapi/asm", "arch/x86/include/generated/asm"
    return {
        f"{uapi}/unistd_64.h": _header("_UAPI_ASM_UNISTD_64_H", numbers(table64, ("common", "64"), "")
                                       + count("__NR_syscalls", table64)),
        f"{uapi}/unistd_32.h": _header("_UAPI_ASM_UNISTD_32_H", numbers(table32, ("i386",), "")
                                       + count("__NR_syscalls", table32)),
        f"{uapi}/unistd_x32.h": _header("_UAPI_ASM_UNISTD_X32_H",
                                        numbers(table64, ("common", "x32"), "", "__X32_SYSCALL_BIT + ")),
        f"{kernel}/unistd_32_ia32.h": _header("_UAPI_ASM_UNISTD_32_IA32_H", numbers(table32, ("i386",), "ia32_")
                                              + count("__NR_ia32_syscalls", table32)),
        f"{kernel}/unistd_64_x32.h": _header("_UAPI_ASM_UNISTD_64_X32_H", numbers(table64, ("x32",), "x32_")),
    }


def synthesize(root: Path, cache: Path) -> Path:
    """Write the generated headers for root into the cache; return their root."""
    config = kernel_config(root).text
    major, minor = kernel_version(root)
    version = (
        f"#define LINUX_VERSION_CODE {(major << 16) + (minor << 8)}\n"
        "#define KERNEL_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))\n"
        f"#define LINUX_VERSION_MAJOR {major}\n#define LINUX_VERSION_PATCHLEVEL {minor}\n"
        "#define LINUX_VERSION_SUBLEVEL 0\n"
    )
    files = {"include/generated/autoconf.h": _config_header(config), **_COMPUTED, **_wrappers(root),
             **_syscall_headers(root), "include/generated/uapi/linux/version.h": version}
    digest = hashlib.sha256(
        "\0".join([__version__, *(f"{k}\0{v}" for k, v in sorted(files.items()))]).encode()
    ).hexdigest()[:16]
    gen = cache / "generated" / digest
    if not (gen / ".complete").exists():
        for rel, text in files.items():
            path = gen / rel
            if not path.resolve().is_relative_to(gen.resolve()):
                raise UsageError(f"{root}: generated header {rel!r} would leave the cache")
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_with(path, text.encode())  # never through a link or FIFO planted in the cache
        replace_with(gen / ".complete", b"")
    return gen


_DATA = Path(__file__).parent / "data"


def kernel_version(root: Path) -> tuple[int, int]:
    """VERSION.PATCHLEVEL from the top-level Makefile ((0, 0) if unknown)."""
    text = tree_text(root / "Makefile") or ""
    numbers = dict(re.findall(r"^(VERSION|PATCHLEVEL)\s*=\s*(\d+)", text, re.MULTILINE))
    return int(numbers.get("VERSION", 0)), int(numbers.get("PATCHLEVEL", 0))


# A line as Kconfig writes it: y/m/n, a quoted string, a decimal or hex number
_CONFIG_LINE = re.compile(r'^(CONFIG_[A-Za-z0-9_]+)=(y|m|n|"(?:[^"\\]|\\.)*"|-?[0-9]+|0x[0-9A-Fa-f]+)$')


@dataclass(frozen=True)
class KernelConfig:
    text: str  # the CONFIG_ lines
    origin: str  # which config this is, for the report

    def values(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.text.splitlines())


def _config_lines(text: str) -> str:
    return "".join(f"{line}\n" for line in text.splitlines() if _CONFIG_LINE.match(line))


def kernel_config(root: Path) -> KernelConfig:
    """The tree's own .config (written, and so fully evaluated, by the kernel's Kconfig when the tree
    was configured) when it has one; else the bundled config of the newest kernel version not newer
    than the tree's (Kconfig symbols change type between versions)."""
    own = root / ".config"
    if own.is_file() and not own.is_symlink():
        return KernelConfig(_config_lines(tree_text(own) or ""), "the tree's .config")
    configs = sorted(
        (tuple(int(n) for n in path.stem.rsplit("-", 1)[1].split(".")), path)
        for path in _DATA.glob("kvm-x86_64-*.config")
    )
    version = kernel_version(root)
    chosen = ([path for v, path in configs if v <= version] or [configs[0][1]])[-1]
    return KernelConfig(_config_lines(chosen.read_text()), f"bundled {chosen.name}")


_ASSIGN = re.compile(r"^([A-Za-z0-9_.-]+?)(?:-(y|m|\$\((CONFIG_[A-Za-z0-9_]+)\)))?\s*(\+=|:=|\?=|=)\s*(.*)$")


def configured_sources(root: Path, makefile: str = "arch/x86/kvm/Makefile") -> list[Path] | None:
    """The C files Kbuild compiles into KVM under the tree's config (kernel_config),
    read off the Makefile as data (object lists, `ifdef CONFIG_`, `include` of
    files in the tree); None when the tree has no such Makefile."""
    config = kernel_config(root).values()
    variables: dict[str, str] = {"srctree": str(root), "obj": str((root / makefile).parent)}
    objects: list[Path] = []

    def expand(text: str) -> str:
        return re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), ""), text)

    visited: set[Path] = set()

    def read(path: Path) -> None:
        path = path.resolve()
        if path in visited or not path.is_file() or not path.is_relative_to(root.resolve()):
            return
        visited.add(path)
        active: list[tuple[bool, bool]] = []  # (branch taken, whether the condition was evaluated)
        text = (tree_text(path) or "").replace("\\\n", " ")
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            words = line.split()
            if words[:1] in (["ifdef"], ["ifndef"]) and len(words) > 1:
                defined = config.get(words[1], "n") in ("y", "m")
                active.append((defined if words[0] == "ifdef" else not defined, True))
            elif words[:1] in (["ifeq"], ["ifneq"]):
                active.append((True, False))  # not evaluated: both sides' objects are kept
            elif words[:1] == ["else"] and active:
                taken, evaluated = active[-1]
                active[-1] = (not taken if evaluated else taken, evaluated)
            elif words[:1] == ["endif"] and active:
                active.pop()
            elif not all(taken for taken, _ in active) or not line:
                continue
            elif words[0] == "include" and len(words) > 1:
                included = Path(expand(words[1]))
                read(included if included.is_absolute() else root / included)
            elif (match := _ASSIGN.match(line)) is not None:
                name, flag, cond, op, value = match.groups()
                if flag is None and cond is None:
                    if op != "?=" or name not in variables:
                        variables[name] = expand(value)
                    continue
                if name in ("obj", "ccflags", "asflags", "subdir-ccflags"):
                    continue
                enabled = flag in ("y", "m") or config.get(cond or "", "n") in ("y", "m")
                if enabled:
                    base = path.parent if path.is_relative_to(root / makefile.rsplit("/", 1)[0]) else (
                        root / makefile).parent
                    objects.extend((base / word).resolve() for word in expand(value).split()
                                   if word.endswith(".o"))

    if not (root / makefile).is_file():
        return None
    read(root / makefile)
    sources = {obj.with_suffix(".c") for obj in objects}
    return sorted(p for p in sources if p.is_file())


def nobuild_args(root: Path, gen: Path | None) -> list[str]:
    """Kbuild's flags for an x86_64 KVM object, generated headers from gen
    (None for a small kernel-style tree that needs none, like the sample)."""
    args = ["-nostdinc", "--target=x86_64-linux-gnu", "-std=gnu11", "-D__KERNEL__", "-O2", "-m64",
            "-DKBUILD_MODNAME=\"kvm\"", "-DKBUILD_BASENAME=\"kvm\"", "-D__KBUILD_MODNAME=kmod_kvm",
            "-DKBUILD_MODFILE=\"arch/x86/kvm/kvm\"", "-fno-PIE", "-mcmodel=kernel",
            "-mno-sse", "-mno-mmx", "-mno-sse2", "-mno-avx", "-mno-red-zone", "-fshort-wchar", "-funsigned-char",
            "-fno-common"]
    def generated(rel: str) -> list[Path]:
        return [gen / rel] if gen is not None else []

    includes = [
        root / "arch/x86/include", root / "arch/x86/include/generated", *generated("arch/x86/include/generated"),
        root / "include", *generated("include"),
        root / "arch/x86/include/uapi", root / "arch/x86/include/generated/uapi",
        *generated("arch/x86/include/generated/uapi"),
        root / "include/uapi", root / "include/generated/uapi", *generated("include/generated/uapi"),
        root / "arch/x86/kvm",
    ]
    for inc in includes:
        if inc.is_dir():
            args += ["-I", str(inc)]
    for rel in ("include/linux/compiler-version.h", "include/linux/kconfig.h", "include/linux/compiler_types.h"):
        if (root / rel).is_file():
            args += ["-include", str(root / rel)]
    return args
