"""Colour for kernel-style text on a terminal, as gcc colours its diagnostics.

`--color auto` (the default) colours only when writing to a terminal and
NO_COLOR (https://no-color.org) is unset; `always` and `never` decide alone.
"""

from __future__ import annotations

import os
import re

import click

_STYLE = {"error": "red", "parse error": "red", "parse fatal": "red", "warning": "magenta", "note": "cyan",
          "info": "cyan"}
_DIAGNOSTIC = re.compile(r"^(\S+?:\d+(?::\d+)?:) (error|parse error|parse fatal|warning|note|info):", re.MULTILINE)


def wanted(choice: str, to_terminal: bool) -> bool:
    if choice == "auto":
        return to_terminal and "NO_COLOR" not in os.environ
    return choice == "always"


def colorize(text: str) -> str:
    """Bold locations and coloured severities on each diagnostic line."""
    def paint(match: re.Match[str]) -> str:
        where, severity = match.groups()
        return f"{click.style(where, bold=True)} {click.style(severity, fg=_STYLE[severity], bold=True)}:"
    return _DIAGNOSTIC.sub(paint, text)
