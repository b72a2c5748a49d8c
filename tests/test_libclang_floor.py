"""The oldest libclang pyproject.toml allows gives the same reports as the one installed.

libclang 16 lacks clang_getCursorBinaryOperatorKind, so the floor is 17. This
test installs the newest release of the floor's major version from the package
registry into the user cache (pip --target, not into any environment) and
audits the sample and its fix with it in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import kernels
import pytest
from conftest import SAMPLE

pytestmark = pytest.mark.realkernel  # needs the package registry
ROOT = Path(__file__).parents[1]
AUDIT = ["audit", "--no-cache", "--format", "json", "--sim-steps", "1000"]


def floor() -> int:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in dependencies if d.startswith("libclang")]
    match = re.match(r"libclang>=(\d+)", spec)
    assert match, spec
    return int(match.group(1))


def libclang_at_floor() -> Path:
    major = floor()
    target = kernels.CACHE / f"libclang-{major}"
    if not (target / "clang" / "cindex.py").is_file():
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                               f"libclang>={major},<{major + 1}"], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot install libclang {major} from the package registry: {proc.stderr.strip()[-300:]}")
    return target


def kaudit(*args: str, libclang: Path | None = None) -> tuple[int, str]:
    path = [str(p) for p in (libclang, ROOT) if p is not None]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    code = "import sys; from kaudit.cli import main; main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, proc.stdout


def test_the_floor_release_gives_identical_reports(fixed_tree: Path) -> None:
    libclang = libclang_at_floor()
    version = subprocess.run(
        [sys.executable, "-c", "from kaudit.frontend.clang_ops import clang_version; print(clang_version())"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": f"{libclang}{os.pathsep}{ROOT}"}, check=True,
    ).stdout
    assert f"clang version {floor()}." in version
    for tree in (SAMPLE, fixed_tree):
        assert kaudit(*AUDIT, str(tree), libclang=libclang) == kaudit(*AUDIT, str(tree))
