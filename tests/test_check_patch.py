"""Pre-submit mode: a patch is judged by what it introduces and fixes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import pytest
from conftest import FIX_PATCH, SAMPLE
from test_counter_rule import COUNTER_BUG
from test_report_cli import SCHEMA, run

from kaudit.errors import UsageError
from kaudit.patchcheck import patch_paths


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
    patch = report["patch"]
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
    ("--- a/../../etc/passwd\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "leaves the tree"),
    ("--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "leaves the tree"),
    ("diff --git a/x b/x\nnew file mode 120000\n", "symlinks"),
    ("diff --git a/x b/x\nGIT binary patch\n", "binary"),
    ("hello\n", "not a patch"),
])
def test_unsafe_or_bogus_patches_are_refused(patch: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        patch_paths(patch)


def test_a_patch_that_does_not_apply_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.patch"
    bad.write_text("--- a/arch/x86/kvm/x86.c\n+++ b/arch/x86/kvm/x86.c\n@@ -1,1 +1,1 @@\n-no such line\n+x\n")
    code, out = run("check-patch", str(bad))
    assert code == 2 and "does not apply" in out
