"""Operator spellings that the Python bindings of libclang 18 do not expose.

The C API has had `clang_getCursor{Binary,Unary}OperatorKind` since LLVM 17;
reading the operator from the C API (not from tokens) keeps it right inside
macro expansions, where token extents point at the macro definition.
"""

from __future__ import annotations

import ctypes
from functools import cache

import clang.cindex as ci


@cache
def _lib() -> ctypes.CDLL:
    lib = ci.conf.lib
    for name in ("clang_getCursorBinaryOperatorKind", "clang_getCursorUnaryOperatorKind"):
        fn = getattr(lib, name)
        fn.argtypes = [ci.Cursor]
        fn.restype = ctypes.c_int
    for name in ("clang_getBinaryOperatorKindSpelling", "clang_getUnaryOperatorKindSpelling"):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_int]
        fn.restype = ci._CXString
        fn.errcheck = ci._CXString.from_result
    return lib


@cache
def _binary_spelling(kind: int) -> str:
    return _lib().clang_getBinaryOperatorKindSpelling(kind)


@cache
def _unary_spelling(kind: int) -> str:
    return _lib().clang_getUnaryOperatorKindSpelling(kind)


def binary_operator(cursor: ci.Cursor) -> str:
    return _binary_spelling(_lib().clang_getCursorBinaryOperatorKind(cursor))


_POSTFIX = (1, 2)  # CXUnaryOperator_PostInc, CXUnaryOperator_PostDec


def unary_operator(cursor: ci.Cursor) -> tuple[str, bool]:
    """(spelling, whether it is postfix: x++ rather than ++x)."""
    kind = _lib().clang_getCursorUnaryOperatorKind(cursor)
    return _unary_spelling(kind), kind in _POSTFIX


def clang_version() -> str:
    lib = ci.conf.lib
    lib.clang_getClangVersion.argtypes = []
    lib.clang_getClangVersion.restype = ci._CXString
    lib.clang_getClangVersion.errcheck = ci._CXString.from_result
    return str(lib.clang_getClangVersion())
