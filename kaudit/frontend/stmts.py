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

from kaudit.frontend.exprs import ExprBuilder, type_info

K = ci.CursorKind
Stmt = dict[str, Any]

_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
_LOOP_KEYWORDS = frozenset({"for", "while", "do"})


class StmtBuilder:
    """Builds statement trees for one source file's functions."""

    def __init__(self, source: bytes) -> None:
        self.source = source
        self.exprs = ExprBuilder(self.block)

    def block(self, cursor: ci.Cursor) -> list[Stmt]:
        if cursor.kind == K.COMPOUND_STMT:
            return [s for ch in cursor.get_children() for s in self.stmt(ch)]
        return self.stmt(cursor)

    def _macro_at(self, cursor: ci.Cursor) -> str | None:
        """The identifier that starts the statement in the source, if it is a
        macro (e.g. `kvm_for_each_vcpu`) rather than the C keyword."""
        start = cursor.extent.start
        if start.file is None or start.file.name != cursor.location.file.name:
            return None
        match = _IDENT.match(self.source, start.offset)
        if match is None:
            return None
        word = match.group().decode()
        return None if word in _LOOP_KEYWORDS else word

    def stmt(self, cursor: ci.Cursor) -> list[Stmt]:
        kind = cursor.kind
        line = cursor.location.line
        children = list(cursor.get_children())
        if kind == K.COMPOUND_STMT:
            return [{"s": "block", "line": line, "body": self.block(cursor)}]
        if kind == K.DECL_STMT:
            return [self._decl(ch) for ch in children if ch.kind == K.VAR_DECL]
        if kind == K.IF_STMT:
            return [
                {
                    "s": "if",
                    "line": line,
                    "c": self.exprs.build(children[0]),
                    "then": self.block(children[1]),
                    "else": self.block(children[2]) if len(children) > 2 else [],
                }
            ]
        if kind in (K.FOR_STMT, K.WHILE_STMT, K.DO_STMT):
            return [self._loop(cursor, children)]
        if kind == K.SWITCH_STMT:
            condition = self.exprs.build(children[0])
            return [{"s": "switch", "line": line, "c": condition, "body": self.block(children[1])}]
        if kind in (K.CASE_STMT, K.DEFAULT_STMT):
            value = self.exprs.build(children[0]) if kind == K.CASE_STMT else None
            return [{"s": "case", "line": line, "e": value, "body": self.block(children[-1])}]
        if kind == K.RETURN_STMT:
            return [{"s": "return", "line": line, "e": self.exprs.build(children[0]) if children else None}]
        if kind in (K.BREAK_STMT, K.CONTINUE_STMT):
            return [{"s": kind.name.split("_")[0].lower(), "line": line}]
        if kind == K.GOTO_STMT:
            return [{"s": "goto", "line": line, "label": children[0].spelling if children else ""}]
        if kind == K.LABEL_STMT:
            label = {"s": "label", "line": line, "name": cursor.spelling}
            return [label, *self.block(children[-1])] if children else [label]
        if kind == K.NULL_STMT:
            return []
        if kind.is_expression():
            return [{"s": "expr", "line": line, "e": self.exprs.build(cursor)}]
        return [{"s": "other", "line": line, "what": kind.name.lower()}]

    def _decl(self, cursor: ci.Cursor) -> Stmt:
        children = list(cursor.get_children())
        init = next((ch for ch in reversed(children) if ch.kind.is_expression()), None)
        cleanup = any(ch.kind == K.UNEXPOSED_ATTR for ch in children)
        return {
            "s": "decl",
            "line": cursor.location.line,
            "name": cursor.spelling,
            **type_info(cursor.type),
            "init": self.exprs.build(init) if init is not None else None,
            "cleanup": cleanup,
        }

    def _loop(self, cursor: ci.Cursor, children: list[ci.Cursor]) -> Stmt:
        kind = {K.FOR_STMT: "for", K.WHILE_STMT: "while", K.DO_STMT: "do"}[cursor.kind]
        body_cursor = children[0] if kind == "do" else children[-1]
        header = children[1:] if kind == "do" else children[:-1]
        return {
            "s": "loop",
            "line": cursor.location.line,
            "kind": kind,
            "macro": self._macro_at(cursor),
            "header": [s for ch in header for s in self.stmt(ch)],
            "body": self.block(body_cursor),
        }
