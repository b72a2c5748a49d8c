"""Thin, fast calls into libclang's C API.

The Python bindings wrap every result: each child visit asserts against the
null cursor (two C calls), each location builds a File object, each cursor
result is compared with the null cursor and tagged with its TU. Over a KVM
TU that overhead cost more than the parse itself. These helpers call the
same C functions through handles of their own (no result checking), read
kinds from the cursor struct, and return plain ints and strings.
"""

from __future__ import annotations

import ctypes
from ctypes import byref, c_uint, c_void_p
from functools import cache

import clang.cindex as ci

Cursor = ci.Cursor
Type = ci.Type

_NULL_CURSOR = 70  # CXCursor_InvalidFile: what clang_getNullCursor() returns


@cache
def _raw(name: str, argtypes: tuple, restype: object) -> ctypes._CFuncPtr:
    """A handle of our own on a libclang function: the bindings' handle may
    carry an errcheck, and attributes set on it would change it for them."""
    lib = ci.conf.lib
    fn = type(getattr(lib, name))((name, lib))
    fn.argtypes = list(argtypes)
    fn.restype = restype
    return fn


def _string(name: str, argtypes: tuple) -> ctypes._CFuncPtr:
    fn = _raw(name, argtypes, ci._CXString)
    fn.errcheck = ci._CXString.from_result
    return fn


class _Api:
    """The handles, made once libclang is loaded (on first use)."""

    def __init__(self) -> None:
        self.visit = _raw("clang_visitChildren", (Cursor, ci.callbacks["cursor_visit"], ctypes.py_object), c_uint)
        self.location = _raw("clang_getCursorLocation", (Cursor,), ci.SourceLocation)
        self.extent = _raw("clang_getCursorExtent", (Cursor,), ci.SourceRange)
        self.range_start = _raw("clang_getRangeStart", (ci.SourceRange,), ci.SourceLocation)
        self.range_end = _raw("clang_getRangeEnd", (ci.SourceRange,), ci.SourceLocation)
        self.expansion = _raw("clang_getInstantiationLocation",
                              (ci.SourceLocation, ctypes.POINTER(c_void_p), ctypes.POINTER(c_uint),
                               ctypes.POINTER(c_uint), ctypes.POINTER(c_uint)), None)
        self.file_name = _string("clang_getFileName", (c_void_p,))
        self.spelling = _string("clang_getCursorSpelling", (Cursor,))
        self.type_spelling = _string("clang_getTypeSpelling", (Type,))
        self.referenced = _raw("clang_getCursorReferenced", (Cursor,), Cursor)
        self.semantic_parent = _raw("clang_getCursorSemanticParent", (Cursor,), Cursor)
        self.cursor_type = _raw("clang_getCursorType", (Cursor,), Type)
        self.result_type = _raw("clang_getCursorResultType", (Cursor,), Type)
        self.canonical = _raw("clang_getCanonicalType", (Type,), Type)
        self.pointee = _raw("clang_getPointeeType", (Type,), Type)
        self.element = _raw("clang_getElementType", (Type,), Type)
        self.declaration = _raw("clang_getTypeDeclaration", (Type,), Cursor)
        self.num_args = _raw("clang_Cursor_getNumArguments", (Cursor,), ctypes.c_int)
        self.argument = _raw("clang_Cursor_getArgument", (Cursor, c_uint), Cursor)
        self.is_definition = _raw("clang_isCursorDefinition", (Cursor,), c_uint)
        self.is_anonymous = _raw("clang_Cursor_isAnonymous", (Cursor,), c_uint)
        self.storage_class = _raw("clang_Cursor_getStorageClass", (Cursor,), ctypes.c_int)
        self.initializer = _raw("clang_Cursor_getVarDeclInitializer", (Cursor,), Cursor)
        self.enum_value = _raw("clang_getEnumConstantDeclValue", (Cursor,), ctypes.c_longlong)
        self.enum_unsigned = _raw("clang_getEnumConstantDeclUnsignedValue", (Cursor,), ctypes.c_ulonglong)
        self.enum_int_type = _raw("clang_getEnumDeclIntegerType", (Cursor,), Type)


