"""One case per row of docs/inputs.md: each bad input gets its documented
answer, with no traceback, and the tree's bytes stay as they were."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FIX_PATCH, SAMPLE, copy_sample, edit
from test_report_cli import invoke

from kaudit.resources import default_rules_dir

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    """A bad input: what to run (given a scratch dir and a copy of the sample), and what it must get."""

    row: str
    argv: Callable[[Path, Path], list[str]]
    code: int
    says: str  # in the one-line error (exit 2 before any report) or in the report's diagnostics
    reported: bool = False  # the audit runs and reports; `says` is in a diagnostic


def _rules(tmp: Path, name: str = "extra.yaml", text: str | None = None, fifo: bool = False,
           link: str | None = None) -> Path:
    rules = tmp / "rules"
    shutil.copytree(default_rules_dir(), rules)
    target = rules / name
    if fifo:
        os.mkfifo(target)
    elif link is not None:
        target.symlink_to(link)
    elif text is not None:
        target.write_text(text)
    return rules


def _rule_edit(tmp: Path, old: str, new: str) -> Path:
    rules = _rules(tmp)
    edit(rules / "apicv-inhibit-balance.yaml", old, new)
    return rules


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _link(path: Path, to: Path | str) -> Path:
    path.symlink_to(to)
    return path


def _moved_out(tmp: Path, tree: Path, rel: str) -> None:
    shutil.move(tree / rel, tmp / "elsewhere")
    (tree / rel).symlink_to(tmp / "elsewhere")


def _audit(*extra: str) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, tree: ["audit", str(tree), "--no-model", *extra]


def _with(fn: Callable[[Path, Path], object], *extra: str) -> Callable[[Path, Path], list[str]]:
    """An audit of the tree after fn(tmp, tree) set it up."""
    def argv(tmp: Path, tree: Path) -> list[str]:
        fn(tmp, tree)
        return ["audit", str(tree), "--no-model", *extra]
    return argv


def _opt(fn: Callable[[Path, Path], object], option: str) -> Callable[[Path, Path], list[str]]:
    """An audit with `option VALUE`, VALUE = fn(tmp, tree)."""
    return lambda tmp, tree: ["audit", str(tree), "--no-model", option, str(fn(tmp, tree))]


def _git_tree(tmp: Path, tree: Path) -> Path:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run(["git", *args], cwd=tree, check=True, env=env)
    return tree


CASES = [
    Case("tree-missing", lambda tmp, tree: ["audit", str(tmp / "nothing")], 2, "no such directory"),
    Case("tree-without-c-files", lambda tmp, tree: ["audit", str(tmp)], 2, "no C files under"),
    Case("tree-kvm-symlinked-out", _with(lambda tmp, tree: _moved_out(tmp, tree, "arch/x86/kvm"), "--strict"), 2,
         "kaudit: not read: a symlink leaving the tree", reported=True),
    Case("tree-include-symlinked-out", _with(lambda tmp, tree: _moved_out(tmp, tree, "include")), 2,
         "include/linux/kvm_host.h is reached through a symlink leaving the tree", reported=True),
    Case("tree-fifo-source", _with(lambda tmp, tree: _fifo(tree / "arch/x86/kvm/pipe.c")), 2,
         "kaudit: not read: a FIFO", reported=True),
    Case("tree-non-utf8-name", _with(lambda tmp, tree: shutil.copy(tree / "arch/x86/kvm/hyperv.c",
                                                                    os.fsdecode(bytes(tree / "arch/x86/kvm") +
                                                                                b"/bad\xff.c"))), 2,
         "kaudit: not read: named in bytes that are not UTF-8", reported=True),
    Case("tree-only-file-broken", _with(lambda tmp, tree: [
        *(p.unlink() for p in tree.glob("arch/x86/kvm/**/*.c")), _write(tree / "arch/x86/kvm/x86.c", "int f( {\n")]),
        2, "expected", reported=True),
    Case("rule-source-glob-escapes", lambda tmp, tree: [
        "audit", str(tree), "--rules", str(_rule_edit(tmp, "sources: [arch/x86/kvm/**/*.c", "sources: [../*.c"))],
        2, "apicv-inhibit-balance.yaml:"),
    Case("compdb-fifo", _opt(lambda tmp, tree: _fifo(tmp / "cdb.json"), "--compdb"), 2, "is a FIFO"),
    Case("compdb-dev-zero", _opt(lambda tmp, tree: "/dev/zero", "--compdb"), 2, "is a character device"),
    Case("compdb-not-json", _opt(lambda tmp, tree: _write(tmp / "cdb.json", "[" * 100_000), "--compdb"), 2,
         "cannot read compile database"),
    Case("compdb-wrong-shape", _opt(lambda tmp, tree: _write(tmp / "cdb.json", '{"a": 1}'), "--compdb"), 2,
         "a JSON list of objects"),
    Case("rules-dir-missing", _opt(lambda tmp, tree: tmp / "none", "--rules"), 2, "no such rules directory"),
    Case("rule-fifo", _opt(lambda tmp, tree: _rules(tmp, fifo=True), "--rules"), 2, "is a FIFO"),
    Case("rule-dev-zero", _opt(lambda tmp, tree: _rules(tmp, link="/dev/zero"), "--rules"), 2,
         "is a character device"),
    Case("rule-wrong-type", _opt(lambda tmp, tree: _rule_edit(tmp, "per_vcpu_types: [kvm_vcpu]",
                                                               "per_vcpu_types: [5]"), "--rules"), 2,
         "per_vcpu_types[0]: 5 is not of type 'string'"),
    Case("rule-unknown-key", _opt(lambda tmp, tree: _rule_edit(tmp, "vm_types:", "vm_typez:"), "--rules"), 2,
         "unknown key 'vm_typez'"),
    Case("rule-alias-bomb", _opt(lambda tmp, tree: _rules(tmp, text="a: &a [1, 2]\n" + "".join(
        f"b{i}: [*a, *a]\n" for i in range(9))), "--rules"), 2, "more than 8 YAML aliases"),
    Case("rule-deep-yaml", _opt(lambda tmp, tree: _rules(tmp, text="a: " + "[" * 5000 + "]" * 5000), "--rules"), 2,
         "nested deeper than 32 levels"),
    Case("rule-duplicate-id", _opt(lambda tmp, tree: _rules(tmp, text=(default_rules_dir()
                                                                       / "apicv-inhibit-balance.yaml").read_text()),
                                   "--rules"), 2, "is also used by"),
    Case("rule-not-utf8", _opt(lambda tmp, tree: _not_utf8_rules(tmp), "--rules"), 2, "not UTF-8 text"),
    Case("baseline-missing", _opt(lambda tmp, tree: tmp / "none.json", "--baseline"), 2, "cannot read baseline"),
    Case("baseline-dev-zero", _opt(lambda tmp, tree: "/dev/zero", "--baseline"), 2, "is a character device"),
    Case("baseline-wrong-shape", _opt(lambda tmp, tree: _write(tmp / "b.json", "[]"), "--baseline"), 2,
         "not a kaudit baseline"),
    Case("patch-dev-zero", lambda tmp, tree: ["check-patch", "/dev/zero", str(tree)], 2, "is a character device"),
    Case("patch-not-a-patch", lambda tmp, tree: ["check-patch", str(_write(tmp / "p", "hello\n")), str(tree)], 2,
         "no patch"),
    Case("patch-stdin-twice", lambda tmp, tree: ["check-patch", "-", "-", str(tree)], 2, "given twice"),
    Case("patch-leaves-tree", lambda tmp, tree: ["check-patch", str(_write(tmp / "p", (
        "diff --git a/../x b/../x\n--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n"))), str(tree)], 2, "leaves the tree"),
    Case("git-bad-revision", lambda tmp, tree: ["check-patch", "--git", "nosuchrev", str(_git_tree(tmp, tree))], 2,
         "--git nosuchrev: not a commit"),
    Case("git-option-as-revision", lambda tmp, tree: ["check-patch", "--git", f"--output={tmp / 'x'}",
                                                      str(_git_tree(tmp, tree))], 2, "not a commit"),
    Case("cache-inside-tree", lambda tmp, tree: ["audit", str(tree), "--cache-dir", str(tree / "c")], 2,
         "inside the analysed tree"),
    Case("cache-dir-is-a-file", lambda tmp, tree: ["audit", str(tree), "--cache-dir", str(_write(tmp / "f", "x"))],
         2, "cannot use the cache"),
    Case("output-dev-null", _opt(lambda tmp, tree: "/dev/null", "-o"), 2, "is a character device"),
    Case("output-dev-full", _opt(lambda tmp, tree: "/dev/full", "-o"), 2, "is a character device"),
    Case("output-fifo", _opt(lambda tmp, tree: _fifo(tmp / "out"), "-o"), 2, "is a FIFO"),
    Case("output-symlink", _opt(lambda tmp, tree: _link(tmp / "out", _write(tmp / "target", "keep")), "-o"), 2,
         "is a symlink"),
    Case("output-directory", _opt(lambda tmp, tree: tmp, "-o"), 2, "is a directory"),
    Case("output-inside-tree", _opt(lambda tmp, tree: tree / "arch/x86/kvm/x86.c", "-o"), 2,
         "inside the analysed tree"),
    Case("output-no-directory", _opt(lambda tmp, tree: tmp / "none" / "r.json", "-o"), 2, "no directory"),
    Case("output-write-baseline-device", _opt(lambda tmp, tree: "/dev/null", "--write-baseline"), 2,
         "is a character device"),
    Case("option-jobs-zero", _audit("--jobs", "0"), 2, "--jobs"),
    Case("option-sim-steps-huge", _audit("--sim-steps", str(10**12)), 2, "--sim-steps"),
    Case("option-vcpus-out-of-range", _audit("--vcpus", "9"), 2, "--vcpus"),
    Case("option-bad-choice", _audit("--format", "xml"), 2, "--format"),
    Case("option-unknown", _audit("--bogus"), 2, "No such option"),
    Case("option-objtree-without-compdb", lambda tmp, tree: ["audit", str(tree), "--objtree", str(tmp)], 2,
         "needs --compdb"),
    Case("option-unknown-key", lambda tmp, tree: ["model", str(tree), "--key", "NOPE"], 2, "no protocol to model"),
    Case("option-unknown-rule", lambda tmp, tree: ["rule", "KVM999"], 2, "no rule 'KVM999'"),
]


def _not_utf8_rules(tmp: Path) -> Path:
    rules = _rules(tmp)
    (rules / "latin1.yaml").write_bytes(b"id: caf\xe9\n")
    return rules


def _digest(tree: Path) -> str:
    """The tree's names, kinds and bytes."""
    h = hashlib.sha256()
    for path in sorted(tree.rglob("*")):
        info = path.lstat()
        h.update(os.fsencode(path.relative_to(tree)) + bytes([stat.S_IFMT(info.st_mode) >> 12]))
        if stat.S_ISREG(info.st_mode):
            h.update(path.read_bytes())
    return h.hexdigest()


