"""libclang expressions and types -> plain JSON-able atoms.

Expression atoms are dicts keyed by "k" (documented in docs/facts.md).
Casts, parentheses and implicit conversions are dropped: the analysis asks
what is read, written and called, never how a value is converted.

Every conversion goes through `Nesting`: a subtree deeper than MAX_DEPTH
becomes an opaque `too_deep` atom and is reported, so neither this walk nor
any reader of the facts downstream can recurse without bound.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from functools import cache
from typing import Any, ClassVar

import clang.cindex as ci

from kaudit.frontend import capi
from kaudit.frontend.capi import children, kind
from kaudit.frontend.clang_ops import binary_operator, unary_operator

K = ci.CursorKind
Expr = dict[str, Any]

MAX_DEPTH = 200  # nesting of statements and expressions kept in the facts
TOO_DEEP = "too_deep"

_UNEXPOSED = K.UNEXPOSED_EXPR.value
_COMPOUND = K.COMPOUND_STMT.value
_TRANSPARENT = frozenset({_UNEXPOSED, K.PAREN_EXPR.value, K.CSTYLE_CAST_EXPR.value})
_STATIC_CALL_PREFIXES = ("__SCT__", "__SCK__")
_TK = ci.TypeKind
_POINTER, _RECORD = _TK.POINTER.value, _TK.RECORD.value
_ARRAYS = frozenset({_TK.CONSTANTARRAY.value, _TK.INCOMPLETEARRAY.value})


@cache
def expression_kinds() -> frozenset[int]:
    return frozenset(k.value for k in K.get_all_kinds() if k.is_expression())


@cache
def _eval_lib() -> ctypes.CDLL:
    lib = ci.conf.lib
    lib.clang_Cursor_Evaluate.argtypes = [ci.Cursor]
    lib.clang_Cursor_Evaluate.restype = ctypes.c_void_p
    lib.clang_EvalResult_getKind.argtypes = [ctypes.c_void_p]
    lib.clang_EvalResult_getKind.restype = ctypes.c_int
    lib.clang_EvalResult_getAsLongLong.argtypes = [ctypes.c_void_p]
    lib.clang_EvalResult_getAsLongLong.restype = ctypes.c_longlong
    lib.clang_EvalResult_dispose.argtypes = [ctypes.c_void_p]
    return lib


def evaluate_int(cursor: ci.Cursor) -> int | None:
    """The integer value clang folds the expression to, if it is constant."""
    lib = _eval_lib()
    result = lib.clang_Cursor_Evaluate(cursor)
    if not result:
        return None
    try:
        if lib.clang_EvalResult_getKind(result) != 1:  # CXEval_Int
            return None
        return int(lib.clang_EvalResult_getAsLongLong(result))
    finally:
        lib.clang_EvalResult_dispose(result)


_LOCATED = re.compile(r" at ([^():]+):(\d+):(\d+)\)")


def tree_located(spelling: str, rel: Callable[[str], str | None]) -> str:
    """An unnamed struct's spelling with its place tree-relative (`struct (unnamed at
    arch/x86/include/asm/kvm_host.h:988:2)`): the same code gives the same facts wherever the tree is."""
    if " at " not in spelling:
        return spelling
    return _LOCATED.sub(lambda m: f" at {rel(m[1]) or m[1]}:{m[2]}:{m[3]})", spelling)


class TypeInfo:
    """Type info (docs/facts.md) per clang type, computed once: a QualType
    is uniqued by its ASTContext, so its pointer and its TU name it."""

    def __init__(self, rel: Callable[[str], str | None]) -> None:
        self._memo: dict[tuple[int | None, int | None], dict[str, Any]] = {}
        self.rel = rel  # a file's tree-relative path (None outside the tree)

    def of(self, ctype: ci.Type) -> dict[str, Any]:
        """Spelling, pointer depth and the struct/union it designates (if any)."""
        key = (ctype.data[0], ctype.data[1])  # (QualType, TU): a PCH's types come from its own TU
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._compute(ctype)
        return found

    def _compute(self, ctype: ci.Type) -> dict[str, Any]:
        a = capi.api()
        canon = a.canonical(ctype)
        ptr = 0
        array = False  # `struct kvm_vcpu *vcpus[N]`: record kvm_vcpu, ptr 1, array
        while canon._kind_id == _POINTER or canon._kind_id in _ARRAYS:
            if canon._kind_id == _POINTER:
                ptr += 1
                canon = a.canonical(a.pointee(canon))
            else:
                array = True
                canon = a.canonical(a.element(canon))
        record = ""
        if canon._kind_id == _RECORD:
            record = tree_located(capi.spelling(a.declaration(canon)), self.rel)
        return {"type": tree_located(a.type_spelling(ctype), self.rel), "record": record, "ptr": ptr, "array": array}

    def of_cursor(self, cursor: ci.Cursor) -> dict[str, Any]:
        return self.of(capi.api().cursor_type(cursor))


def strip(cursor: ci.Cursor) -> tuple[ci.Cursor, list[ci.Cursor] | None]:
    """Skip casts, parentheses and implicit conversions (an unexposed node
    with several children is a real expression, e.g. GNU `a ?: b`); returns
    the cursor reached and its children if they were read on the way."""
    kids = None
    while kind(cursor) in _TRANSPARENT:
        kids = children(cursor)
        if len(kids) != 1 and kind(cursor) == _UNEXPOSED:
            break
        if not kids or kind(kids[0]) == _COMPOUND:
            break
        cursor = kids[-1]
        kids = None
    return cursor, kids


def stripped(cursor: ci.Cursor) -> tuple[ci.Cursor, list[ci.Cursor]]:
    """strip(), and the children of the cursor reached."""
    cursor, kids = strip(cursor)
    return cursor, children(cursor) if kids is None else kids


class Nesting:
    """Counts how deep the conversion is; past MAX_DEPTH it records where
    it cut the tree, for the TU's diagnostics."""

    def __init__(self) -> None:
        self.depth = 0
        self.cut: list[tuple[str | None, int, int]] = []  # (file, line, column)

    def enter(self, cursor: ci.Cursor) -> bool:
        """Whether to convert this node; call leave() after a True."""
        if self.depth >= MAX_DEPTH:
            self.cut.append((capi.file_name(cursor), *capi.line_col(cursor)))
            return False
        self.depth += 1
        return True

    def leave(self) -> None:
        self.depth -= 1


class ExprBuilder:
    """Converts expression cursors; `block` turns GNU statement expressions
    into statements (set by the statement builder, which owns that job)."""

    def __init__(self, block: Any, types: TypeInfo, nesting: Nesting) -> None:
        self.block = block
        self.types = types
        self.nesting = nesting
        self._expr_kinds = expression_kinds()

    def build(self, cursor: ci.Cursor) -> Expr:
        if not self.nesting.enter(cursor):
            return {"k": "other", "what": TOO_DEEP}
        try:
            cursor, kids = strip(cursor)
            k = kind(cursor)
            if k in _LEAVES:  # no children needed: save the visit
                return _LEAVES[k](self, cursor)
            if kids is None:
                kids = children(cursor)
            handler = self._HANDLERS.get(k)
            if handler is not None:
                return handler(self, cursor, kids)
            return self._other(cursor, kids)
        finally:
            self.nesting.leave()

    def _other(self, cursor: ci.Cursor, kids: list[ci.Cursor]) -> Expr:
        k = kind(cursor)
        if k in (_UNEXPOSED, K.StmtExpr.value) and kids and kind(kids[0]) == _COMPOUND:
            return {"k": "block", "body": self.block(kids[0])}
        name = K.from_id(k).name.lower()
        if k == _SIZEOF and (value := evaluate_int(cursor)) is not None:  # `sizeof(x) == sizeof(long)`
            return {"k": "int", "v": value}  # in READ_ONCE() is a constant, not a choice
        if k in _OPAQUE:
            return {"k": "other", "what": name}
        return {"k": "other", "what": name, "sub": [self.build(ch) for ch in kids if kind(ch) in self._expr_kinds]}

    def _literal(self, cursor: ci.Cursor) -> Expr:
        return {"k": "int", "v": evaluate_int(cursor)}

    def _decl_ref(self, cursor: ci.Cursor) -> Expr:
        ref = capi.referenced(cursor)
        name = capi.spelling(cursor)
        if ref is None:
            return {"k": "var", "name": name, "scope": "global", **self.types.of_cursor(cursor)}
        ref_kind = kind(ref)
        if ref_kind == _ENUM_CONSTANT:
            return {"k": "enum", "name": name, "v": capi.enum_value(ref)}
        if ref_kind == _FUNCTION:
            return {"k": "func", "name": name}
        if ref_kind == _PARM:
            scope = "param"
        else:
            parent = capi.semantic_parent(ref)
            scope = "global" if parent is not None and kind(parent) == _TU else "local"
        return {"k": "var", "name": name, "scope": scope, **self.types.of_cursor(ref)}

    def _member(self, cursor: ci.Cursor, kids: list[ci.Cursor]) -> Expr:
        base = self.build(kids[0]) if kids else {"k": "other", "what": "implicit"}
        if base.get("k") == "member":
            base_record, base_ptr = base["type_record"], base["ptr"]
        elif base.get("record"):
            base_record, base_ptr = base["record"], base["ptr"]
        else:
            info = self.types.of_cursor(strip(kids[0])[0]) if kids else {"record": "", "ptr": 0}
            base_record, base_ptr = info["record"], info["ptr"]
        own = self.types.of_cursor(cursor)
        return {
            "k": "member",
            "base": base,
            "field": tree_located(capi.spelling(cursor), self.types.rel),  # an anonymous member is named by place
            "arrow": base_ptr > 0,
            "record": base_record,  # the struct that has the field
            "type": own["type"],
            "type_record": own["record"],  # the struct the field itself is, if any
            "ptr": own["ptr"],
        }

    def _call(self, cursor: ci.Cursor, kids: list[ci.Cursor]) -> Expr:
        ref = capi.referenced(cursor)
        callee = capi.spelling(ref) if ref is not None and kind(ref) == _FUNCTION else None
        via = None
        if callee is None and kids:
            via = self._indirect_via(kids[0])
        line, col = capi.line_col(cursor)
        return {
            "k": "call",
            "callee": callee,
            "via": via,
            "args": [self.build(arg) for arg in capi.arguments(cursor)],
            "line": line,
            "col": col,
        }

    def _indirect_via(self, callee_expr: ci.Cursor) -> dict[str, Any]:
        """How an indirect call finds its target: static call, ops member or table."""
        stack = [callee_expr]
        while stack:  # preorder, iterative: the callee expression may nest deeply
            node = stack.pop()
            if kind(node) == _DECL_REF:
                name = capi.spelling(node)
                if name.startswith(_STATIC_CALL_PREFIXES):
                    return {"kind": "static_call", "name": name[len("__SCT__"):]}
            stack.extend(reversed(children(node)))
        target, kids = stripped(callee_expr)
        if kind(target) == _UNARY and kids:  # (*fn)(args)
            target, kids = stripped(kids[0])
        if kind(target) == _MEMBER_REF:
            member = self._member(target, kids)
            return {"kind": "member", "record": member["record"], "field": member["field"]}
        if kind(target) == _SUBSCRIPT:
            array = strip(kids[0])[0]
            name = capi.spelling(array) if kind(array) in (_DECL_REF, _MEMBER_REF) else ""
            return {"kind": "array", "name": name}
        return {"kind": "pointer", "expr": self.build(target)}

    def _unary(self, cursor: ci.Cursor, kids: list[ci.Cursor]) -> Expr:
        op, post = unary_operator(cursor)
        atom = {"k": "unary", "op": op, "arg": self.build(kids[0])}
        return {**atom, "post": True} if post else atom

    def _binary(self, cursor: ci.Cursor, kids: list[ci.Cursor]) -> Expr:
        left, right = kids[:2]
        return {"k": "binary", "op": binary_operator(cursor), "l": self.build(left), "r": self.build(right)}

    def _conditional(self, cursor: ci.Cursor, kids: list[ci.Cursor]) -> Expr:
        parts = [self.build(ch) for ch in kids]
        if len(parts) == 2:  # GNU "a ?: b"
            parts.insert(1, parts[0])
        return {"k": "cond", "c": parts[0], "t": parts[1], "f": parts[2]}

    def _index(self, cursor: ci.Cursor, kids: list[ci.Cursor]) -> Expr:
        base, index = kids[:2]
        return {"k": "index", "base": self.build(base), "index": self.build(index)}

    _HANDLERS: ClassVar[dict[int, Any]] = {
        K.MEMBER_REF_EXPR.value: _member,
        K.CALL_EXPR.value: _call,
        K.UNARY_OPERATOR.value: _unary,
        K.BINARY_OPERATOR.value: _binary,
        K.COMPOUND_ASSIGNMENT_OPERATOR.value: _binary,
        K.CONDITIONAL_OPERATOR.value: _conditional,
        K.ARRAY_SUBSCRIPT_EXPR.value: _index,
    }


_LEAVES: dict[int, Any] = {
    K.INTEGER_LITERAL.value: ExprBuilder._literal,
    K.CHARACTER_LITERAL.value: ExprBuilder._literal,
    K.DECL_REF_EXPR.value: ExprBuilder._decl_ref,
}
_OPAQUE = frozenset({K.CXX_UNARY_EXPR.value, K.TYPE_REF.value, K.STRING_LITERAL.value})
_SIZEOF = K.CXX_UNARY_EXPR.value  # sizeof, alignof
_ENUM_CONSTANT = K.ENUM_CONSTANT_DECL.value
_FUNCTION = K.FUNCTION_DECL.value
_PARM = K.PARM_DECL.value
_TU = K.TRANSLATION_UNIT.value
_DECL_REF = K.DECL_REF_EXPR.value
_MEMBER_REF = K.MEMBER_REF_EXPR.value
_UNARY = K.UNARY_OPERATOR.value
_SUBSCRIPT = K.ARRAY_SUBSCRIPT_EXPR.value
