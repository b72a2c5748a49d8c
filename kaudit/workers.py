"""Run parse tasks in worker processes, always (also with --jobs 1).

libclang is C++ run on input we do not trust: it can crash (a 3,000-deep
expression overflows its stack), hang, or allocate without bound. In a worker
with a time limit and an address-space limit (`resource.setrlimit`) each of
those ends one task, which comes back as a `Failed` naming what happened,
and the run goes on. pebble's ProcessPool is chosen for exactly that: it
replaces a dead worker and fails only that task's future, where
concurrent.futures and multiprocessing.Pool break the whole pool
(BrokenProcessPool) or wait forever.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import resource
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """Bounds on one task: wall-clock seconds and address space in bytes."""

    seconds: float | None = 50.0  # a kernel TU takes a few; a hang is named within a minute (None: no bound)
    memory: int = 4 << 30


@dataclass(frozen=True)
class Failed:
    """A task that did not return: why, in words for a diagnostic."""

    message: str
    timed_out: bool = False


def _mapped() -> int:
    """The address space this process maps already: a forked worker inherits its parent's."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _bound(memory: int) -> None:
    faulthandler.disable()  # a libclang crash is reported as the TU's error, not as a Python stack dump
    limit = _mapped() + memory  # what the task may add, whatever the caller holds when it forks
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file in the user's directory
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle


def run_tasks(fn: Callable[[Any], T], tasks: Sequence[Any], workers: int, limits: Limits,
              explain: Callable[[BaseException, Limits], str]) -> Iterator[tuple[int, T | Failed]]:
    """(index, result or Failed) of every task, in the order they finish; explain(error, limits)
    words the Failed of a task that raised, timed out or whose worker died."""
    if not tasks:
        return
    from pebble import ProcessPool  # imported on first parse: a warm run starts no worker

    context = multiprocessing.get_context("fork")  # workers share the loaded code; nothing to re-import
    with ProcessPool(max_workers=max(1, min(workers, len(tasks))), initializer=_bound,
                     initargs=(limits.memory,), context=context) as pool:
        futures = {pool.schedule(fn, args=(task,), timeout=limits.seconds): i for i, task in enumerate(tasks)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=futures.__getitem__):
                    try:
                        yield futures[future], future.result()
                    except Exception as err:  # whatever ended the task, it is that TU's failure
                        yield futures[future], Failed(explain(err, limits), isinstance(err, FutureTimeout))
        finally:
            if pending:  # interrupted: end the workers now
                pool.stop()
