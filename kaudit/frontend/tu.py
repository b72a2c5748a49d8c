"""One translation unit -> facts. The only place that runs libclang.

`extract_tu` returns a plain dict (JSON-serialisable, documented in
docs/facts.md). Everything downstream works on such dicts, so this step is
the one that is cached and run in parallel.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clang.cindex as ci

from kaudit.frontend import capi
from kaudit.frontend.capi import children, kind
from kaudit.frontend.exprs import (
    MAX_DEPTH,
    Nesting,
    TypeInfo,
    evaluate_int,
    expression_kinds,
    strip,
    stripped,
    tree_located,
)
from kaudit.frontend.failed import failed_tu
from kaudit.frontend.stmts import StmtBuilder
from kaudit.gctune import rare_collections
from kaudit.pch import Pch

K = ci.CursorKind
Facts = dict[str, Any]

_KEEP_GOING = 0x200  # CXTranslationUnit_KeepGoing: report errors, keep the AST
_SEVERITY = {2: "warning", 3: "error", 4: "fatal"}


class _Tree:
    """Maps clang file names to tree-relative paths (None: outside the tree)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root.resolve())
        self._cache: dict[str, str | None] = {}

    def rel(self, name: str) -> str | None:
        if name not in self._cache:
            full = os.path.realpath(name)
            inside = full.startswith(self.root + os.sep)
            self._cache[name] = os.path.relpath(full, self.root) if inside else None
        return self._cache[name]

    def dependency(self, name: str) -> str:
        """How the facts cache names an included file: by the path it was
        found under (tree-relative when that lies in the tree, symlinks not
        followed, so a tree whose header is a link elsewhere cannot lend its
        facts to a tree with the real header), else absolute."""
        path = os.path.abspath(name)
        return os.path.relpath(path, self.root) if path.startswith(self.root + os.sep) else path


def _names_in(value: Any) -> tuple[set[str], set[str], set[str]]:
    """(struct names, called or address-taken function names, enum names of
    types spelled `enum X`) anywhere in a fact subtree, in one iterative walk
    (it runs over every function)."""
    records: set[str] = set()
    callees: set[str] = set()
    enums: set[str] = set()
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is list:
            stack.extend(node)
            continue
        for key, v in node.items():
            if type(v) is dict or type(v) is list:
                stack.append(v)
            elif v and (key == "record" or key == "type_record"):
                records.add(v)
            elif v and (key == "callee" or (key == "name" and node.get("k") == "func")):
                callees.add(v)
            elif key == "type" and type(v) is str and v.startswith("enum "):
                enums.add(v[5:])
    return records, callees, enums


_FUNCTION, _VAR = K.FUNCTION_DECL.value, K.VAR_DECL.value
_RECORDS = frozenset({K.STRUCT_DECL.value, K.UNION_DECL.value})
_ENUM, _ENUMERATOR = K.ENUM_DECL.value, K.ENUM_CONSTANT_DECL.value
_TOP_LEVEL = frozenset({_FUNCTION, _VAR, _ENUM, *_RECORDS})
_COMPOUND, _FIELD, _INIT_LIST = K.COMPOUND_STMT.value, K.FIELD_DECL.value, K.INIT_LIST_EXPR.value


@dataclass
class _Decls:
    """What a TU's top-level declarations give, besides its own functions."""

    header_defs: dict[str, tuple[ci.Cursor, str]]  # function definitions in tree headers, by name
    structs: _Structs
    tables: list[Facts]
    enums: dict[str, ci.Cursor]  # named enum definitions, by name

    def copy(self) -> _Decls:
        return _Decls(dict(self.header_defs), self.structs.copy(), list(self.tables), dict(self.enums))


class _FromPch:
    """A PCH's own declarations and the facts made from them, once per PCH
    for this worker's life: a TU parsed against the PCH lists only its local
    declarations (the index excludes the PCH's), and the facts of what the
    PCH defines come from its AST, the same for every TU of its group."""

    def __init__(self, pch: Pch) -> None:
        self.tu = ci.TranslationUnit.from_ast_file(pch.path, ci.Index.create())
        self.decls: _Decls | None = None
        self.facts: dict[tuple[str, str, int, int, str], Facts] = {}


_FROM_PCH: dict[str, _FromPch] = {}


