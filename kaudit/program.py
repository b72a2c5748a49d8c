"""All translation units' facts merged into one program, with call resolution.

Function ids: a global function is its name; a `static` one is
`name@file` (two static functions of one name in two files stay apart; a
static inline defined in a header is one function however many TUs see it).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Facts = dict[str, Any]

# Kernel convention: static_call(PREFIX##op) calls member `op` of STRUCT.
# Longest prefix first. (KVM_X86_OP / KVM_X86_PMU_OP in kvm-x86-ops.h.)
STATIC_CALL_TABLES = (("kvm_x86_pmu_", "kvm_pmu_ops"), ("kvm_x86_", "kvm_x86_ops"))


def function_id(facts: Facts) -> str:
    return f"{facts['name']}@{facts['file']}" if facts["static"] else facts["name"]


def function_text(facts: Facts) -> str:
    """A function's facts as JSON (one line): what its digest names."""
    return json.dumps(facts, separators=(",", ":"))  # key order is the front end's, fixed by its code


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def pack_text(text: str) -> bytes:
    return zlib.compress(text.encode(), 1)


class FunctionTable(Mapping[str, Facts]):
    """Function facts by id, each decoded from its packed JSON text on first
    use: a warm run loads the program without decoding bodies it never reads."""

    def __init__(self, packed: dict[str, bytes]) -> None:
        self._texts = packed
        self._decoded: dict[str, Facts] = {}

    def __getitem__(self, fid: str) -> Facts:
        found = self._decoded.get(fid)
        if found is None:
            found = self._decoded[fid] = json.loads(zlib.decompress(self._texts[fid]))
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, fid: object) -> bool:
        return fid in self._texts


def _calls(node: Any, out: list[Facts]) -> list[Facts]:
    """The call atoms in a fact tree, pre-order (as facts.subexprs visits
    them); plain recursion, bounded by the front end's nesting bound."""
    if type(node) is list:
        for item in node:
            _calls(item, out)
        return out
    if node.get("k") == "call":
        out.append(node)
    for value in node.values():
        if type(value) is dict or type(value) is list:
            _calls(value, out)
    return out


@dataclass
class Program:
    functions: Mapping[str, Facts] = field(default_factory=dict)
    structs: dict[str, Facts] = field(default_factory=dict)
    tables: list[Facts] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    diagnostics: list[Facts] = field(default_factory=list)
    # per function id: how the names it calls resolve (static names of its TU)
    _scope: dict[str, dict[str, str]] = field(default_factory=dict)
    _by_name: dict[str, list[str]] = field(default_factory=dict)
    # per function id: the digest of its facts (function_text), for memos keyed by content
    digests: dict[str, str] = field(default_factory=dict)

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

    def to_json(self) -> tuple[dict[str, Any], list[str]]:
        """(everything but the function facts, the function texts in id
        order): how the warm-run cache stores a program."""
        texts = {fid: function_text(fn) for fid, fn in self.functions.items()}
        scopes: dict[int, int] = {}
        tables: list[dict[str, str]] = []
        for statics in self._scope.values():  # one statics map per TU, shared by its functions
            if id(statics) not in scopes:
                scopes[id(statics)] = len(tables)
                tables.append(statics)
        header = {
            "ids": list(texts), "digests": [self.digest(fid) for fid in texts],
            "structs": self.structs, "tables": self.tables, "files": self.files, "diagnostics": self.diagnostics,
            "scope_maps": tables, "scope": {fid: scopes[id(m)] for fid, m in self._scope.items()},
            "by_name": self._by_name,
        }
        return header, list(texts.values())

    @classmethod
    def from_json(cls, header: dict[str, Any], packed: list[bytes]) -> Program:
        """The program to_json() described, with each function's text packed (pack_text)."""
        maps = header["scope_maps"]
        return cls(FunctionTable(dict(zip(header["ids"], packed, strict=True))), header["structs"], header["tables"],
                   header["files"], header["diagnostics"], {fid: maps[i] for fid, i in header["scope"].items()},
                   header["by_name"], dict(zip(header["ids"], header["digests"], strict=True)))

    def digest(self, fid: str) -> str:
        """Content digest of a function's facts: the key for memos of any
        per-function result (kaudit.cache.Store.memo)."""
        if fid not in self.digests:
            self.digests[fid] = text_digest(function_text(self.functions[fid]))
        return self.digests[fid]

    def _add_unit(self, unit: Facts) -> None:
        if unit["file"]:
            self.files.append(unit["file"])
        self.diagnostics.extend({**d, "tu": unit["file"]} for d in unit["diagnostics"])
        statics = {fn["name"]: function_id(fn) for fn in unit["functions"] if fn["static"]}
        for fn in unit["functions"]:
            fid = function_id(fn)
            self.functions.setdefault(fid, fn)  # type: ignore[attr-defined]  # a dict while it is built
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
        """(edge kind, target ids) of one call expression."""
        if call.get("callee"):
            return "direct", [self.resolve_name(caller, call["callee"])]
        via = call.get("via") or {}
        kind = via.get("kind", "pointer")
        if kind == "static_call":
            for prefix, record in STATIC_CALL_TABLES:
                if via["name"].startswith(prefix):
                    return kind, self.table_targets(record, via["name"][len(prefix):])
            return kind, []
        if kind == "member":
            return kind, self.table_targets(via["record"], via["field"])
        if kind == "array":
            return kind, self.array_targets(via["name"], self.functions[caller]["file"])
        return kind, []

    def calls_in(self, fid: str) -> Iterator[Facts]:
        yield from _calls(self.functions[fid]["body"], [])

    def functions_named(self, name: str) -> list[str]:
        return self._by_name.get(name, [])
