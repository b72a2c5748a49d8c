"""All translation units' facts merged into one program, with call resolution.

Function ids: a global function is its name; a `static` one is
`name@file` (two static functions of one name in two files stay apart; a
static inline defined in a header is one function however many TUs see it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Facts = dict[str, Any]

# Kernel convention: static_call(PREFIX##op) calls member `op` of STRUCT.
# Longest prefix first. (KVM_X86_OP / KVM_X86_PMU_OP in kvm-x86-ops.h.)
STATIC_CALL_TABLES = (("kvm_x86_pmu_", "kvm_pmu_ops"), ("kvm_x86_", "kvm_x86_ops"))


def function_id(facts: Facts) -> str:
    return f"{facts['name']}@{facts['file']}" if facts["static"] else facts["name"]


@dataclass
class Program:
    functions: dict[str, Facts] = field(default_factory=dict)
    structs: dict[str, Facts] = field(default_factory=dict)
    tables: list[Facts] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    diagnostics: list[Facts] = field(default_factory=list)
    # per function id: how the names it calls resolve (static names of its TU)
    _scope: dict[str, dict[str, str]] = field(default_factory=dict)
    _by_name: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_facts(cls, units: list[Facts]) -> Program:
        program = cls()
        for unit in units:
            program._add_unit(unit)
        program._by_name = {}
        for fid, fn in sorted(program.functions.items()):
            program._by_name.setdefault(fn["name"], []).append(fid)
        program.tables.sort(key=lambda t: (t["file"], t["line"], t["name"]))
        return program

    def _add_unit(self, unit: Facts) -> None:
        if unit["file"]:
            self.files.append(unit["file"])
        self.diagnostics.extend({**d, "tu": unit["file"]} for d in unit["diagnostics"])
        statics = {fn["name"]: function_id(fn) for fn in unit["functions"] if fn["static"]}
        for fn in unit["functions"]:
            fid = function_id(fn)
            self.functions.setdefault(fid, fn)
            self._scope.setdefault(fid, statics)
        for struct in unit["structs"]:
            self.structs.setdefault(struct["name"], struct)
        for table in unit["tables"]:
            if any(t["name"] == table["name"] and t["file"] == table["file"] for t in self.tables):
                continue
            entries = [{**e, "target": statics.get(e["function"], e["function"])} for e in table["entries"]]
            self.tables.append({**table, "entries": entries})

    def resolve_name(self, caller: str, name: str) -> str:
        """The id a name called from `caller` refers to (static of its TU first)."""
        return self._scope.get(caller, {}).get(name, name)

    def table_targets(self, record: str, member: str) -> list[str]:
        return sorted({
            e["target"] for t in self.tables
            if t["record"] == record and not t["array"] for e in t["entries"] if e["key"] == member
        })

    def array_targets(self, name: str, caller_file: str) -> list[str]:
        tables = [t for t in self.tables if t["name"] == name and t["array"]]
        local = [t for t in tables if t["file"] == caller_file]
        return sorted({e["target"] for t in (local or tables) for e in t["entries"]})

    def resolve_call(self, caller: str, call: Facts) -> tuple[str, list[str]]:
        """(edge kind, target ids) of one call expression of the facts."""
        via = call.get("via") or {}
        return self.resolve(caller, call.get("callee"), via.get("kind", "pointer"), via.get("name", ""),
                            via.get("record", ""), via.get("field", ""))

    def resolve(self, caller: str, callee: str | None, kind: str = "pointer", name: str = "", record: str = "",
                member: str = "") -> tuple[str, list[str]]:
        """(edge kind, target ids) of a call: direct, or how an indirect one finds its targets."""
        if callee:
            return "direct", [self.resolve_name(caller, callee)]
        if kind == "static_call":
            for prefix, table in STATIC_CALL_TABLES:
                if name.startswith(prefix):
                    return kind, self.table_targets(table, name[len(prefix):])
            return kind, []
        if kind == "member":
            return kind, self.table_targets(record, member)
        if kind == "array":
            return kind, self.array_targets(name, self.functions[caller]["file"])
        return kind, []

    def calls_in(self, fid: str) -> Iterator[Facts]:
        """Every call expression in a function's facts (for the call graph)."""
        stack: list[Any] = [self.functions[fid]["body"]]
        while stack:
            node = stack.pop()
            if isinstance(node, list):
                stack.extend(reversed(node))
            elif isinstance(node, dict):
                if node.get("k") == "call":
                    yield node
                stack.extend(v for v in reversed(node.values()) if isinstance(v, (dict, list)))

    def functions_named(self, name: str) -> list[str]:
        return self._by_name.get(name, [])
