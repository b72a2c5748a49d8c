"""Rule files: YAML documents in rules/, one rule each (format: docs/rules.md).

A rule says what it checks (the engine that runs it, the API family it
watches, the kinds of finding it can report with their message, severity
and confidence) and carries its documentation page (what it does, why it
is bad, example, use instead, known problems), which `kaudit rule ID`
prints. Engines only pick a kind and fill its message's fields.
"""

from __future__ import annotations

import string
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
_REQUIRED = ("id", "name", "engine", "title", "confidence", "fix_hint", "findings",
             *(key for key, _ in DOC_SECTIONS))


@dataclass(frozen=True)
class ApiEntry:
    """A function of the watched API: which argument is the key, what it does
    to it (a fixed action, or the truth of `value_arg`), whether it takes
    the update lock itself."""

    function: str
    key_arg: int
    action: str | None = None  # "set" | "clear"
    value_arg: int | None = None
    takes_lock: bool = False


@dataclass(frozen=True)
class FindingKind:
    """One kind of finding: its message template (`{key}`, `{why}`... filled
    by the engine), severity and confidence."""

    name: str
    severity: str
    confidence: str
    message: str

    def text(self, **fields: Any) -> str:
        return self.message.strip().format(**fields)


@dataclass(frozen=True)
class Lifecycle:
    """The kernel's vCPU lifecycle entry points (create may fail: a non-zero return)."""

    create: tuple[str, ...] = ()
    destroy: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    engine: str
    title: str
    confidence: str
    fix_hint: str
    docs: dict[str, str]
    findings: dict[str, FindingKind]
    api: tuple[ApiEntry, ...] = ()
    per_vcpu_types: tuple[str, ...] = ("kvm_vcpu",)
    vm_types: tuple[str, ...] = ("kvm",)
    update_lock: str = ""
    word: str = ""  # the VM-wide field whose bits the keys are
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    path: str = ""

    def kind(self, name: str) -> FindingKind:
        return self.findings[name]

    def page(self) -> str:
        """The rule's documentation page, ruff-style."""
        lines = [f"# {self.name} ({self.id})", "", self.title, "", f"Confidence: {self.confidence}", ""]
        for key, heading in DOC_SECTIONS:
            lines += [f"## {heading}", self.docs[key].rstrip(), ""]
        lines += ["## Findings", *(f"- `{k.name}` ({k.severity}, {k.confidence} confidence): "
                                   f"{' '.join(k.message.split())}" for k in self.findings.values()), ""]
        lines += ["## Fix", self.fix_hint.rstrip(), ""]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "title": self.title, "confidence": self.confidence,
                "fix_hint": self.fix_hint.strip(),
                "findings": {k.name: {"severity": k.severity, "confidence": k.confidence}
                             for k in self.findings.values()}}


def _fail(path: Path, line: int | None, message: str) -> UsageError:
    where = f"{path}:{line}" if line else str(path)
    return UsageError(f"{where}: {message}")


def _api(path: Path, entries: Any) -> tuple[ApiEntry, ...]:
    if not isinstance(entries, list):
        raise _fail(path, None, "api must be a list of entries")
    out = []
    for api in entries:
        if (not isinstance(api, dict) or "function" not in api or "key_arg" not in api
                or not ({"action", "value_arg"} & api.keys())):
            raise _fail(path, None, f"api entry {api!r} needs function, key_arg and action or value_arg")
        out.append(ApiEntry(str(api["function"]), int(api["key_arg"]), api.get("action"), api.get("value_arg"),
                            bool(api.get("takes_lock", False))))
    return tuple(out)


def _kinds(path: Path, kinds: Any) -> dict[str, FindingKind]:
    if not isinstance(kinds, dict):
        raise _fail(path, None, "findings must map each kind to its severity, confidence and message")
    out = {}
    for name, spec in kinds.items():
        if not isinstance(spec, dict) or not {"severity", "confidence", "message"} <= spec.keys():
            raise _fail(path, None, f"finding kind {name!r} needs severity, confidence and message")
        if spec["severity"] not in SEVERITIES:
            raise _fail(path, None, f"finding kind {name!r}: severity must be one of {', '.join(SEVERITIES)}")
        try:
            list(string.Formatter().parse(spec["message"]))
        except ValueError as err:
            raise _fail(path, None, f"finding kind {name!r}: bad message template: {err}") from err
        out[str(name)] = FindingKind(str(name), spec["severity"], str(spec["confidence"]), spec["message"])
    return out


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
    for key in ("per_vcpu_types", "vm_types"):
        if not isinstance(data.get(key, []), list):
            raise _fail(path, None, f"{key} must be a list of struct names")
    lifecycle = data.get("lifecycle") or {}
    return Rule(
        id=str(data["id"]), name=data["name"], engine=data["engine"], title=data["title"],
        confidence=data["confidence"], fix_hint=data["fix_hint"],
        docs={key: data[key] for key, _ in DOC_SECTIONS}, findings=_kinds(path, data["findings"]),
        api=_api(path, data.get("api") or []),
        per_vcpu_types=tuple(data.get("per_vcpu_types", ["kvm_vcpu"])),
        vm_types=tuple(data.get("vm_types", ["kvm"])), update_lock=data.get("update_lock", ""),
        word=data.get("word", ""),
        lifecycle=Lifecycle(tuple(lifecycle.get("create", ())), tuple(lifecycle.get("destroy", ()))),
        path=str(path),
    )


def load_rules(directory: Path) -> list[Rule]:
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such rules directory")
    rules = [load_rule(p) for p in sorted(directory.glob("*.yaml"))]
    if not rules:
        raise UsageError(f"{directory}: no rule files (*.yaml)")
    return rules
