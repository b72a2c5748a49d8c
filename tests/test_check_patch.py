"""Pre-submit mode: a patch is judged by what it introduces and fixes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import jsonschema
import pytest
from conftest import FIX_PATCH, SAMPLE
from test_counter_rule import COUNTER_BUG
from test_report_cli import SCHEMA, run

from kaudit.errors import UsageError
from kaudit.patches import patch_paths


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_the_fix_patch_fixes_the_error_and_introduces_nothing() -> None:
    before = tree_digest(SAMPLE)
    code, out = run("check-patch", str(FIX_PATCH), "--format", "json", "--no-model")
    assert code == 0
    report = json.loads(out)
    jsonschema.validate(report, SCHEMA)
    (patch,) = report["patches"]
    assert patch["introduced"] == []
    assert [(f["key"], f["kind"]) for f in patch["fixed"]] == [("APICV_INHIBIT_REASON_IRQWIN", "premature-clear")]
    assert "arch/x86/kvm/svm/svm.c" in patch["touched"]
    assert tree_digest(SAMPLE) == before  # the tree itself is never written


def test_the_counter_patch_introduces_two_errors_and_exits_1() -> None:
    code, out = run("check-patch", str(COUNTER_BUG), "--terse", "--no-model")
    assert code == 1
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert len(errors) == 2 and all("vapics_lint1_unmasked" in line and "[KVM002]" in line for line in errors)
    assert "2 finding(s) introduced, 0 fixed" in out


@pytest.mark.parametrize(("patch", "message"), [
    ("--- a/../../etc/passwd\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "leaves the tree|invalid path"),
    ("diff --git a/x b/x\nnew file mode 120000\n", "symlinks"),
    ("diff --git a/x b/x\nnew file mode  0120000\n", "symlinks"),
    ("diff --git a/x b/x\nGIT binary patch\n", "binary"),
    ("--- a/x\0\n+++ b/x\n", "NUL"),
    ("hello\n", "not a"),
    ('diff --git "a/.git/config" "b/.git/config"\n--- "a/.git/config"\n+++ "b/.git/config"\n@@ -1 +1 @@\n-a\n+b\n',
     "version-control"),
])
def test_unsafe_or_bogus_patches_are_refused(patch: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=message):
        patch_paths(patch.encode(), tmp_path)


def test_quoted_and_renamed_paths_are_read_as_git_reads_them(tmp_path: Path) -> None:
    patch = ('diff --git "a/arch/x86/kvm/a b.c" "b/arch/x86/kvm/a b.c"\n--- "a/arch/x86/kvm/a b.c"\n'
             '+++ "b/arch/x86/kvm/a b.c"\n@@ -1 +1 @@\n-a\n+b\n'
             "diff --git a/old.c b/new.c\nsimilarity index 100%\nrename from old.c\nrename to new.c\n")
    assert patch_paths(patch.encode(), tmp_path) == ["arch/x86/kvm/a b.c", "new.c"]
    # -p1 strips the leading component of an absolute name too: it stays inside the tree
    absolute = b"--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n"
    assert patch_paths(absolute, tmp_path) == ["etc/passwd"]


def test_a_bare_repository_smuggled_into_the_tree_runs_nothing(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(SAMPLE, tree)
    marker = tmp_path / "PWNED"
    (tree / "HEAD").write_text("ref: refs/heads/master\n")
    (tree / "objects").mkdir()
    (tree / "refs").mkdir()
    (tree / "info").mkdir()
    (tree / "info/attributes").write_text("* filter=evil\n")
    (tree / "config").write_text(f'[filter "evil"]\n\tsmudge = "touch {marker} && cat"\n\tclean = cat\n')
    code, out = run("check-patch", str(FIX_PATCH), str(tree), "--no-model")
    assert not marker.exists()
    assert code == 0, out


def test_a_patch_that_breaks_parsing_fails(tmp_path: Path) -> None:
    svm = (SAMPLE / "arch/x86/kvm/svm/svm.c").read_text().splitlines(keepends=True)
    patch = tmp_path / "break.patch"
    patch.write_text("--- a/arch/x86/kvm/svm/svm.c\n+++ b/arch/x86/kvm/svm/svm.c\n"
                     f"@@ -1,2 +1,3 @@\n {svm[0]}+#error broken by the patch\n {svm[1]}")
    code, out = run("check-patch", str(patch), "--no-model", "--terse")
    assert code == 1 and "fail to parse" in out


def test_a_patch_that_does_not_apply_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.patch"
    bad.write_text("--- a/arch/x86/kvm/x86.c\n+++ b/arch/x86/kvm/x86.c\n@@ -1,1 +1,1 @@\n-no such line\n+x\n")
    code, out = run("check-patch", str(bad))
    assert code == 2 and "does not apply" in out


def test_a_second_identical_clear_is_introduced(tmp_path: Path) -> None:
    svm = (SAMPLE / "arch/x86/kvm/svm/svm.c").read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(svm) if "kvm_clear_apicv_inhibit(vcpu->kvm" in line)
    patch = tmp_path / "twice.patch"
    patch.write_text(
        "--- a/arch/x86/kvm/svm/svm.c\n+++ b/arch/x86/kvm/svm/svm.c\n"
        f"@@ -{at + 1},2 +{at + 1},3 @@\n {svm[at]}+{svm[at]} {svm[at + 1]}"
    )
    code, out = run("check-patch", str(patch), "--no-model", "--terse")
    assert code == 1 and "1 finding(s) introduced, 0 fixed" in out


def test_symlinked_directories_and_vcs_metadata_are_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(SAMPLE, tree)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.c").write_text("precious\n")
    (tree / "arch/x86/kvm/linked").symlink_to(outside)
    patch = tmp_path / "p.patch"
    patch.write_text("--- a/arch/x86/kvm/linked/f.c\n+++ b/arch/x86/kvm/linked/f.c\n@@ -1 +1 @@\n-precious\n+x\n")
    code, out = run("check-patch", str(patch), str(tree))
    assert code == 2 and "symlink" in out and (outside / "f.c").read_text() == "precious\n"
    patch.write_text("--- a/.git/config\n+++ b/.git/config\n@@ -1 +1 @@\n-a\n+b\n")
    code, out = run("check-patch", str(patch), str(tree))
    assert code == 2 and "version-control" in out


def test_a_git_repository_around_the_work_copy_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.setenv("TMPDIR", str(repo))
    tempfile.tempdir = None
    try:
        code, out = run("check-patch", str(COUNTER_BUG), "--no-model", "--terse")
    finally:
        tempfile.tempdir = None
    assert code == 1 and "2 finding(s) introduced" in out
