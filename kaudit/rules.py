"""Rule files: YAML documents in rules/, one rule each (format: docs/rules.md,
schema: kaudit/data/rule.schema.json).

A rule says what it checks (the engine that runs it, the API family it
watches, the kinds of finding it can report with their message, severity
and confidence) and carries its documentation page (what it does, why it
is bad, example, use instead, known problems), which `kaudit rule ID`
prints. Engines only pick a kind and fill its message's fields.
"""

from __future__ import annotations

import difflib
import json
import string
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from kaudit import yamlmarks
from kaudit.errors import UsageError
from kaudit.reading import MAX_RULE, read_text_input

DOC_SECTIONS = (
    ("what_it_does", "What it does"),
    ("why_bad", "Why is this bad?"),
    ("example", "Example"),
    ("use_instead", "Use instead"),
    ("known_problems", "Known problems"),
)
RULE_SCHEMA = Path(__file__).parent / "data" / "rule.schema.json"


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
    """One kind of finding: its message template (`{key}`, `{how}`... filled
    by the engine), severity and confidence."""

    name: str
    severity: str
    confidence: str
    message: str

    def text(self, **fields: Any) -> str:
        return " ".join(self.message.split()).format(**fields)


@dataclass(frozen=True)
class Lifecycle:
    """The kernel's vCPU lifecycle entry points (create may fail: a non-zero return; reset runs any
    number of times while the vCPU lives), and the VM's own creation and destruction (`vm`), which
    run while no vCPU exists: what they write is what vCPUs start from, never a change under them."""

    create: tuple[str, ...] = ()
    reset: tuple[str, ...] = ()
    destroy: tuple[str, ...] = ()
    vm: tuple[str, ...] = ()


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
    sources: tuple[str, ...] = ()
    path: str = ""
    key_lines: dict[str, int] = field(default_factory=dict, compare=False)  # where each top-level key is

    def kind(self, name: str) -> FindingKind:
        return self.findings[name]

    @property
    def severity(self) -> str:
        """The most severe of its kinds: what a finding of the rule can be at worst."""
        return min((k.severity for k in self.findings.values()), key=("error", "warning", "info").index)

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


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(RULE_SCHEMA.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def _dotted(path: list[str | int]) -> str:
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path).lstrip(".")


def _schema_error(doc: yamlmarks.Document, error: jsonschema.ValidationError) -> tuple[int, str]:
    """(line, message) for one schema violation, worded for the person who wrote the file."""
    path = list(error.absolute_path)
    where = _dotted(path)
    prefix = f"{where}: " if where else ""
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        key = sorted((k for k in error.instance if k not in known), key=str)[0]
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
        return doc.key_line(path, key), f"unknown key {_dotted([*path, str(key)])!r}{hint}"
    if error.validator == "required":
        missing = [key for key in error.validator_value if key not in error.instance]
        return doc.line(path), f"{where or 'rule'} lacks {', '.join(missing)}"
    if error.validator == "anyOf":
        options = [" and ".join(sub.get("required", [])) for sub in error.validator_value]
        return doc.line(path), f"{where} needs {' or '.join(options)}"
    if error.validator == "pattern" and "description" in error.schema:  # the form in words, not the regex
        return doc.line(path), f"{prefix}{error.instance!r} is not {error.schema['description']}"
    return doc.line(path), f"{prefix}{error.message}"


def load_rule(path: Path) -> Rule:
    """A rule file, checked against kaudit/data/rule.schema.json: any problem is a
    `file:line: message` usage error (exit 2), never a traceback or a silent default."""
    try:
        doc = yamlmarks.load(read_text_input(path, "rule file", MAX_RULE))
    except yamlmarks.YamlError as err:
        raise _fail(path, err.line, str(err)) from err
    data = doc.data
    if not isinstance(data, dict):
        raise _fail(path, 1, "a rule file is a YAML mapping")
    # the first by line; an unknown key first of all, as a missing key is most often its typo
    errors = sorted((error.validator != "additionalProperties", *_schema_error(doc, error))
                    for error in _validator().iter_errors(data))
    if errors:
        _, line, message = errors[0]
        raise _fail(path, line, message)
    for name, spec in data["findings"].items():
        try:
            list(string.Formatter().parse(spec["message"]))
        except ValueError as err:
            raise _fail(path, doc.key_line(["findings"], name), f"findings.{name}.message: {err}") from err
    lifecycle = data.get("lifecycle", {})
    return Rule(
        id=data["id"], name=data["name"], engine=data["engine"], title=data["title"],
        confidence=data["confidence"], fix_hint=data["fix_hint"],
        docs={key: data[key] for key, _ in DOC_SECTIONS}, sources=tuple(data["sources"]),
        findings={name: FindingKind(name, spec["severity"], spec["confidence"], spec["message"])
                  for name, spec in data["findings"].items()},
        api=tuple(ApiEntry(a["function"], a["key_arg"], a.get("action"), a.get("value_arg"),
                           a.get("takes_lock", False)) for a in data.get("api", [])),
        per_vcpu_types=tuple(data.get("per_vcpu_types", ["kvm_vcpu"])),
        vm_types=tuple(data.get("vm_types", ["kvm"])), update_lock=data.get("update_lock", ""),
        word=data.get("word", ""),
        lifecycle=Lifecycle(**{kind: tuple(names) for kind, names in lifecycle.items()}),
        path=str(path), key_lines={key: doc.key_line([], key) for key in data},
    )


def load_rules(directory: Path) -> list[Rule]:
    """Every *.yaml rule of a directory, in file-name order; an id or name used twice is an error."""
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such rules directory")
    rules = [load_rule(p) for p in sorted(directory.glob("*.yaml"))]
    if not rules:
        raise UsageError(f"{directory}: no rule files (*.yaml)")
    for field_name in ("id", "name"):
        first: dict[str, Rule] = {}
        for rule in rules:
            value = getattr(rule, field_name)
            if value in first:
                other = first[value]
                raise UsageError(f"{rule.path}:{rule.key_lines[field_name]}: rule {field_name} {value!r} is also "
                                 f"used by {other.path}:{other.key_lines[field_name]}")
            first[value] = rule
    return rules


def rule_sources(rules: list[Rule]) -> tuple[str, ...]:
    """The globs a scan covers: the union of the rules' `sources`, sorted."""
    return tuple(sorted({glob for rule in rules for glob in rule.sources}))