class _Extractor:
    def __init__(self, tu: ci.TranslationUnit, tree: _Tree, main_file: str, pch: Pch | None = None) -> None:
        self.tu = tu
        self.tree = tree
        self.main_file = main_file
        self.types = TypeInfo(tree.rel)
        self.nesting = Nesting()
        self.stmts = StmtBuilder(self.types, self.nesting)
        self._names: dict[int, tuple[set[str], set[str], set[str]]] = {}
        self._pch_files = pch.files if pch is not None else frozenset()
        if pch is not None and pch.path not in _FROM_PCH:
            _FROM_PCH[pch.path] = _FromPch(pch)
        self._pch = _FROM_PCH[pch.path] if pch is not None else None

    def _once(self, what: str, cursor: ci.Cursor, filename: str | None, build: Any) -> Facts:
        """build(), or its facts from an earlier TU when the entity lies in the PCH."""
        if filename not in self._pch_files:
            return build()
        # the name too: one macro expansion can define several (seqlock.h's SEQCOUNT_LOCKNAME)
        key = (what, filename, *capi.line_col(cursor), capi.spelling(cursor))
        shared = self._pch.facts if self._pch is not None else {}
        if key not in shared:
            shared[key] = build()
        return shared[key]

    def names(self, facts: Facts) -> tuple[set[str], set[str], set[str]]:
        """_names_in of one function's facts, computed once."""
        if id(facts) not in self._names:
            self._names[id(facts)] = _names_in(facts)
        return self._names[id(facts)]

    def function(self, cursor: ci.Cursor, filename: str) -> Facts:
        return self._once("function", cursor, filename, lambda: self._function(cursor, filename))

    def _function(self, cursor: ci.Cursor, filename: str) -> Facts:
        body = next((ch for ch in children(cursor) if kind(ch) == _COMPOUND), None)
        start, end = capi.extent_lines(cursor)
        params = [{"name": capi.spelling(p), **self.types.of_cursor(p)} for p in capi.arguments(cursor)]
        return {
            "name": capi.spelling(cursor),
            "file": self.tree.rel(filename),
            "line": start,
            "end_line": end,
            "static": capi.is_static(cursor),
            "returns": tree_located(capi.api().type_spelling(capi.api().result_type(cursor)), self.tree.rel),
            "params": params,
            "body": self.stmts.block(body) if body is not None else [],
        }

    def struct(self, cursor: ci.Cursor) -> Facts:
        return self._once("struct", cursor, capi.file_name(cursor), lambda: self._struct(cursor))

    def _struct(self, cursor: ci.Cursor) -> Facts:
        fields = [
            {"name": tree_located(capi.spelling(ch), self.tree.rel), **self.types.of_cursor(ch)}
            for ch in children(cursor)
            if kind(ch) == _FIELD
        ]
        return {
            "name": tree_located(capi.spelling(cursor), self.tree.rel),
            "file": self.tree.rel(capi.file_name(cursor)),
            "line": capi.line(cursor),
            "fields": fields,
        }

    def table(self, cursor: ci.Cursor) -> Facts | None:
        """A global initialised with function designators: ops table or handler array."""
        init = capi.initializer(cursor)  # the first INIT_LIST_EXPR child, if any, is the initialiser
        if init is None or kind(init) != _INIT_LIST:
            return None
        entries = []
        for position, item in enumerate(children(init)):
            key, value = self._designated(item, position)
            function = self._function_ref(value)
            if function is not None:
                entries.append({"key": key, "function": function, "line": capi.line(item)})
        if not entries:
            return None
        return {
            "name": capi.spelling(cursor),
            "file": self.tree.rel(capi.file_name(cursor)),
            "line": capi.line(cursor),
            "static": capi.is_static(cursor),
            **self.types.of_cursor(cursor),
            "entries": entries,
        }

    @staticmethod
    def _designated(item: ci.Cursor, position: int) -> tuple[str | int | None, ci.Cursor]:
        kids = children(item)
        if kind(item) == K.UNEXPOSED_EXPR.value and len(kids) == 2:
            designator, value = kids
            if kind(designator) == K.MEMBER_REF.value:
                return capi.spelling(designator), value
            if kind(designator) in expression_kinds():
                return evaluate_int(designator), value
        return position, item

    @staticmethod
    def _function_ref(value: ci.Cursor) -> str | None:
        target, kids = stripped(value)
        if kind(target) == K.UNARY_OPERATOR.value and kids:  # &fn
            target = strip(kids[0])[0]
        ref = capi.referenced(target) if kind(target) == K.DECL_REF_EXPR.value else None
        return capi.spelling(ref) if ref is not None and kind(ref) == _FUNCTION else None

    def run(self) -> Facts:
        if self._pch is None:
            decls = _Decls({}, _Structs(), [], {})
        else:  # the PCH's declarations come first, as they would in a plain parse
            if self._pch.decls is None:
                self._pch.decls = _Decls({}, _Structs(), [], {})
                self._scan(children(self._pch.tu.cursor), self._pch.decls)
                self._pch.decls.structs.scan_nested()  # once for the group, not per TU
            decls = self._pch.decls.copy()
        main_functions = self._scan(children(self.tu.cursor), decls)
        functions = main_functions + self._reachable_header_functions(main_functions, decls.tables,
                                                                      decls.header_defs)
        return {
            "functions": functions,
            "structs": self._used_structs(functions, decls.structs),
            "tables": decls.tables,
            "enums": self._used_enums(functions, decls.enums),
        }

    def _scan(self, cursors: list[ci.Cursor], decls: _Decls) -> list[Facts]:
        """The main file's functions among top-level cursors; the rest into decls."""
        main_functions = []
        for cursor in cursors:
            k = kind(cursor)
            if k not in _TOP_LEVEL:  # typedefs, enums, prototypes of no interest: no C calls for them
                continue
            filename = capi.file_name(cursor)
            if filename is None or self.tree.rel(filename) is None:
                continue
            if k == _FUNCTION and capi.is_definition(cursor):
                if filename == self.main_file:
                    main_functions.append(self.function(cursor, filename))
                else:
                    decls.header_defs.setdefault(capi.spelling(cursor), (cursor, filename))
            elif k in _RECORDS and capi.is_definition(cursor):
                decls.structs.add(cursor)
            elif k == _ENUM and capi.is_definition(cursor) and not capi.is_anonymous(cursor):
                decls.enums.setdefault(capi.spelling(cursor), cursor)
            elif k == _VAR:
                table = self.table(cursor)
                if table is not None:
                    decls.tables.append(table)
        return main_functions

    def _reachable_header_functions(
        self, roots: list[Facts], tables: list[Facts], header_defs: dict[str, tuple[ci.Cursor, str]]
    ) -> list[Facts]:
        """Header inline functions called (transitively) from this file's code
        or bound in its tables: recording every inline function of every
        header would dominate the cost."""
        found: list[Facts] = []
        bound = {entry["function"] for table in tables for entry in table["entries"]}
        pending = sorted(set().union(*(self.names(f)[1] for f in roots)) | bound)
        seen = set(pending)
        while pending:
            name = pending.pop()
            if name not in header_defs:
                continue
            facts = self.function(*header_defs[name])
            found.append(facts)
            for callee in sorted(self.names(facts)[1] - seen):
                seen.add(callee)
                pending.append(callee)
        return sorted(found, key=lambda f: (f["file"], f["line"]))

    def _used_structs(self, functions: list[Facts], structs: _Structs) -> list[Facts]:
        """Structs named by the recorded code, closed over their fields' types."""
        pending = sorted(set().union(*(self.names(f)[0] for f in functions)))
        done: dict[str, Facts] = {}
        while pending:
            name = pending.pop()
            if name in done:
                continue
            cursor = structs.get(name)
            if cursor is None:
                continue
            done[name] = self.struct(cursor)
            pending.extend(f["record"] for f in done[name]["fields"] if f["record"])
        return [done[name] for name in sorted(done)]


    def _used_enums(self, functions: list[Facts], enums: dict[str, ci.Cursor]) -> list[Facts]:
        """The enums whose type the recorded code spells `enum X`, with every enumerator's value: what a
        value of that type can be."""
        used = set().union(*(self.names(f)[2] for f in functions)) & enums.keys()
        return [self._once("enum", enums[name], capi.file_name(enums[name]), lambda cursor=enums[name]: {
            "name": capi.spelling(cursor),
            "values": sorted({capi.enum_value(ch) for ch in children(cursor) if kind(ch) == _ENUMERATOR})})
            for name in sorted(used)]