def _devices() -> list[tuple[str, int]]:
    return [(name, os.lstat(name).st_rdev) for name in ("/dev/null", "/dev/full", "/dev/zero")]


@pytest.mark.parametrize("case", CASES, ids=[c.row for c in CASES])
def test_bad_input_gets_its_documented_answer(case: Case, tmp_path: Path) -> None:
    tree = copy_sample(tmp_path / "tree")
    argv = case.argv(tmp_path, tree)
    before, devices = _digest(tree), _devices()
    outside = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and not p.is_symlink()}
    start = time.monotonic()
    result = invoke(*argv, "--format", "json") if case.reported else invoke(*argv)
    assert time.monotonic() - start < 60
    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output
    errors = result.stderr.splitlines()
    if case.reported:
        report = json.loads(result.stdout)
        assert any(case.says in d["message"] for d in report["tree"]["diagnostics"]), report["tree"]["diagnostics"]
        assert errors[-1].startswith("kaudit: error: ") and "the audit is incomplete" in errors[-1]
    else:
        assert result.stdout == "" and len(errors) == 1, result.output
        assert errors[0].startswith("kaudit: error: ") and case.says in errors[0], errors
    assert _devices() == devices and all(stat.S_ISCHR(os.lstat(d).st_mode) for d, _ in devices)
    assert _digest(tree) == before
    assert {p: p.read_bytes() for p in outside} == outside


