"""All translation units' facts merged into one program, with call resolution.

Function ids: a global function is its name; a `static` one is
`name@file` (two static functions of one name in two files stay apart; a
static inline defined in a header is one function however many TUs see it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kaudit.packed import PackedUnit, calls_in_body, unpack

Facts = dict[str, Any]

# Kernel convention: static_call(PREFIX##op) calls member `op` of STRUCT.
# Longest prefix first. (KVM_X86_OP / KVM_X86_PMU_OP in kvm-x86-ops.h.)
STATIC_CALL_TABLES = (("kvm_x86_pmu_", "kvm_pmu_ops"), ("kvm_x86_", "kvm_x86_ops"))


def function_id(facts: Facts) -> str:
    return _id(facts["name"], facts["file"], facts["static"])


def _id(name: str, file: str | None, static: bool) -> str:
    return f"{name}@{file}" if static else name


class FunctionTable(Mapping[str, Facts]):
    """Function facts by id, each decoded from its packed text on first use:
    merging, the call graph and a warm run never decode a body unread."""

    def __init__(self, packed: dict[str, bytes]) -> None:
        self._packed = packed
        self._decoded: dict[str, Facts] = {}

    def __getitem__(self, fid: str) -> Facts:
        found = self._decoded.get(fid)
        if found is None:
            found = self._decoded[fid] = unpack(self._packed[fid])
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def __contains__(self, fid: object) -> bool:
        return fid in self._packed

    def packed(self, fid: str) -> bytes:
        return self._packed[fid]


@dataclass
class Program:
    functions: FunctionTable = field(default_factory=lambda: FunctionTable({}))
    structs: dict[str, Facts] = field(default_factory=dict)
    tables: list[Facts] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    diagnostics: list[Facts] = field(default_factory=list)
    # per function id: how the names it calls resolve (static names of its TU)
    _scope: dict[str, dict[str, str]] = field(default_factory=dict)
    _by_name: dict[str, list[str]] = field(default_factory=dict)
    # per function id: the digest of its facts (packed.function_text), for memos keyed by content
    digests: dict[str, str] = field(default_factory=dict)
    # per function id: {callee, via, line} of its calls, in body order (from PackedFunction.calls)
    _call_sites: dict[str, list[Facts]] = field(default_factory=dict)
    _heads: dict[str, tuple[str, str | None, int]] = field(default_factory=dict)  # name, file, line
    enums: dict[str, list[int]] = field(default_factory=dict)  # enum name -> its enumerators' values

    @classmethod
    def from_facts(cls, units: list[Facts]) -> Program:
        return cls.from_packed([PackedUnit.of(unit) for unit in units])

    @classmethod
    def from_packed(cls, units: list[PackedUnit]) -> Program:
        """Merge TUs in order; no function body is decoded."""
        program = cls()
        packed: dict[str, bytes] = {}
        for unit in units:
            program._add_unit(unit, packed)
        program.functions = FunctionTable(packed)
        program._by_name = {}
        for fid in sorted(packed):
            program._by_name.setdefault(program._heads[fid][0], []).append(fid)
        program.tables.sort(key=lambda t: (t["file"], t["line"], t["name"]))
        return program

    def to_json(self) -> tuple[dict[str, Any], list[bytes]]:
        """(everything but the function facts, the packed function texts in
        id order): how the warm-run cache stores a program."""
        texts = {fid: self.functions.packed(fid) for fid in self.functions}
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
            "by_name": self._by_name, "enums": self.enums,
        }
        return header, list(texts.values())

    @classmethod
    def from_json(cls, header: dict[str, Any], packed: list[bytes]) -> Program:
        """The program to_json() described."""
        maps = header["scope_maps"]
        return cls(FunctionTable(dict(zip(header["ids"], packed, strict=True))), header["structs"], header["tables"],
                   header["files"], header["diagnostics"], {fid: maps[i] for fid, i in header["scope"].items()},
                   header["by_name"], dict(zip(header["ids"], header["digests"], strict=True)),
                   enums=header["enums"])

    def header(self, fid: str) -> tuple[str, str | None, int]:
        """(name, file, line) of a function, without decoding it."""
        if fid not in self._heads:
            fn = self.functions[fid]
            self._heads[fid] = (fn["name"], fn["file"], fn["line"])
        return self._heads[fid]

    def digest(self, fid: str) -> str:
        """Content digest of a function's facts: the key for memos of any
        per-function result (kaudit.cache.Store.memo)."""
        return self.digests[fid]

    def _add_unit(self, packed_unit: PackedUnit, packed: dict[str, bytes]) -> None:
        unit = packed_unit.unit
        if unit["file"]:
            self.files.append(unit["file"])
        self.diagnostics.extend({**d, "tu": unit["file"]} for d in unit["diagnostics"])
        statics = {fn.name: _id(fn.name, fn.file, True) for fn in packed_unit.functions if fn.static}
        for fn in packed_unit.functions:
            fid = _id(fn.name, fn.file, fn.static)
            if fid not in packed:  # the first definition of an id wins
                packed[fid], self.digests[fid], self._call_sites[fid] = fn.packed, fn.digest, fn.calls
                self._heads[fid] = (fn.name, fn.file, fn.line)
            self._scope.setdefault(fid, statics)
        for struct in unit["structs"]:
            self.structs.setdefault(struct["name"], struct)
        for enum in unit["enums"]:
            self.enums.setdefault(enum["name"], enum["values"])
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

    def array_targets(self, name: str, caller_file: str | None) -> list[str]:
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
            return kind, self.array_targets(name, self.header(caller)[1])
        return kind, []

    def calls_in(self, fid: str) -> Iterator[Facts]:
        yield from calls_in_body(self.functions[fid]["body"], [])

    def call_sites(self, fid: str) -> list[Facts]:
        """{callee, via, line} of each call of a function, without decoding it
        when the program was merged from packed units."""
        if fid not in self._call_sites:
            self._call_sites[fid] = [{"callee": c["callee"], "via": c["via"], "line": c["line"]}
                                     for c in self.calls_in(fid)]
        return self._call_sites[fid]

    def functions_named(self, name: str) -> list[str]:
        return self._by_name.get(name, [])
