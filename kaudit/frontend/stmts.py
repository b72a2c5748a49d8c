"""libclang statements -> a small JSON-able statement tree.

Statements are dicts keyed by "s" (documented in docs/facts.md). The tree
keeps exactly the structure the analysis needs: branches with their
conditions, loops (with the iterator macro that wrote them), early returns,
scoped-lock declarations and expression statements.
"""

from __future__ import annotations

import re
from typing import Any

import clang.cindex as ci

from kaudit.frontend import capi
from kaudit.frontend.capi import children, kind
from kaudit.frontend.exprs import TOO_DEEP, ExprBuilder, Nesting, TypeInfo, expression_kinds
from kaudit.reading import read_regular

K = ci.CursorKind
Stmt = dict[str, Any]

_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
_LOOP_KEYWORDS = frozenset({"for", "while", "do"})
_LOOPS = {K.FOR_STMT.value: "for", K.WHILE_STMT.value: "while", K.DO_STMT.value: "do"}
_COMPOUND = K.COMPOUND_STMT.value



def _read(name: str) -> bytes:
    """A file clang read, for its macro spellings (empty if it is no longer a regular file)."""
    try:
        return read_regular(name)
    except OSError:
        return b""

class StmtBuilder:
    """Builds statement trees for the functions of one TU."""

    def __init__(self, types: TypeInfo, nesting: Nesting) -> None:
        self.exprs = ExprBuilder(self.block, types, nesting)
        self.types = types
        self.nesting = nesting
        self._sources: dict[str, bytes] = {}
        self._expr_kinds = expression_kinds()

    def block(self, cursor: ci.Cursor) -> list[Stmt]:
        if kind(cursor) == _COMPOUND:
            return [s for ch in children(cursor) for s in self.stmt(ch)]
        return self.stmt(cursor)

    def _source(self, name: str) -> bytes:
        if name not in self._sources:
            self._sources[name] = _read(name)
        return self._sources[name]

    def _macro_at(self, cursor: ci.Cursor) -> str | None:
        """The identifier that starts the statement in the source, if it is a
        macro (e.g. `kvm_for_each_vcpu`) rather than the C keyword."""
        start_file, offset = capi.extent_start(cursor)
        if start_file is None or start_file != capi.file_name(cursor):
            return None
        match = _IDENT.match(self._source(start_file), offset)
        if match is None:
            return None
        word = match.group().decode()
        return None if word in _LOOP_KEYWORDS else word

    def stmt(self, cursor: ci.Cursor) -> list[Stmt]:
        if not self.nesting.enter(cursor):
            return [{"s": "other", "line": capi.line(cursor), "what": TOO_DEEP}]
        try:
            return self._stmt(cursor)
        finally:
            self.nesting.leave()

    def _stmt(self, cursor: ci.Cursor) -> list[Stmt]:
        k = kind(cursor)
        if k == K.NULL_STMT.value:
            return []
        line = capi.line(cursor)
        kids = children(cursor)
        build = self.exprs.build
        if k == _COMPOUND:
            return [{"s": "block", "line": line, "body": self.block(cursor)}]
        if k == K.DECL_STMT.value:
            return [self._decl(ch) for ch in kids if kind(ch) == K.VAR_DECL.value]
        if k == K.IF_STMT.value:
            return [
                {
                    "s": "if",
                    "line": line,
                    "c": build(kids[0]),
                    "then": self.block(kids[1]),
                    "else": self.block(kids[2]) if len(kids) > 2 else [],
                }
            ]
        if k in _LOOPS:
            return [self._loop(cursor, _LOOPS[k], line, kids)]
        if k == K.SWITCH_STMT.value:
            condition = build(kids[0])
            return [{"s": "switch", "line": line, "c": condition, "body": self.block(kids[1])}]
        if k in (K.CASE_STMT.value, K.DEFAULT_STMT.value):
            value = build(kids[0]) if k == K.CASE_STMT.value else None
            case = {"s": "case", "line": line, "e": value, "body": self.block(kids[-1])}
            if k == K.CASE_STMT.value and len(kids) == 3:  # GNU `case low ... high:`
                case["hi"] = build(kids[1])
            return [case]
        if k == K.RETURN_STMT.value:
            return [{"s": "return", "line": line, "e": build(kids[0]) if kids else None}]
        if k in (K.BREAK_STMT.value, K.CONTINUE_STMT.value):
            return [{"s": K.from_id(k).name.split("_")[0].lower(), "line": line}]
        if k == K.GOTO_STMT.value:
            return [{"s": "goto", "line": line, "label": capi.spelling(kids[0]) if kids else ""}]
        if k == K.LABEL_STMT.value:
            label = {"s": "label", "line": line, "name": capi.spelling(cursor)}
            return [label, *self.block(kids[-1])] if kids else [label]
        if k in self._expr_kinds:
            return [{"s": "expr", "line": line, "e": build(cursor)}]
        return [{"s": "other", "line": line, "what": K.from_id(k).name.lower()}]

    def _decl(self, cursor: ci.Cursor) -> Stmt:
        kids = children(cursor)
        init = next((ch for ch in reversed(kids) if kind(ch) in self._expr_kinds), None)
        cleanup = any(kind(ch) == K.UNEXPOSED_ATTR.value for ch in kids)
        return {
            "s": "decl",
            "line": capi.line(cursor),
            "name": capi.spelling(cursor),
            **self.types.of_cursor(cursor),
            "init": self.exprs.build(init) if init is not None else None,
            "cleanup": cleanup,
        }

    def _loop(self, cursor: ci.Cursor, loop: str, line: int, kids: list[ci.Cursor]) -> Stmt:
        body_cursor = kids[0] if loop == "do" else kids[-1]
        header = kids[1:] if loop == "do" else kids[:-1]
        return {
            "s": "loop",
            "line": line,
            "kind": loop,
            "macro": self._macro_at(cursor),
            "header": [s for ch in header for s in self.stmt(ch)],
            "body": self.block(body_cursor),
        }
