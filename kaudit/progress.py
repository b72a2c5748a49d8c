"""The progress line of a long parse: files done/total and the last file.

Shown on a terminal only (stderr a TTY) and never with --quiet: a log or a
pipe gets nothing. tqdm draws it (one line, redrawn in place, gone at the end).
"""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: tqdm | None = None

    def start(self, total: int) -> None:
        if self.enabled and total:
            self._bar = tqdm(total=total, unit="file", desc="kaudit: parsing", file=sys.stderr, leave=False,
                             dynamic_ncols=True)

    def advance(self, name: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(name, refresh=False)
            self._bar.update()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
