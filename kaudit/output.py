"""Where kaudit writes: reports, baselines, the cache's generated headers.

kaudit runs as root in CI on trees it did not write, so a write never
follows what is at the target: data goes into a new regular file, created
exclusively under an unpredictable name in the target's directory
(`tempfile.mkstemp`: O_CREAT|O_EXCL|O_NOFOLLOW), which is then renamed over
the target. A user-named target must be a regular file or a missing name;
a device, FIFO, directory or symlink there is refused (exit 2) before any
work starts, so `-o /dev/null` never turns the device into a file and a
planted link never redirects the write. `-` is stdout.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from kaudit.errors import UsageError

STDOUT = "-"


def kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def inside(path: Path, tree: Path) -> bool:
    """Whether path (existing or not) lies in tree, links resolved."""
    real = Path(os.path.realpath(path.parent)) / path.name
    return real == Path(os.path.realpath(tree)) or real.is_relative_to(os.path.realpath(tree))


def check_target(path: Path, what: str, tree: Path | None = None) -> None:
    """Refuse a target kaudit must not write (UsageError); `tree`: the analysed tree, which is never written."""
    if str(path) == STDOUT:
        return
    if not path.name or path.name in (".", ".."):
        raise UsageError(f"{path}: not a file name for the {what}")
    with contextlib.suppress(FileNotFoundError):
        mode = _lstat(path, what).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f"{path}: is {kind(mode)}; the {what} is written only to a regular file or a new name")
    if not path.parent.is_dir():
        raise UsageError(f"{path}: no directory {path.parent} for the {what}")
    if tree is not None and inside(path, tree):
        raise UsageError(f"{path}: inside the analysed tree {tree}; write the {what} elsewhere")


def check_cache_dir(directory: Path, tree: Path) -> None:
    if inside(directory, tree):
        raise UsageError(f"--cache-dir {directory}: inside the analysed tree {tree}; kaudit never writes there")


def _lstat(path: Path, what: str) -> os.stat_result:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise UsageError(f"{path}: cannot write the {what}: {err.strerror}") from err


def replace_with(path: Path, data: bytes) -> None:
    """Put data at path as a new file, renamed over whatever non-directory is there (OSError on failure)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_target(path: Path, data: bytes, what: str) -> None:
    """Write a user-named target checked with check_target; checked again just before the rename."""
    check_target(path, what)
    try:
        replace_with(path, data)
    except OSError as err:
        raise UsageError(f"{path}: cannot write the {what}: {err.strerror or err}") from err
