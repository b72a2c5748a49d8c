"""Shared fixtures: the bundled sample, its fixed variant, small C trees."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kaudit.audit import AuditResult, audit_tree
from kaudit.resources import default_rules_dir, sample_tree
from kaudit.rules import load_rules

SAMPLE = sample_tree()
FIX_PATCH = next((SAMPLE / "patches").glob("0001-*.patch"))


def pytest_addoption(parser: pytest.Parser) -> None:
    """Without pytest-xdist (`.[test]` installs it), the `-n auto --dist loadgroup` of pyproject.toml's
    addopts are accepted and the suite runs in one process, instead of a usage error."""
    try:
        import xdist  # noqa: F401
    except ImportError:
        group = parser.getgroup("xdist", "pytest-xdist is not installed: these are ignored")
        group._addoption("-n", "--numprocesses", dest="numprocesses", default=None)  # xdist's own -n
        group._addoption("--dist", dest="dist", default="no")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real-kernel tests share the trees they build and time the machine: one worker runs them all,
    in order, while the others take the quick tests."""
    for item in items:
        if item.get_closest_marker("realkernel"):
            item.add_marker(pytest.mark.xdist_group("realkernel"))


def copy_sample(dest: Path) -> Path:
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("patches"))
    return dest


def apply_patch(tree: Path, patch: Path) -> None:
    subprocess.run(["git", "apply", "-p1", str(patch)], cwd=tree, check=True)


def audit(root: Path, jobs: int = 1) -> AuditResult:
    return audit_tree(root, load_rules(default_rules_dir()), jobs=jobs, cache_dir=None)


@pytest.fixture(scope="session")
def sample_result() -> AuditResult:
    return audit(SAMPLE)


@pytest.fixture(scope="session")
def fixed_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = copy_sample(tmp_path_factory.mktemp("fixed") / "tree")
    apply_patch(tree, FIX_PATCH)
    return tree


@pytest.fixture(scope="session")
def fixed_result(fixed_tree: Path) -> AuditResult:
    return audit(fixed_tree)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} not found"
    path.write_text(text.replace(old, new, 1))
