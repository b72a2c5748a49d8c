"""libclang expressions and types -> plain JSON-able atoms.

Expression atoms are dicts keyed by "k" (documented in docs/facts.md).
Casts, parentheses and implicit conversions are dropped: the analysis asks
what is read, written and called, never how a value is converted.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any, ClassVar

import clang.cindex as ci

from kaudit.frontend.clang_ops import binary_operator, unary_operator

K = ci.CursorKind
Expr = dict[str, Any]

_TRANSPARENT = {K.UNEXPOSED_EXPR, K.PAREN_EXPR, K.CSTYLE_CAST_EXPR}
_STATIC_CALL_PREFIXES = ("__SCT__", "__SCK__")


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


def type_info(ctype: ci.Type) -> dict[str, Any]:
    """Spelling, pointer depth and the struct/union it designates (if any)."""
    canon = ctype.get_canonical()
    ptr = 0
    array = False  # `struct kvm_vcpu *vcpus[N]`: record kvm_vcpu, ptr 1, array
    while canon.kind in (ci.TypeKind.POINTER, ci.TypeKind.CONSTANTARRAY, ci.TypeKind.INCOMPLETEARRAY):
        if canon.kind == ci.TypeKind.POINTER:
            ptr += 1
            canon = canon.get_pointee().get_canonical()
        else:
            array = True
            canon = canon.element_type.get_canonical()
    record = ""
    if canon.kind == ci.TypeKind.RECORD:
        record = canon.get_declaration().spelling
    return {"type": ctype.spelling, "record": record, "ptr": ptr, "array": array}


def strip(cursor: ci.Cursor) -> ci.Cursor:
    """Skip casts, parentheses and implicit conversions (an unexposed node
    with several children is a real expression, e.g. GNU `a ?: b`)."""
    while cursor.kind in _TRANSPARENT:
        children = list(cursor.get_children())
        if len(children) != 1 and cursor.kind == K.UNEXPOSED_EXPR:
            return cursor
        if not children or children[0].kind == K.COMPOUND_STMT:
            return cursor
        cursor = children[-1]
    return cursor


def _location(cursor: ci.Cursor) -> dict[str, int]:
    return {"line": cursor.location.line, "col": cursor.location.column}


class ExprBuilder:
    """Converts expression cursors; `block` turns GNU statement expressions
    into statements (set by the statement builder, which owns that job)."""

    def __init__(self, block: Any) -> None:
        self.block = block

    def build(self, cursor: ci.Cursor) -> Expr:
        cursor = strip(cursor)
        kind = cursor.kind
        handler = self._HANDLERS.get(kind)
        if handler is not None:
            return handler(self, cursor)
        children = list(cursor.get_children())
        if kind in (K.UNEXPOSED_EXPR, K.StmtExpr) and children and children[0].kind == K.COMPOUND_STMT:
            return {"k": "block", "body": self.block(children[0])}
        if kind in (K.CXX_UNARY_EXPR, K.TYPE_REF, K.STRING_LITERAL):
            return {"k": "other", "what": kind.name.lower()}
        return {
            "k": "other",
            "what": kind.name.lower(),
            "sub": [self.build(ch) for ch in cursor.get_children() if ch.kind.is_expression()],
        }

    def _literal(self, cursor: ci.Cursor) -> Expr:
        return {"k": "int", "v": evaluate_int(cursor)}

    def _decl_ref(self, cursor: ci.Cursor) -> Expr:
        ref = cursor.referenced
        name = cursor.spelling
        if ref is None:
            return {"k": "var", "name": name, "scope": "global", **type_info(cursor.type)}
        if ref.kind == K.ENUM_CONSTANT_DECL:
            return {"k": "enum", "name": name, "v": ref.enum_value}
        if ref.kind == K.FUNCTION_DECL:
            return {"k": "func", "name": name}
        if ref.kind == K.PARM_DECL:
            scope = "param"
        elif ref.semantic_parent is not None and ref.semantic_parent.kind == K.TRANSLATION_UNIT:
            scope = "global"
        else:
            scope = "local"
        return {"k": "var", "name": name, "scope": scope, **type_info(ref.type)}

    def _member(self, cursor: ci.Cursor) -> Expr:
        children = list(cursor.get_children())
        base = self.build(children[0]) if children else {"k": "other", "what": "implicit"}
        if base.get("k") == "member":
            base_record, base_ptr = base["type_record"], base["ptr"]
        elif base.get("record"):
            base_record, base_ptr = base["record"], base["ptr"]
        else:
            info = type_info(strip(children[0]).type) if children else {"record": "", "ptr": 0}
            base_record, base_ptr = info["record"], info["ptr"]
        own = type_info(cursor.type)
        return {
            "k": "member",
            "base": base,
            "field": cursor.spelling,
            "arrow": base_ptr > 0,
            "record": base_record,  # the struct that has the field
            "type": own["type"],
            "type_record": own["record"],  # the struct the field itself is, if any
            "ptr": own["ptr"],
        }

    def _call(self, cursor: ci.Cursor) -> Expr:
        ref = cursor.referenced
        callee = ref.spelling if ref is not None and ref.kind == K.FUNCTION_DECL else None
        children = list(cursor.get_children())
        via = None
        if callee is None and children:
            via = self._indirect_via(children[0])
        return {
            "k": "call",
            "callee": callee,
            "via": via,
            "args": [self.build(arg) for arg in cursor.get_arguments()],
            **_location(cursor),
        }

    def _indirect_via(self, callee_expr: ci.Cursor) -> dict[str, Any]:
        """How an indirect call finds its target: static call, ops member or table."""
        for node in callee_expr.walk_preorder():
            if node.kind == K.DECL_REF_EXPR and node.spelling.startswith(_STATIC_CALL_PREFIXES):
                return {"kind": "static_call", "name": node.spelling[len("__SCT__"):]}
        target = strip(callee_expr)
        if target.kind == K.UNARY_OPERATOR:  # (*fn)(args)
            target = strip(next(iter(target.get_children())))
        if target.kind == K.MEMBER_REF_EXPR:
            member = self._member(target)
            return {"kind": "member", "record": member["record"], "field": member["field"]}
        if target.kind == K.ARRAY_SUBSCRIPT_EXPR:
            array = strip(next(iter(target.get_children())))
            name = array.spelling if array.kind in (K.DECL_REF_EXPR, K.MEMBER_REF_EXPR) else ""
            return {"kind": "array", "name": name}
        return {"kind": "pointer", "expr": self.build(target)}

    def _unary(self, cursor: ci.Cursor) -> Expr:
        children = list(cursor.get_children())
        op, post = unary_operator(cursor)
        atom = {"k": "unary", "op": op, "arg": self.build(children[0])}
        return {**atom, "post": True} if post else atom

    def _binary(self, cursor: ci.Cursor) -> Expr:
        left, right = list(cursor.get_children())[:2]
        return {"k": "binary", "op": binary_operator(cursor), "l": self.build(left), "r": self.build(right)}

    def _conditional(self, cursor: ci.Cursor) -> Expr:
        parts = [self.build(ch) for ch in cursor.get_children()]
        if len(parts) == 2:  # GNU "a ?: b"
            parts.insert(1, parts[0])
        return {"k": "cond", "c": parts[0], "t": parts[1], "f": parts[2]}

    def _index(self, cursor: ci.Cursor) -> Expr:
        base, index = list(cursor.get_children())[:2]
        return {"k": "index", "base": self.build(base), "index": self.build(index)}

    _HANDLERS: ClassVar[dict[ci.CursorKind, Any]] = {
        K.INTEGER_LITERAL: _literal,
        K.CHARACTER_LITERAL: _literal,
        K.DECL_REF_EXPR: _decl_ref,
        K.MEMBER_REF_EXPR: _member,
        K.CALL_EXPR: _call,
        K.UNARY_OPERATOR: _unary,
        K.BINARY_OPERATOR: _binary,
        K.COMPOUND_ASSIGNMENT_OPERATOR: _binary,
        K.CONDITIONAL_OPERATOR: _conditional,
        K.ARRAY_SUBSCRIPT_EXPR: _index,
    }