@cache
def api() -> _Api:
    return _Api()


_found: list[Cursor] = []


def _collect(child: Cursor, _parent: Cursor, _data: object) -> int:
    _found.append(child)
    return 1  # CXChildVisit_Continue


_VISITOR = ci.callbacks["cursor_visit"](_collect)


def children(cursor: Cursor) -> list[Cursor]:
    """The direct children, in order (what get_children() yields)."""
    global _found
    out = _found = []
    api().visit(cursor, _VISITOR, None)
    return out


def kind(cursor: Cursor) -> int:
    return cursor._kind_id


_line, _col, _offset = c_uint(), c_uint(), c_uint()
_file = c_void_p()


def _expand(location: ci.SourceLocation) -> tuple[int, int]:
    api().expansion(location, None, byref(_line), byref(_col), None)
    return _line.value, _col.value


def line(cursor: Cursor) -> int:
    return _expand(api().location(cursor))[0]


def line_col(cursor: Cursor) -> tuple[int, int]:
    return _expand(api().location(cursor))


def extent_lines(cursor: Cursor) -> tuple[int, int]:
    a = api()
    extent = a.extent(cursor)
    return _expand(a.range_start(extent))[0], _expand(a.range_end(extent))[0]


def _file_of(location: ci.SourceLocation) -> str | None:
    api().expansion(location, byref(_file), None, None, byref(_offset))
    return api().file_name(_file) if _file.value else None


def file_name(cursor: Cursor) -> str | None:
    """The file of the cursor's (expansion) location, None for builtins."""
    return _file_of(api().location(cursor))


def extent_start(cursor: Cursor) -> tuple[str | None, int]:
    """(file, byte offset) where the cursor's extent starts."""
    a = api()
    name = _file_of(a.range_start(a.extent(cursor)))
    return name, _offset.value


def spelling(cursor: Cursor) -> str:
    return api().spelling(cursor)


def _or_none(cursor: Cursor) -> Cursor | None:
    return None if cursor._kind_id == _NULL_CURSOR else cursor


def referenced(cursor: Cursor) -> Cursor | None:
    return _or_none(api().referenced(cursor))


def semantic_parent(cursor: Cursor) -> Cursor | None:
    return _or_none(api().semantic_parent(cursor))


def arguments(cursor: Cursor) -> list[Cursor]:
    a = api()
    return [a.argument(cursor, i) for i in range(max(a.num_args(cursor), 0))]


def initializer(cursor: Cursor) -> Cursor | None:
    """A variable's initialiser expression (libclang 17+)."""
    return _or_none(api().initializer(cursor))


def is_definition(cursor: Cursor) -> bool:
    return bool(api().is_definition(cursor))


def is_anonymous(cursor: Cursor) -> bool:
    return bool(api().is_anonymous(cursor))


def is_static(cursor: Cursor) -> bool:
    return api().storage_class(cursor) == ci.StorageClass.STATIC.value


_TK = ci.TypeKind
_UNSIGNED = frozenset(k.value for k in (_TK.CHAR_U, _TK.UCHAR, _TK.CHAR16, _TK.CHAR32, _TK.USHORT, _TK.UINT,
                                        _TK.ULONG, _TK.ULONGLONG, _TK.UINT128))


def enum_value(cursor: Cursor) -> int:
    """An enumerator's value, read as signed or unsigned by its enum's
    integer type (as the bindings' Cursor.enum_value does)."""
    a = api()
    underlying = a.cursor_type(cursor)
    if underlying._kind_id == _TK.ENUM.value:
        underlying = a.enum_int_type(a.declaration(underlying))
    read = a.enum_unsigned if underlying._kind_id in _UNSIGNED else a.enum_value
    return int(read(cursor))
