"""Rule files: YAML documents in rules/, one rule each (format: docs/rules.md).

A rule says what it checks (the engine that runs it and the API family it
watches) and carries its documentation page (what it does, why it is bad,
example, use instead, known problems), which `kaudit rule ID` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kaudit.errors import UsageError

SEVERITIES = ("error", "warning", "info")
DOC_SECTIONS = (
    ("what_it_does", "What it does"),
    ("why_bad", "Why is this bad?"),
    ("example", "Example"),
    ("use_instead", "Use instead"),
    ("known_problems", "Known problems"),
)
_REQUIRED = ("id", "name", "engine", "title", "severity", "confidence", "fix_hint",
             *(key for key, _ in DOC_SECTIONS))


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    engine: str
    title: str
    severity: str
    confidence: str
    fix_hint: str
    docs: dict[str, str]
    api: list[dict[str, Any]] = field(default_factory=list)
    per_vcpu_types: list[str] = field(default_factory=list)
    vm_types: list[str] = field(default_factory=list)
    update_lock: str = ""
    path: str = ""

    def page(self) -> str:
        """The rule's documentation page, ruff-style."""
        lines = [f"# {self.name} ({self.id})", "", self.title, "",
                 f"Severity: {self.severity}. Confidence: {self.confidence}", ""]
        for key, heading in DOC_SECTIONS:
            lines += [f"## {heading}", self.docs[key].rstrip(), ""]
        lines += ["## Fix", self.fix_hint.rstrip(), ""]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "title": self.title, "severity": self.severity,
                "confidence": self.confidence, "fix_hint": self.fix_hint.strip()}


def _fail(path: Path, line: int | None, message: str) -> UsageError:
    where = f"{path}:{line}" if line else str(path)
    return UsageError(f"{where}: {message}")


def load_rule(path: Path) -> Rule:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise _fail(path, None, f"cannot read rule file: {err.strerror}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise _fail(path, mark.line + 1 if mark else None, problem) from err
    if not isinstance(data, dict):
        raise _fail(path, 1, "a rule file is a YAML mapping")
    missing = [key for key in _REQUIRED if not data.get(key)]
    if missing:
        raise _fail(path, None, f"rule lacks {', '.join(missing)}")
    if data["severity"] not in SEVERITIES:
        raise _fail(path, None, f"severity must be one of {', '.join(SEVERITIES)}")
    apis = data.get("api") or []
    if not isinstance(apis, list):
        raise _fail(path, None, "api must be a list of entries")
    for api in apis:
        if (not isinstance(api, dict) or "function" not in api or "key_arg" not in api
                or not ({"action", "value_arg"} & api.keys())):
            raise _fail(path, None, f"api entry {api!r} needs function, key_arg and action or value_arg")
    for key in ("per_vcpu_types", "vm_types"):
        if not isinstance(data.get(key, []), list):
            raise _fail(path, None, f"{key} must be a list of struct names")
    return Rule(
        id=str(data["id"]), name=data["name"], engine=data["engine"], title=data["title"],
        severity=data["severity"], confidence=data["confidence"], fix_hint=data["fix_hint"],
        docs={key: data[key] for key, _ in DOC_SECTIONS},
        api=list(apis), per_vcpu_types=list(data.get("per_vcpu_types", ["kvm_vcpu"])),
        vm_types=list(data.get("vm_types", ["kvm"])), update_lock=data.get("update_lock", ""),
        path=str(path),
    )


def load_rules(directory: Path) -> list[Rule]:
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such rules directory")
    rules = [load_rule(p) for p in sorted(directory.glob("*.yaml"))]
    if not rules:
        raise UsageError(f"{directory}: no rule files (*.yaml)")
    return rules
