"""No-build mode: what `make prepare` would generate, synthesised in the cache.

Given only a source tree, kaudit writes, into its own cache directory (never
into the tree, and without running the tree's Makefiles or scripts):
- include/generated/autoconf.h from a bundled KVM-oriented x86_64 config;
- the asm-generic wrapper headers that the tree's own Kbuild lists name
  (`generic-y`, and `mandatory-y` headers the arch does not provide);
- the few computed headers (bounds, asm-offsets, syscall tables...) as
  neutral stubs with the values the C code needs to parse.
Then it gives the flags Kbuild would give a KVM object, pointing at them.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from kaudit import __version__

_KBUILD_ITEM = re.compile(r"^\s*(generic-y|mandatory-y|generated-y)\s*\+=\s*(\S+)", re.MULTILINE)

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
    "include/generated/uapi/linux/version.h": (
        "#define LINUX_VERSION_CODE 396288\n#define KERNEL_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + "
        "((c) > 255 ? 255 : (c)))\n#define LINUX_VERSION_MAJOR 6\n#define LINUX_VERSION_PATCHLEVEL 12\n"
        "#define LINUX_VERSION_SUBLEVEL 0\n"
    ),
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
    return [name for k, name in _KBUILD_ITEM.findall(path.read_text(errors="replace")) if k == kind]


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


def synthesize(root: Path, cache: Path) -> Path:
    """Write the generated headers for root into the cache; return their root."""
    config = _bundled_config()
    files = {"include/generated/autoconf.h": _config_header(config), **_COMPUTED, **_wrappers(root)}
    digest = hashlib.sha256(
        "\0".join([__version__, str(root.resolve()), *(f"{k}\0{v}" for k, v in sorted(files.items()))]).encode()
    ).hexdigest()[:16]
    gen = cache / "generated" / digest
    if not (gen / ".complete").exists():
        for rel, text in files.items():
            path = gen / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (gen / ".complete").write_text("")
    return gen


def _bundled_config() -> str:
    return (Path(__file__).parent / "data" / "kvm-x86_64.config").read_text()


def nobuild_args(root: Path, gen: Path) -> list[str]:
    """Kbuild's flags for an x86_64 KVM object, generated headers from gen."""
    args = ["-nostdinc", "--target=x86_64-linux-gnu", "-std=gnu11", "-D__KERNEL__", "-DMODULE",
            "-DKBUILD_MODNAME=\"kvm\"", "-DKBUILD_BASENAME=\"kvm\"", "-fno-PIE", "-mcmodel=kernel",
            "-Wno-unknown-attributes", "-Wno-gnu-variable-sized-type-not-at-end"]
    includes = [
        root / "arch/x86/include", root / "arch/x86/include/generated", gen / "arch/x86/include/generated",
        root / "include", gen / "include",
        root / "arch/x86/include/uapi", root / "arch/x86/include/generated/uapi",
        gen / "arch/x86/include/generated/uapi",
        root / "include/uapi", root / "include/generated/uapi", gen / "include/generated/uapi",
        root / "arch/x86/kvm",
    ]
    for inc in includes:
        if inc.is_dir():
            args += ["-I", str(inc)]
    for rel in ("include/linux/compiler-version.h", "include/linux/kconfig.h", "include/linux/compiler_types.h"):
        if (root / rel).is_file():
            args += ["-include", str(root / rel)]
    return args
