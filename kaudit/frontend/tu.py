"""One translation unit -> facts. The only place that runs libclang.

`extract_tu` returns a plain dict (JSON-serialisable, documented in
docs/facts.md). Everything downstream works on such dicts, so this step is
the one that is cached and run in parallel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import clang.cindex as ci

from kaudit.frontend.exprs import evaluate_int, strip, type_info
from kaudit.frontend.stmts import StmtBuilder

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


def _file_of(cursor: ci.Cursor) -> str | None:
    loc = cursor.location
    return loc.file.name if loc.file is not None else None


def _names_in(value: Any) -> tuple[set[str], set[str]]:
    """(struct names, called or address-taken function names) anywhere in a
    fact subtree, in one iterative walk (this runs over every function)."""
    records: set[str] = set()
    callees: set[str] = set()
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key in ("record", "type_record"):
            if node.get(key):
                records.add(node[key])
        if node.get("k") in ("call", "func") and (node.get("callee") or node.get("name")):
            callees.add(node.get("callee") or node["name"])
        stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    return records, callees


def _collect_structs(cursor: ci.Cursor, structs: dict[str, ci.Cursor]) -> None:
    """A struct definition and those nested in it (`struct a { struct b {...} b; }`)."""
    if cursor.spelling and not cursor.is_anonymous():
        structs.setdefault(cursor.spelling, cursor)
    for child in cursor.get_children():
        if child.kind in (K.STRUCT_DECL, K.UNION_DECL) and child.is_definition():
            _collect_structs(child, structs)


class _Extractor:
    def __init__(self, tu: ci.TranslationUnit, tree: _Tree, main_file: str) -> None:
        self.tu = tu
        self.tree = tree
        self.main_file = main_file
        self._builders: dict[str, StmtBuilder] = {}

    def _builder(self, filename: str) -> StmtBuilder:
        if filename not in self._builders:
            self._builders[filename] = StmtBuilder(Path(filename).read_bytes())
        return self._builders[filename]

    def function(self, cursor: ci.Cursor, filename: str) -> Facts:
        body = next((ch for ch in cursor.get_children() if ch.kind == K.COMPOUND_STMT), None)
        return {
            "name": cursor.spelling,
            "file": self.tree.rel(filename),
            "line": cursor.extent.start.line,
            "end_line": cursor.extent.end.line,
            "static": cursor.storage_class == ci.StorageClass.STATIC,
            "returns": cursor.result_type.spelling,
            "params": [{"name": p.spelling, **type_info(p.type)} for p in cursor.get_arguments()],
            "body": self._builder(filename).block(body) if body is not None else [],
        }

    def struct(self, cursor: ci.Cursor) -> Facts:
        fields = [
            {"name": ch.spelling, **type_info(ch.type)}
            for ch in cursor.get_children()
            if ch.kind == K.FIELD_DECL
        ]
        return {
            "name": cursor.spelling,
            "file": self.tree.rel(_file_of(cursor)),
            "line": cursor.location.line,
            "fields": fields,
        }

    def table(self, cursor: ci.Cursor) -> Facts | None:
        """A global initialised with function designators: ops table or handler array."""
        init = next((ch for ch in cursor.get_children() if ch.kind == K.INIT_LIST_EXPR), None)
        if init is None:
            return None
        entries = []
        for position, item in enumerate(init.get_children()):
            key, value = self._designated(item, position)
            function = self._function_ref(value)
            if function is not None:
                entries.append({"key": key, "function": function, "line": item.location.line})
        if not entries:
            return None
        return {
            "name": cursor.spelling,
            "file": self.tree.rel(_file_of(cursor)),
            "line": cursor.location.line,
            "static": cursor.storage_class == ci.StorageClass.STATIC,
            **type_info(cursor.type),
            "entries": entries,
        }

    @staticmethod
    def _designated(item: ci.Cursor, position: int) -> tuple[str | int | None, ci.Cursor]:
        children = list(item.get_children())
        if item.kind == K.UNEXPOSED_EXPR and len(children) == 2:
            designator, value = children
            if designator.kind == K.MEMBER_REF:
                return designator.spelling, value
            if designator.kind.is_expression():
                return evaluate_int(designator), value
        return position, item

    @staticmethod
    def _function_ref(value: ci.Cursor) -> str | None:
        target = strip(value)
        if target.kind == K.UNARY_OPERATOR:  # &fn
            target = strip(next(iter(target.get_children()), target))
        ref = target.referenced if target.kind == K.DECL_REF_EXPR else None
        return ref.spelling if ref is not None and ref.kind == K.FUNCTION_DECL else None

    def run(self) -> Facts:
        main_functions: list[Facts] = []
        header_defs: dict[str, tuple[ci.Cursor, str]] = {}
        structs: dict[str, ci.Cursor] = {}
        tables: list[Facts] = []
        for cursor in self.tu.cursor.get_children():
            filename = _file_of(cursor)
            if filename is None or self.tree.rel(filename) is None:
                continue
            kind = cursor.kind
            if kind == K.FUNCTION_DECL and cursor.is_definition():
                if filename == self.main_file:
                    main_functions.append(self.function(cursor, filename))
                else:
                    header_defs.setdefault(cursor.spelling, (cursor, filename))
            elif kind in (K.STRUCT_DECL, K.UNION_DECL) and cursor.is_definition():
                _collect_structs(cursor, structs)
            elif kind == K.VAR_DECL:
                table = self.table(cursor)
                if table is not None:
                    tables.append(table)
        functions = main_functions + self._reachable_header_functions(main_functions, tables, header_defs)
        return {
            "functions": functions,
            "structs": self._used_structs(functions, structs),
            "tables": tables,
        }

    def _reachable_header_functions(
        self, roots: list[Facts], tables: list[Facts], header_defs: dict[str, tuple[ci.Cursor, str]]
    ) -> list[Facts]:
        """Header inline functions called (transitively) from this file's code
        or bound in its tables: recording every inline function of every
        header would dominate the cost."""
        found: list[Facts] = []
        bound = {entry["function"] for table in tables for entry in table["entries"]}
        pending = sorted(_names_in(roots)[1] | bound)
        seen = set(pending)
        while pending:
            name = pending.pop()
            if name not in header_defs:
                continue
            facts = self.function(*header_defs[name])
            found.append(facts)
            for callee in sorted(_names_in(facts["body"])[1] - seen):
                seen.add(callee)
                pending.append(callee)
        return sorted(found, key=lambda f: (f["file"], f["line"]))

    def _used_structs(self, functions: list[Facts], structs: dict[str, ci.Cursor]) -> list[Facts]:
        """Structs named by the recorded code, closed over their fields' types."""
        pending = sorted(_names_in(functions)[0])
        done: dict[str, Facts] = {}
        while pending:
            name = pending.pop()
            if name in done or name not in structs:
                continue
            done[name] = self.struct(structs[name])
            pending.extend(f["record"] for f in done[name]["fields"] if f["record"])
        return [done[name] for name in sorted(done)]


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


def extract_tu(path: Path, args: list[str], root: Path) -> Facts:
    """Parse one C file and return its facts; parse errors never raise."""
    tree = _Tree(root)
    main_file = str(path)
    try:
        # --no-default-config: no clang config file may add flags (one can be named via --target)
        tu = ci.Index.create().parse(main_file, args=["--no-default-config", *args], options=_KEEP_GOING)
    except ci.TranslationUnitLoadError as err:
        return {
            "file": tree.rel(main_file),
            "diagnostics": [
                {"severity": "fatal", "file": tree.rel(main_file), "line": 0, "column": 0, "message": str(err)}
            ],
            "warnings": 0,
            "includes": [],
            "functions": [],
            "structs": [],
            "tables": [],
        }
    diagnostics, warnings = _diagnostics(tu, tree)
    facts = _Extractor(tu, tree, tu.spelling).run()
    includes = sorted({tree.dependency(inc.include.name) for inc in tu.get_includes()})
    return {
        "file": tree.rel(main_file),
        "diagnostics": diagnostics,
        "warnings": warnings,
        "includes": includes,
        **facts,
    }
