"""The pre-commit hook (.pre-commit-hooks.yaml) on a scratch repository holding the sample."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from conftest import FIX_PATCH, copy_sample
from test_counter_rule import COUNTER_BUG

ROOT = Path(__file__).parents[1]
(HOOK,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
_ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def scratch_repo(tmp_path: Path, staged: Path) -> Path:
    """A git repository of the sample (as shipped), with `staged` applied to the index and work tree."""
    repo = copy_sample(tmp_path / "repo")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@example.org",
                                                  "commit", "-q", "-m", "sample"], ["apply", "--index", str(staged)]):
        subprocess.run(["git", *args], cwd=repo, check=True, env=_ENV, capture_output=True)
    return repo


@pytest.mark.parametrize(("patch", "code", "summary"), [
    (COUNTER_BUG, 1, "1 finding(s) introduced, 0 fixed"),
    (FIX_PATCH, 0, "0 finding(s) introduced, 1 fixed"),
])
def test_the_hook_command_blocks_an_introduced_finding_and_passes_a_fix(tmp_path: Path, patch: Path, code: int,
                                                                       summary: str) -> None:
    repo = scratch_repo(tmp_path, patch)
    entry = shlex.split(HOOK["entry"])
    script = Path(sysconfig.get_path("scripts")) / entry[0]
    proc = subprocess.run([str(script), *entry[1:], "--no-cache"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    assert summary in proc.stdout


@pytest.mark.realkernel  # pre-commit installs the hook's environment from the package registry
@pytest.mark.parametrize(("patch", "code", "summary"), [
    (COUNTER_BUG, 1, "1 finding(s) introduced, 0 fixed"),
    (FIX_PATCH, 0, "0 finding(s) introduced, 1 fixed"),
])
def test_pre_commit_try_repo_blocks_an_introduced_finding_and_passes_a_fix(tmp_path: Path, patch: Path, code: int,
                                                                          summary: str) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout: pre-commit try-repo needs one")
    repo = scratch_repo(tmp_path, patch)
    before = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    env = {**_ENV, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit")}
    proc = subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", "--verbose", str(ROOT), HOOK["id"]],
                          cwd=repo, capture_output=True, text=True, env=env)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert summary in proc.stdout
    assert subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout == before
    shutil.rmtree(tmp_path / "pre-commit")