class _Structs:
    """Struct and union definitions by name: the TU's top-level ones, and
    (looked for only when a name is not among those) the ones nested in
    them, `struct a { struct b {...} b; }`. Visiting every struct of every
    header up front cost more than the lookups."""

    def __init__(self) -> None:
        self._top: dict[str, ci.Cursor] = {}
        self._roots: list[ci.Cursor] = []
        self._nested: dict[str, ci.Cursor] = {}
        self._scanned = 0  # roots whose nested definitions are in _nested

    def copy(self) -> _Structs:
        other = _Structs()
        other._top, other._roots, other._nested = dict(self._top), list(self._roots), dict(self._nested)
        other._scanned = self._scanned
        return other

    def add(self, cursor: ci.Cursor) -> None:
        self._roots.append(cursor)
        name = capi.spelling(cursor)
        if name and not capi.is_anonymous(cursor):
            self._top.setdefault(name, cursor)

    def get(self, name: str) -> ci.Cursor | None:
        if name in self._top:
            return self._top[name]
        self.scan_nested()
        return self._nested.get(name)

    def scan_nested(self) -> None:
        stack = list(reversed(self._roots[self._scanned:]))
        self._scanned = len(self._roots)
        while stack:  # iterative: nesting depth is the input's choice
            cursor = stack.pop()
            inner = [ch for ch in children(cursor) if kind(ch) in _RECORDS and capi.is_definition(ch)]
            for child in inner:
                spelled = capi.spelling(child)
                if spelled and not capi.is_anonymous(child):
                    self._nested.setdefault(spelled, child)
            stack.extend(reversed(inner))


