"""A TU's facts in the form kaudit stores and merges them.

Each function's facts are one JSON text, compressed on its own ("packed")
in the worker that extracted them, with what merging needs beside it: name,
file, static, the text's digest and the calls it makes (callee, via, line).
So a program is merged and its call graph built without decoding a single
function body, the cache stores a TU without encoding it again, and a body
is decoded only when something reads it (program.FunctionTable). `facts()`
gives back exactly the dict the front end made (docs/facts.md).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

from kaudit.cache import inflate

Facts = dict[str, Any]
_UNIT_KEYS = ("file", "diagnostics", "warnings", "includes")


def function_text(facts: Facts) -> str:
    """A function's facts as JSON (one line): what its digest names."""
    return json.dumps(facts, separators=(",", ":"))  # key order is the front end's, fixed by its code


def pack_text(text: str) -> bytes:
    return zlib.compress(text.encode(), 1)


def unpack(packed: bytes) -> Facts:
    return json.loads(inflate(packed))


def calls_in_body(node: Any, out: list[Facts]) -> list[Facts]:
    """The call atoms in a fact tree, pre-order (as facts.subexprs visits
    them); plain recursion, bounded by the front end's nesting bound."""
    if type(node) is list:
        for item in node:
            calls_in_body(item, out)
        return out
    if node.get("k") == "call":
        out.append(node)
    for value in node.values():
        if type(value) is dict or type(value) is list:
            calls_in_body(value, out)
    return out


@dataclass(frozen=True)
class PackedFunction:
    name: str
    file: str | None
    static: bool
    line: int
    digest: str  # of its text: the content key for memos of per-function results
    calls: list[Facts]  # {callee, via, line} of each call, in body order
    packed: bytes

    @classmethod
    def of(cls, facts: Facts) -> PackedFunction:
        text = function_text(facts)
        calls = [{"callee": c["callee"], "via": c["via"], "line": c["line"]} for c in calls_in_body(facts["body"], [])]
        return cls(facts["name"], facts["file"], facts["static"], facts["line"],
                   hashlib.sha256(text.encode()).hexdigest()[:32], calls, pack_text(text))


@dataclass(frozen=True)
class PackedUnit:
    unit: Facts  # the TU's facts but its functions
    functions: list[PackedFunction]

    @classmethod
    def of(cls, facts: Facts) -> PackedUnit:
        return cls({k: v for k, v in facts.items() if k != "functions"},
                   [PackedFunction.of(fn) for fn in facts["functions"]])

    def facts(self) -> Facts:
        """The TU's facts, every function decoded, keys in the front end's order."""
        unit = self.unit
        return {**{k: unit[k] for k in _UNIT_KEYS}, "functions": [unpack(f.packed) for f in self.functions],
                "structs": unit["structs"], "tables": unit["tables"], "enums": unit["enums"]}

    def content_key(self) -> str:
        """A digest of the facts themselves, not of their packing: a TU parsed against a PCH and parsed
        plainly has the same facts, packed apart (key order, compression), and one key."""
        return hashlib.sha256(json.dumps({"unit": self.unit, "functions": self._heads()}, sort_keys=True,
                                         separators=(",", ":")).encode()).hexdigest()

    def _heads(self) -> list[list]:
        return [[f.name, f.file, f.static, f.line, f.digest, f.calls] for f in self.functions]

    def to_blob(self) -> bytes:
        """Length of the header, the header (JSON), the packed texts."""
        ends, end = [], 0
        for fn in self.functions:
            end += len(fn.packed)
            ends.append(end)
        header = pack_text(json.dumps({
            "unit": self.unit, "ends": ends, "functions": self._heads()},
            separators=(",", ":")))
        return b"".join([len(header).to_bytes(8, "little"), header, *(f.packed for f in self.functions)])

    @classmethod
    def from_blob(cls, blob: bytes) -> PackedUnit | None:
        """The typed loader: a unit of the shape to_blob() writes, or None."""
        try:
            size = int.from_bytes(blob[:8], "little")
            raw = unpack(blob[8:8 + size])
            unit, ends, heads = raw["unit"], raw["ends"], raw["functions"]
            body = memoryview(blob)[8 + size:]
            if not (_is_unit(unit) and isinstance(ends, list) and isinstance(heads, list)
                    and len(ends) == len(heads) and (ends[-1] if ends else 0) == len(body)):
                return None
            functions, start = [], 0
            for end, head in zip(ends, heads, strict=True):
                name, file, static, line, digest, calls = head
                if not (isinstance(end, int) and start <= end and isinstance(name, str) and isinstance(digest, str)
                        and isinstance(line, int) and isinstance(calls, list)
                        and all(isinstance(c, dict) for c in calls)):
                    return None
                functions.append(PackedFunction(name, file, bool(static), line, digest, calls,
                                                bytes(body[start:end])))
                start = end
            return cls(unit, functions)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, zlib.error):
            return None  # the cache is untrusted data: any entry not of the shape written is a miss


def _is_unit(raw: object) -> bool:
    """The documented top-level shape of a TU (docs/facts.md), functions aside."""
    if not isinstance(raw, dict) or not (raw.get("file") is None or isinstance(raw.get("file"), str)):
        return False
    if not isinstance(raw.get("warnings"), int):
        return False
    if not all(isinstance(raw.get(key), list) for key in ("diagnostics", "includes", "structs", "tables", "enums")):
        return False
    named = [*raw["structs"], *raw["tables"], *raw["enums"]]
    return (all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in named)
            and all(isinstance(item.get("values"), list) and all(type(v) is int for v in item["values"])
                    for item in raw["enums"])
            and all(isinstance(item, dict) for item in raw["diagnostics"])
            and all(isinstance(item, str) for item in raw["includes"]))
