"""Reading what kaudit is given or finds: never blocking, never unbounded.

A FIFO named as a rule file would block `open` forever and /dev/zero would
grow memory until it ran out; so every file is opened non-blocking, checked
to be a regular file (fstat of the open descriptor, so a swap after the
check cannot matter) and read only up to a bound. Patches may also come
from a pipe (`<(git format-patch ...)`, stdin), still bounded.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from kaudit.errors import UsageError
from kaudit.output import kind

MAX_READ = 64 << 20  # bytes: a header, a baseline, a patch
MAX_RULE = 1 << 20  # a rule file is a page of YAML
MAX_COMPDB = 512 << 20  # an allyesconfig build's compile_commands.json is well under this


def read_regular(path: Path | str, limit: int = MAX_READ, pipes: bool = False) -> bytes:
    """A regular file's bytes (with pipes: or a pipe's, up to limit), or OSError naming what it is."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if pipes and stat.S_ISFIFO(info.st_mode):
            os.set_blocking(fd, True)  # a pipe someone writes: wait for its writer, read at most limit
        elif not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"is {kind(info.st_mode)}, not a regular file")
        elif info.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit >> 20} MiB")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return bounded(handle, limit)
    finally:
        os.close(fd)


def bounded(handle: BinaryIO, limit: int) -> bytes:
    """All of a stream up to limit bytes; OSError if there is more (a file that grew, a pipe, stdin)."""
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit >> 20} MiB")
    return data


def read_input(path: Path, what: str, limit: int = MAX_READ, pipes: bool = False) -> bytes:
    """A file the user named (rule file, compile database, baseline, patch); UsageError in one line."""
    try:
        return read_regular(path, limit, pipes)
    except OSError as err:
        raise UsageError(f"{path}: cannot read {what}: {err.strerror or err}") from err


def read_text_input(path: Path, what: str, limit: int = MAX_READ) -> str:
    try:
        return read_input(path, what, limit).decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: {what} is not UTF-8 text") from err


def tree_text(path: Path | str) -> str | None:
    """A data file of the tree (Makefile, Kbuild, .config, a source for its
    comments); None when it is absent or not a regular file within bounds."""
    try:
        return read_regular(path).decode("utf-8", errors="replace")
    except OSError:
        return None
