"""tests/kernels.py itself: where it caches, and what it does on a host that lacks what it needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kernels
import pytest


@pytest.mark.parametrize(("env", "expected"), [
    ({"XDG_CACHE_HOME": "/x/cache"}, "/x/cache/kaudit-kernels"),
    ({"HOME": "/home/u"}, "/home/u/.cache/kaudit-kernels"),
    ({"KAUDIT_KERNEL_CACHE": "/k", "XDG_CACHE_HOME": "/x"}, "/k"),
])
def test_the_cache_honours_xdg_cache_home(env: dict[str, str], expected: str) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "KAUDIT_KERNEL_CACHE")}
    out = subprocess.run([sys.executable, "-c", "import kernels; print(kernels.CACHE)"], capture_output=True,
                         text=True, check=True, env={**clean, **env}, cwd=Path(__file__).parent).stdout
    assert out.strip() == expected


def test_without_root_missing_build_packages_are_named_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(kernels, "_missing_build_deps", lambda: ["flex", "libssl-dev"])
    monkeypatch.setattr(kernels, "_run", lambda *a, **k: pytest.fail("nothing may run"))
    with pytest.raises(kernels.Unavailable, match=r"need: apt-get install --no-upgrade flex libssl-dev \(as root\)"):
        kernels._ensure_build_deps(kernels._Timings("6.12", "test"))


def test_as_root_an_install_that_would_upgrade_a_package_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_: object) -> str:
        calls.append(list(cmd))
        return "Inst libssl3 [3.0.11-1~deb12u2] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])\n" \
               "Inst libssl-dev (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])\n"

    monkeypatch.setattr(kernels.os, "geteuid", lambda: 0)
    monkeypatch.setattr(kernels, "_missing_build_deps", lambda: ["libssl-dev"])
    monkeypatch.setattr(kernels, "_run", fake_run)
    with pytest.raises(kernels.Unavailable, match=r"would upgrade installed packages \(libssl3\)"):
        kernels._ensure_build_deps(kernels._Timings("6.12", "test"))
    assert calls == [["apt-get", "install", "-s", "--no-upgrade", "libssl-dev"]]  # simulated, never installed
