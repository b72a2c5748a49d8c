"""How kaudit gets compiler flags: compile databases (untrusted) and no-build synthesis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE, copy_sample
from test_report_cli import invoke, run

from kaudit.audit import audit_tree
from kaudit.compdb import load, translate
from kaudit.errors import UsageError
from kaudit.kbuild import configured_sources, kernel_config, kernel_version, nobuild_args, synthesize
from kaudit.resources import default_rules_dir
from kaudit.rules import load_rules


def test_translate_keeps_parse_flags_and_drops_gcc_only_and_unsafe_ones(tmp_path: Path) -> None:
    root = tmp_path / "linux"
    (root / "include").mkdir(parents=True)
    argv = ["gcc", "-Wp,-MMD,arch/x86/kvm/.x.o.d", "-nostdinc", "-I./include", "-I", "/usr/include",
            "-isystem", "/usr/lib/gcc/x86_64-linux-gnu/12/include", "-include", "./include/linux/kconfig.h",
            "-D__KERNEL__", "-DKBUILD_MODNAME='\"kvm\"'", "-std=gnu11", "-O2", "-mno-red-zone",
            "-mpreferred-stack-boundary=3", "-mindirect-branch=thunk-extern", "-mindirect-branch-register",
            "-fno-allow-store-data-races", "-fconserve-stack", "-falign-jumps=1", "-falign-loops=1", "-Werror",
            "-Wimplicit-fallthrough=5", "-fplugin=./scripts/gcc-plugins/evil.so", "-Xclang", "-load", "-Xclang",
            "evil.so", "@/tmp/response", "--config=/tmp/evil.cfg", "-imacros", "/etc/evil.h", "-iprefix", "/x/",
            "-iwithprefix", "y", "-fmodules", "-fmodules-cache-path=./cache", "-Xpreprocessor", "-foo",
            "-c", "-o", "arch/x86/kvm/x86.o", "arch/x86/kvm/x86.c"]
    flags = translate(argv, root, root.resolve())
    assert flags == ["-nostdinc", "-I", str((root / "include").resolve()),
                     "-include", str((root / "include/linux/kconfig.h").resolve()),
                     "-D__KERNEL__", "-DKBUILD_MODNAME='\"kvm\"'", "-std=gnu11", "-O2", "-mno-red-zone"]


def test_translate_keeps_in_tree_imacros_and_split_defines(tmp_path: Path) -> None:
    root = tmp_path / "linux"
    (root / "include").mkdir(parents=True)
    flags = translate(["cc", "-imacros", "include/m.h", "-D", "X=1", "-U", "Y"], root, root.resolve())
    assert flags == ["-imacros", str((root / "include/m.h").resolve()), "-D", "X=1", "-U", "Y"]


def test_load_skips_entries_outside_the_tree_and_rejects_garbage(tmp_path: Path) -> None:
    root = tmp_path / "linux"
    source = root / "arch/x86/kvm/x86.c"
    source.parent.mkdir(parents=True)
    source.write_text("int x;\n")
    outside = tmp_path / "elsewhere.c"
    outside.write_text("int y;\n")
    db = tmp_path / "compile_commands.json"
    db.write_text(json.dumps([
        {"directory": str(root), "file": "arch/x86/kvm/x86.c", "command": "gcc -DX=1 -c arch/x86/kvm/x86.c"},
        {"directory": str(root), "file": str(outside), "command": "gcc -DEVIL -c elsewhere.c"},
    ]))
    assert load(db, root, [source, outside]) == {source.resolve(): ["-DX=1"]}
    db.write_text("{not json")
    with pytest.raises(UsageError, match="cannot read compile database"):
        load(db, root, [source])
    db.write_text("[1]")
    with pytest.raises(UsageError, match="list of objects"):
        load(db, root, [source])


def _tiny_kernel(root: Path) -> None:
    files = {
        "Makefile": "VERSION = 6\nPATCHLEVEL = 12\n",
        "arch/x86/include/asm/Kbuild": "generic-y += mcs_spinlock.h\ngenerated-y += syscalls_64.h\n",
        "include/asm-generic/Kbuild": "mandatory-y += atomic.h\nmandatory-y += barrier.h\n",
        "arch/x86/include/asm/barrier.h": "",
        "arch/x86/entry/syscalls/syscall_64.tbl": "0\tcommon\tread\tsys_read\n1\t64\twrite\tsys_write\n",
        "arch/x86/entry/syscalls/syscall_32.tbl": "0\ti386\trestart_syscall\tsys_restart_syscall\n",
        "arch/x86/kvm/Makefile": (
            "include $(srctree)/virt/kvm/Makefile.kvm\nkvm-y += x86.o \\\n\tlapic.o\n"
            "kvm-$(CONFIG_KVM_XEN) += xen.o\nkvm-$(CONFIG_NOT_SET_ANYWHERE) += nope.o\n"
            "ifdef CONFIG_NOT_SET_ANYWHERE\nkvm-y += hidden.o\nendif\n"
        ),
        "virt/kvm/Makefile.kvm": "KVM ?= ../../../virt/kvm\nkvm-y := $(KVM)/kvm_main.o\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for rel in ("x86.c", "lapic.c", "xen.c", "nope.c", "hidden.c"):
        (root / "arch/x86/kvm" / rel).write_text("")
    (root / "virt/kvm/kvm_main.c").write_text("")


def test_no_build_synthesis_writes_only_into_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "linux"
    _tiny_kernel(root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    gen = synthesize(root, tmp_path / "cache")
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert gen.is_relative_to(tmp_path / "cache")
    autoconf = (gen / "include/generated/autoconf.h").read_text()
    assert "#define CONFIG_KVM_AMD 1" in autoconf and "#define CONFIG_X86_64 1" in autoconf
    wrappers = gen / "arch/x86/include/generated/asm"
    assert (wrappers / "mcs_spinlock.h").read_text() == "#include <asm-generic/mcs_spinlock.h>\n"
    assert (wrappers / "atomic.h").exists() and not (wrappers / "barrier.h").exists()  # arch has barrier.h
    unistd = (gen / "arch/x86/include/generated/uapi/asm/unistd_64.h").read_text()
    assert "#define __NR_read 0" in unistd and "#define __NR_write 1" in unistd and "__NR_syscalls 2" in unistd
    assert kernel_version(root) == (6, 12)


def test_configured_sources_follow_the_makefiles_and_the_bundled_config(tmp_path: Path) -> None:
    root = tmp_path / "linux"
    _tiny_kernel(root)
    found = [p.relative_to(root.resolve()).as_posix() for p in configured_sources(root.resolve()) or []]
    assert found == ["arch/x86/kvm/lapic.c", "arch/x86/kvm/x86.c", "arch/x86/kvm/xen.c", "virt/kvm/kvm_main.c"]


def test_kbuild_names_cannot_write_outside_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "linux"
    _tiny_kernel(root)
    victim = tmp_path / "victim.h"
    victim.write_text("precious\n")
    kbuild = root / "arch/x86/include/asm/Kbuild"
    kbuild.write_text(kbuild.read_text() + "generic-y += ../../../../../victim.h\ngenerated-y += /tmp/evil.h\n")
    gen = synthesize(root, tmp_path / "cache")
    assert victim.read_text() == "precious\n"
    written = [p for p in gen.rglob("*") if p.is_file()]
    assert written and all(p.resolve().is_relative_to(gen.resolve()) for p in written)
    assert not Path("/tmp/evil.h").exists()


def test_target_flags_that_could_name_a_config_file_are_dropped(tmp_path: Path) -> None:
    root = tmp_path / "linux"
    root.mkdir()
    flags = translate(["cc", "--target=x86_64-linux-gnu", "--target=x86_64-pc-linux-gnu/../evil"], root, root)
    assert flags == ["--target=x86_64-linux-gnu"]


def test_a_header_linked_out_of_a_tree_cannot_lend_its_facts(tmp_path: Path) -> None:
    """Two trees, same names: one's svm.h is a symlink to a header that hides
    the clear. With a shared cache, the real tree must still show its error."""
    evil = tmp_path / "evil" / "svm.h"
    evil.parent.mkdir()
    real = SAMPLE / "arch/x86/kvm/svm/svm.h"
    evil.write_text(real.read_text() + "\n#define kvm_clear_apicv_inhibit(k, r) do { } while (0)\n")
    hostile = tmp_path / "hostile"
    shutil.copytree(SAMPLE, hostile)
    (hostile / "arch/x86/kvm/svm/svm.h").unlink()
    (hostile / "arch/x86/kvm/svm/svm.h").symlink_to(evil)
    cache = tmp_path / "cache"
    rules = load_rules(default_rules_dir())
    audit_tree(hostile, rules, 1, cache)
    errors = [f for a in audit_tree(SAMPLE, rules, 1, cache).analyses for f in a.findings if f.severity == "error"]
    assert len(errors) == 1


def test_no_build_mode_uses_the_trees_own_config_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "linux"
    _tiny_kernel(root)
    assert kernel_config(root).origin == "bundled kvm-x86_64-6.12.config"
    (root / ".config").write_text("CONFIG_X86_64=y\nCONFIG_KVM=m\n# CONFIG_KVM_XEN is not set\nCONFIG_BAD=$(shell x)\n")
    config = kernel_config(root)
    assert config.origin == "the tree's .config" and config.values() == {"CONFIG_X86_64": "y", "CONFIG_KVM": "m"}
    found = [p.relative_to(root.resolve()).as_posix() for p in configured_sources(root.resolve()) or []]
    assert found == ["arch/x86/kvm/lapic.c", "arch/x86/kvm/x86.c", "virt/kvm/kvm_main.c"]  # no xen.c
    autoconf = (synthesize(root, tmp_path / "cache") / "include/generated/autoconf.h").read_text()
    assert "#define CONFIG_KVM_MODULE 1" in autoconf and "CONFIG_KVM_AMD" not in autoconf and "shell" not in autoconf
    code, out = run("audit", str(root), "--format", "json", "--no-model")
    report = json.loads(out)
    assert report["tree"]["config"] == "the tree's .config" and report["tree"]["files_analyzed"] == 3
    assert code == 0
    assert json.loads(run("audit", "--format", "json", "--no-model")[1])["tree"]["config"] == \
        "none (the tree's own headers)"


def test_objtree_keeps_the_generated_headers_of_an_o_build(tmp_path: Path) -> None:
    tree = copy_sample(tmp_path / "tree")
    objtree = tmp_path / "build"
    (objtree / "include/generated").mkdir(parents=True)
    (objtree / "include/generated/kaudit_probe.h").write_text("#define KAUDIT_PROBE 1\n")
    x86 = tree / "arch/x86/kvm/x86.c"
    x86.write_text("#include <generated/kaudit_probe.h>\n" + x86.read_text())
    flags = nobuild_args(tree.resolve(), None)
    db = tmp_path / "compile_commands.json"
    db.write_text(json.dumps([{"directory": str(objtree), "file": str(path.resolve()),
                               "arguments": ["gcc", "-I./include", *flags, "-c", str(path)]}
                              for path in sorted((tree / "arch/x86/kvm").rglob("*.c"))]))
    result = invoke("audit", str(tree), "--compdb", str(db), "--format", "json", "--no-model")
    assert result.exit_code == 2  # the object tree's include path is dropped: an incomplete audit
    assert json.loads(result.stdout)["tree"]["parse_errors"] == 1
    code, out = run("audit", str(tree), "--compdb", str(db), "--objtree", str(objtree), "--format", "json",
                    "--no-model")
    report = json.loads(out)
    assert code == 1 and report["tree"]["parse_errors"] == 0 and report["tree"]["config"] == "the compile database"
    assert run("audit", str(tree), "--objtree", str(objtree))[0] == 2  # only with --compdb
