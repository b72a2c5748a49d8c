"""check-patch on a series: patch files, an mbox, stdin, git ranges and the work tree, per-patch verdicts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from conftest import FIX_PATCH, apply_patch, copy_sample
from test_report_cli import SCHEMA
from test_sarif import SARIF_SCHEMA

from kaudit.cli import main

IRQWIN = ("premature-clear", "APICV_INHIBIT_REASON_IRQWIN")
# introduce the premature clear (undo the fix), a neutral comment, fix it again
EXPECTED = [([IRQWIN], []), ([], []), ([], [IRQWIN])]
_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=repo,
                          capture_output=True, text=True, env={**os.environ, **_ENV}, check=True)
    return proc.stdout


def digest(root: Path) -> str:
    """Every file and link under root, .git included (index, HEAD, refs), with its mode."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(root)}\0{st.st_mode}\0".encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """(base tree, git repository at the series' tip, patch files) for the three-patch series."""
    top = tmp_path_factory.mktemp("series")
    base = copy_sample(top / "base")
    apply_patch(base, FIX_PATCH)
    repo = top / "repo"
    shutil.copytree(base, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base: the fixed sample")
    subprocess.run(["git", "apply", "-R", str(FIX_PATCH)], cwd=repo, check=True)
    git(repo, "commit", "-q", "-a", "-m", "KVM: SVM: drop the IRQ window request count")
    x86 = repo / "arch/x86/kvm/x86.c"
    x86.write_text("/* a neutral comment */\n" + x86.read_text())
    git(repo, "commit", "-q", "-a", "-m", "KVM: x86: a comment")
    apply_patch(repo, FIX_PATCH)
    git(repo, "commit", "-q", "-a", "-m", "KVM: SVM: count IRQ window requests again")
    out = top / "patches"
    git(repo, "format-patch", "-q", "-o", str(out), "HEAD~3")
    return base, repo, sorted(out.glob("*.patch"))


def check(*args: str, stdin: bytes | None = None) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["check-patch", *args, "--no-cache", "--no-model", "--format", "json"],
                                input=stdin)
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.output)
    jsonschema.validate(report, SCHEMA)
    return result.exit_code, report


def verdicts(report: dict) -> list[tuple[list, list]]:
    def kinds(findings: list[dict]) -> list:
        return sorted((f["kind"], f["key"]) for f in findings if f["severity"] == "error")
    return [(kinds(p["introduced"]), kinds(p["fixed"])) for p in report["patches"]]


def test_patch_files_an_mbox_and_stdin_give_per_patch_verdicts(series: tuple[Path, Path, list[Path]],
                                                               tmp_path: Path) -> None:
    base, _, patches = series
    mbox = tmp_path / "series.mbox"
    mbox.write_bytes(b"".join(p.read_bytes() for p in patches))
    before = digest(base)
    for args, stdin in (([*map(str, patches)], None), ([str(mbox)], None), (["-"], mbox.read_bytes())):
        code, report = check(*args, str(base), stdin=stdin)
        assert code == 1 and verdicts(report) == EXPECTED  # the first patch introduces an error
        assert [p["subject"] for p in report["patches"]] == [
            "KVM: SVM: drop the IRQ window request count", "KVM: x86: a comment",
            "KVM: SVM: count IRQ window requests again"]
        assert not any(p["already_applied"] for p in report["patches"])
    assert digest(base) == before


def test_a_git_range_gives_the_same_verdicts_and_leaves_the_repository_alone(
        series: tuple[Path, Path, list[Path]]) -> None:
    _, repo, _ = series
    before = digest(repo)
    code, report = check("--git", "HEAD~3..HEAD", str(repo))
    assert code == 1 and verdicts(report) == EXPECTED
    assert [len(p["name"]) for p in report["patches"]] == [12] * 3  # commit ids
    assert digest(repo) == before


def test_a_committed_series_checked_on_its_own_tip_gives_the_same_verdicts(
        series: tuple[Path, Path, list[Path]]) -> None:
    _, repo, patches = series
    before = digest(repo)
    code, report = check(*map(str, patches), str(repo))
    assert code == 1 and verdicts(report) == EXPECTED
    assert all(p["already_applied"] for p in report["patches"])
    result = CliRunner().invoke(main, ["check-patch", str(patches[0]), str(patches[1]), str(patches[2]), str(repo),
                                       "--no-cache", "--no-model", "--terse"])
    assert "(already in the tree: checked from its pre-image)" in result.output.splitlines()[0]
    assert digest(repo) == before


def test_the_work_tree_against_a_revision(series: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    _, origin, _ = series
    repo = tmp_path / "clone"
    shutil.copytree(origin, repo, symlinks=True)
    assert check("--git", "HEAD", str(repo))[1]["patches"] == []  # nothing changed
    svm = repo / "arch/x86/kvm/svm/svm.c"
    subprocess.run(["git", "apply", "-R", str(FIX_PATCH)], cwd=repo, check=True)  # unstaged
    (repo / "arch/x86/kvm/new.c").write_text("int new_helper(void) { return 0; }\n")  # untracked: not a change
    git(repo, "add", "arch/x86/kvm/x86.c")  # staged, the rest unstaged
    before = digest(repo)
    code, report = check("--git", "HEAD", str(repo))
    assert code == 1 and verdicts(report) == [([IRQWIN], [])]
    (patch,) = report["patches"]
    assert "arch/x86/kvm/svm/svm.c" in patch["touched"] and "arch/x86/kvm/new.c" not in patch["touched"]
    assert patch["introduced"][0]["location"]["file"] == "arch/x86/kvm/svm/svm.c"
    assert digest(repo) == before and svm.is_file()


def test_text_output_names_the_side_of_each_path(series: tuple[Path, Path, list[Path]]) -> None:
    base, _, patches = series
    result = CliRunner().invoke(main, ["check-patch", *map(str, patches), str(base), "--no-cache", "--no-model",
                                       "--terse"])
    lines = result.output.splitlines()
    assert result.exit_code == 1
    (error,) = [line for line in lines if ": error: " in line]
    assert error.startswith("b/arch/x86/kvm/svm/svm.c:")  # the line in the file after the first patch
    (fixed,) = [line for line in lines if "fixed by the patch" in line]
    assert fixed.startswith("a/arch/x86/kvm/svm/svm.c:")  # the line in the file before the third patch
    assert lines[-1] == "kaudit: 3 patches: 1 finding(s) introduced, 1 fixed"


def test_a_series_as_sarif_has_new_and_absent_results(series: tuple[Path, Path, list[Path]]) -> None:
    base, _, patches = series
    result = CliRunner().invoke(main, ["check-patch", *map(str, patches), str(base), "--no-cache", "--no-model",
                                       "--format", "sarif"])
    log = json.loads(result.output)
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(log)
    states = [(r["baselineState"], r["level"]) for r in log["runs"][0]["results"] if r["level"] == "error"]
    assert result.exit_code == 1 and states == [("new", "error"), ("absent", "error")]
