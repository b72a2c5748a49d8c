"""Rarer garbage collections while a phase builds many objects that live on.

CPython collects its youngest generation every 700 new containers, and
every tenth of those the next one: a phase that builds hundreds of
thousands of long-lived objects (a TU's facts, a protocol's compiles) spends
a fifth of its time rescanning them for cycles they do not have. A higher
threshold keeps collections (a phase may still make cycles) but makes them rare.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

RARE = (50_000, 20, 100)


@contextmanager
def rare_collections() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(*RARE)
    try:
        yield
    finally:
        gc.set_threshold(*before)