def test_unreadable_directory_is_a_parse_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # as root every directory is readable: refuse one the way the kernel would for another user
    tree = copy_sample(tmp_path / "tree")
    real = os.scandir

    def scandir(path: str) -> object:
        if str(path).endswith("arch/x86/kvm/svm"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr("kaudit.treewalk.os.scandir", scandir)
    result = invoke("audit", str(tree), "--no-model", "--format", "json")
    assert result.exit_code == 2
    (diagnostic,) = json.loads(result.stdout)["tree"]["diagnostics"]
    assert diagnostic["tu"] == "arch/x86/kvm/svm"
    assert diagnostic["message"] == "kaudit: not read: directory cannot be read (Permission denied)"


def test_a_file_that_vanishes_mid_run_is_a_parse_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kaudit import tree as tree_module

    tree = copy_sample(tmp_path / "tree")
    found = tree_module.find_sources

    def then_delete(root: Path, globs: tuple[str, ...]) -> object:
        result = found(root, globs)
        (tree / "arch/x86/kvm/hyperv.c").unlink()  # after the scan, before its parse
        return result

    monkeypatch.setattr(tree_module, "find_sources", then_delete)
    result = invoke("audit", str(tree), "--no-model", "--format", "json")
    assert result.exit_code == 2
    (diagnostic,) = json.loads(result.stdout)["tree"]["diagnostics"]
    assert diagnostic["tu"] == "arch/x86/kvm/hyperv.c" and diagnostic["severity"] == "fatal"


def test_output_stdout(tmp_path: Path) -> None:
    result = invoke("audit", str(copy_sample(tmp_path / "t")), "--no-model", "--format", "json", "-o", "-")
    assert result.exit_code == 1 and json.loads(result.stdout)["summary"]["errors"] == 1


def test_a_report_replaces_a_regular_file_through_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    linked = tmp_path / "hardlink"
    os.link(target, linked)  # the old inode is never written: the new report is a new file
    result = invoke("audit", str(SAMPLE), "--no-model", "--format", "json", "-o", str(target))
    assert result.exit_code == 1 and json.loads(target.read_text())["summary"]["errors"] == 1
    assert linked.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["hardlink", "report.json"]


def test_a_patch_from_a_pipe_is_read(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    writer = subprocess.Popen(["sh", "-c", f"cat '{FIX_PATCH}' > '{pipe}'"])
    result = invoke("check-patch", str(pipe), str(copy_sample(tmp_path / "t")), "--no-model", "--format", "json")
    writer.wait()
    assert result.exit_code == 0 and json.loads(result.stdout)["patches"][0]["fixed"]


def test_interrupt_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """Ctrl-C while kaudit's modules load, and later during the parse or the model. The first signal is
    sent once `-X importtime` says click has loaded (kaudit.cli is being imported), not after a fixed delay:
    before that the interpreter itself is starting, which no code of kaudit's can handle. The simulation's
    million steps (about 10 s) keep the run busy past the later signal, however loaded the machine."""
    script = Path(sys.executable).parent / "kaudit"
    for delay in (0.0, 1.0):
        command = [sys.executable, "-X", "importtime", str(script), "audit", str(SAMPLE), "--no-cache",
                   "--sim-steps", "1000000"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.split(b"|")[-1].strip() == b"click":
                break
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        said = [line for line in err.splitlines() if not line.startswith(b"import time:")]
        assert (proc.returncode, out, said) == (130, b"", [b"kaudit: interrupted"])


def test_an_interrupt_a_finalizer_swallows_still_ends_the_run() -> None:
    script = """
import os, signal, time
import kaudit.entry as entry
entry.GRACE = 0.5
signal.signal(signal.SIGINT, entry._on_interrupt)
class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs here, inside the finalizer: Python ignores what it raises
Finalized()
time.sleep(5)
print("went on")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert (done.returncode, done.stdout) == (130, b"")
    assert b"Exception ignored" in done.stderr and done.stderr.endswith(b"kaudit: interrupted\n")
