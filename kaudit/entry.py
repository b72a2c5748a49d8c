"""The console script's entry point, kept apart from kaudit.cli so that a
Ctrl-C while kaudit's modules are still loading exits 130 with one line,
not a traceback."""

from __future__ import annotations

import sys
from typing import NoReturn


def interrupted() -> NoReturn:
    sys.stderr.write("kaudit: interrupted\n")
    sys.exit(130)


def main() -> None:
    try:
        from kaudit.cli import main as cli

        cli()
    except KeyboardInterrupt:
        interrupted()
