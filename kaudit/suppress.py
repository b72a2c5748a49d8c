"""Accepted findings: a baseline file and inline `kaudit: ignore[RULE]` comments.

A suppressed finding stays in the report, marked with what suppressed it,
and is counted apart; only the others decide the exit status. A baseline
(Smatch's known-bugs list, in spirit) matches findings by their stable id,
so it survives edits that move code. An inline comment sits in the C
source on the finding's line, or alone on the line above:

    /* kaudit: ignore[KVM001] the bit is recomputed on the next exit */
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaudit.errors import UsageError
from kaudit.reading import read_text_input, tree_text

BASELINE_VERSION = 1
_IGNORE = re.compile(r"(?:/\*|//)\s*kaudit:\s*ignore\[([A-Za-z0-9_, ]+)\]\s*(.*?)\s*(?:\*/|$)")
_COMMENT_ONLY = re.compile(r"^\s*(?:/\*.*\*/|//.*)\s*$")


@dataclass(frozen=True)
class Baseline:
    path: str
    ids: frozenset[str]

    @classmethod
    def load(cls, path: Path) -> Baseline:
        try:
            data = json.loads(read_text_input(path, "baseline"))
        except (ValueError, RecursionError) as err:
            raise UsageError(f"{path}: cannot read baseline: {str(err)[:200]}") from err
        entries = data.get("findings") if isinstance(data, dict) else None
        if (not isinstance(entries, list) or data.get("kaudit_baseline") != BASELINE_VERSION
                or not all(isinstance(e, dict) and isinstance(e.get("id"), str) for e in entries)):
            raise UsageError(f"{path}: not a kaudit baseline (kaudit audit --write-baseline FILE writes one)")
        return cls(str(path), frozenset(e["id"] for e in entries))


def baseline_text(findings: list[dict[str, Any]]) -> str:
    """The baseline accepting these findings: their ids, with enough for a person to read it by."""
    entries = [{"id": f["id"], "rule": f["rule"], "key": f["key"], "file": f["location"]["file"],
                "message": f["message"]} for f in findings]
    return json.dumps({"kaudit_baseline": BASELINE_VERSION, "findings": entries}, indent=2, sort_keys=True) + "\n"


class _Sources:
    """Lines of the tree's files, each read once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, list[str]] = {}

    def line(self, rel: str, number: int) -> str:
        if rel not in self.files:
            self.files[rel] = (tree_text(self.root / rel) or "").splitlines()
        lines = self.files[rel]
        return lines[number - 1] if 0 < number <= len(lines) else ""


def _inline(sources: _Sources, finding: dict[str, Any]) -> dict[str, Any] | None:
    loc = finding["location"]
    above = sources.line(loc["file"], loc["line"] - 1)
    candidates = [(loc["line"], sources.line(loc["file"], loc["line"]))]
    if _COMMENT_ONLY.match(above):
        candidates.append((loc["line"] - 1, above))
    for number, text in candidates:
        for match in _IGNORE.finditer(text):
            if finding["rule"] in {r.strip() for r in match.group(1).split(",")}:
                return {"by": "inline", "reason": match.group(2), "where": f"{loc['file']}:{number}"}
    return None


def mark_suppressed(findings: list[dict[str, Any]], root: Path, baseline: Baseline | None) -> None:
    """Mark each finding an inline comment in root's sources, or the baseline, accepts."""
    sources = _Sources(root)
    for finding in findings:
        mark = _inline(sources, finding)
        if mark is None and baseline is not None and finding["id"] in baseline.ids:
            mark = {"by": "baseline", "reason": "", "where": baseline.path}
        if mark is not None:
            finding["suppressed"] = mark
