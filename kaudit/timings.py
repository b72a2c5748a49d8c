"""Where a run's time went (`--timings`): wall seconds per phase."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Timings:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def lines(self) -> list[str]:
        width = max((len(name) for name in self.phases), default=0)
        return [f"kaudit: timings: {name:<{width}} {seconds:8.3f} s" for name, seconds in self.phases.items()]
