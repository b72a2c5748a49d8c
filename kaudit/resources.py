"""Where the bundled rules, sample tree and report schema are.

An installed wheel carries them inside the package (kaudit/_bundled/, see
pyproject.toml); a source checkout has them at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled(name: str) -> Path:
    for candidate in (_PACKAGE / "_bundled" / name, _PACKAGE.parent / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"kaudit installation lacks its bundled {name}/")


def default_rules_dir() -> Path:
    return bundled("rules")


def sample_tree() -> Path:
    return bundled("sample_kernel_src")


def report_schema() -> Path:
    return bundled("docs/report-v2.schema.json")
