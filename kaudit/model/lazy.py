"""Inputs chosen where the code looks at them, not where they are read.

An integer input (a guest-chosen MSR index, a value loaded from guest
memory) is one of many values, but most code tells only a few of them
apart. Forking the move over every value at the read multiplies the ways
through the rest of the function by the size of its domain, for each input
read. Instead the read leaves a `Lazy`: the values still possible. A test
of it splits the values into those that take it each way (one way each if
all agree), so a switch on the index forks once per case, and a value tested
in only one case is chosen there. A local computed from one unchosen input
(`m = mode + 1`) stays unchosen too: its value for each of the input's.
Anything else that needs the number (a write to modelled state, a
computation on two unchosen inputs, a decision) chooses it first, one run
per value still possible: no behaviour is lost, only ways that no test
tells apart are not repeated.

A `Lazy` lives only in locals and may be copied between them; all copies
and all values computed from the input carry the pc of the input that
read it (its tag) and narrow together. One tag is live at a time: reading
the same input again chooses the earlier value first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

ALL = None  # an op that may read any local (a dry walk, a scan of every vCPU): every Lazy is chosen


class Lazy(NamedTuple):
    """A local's value while input `tag` is unchosen: `values[i]` when the input is `sources[i]`."""

    tag: int  # the pc of the input op that read it
    sources: tuple  # the input's values still possible, in the domain's order
    values: tuple  # this local's value for each of them (the input's own copy: the same)


def read(tag: int, values: tuple) -> Lazy:
    return Lazy(tag, values, values)


def tags(local_items: dict, slots) -> list[int]:
    """The tags of the Lazy values in `slots` of the locals (every slot for ALL), in order of first use."""
    out: list[int] = []
    items = local_items.values() if slots is ALL else (local_items.get(s) for s in slots)
    for value in items:
        if type(value) is Lazy and value.tag not in out:
            out.append(value.tag)
    return out


def holders(locals_: dict, tag: int) -> list:
    return [s for s, v in locals_.items() if type(v) is Lazy and v.tag == tag]


def sources(locals_: dict, tag: int) -> tuple:
    return next(v.sources for v in locals_.values() if type(v) is Lazy and v.tag == tag)


def narrowed(locals_: dict, tag: int, kept: tuple) -> None:
    """Input `tag` is now one of `kept`: every local that depends on it narrows with it (to its value
    when only one is left)."""
    keep = set(kept)
    for slot in holders(locals_, tag):
        held = locals_[slot]
        values = tuple(v for s, v in zip(held.sources, held.values, strict=True) if s in keep)
        locals_[slot] = values[0] if len(kept) == 1 else Lazy(tag, kept, values)


def each_value(locals_: dict, tag: int, compute: Callable[[], object]) -> list:
    """What `compute` gives for each value input `tag` may still have, its dependent locals set to match."""
    slots = holders(locals_, tag)
    kept = {s: locals_[s] for s in slots}
    out = []
    for i in range(len(kept[slots[0]].sources)):
        for slot in slots:
            locals_[slot] = kept[slot].values[i]
        out.append(compute())
    locals_.update(kept)
    return out


def split(locals_: dict, tag: int, test: Callable[[], object], truth: Callable[[object], bool]) -> \
        tuple[tuple, tuple]:
    """(values of input `tag` that make `test` true, those that make it false); a value for which the
    test is unknown (None) is in both."""
    yes, no = [], []
    for source, outcome in zip(sources(locals_, tag), each_value(locals_, tag, test), strict=True):
        if outcome is None or truth(outcome):
            yes.append(source)
        if outcome is None or not truth(outcome):
            no.append(source)
    return tuple(yes), tuple(no)


def derived(locals_: dict, tag: int, compute: Callable[[], object]) -> object | None:
    """The value of a computation on input `tag` (`m = mode + 1`), kept unchosen: a Lazy of its results,
    the one result if they all agree, None if one is not a number (then the input is chosen first)."""
    results = tuple(each_value(locals_, tag, compute))
    if not all(type(r) is int for r in results):
        return None
    if len(set(results)) == 1:
        return results[0]
    return Lazy(tag, sources(locals_, tag), results)