def _diagnostics(tu: ci.TranslationUnit, tree: _Tree) -> tuple[list[Facts], int]:
    found, warnings = [], 0
    for diag in tu.diagnostics:
        severity = _SEVERITY.get(diag.severity)
        if severity == "warning":
            warnings += 1
        elif severity is not None:
            loc = diag.location
            filename = loc.file.name if loc.file is not None else ""
            found.append(
                {
                    "severity": severity,
                    "file": tree.rel(filename) or filename,
                    "line": loc.line,
                    "column": loc.column,
                    "message": diag.spelling,
                }
            )
    return found, warnings


def _too_deep(nesting: Nesting, tree: _Tree) -> list[Facts]:
    """Where the facts were cut at MAX_DEPTH: an error, so the TU counts as
    not fully read (and is not cached)."""
    first = {}
    for name, line, col in nesting.cut:  # one per line: a cut tree is often cut on several branches
        first.setdefault((name, line), col)
    return [{"severity": "error", "file": tree.rel(name or "") or name or "", "line": line, "column": col,
             "message": f"kaudit: code nested deeper than {MAX_DEPTH} levels; the subtree is not analysed"}
            for (name, line), col in first.items()]


@dataclass
class Parsed:
    """One TU read: its facts, every #include clang resolved (for the
    cache's manifest), and where the time went."""

    facts: Facts
    inclusions: list[tuple[str, int, str]]  # (including file, line, file found)
    parse_seconds: float = 0.0
    walk_seconds: float = 0.0
    used_pch: bool = False


def parse_tu(path: Path, args: list[str], root: Path, pch: Pch | None = None) -> Parsed:
    """Parse one C file, against a PCH if given (a plain parse whenever that
    one reports an error: the PCH never changes what counts as one)."""
    tree = _Tree(root)
    main_file = str(path)
    start = time.perf_counter()
    flags = pch.tu_args(tuple(args)) if pch is not None else args
    try:
        # --no-default-config: no clang config file may add flags (one can be named via --target)
        # excludeDecls: the TU's top level lists its own declarations, not the PCH's (_FromPch has those)
        tu = ci.Index.create(excludeDecls=True).parse(main_file, args=["--no-default-config", *flags],
                                                      options=_KEEP_GOING)
    except ci.TranslationUnitLoadError as err:
        if pch is not None:
            return parse_tu(path, args, root)
        return Parsed(failed_tu(tree.rel(main_file), f"kaudit: libclang could not parse this file: {err}"), [])
    parsed = time.perf_counter()
    diagnostics, warnings = _diagnostics(tu, tree)
    if pch is not None and diagnostics:
        return parse_tu(path, args, root)
    extractor = _Extractor(tu, tree, tu.spelling, pch)
    with rare_collections():
        facts = extractor.run()
    diagnostics += _too_deep(extractor.nesting, tree)
    inclusions = [(inc.source.name if inc.source else "", inc.location.line, inc.include.name)
                  for inc in tu.get_includes()]
    if pch is not None:
        inclusions = [*pch.inclusions, *inclusions]
        warnings += pch.warnings
    facts = {
        "file": tree.rel(main_file),
        "diagnostics": diagnostics,
        "warnings": warnings,
        "includes": sorted({tree.dependency(found) for _, _, found in inclusions}),
        **facts,
    }
    return Parsed(facts, inclusions, parsed - start, time.perf_counter() - parsed, pch is not None)


_PCH_OPTIONS = 0x02 | 0x10  # CXTranslationUnit_Incomplete | CXTranslationUnit_ForSerialization


def build_pch(header: Path, flags: list[str], output: Path) -> Pch | None:
    """A PCH of the header (a group's shared directives) at output; None if
    clang reports any error building it (its group then parses plainly)."""
    try:
        tu = ci.Index.create().parse(str(header), args=["--no-default-config", "-x", "c-header", *flags],
                                     options=_PCH_OPTIONS)
    except ci.TranslationUnitLoadError:
        return None
    if any(d.severity >= 3 for d in tu.diagnostics):
        return None
    try:
        tu.save(str(output))
    except ci.TranslationUnitSaveError:
        return None
    inclusions = tuple((inc.source.name if inc.source else "", inc.location.line, inc.include.name)
                       for inc in tu.get_includes())
    warnings = sum(1 for d in tu.diagnostics if d.severity == 2)
    return Pch(str(output), frozenset(found for _, _, found in inclusions), inclusions, warnings)


def extract_tu(path: Path, args: list[str], root: Path) -> Facts:
    """Parse one C file and return its facts; parse errors never raise."""
    return parse_tu(path, args, root).facts
