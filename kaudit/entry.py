"""The console script's entry point, kept apart from kaudit.cli so that a
Ctrl-C while kaudit's modules are still loading exits 130 with one line,
not a traceback."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import NoReturn

GRACE = 10.0  # seconds a Ctrl-C may take to unwind before the run is ended outright

_watchdog: threading.Timer | None = None


def _say_interrupted() -> None:
    sys.stderr.write("kaudit: interrupted\n")
    sys.stderr.flush()


def _end_now() -> None:
    _say_interrupted()
    os._exit(130)


def _on_interrupt(signum: int, frame: object) -> None:
    """Raise KeyboardInterrupt, as Python's own handler does. Python swallows
    an exception raised while a finalizer runs ("Exception ignored in ..."),
    so a watchdog ends the run if the interrupt has not done so in GRACE."""
    global _watchdog
    if _watchdog is None:
        _watchdog = threading.Timer(GRACE, _end_now)
        _watchdog.daemon = True
        _watchdog.start()
    raise KeyboardInterrupt


def interrupted() -> NoReturn:
    global _watchdog
    if _watchdog is not None:
        _watchdog.cancel()
        _watchdog = None  # handled
    _say_interrupted()
    sys.exit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _on_interrupt)
    try:
        from kaudit.cli import main as cli

        cli()
    except KeyboardInterrupt:
        interrupted()
    except SystemExit:
        if _watchdog is not None:  # the run went on after an interrupt a finalizer swallowed
            interrupted()
        raise
