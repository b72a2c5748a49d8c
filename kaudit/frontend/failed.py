"""The facts of a TU that could not be read (no clang needed to make them).

A TU whose parse failed outright (libclang refused it, its worker crashed or
ran out of time or memory, a header it would read is not a regular file) is
still a TU: it is counted and named as a parse error, never skipped.
"""

from __future__ import annotations

from typing import Any


def failed_tu(file: str | None, message: str) -> dict[str, Any]:
    return {
        "file": file,
        "diagnostics": [{"severity": "fatal", "file": file, "line": 0, "column": 0, "message": message}],
        "warnings": 0,
        "includes": [],
        "functions": [],
        "structs": [],
        "tables": [],
        "enums": [],
    }
