"""kaudit's cache: content-addressed, like ccache's direct mode.

A TU's entry is found by what decides its facts before any header is read:
kaudit's and libclang's versions, the front end's own source, the file's
tree-relative path, its flags (the tree's path replaced by a placeholder, so
a copy of the tree reuses it) and the file's content. Under that key live
one or more manifests, each naming every header the parse read (with its
content digest) and every path the preprocessor searched and found absent;
a manifest is used only while all of them still hold, so a changed header
or a new one that would shadow another invalidates it. Many versions of a
file live side by side (two trees, a patched work copy and its original,
two branches); none evicts another, only the size bound does.

The store is `diskcache` (SQLite): a size bound with least-recently-used
eviction and safe concurrent use by several kaudit runs, without our own
locking. Every value is kept inside the database (no entry files that could
be swapped for a FIFO), written as zlib-compressed JSON (safe to decode
whatever is in it), and read through a typed loader: anything of the wrong
shape is a miss, dropped and rebuilt, never an error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sqlite3
import stat
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import diskcache

from kaudit import __version__
from kaudit.errors import UsageError

SIZE_LIMIT = 512 << 20
MAX_MANIFESTS = 16  # versions of one file kept under one key (trees, branches, work copies)
_STORE = "store"
_DB_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")

T = TypeVar("T")


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode(value: Any) -> bytes:
    return zlib.compress(json.dumps(value, separators=(",", ":")).encode(), 1)


def decode(blob: object) -> Any:
    """The JSON value in a blob; ValueError for anything else."""
    if not isinstance(blob, bytes):
        raise ValueError("not a blob")
    try:
        return json.loads(inflate(blob))
    except (zlib.error, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(str(err)) from err


def inflate(blob: bytes, limit: int = SIZE_LIMIT) -> bytes:
    """zlib data, bounded: a planted entry cannot decompress into gigabytes."""
    inflater = zlib.decompressobj()
    data = inflater.decompress(blob, limit)
    if inflater.unconsumed_tail:
        raise ValueError(f"an entry inflates past {limit >> 20} MiB")
    return data


@dataclass(frozen=True)
class Manifest:
    """What one set of facts was made from: path -> content digest, or None
    for a path that was searched and must stay absent."""

    deps: dict[str, str | None]
    facts: str  # the digest (key) of the facts blob

    @classmethod
    def load(cls, raw: object) -> Manifest | None:
        """The typed loader: a manifest of the right shape, or None."""
        if not isinstance(raw, dict) or not isinstance(raw.get("facts"), str):
            return None
        deps = raw.get("deps")
        if not isinstance(deps, dict) or not all(
                isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in deps.items()):
            return None
        return cls(deps, raw["facts"])

    def to_json(self) -> dict[str, Any]:
        return {"deps": self.deps, "facts": self.facts}


class Store:
    """The cache directory's key-value store; every failure is a miss."""

    def __init__(self, directory: Path, size_limit: int = SIZE_LIMIT) -> None:
        self.directory = directory
        path = directory / _STORE
        try:
            path.mkdir(parents=True, exist_ok=True)
            _drop_unsafe(path)
            self._cache = diskcache.Cache(str(path), size_limit=size_limit, eviction_policy="least-recently-used",
                                          disk=_RawDisk, disk_min_file_size=1 << 62, timeout=60,
                                          statistics=False)
        except (OSError, sqlite3.Error) as err:  # the directory named is unusable: say so, do not guess another
            raise UsageError(f"{directory}: cannot use the cache: {err}") from err

    def get(self, key: str) -> Any | None:
        """The JSON value stored under key; None when absent or undecodable."""
        blob = self.get_blob(key)
        if blob is None:
            return None
        try:
            return decode(blob)
        except ValueError:
            self.discard(key)
            return None

    def put(self, key: str, value: Any) -> None:
        self.put_blob(key, encode(value))

    def get_blob(self, key: str) -> bytes | None:
        try:
            blob = self._cache.get(key)
        except (sqlite3.Error, diskcache.Timeout, OSError):
            return None
        if blob is not None and not isinstance(blob, bytes):
            self.discard(key)
            return None
        return blob

    def put_blob(self, key: str, blob: bytes) -> None:
        with contextlib.suppress(sqlite3.Error, diskcache.Timeout, OSError):  # a miss next run, no more
            self._cache.set(key, blob)

    def discard(self, key: str) -> None:
        with contextlib.suppress(sqlite3.Error, diskcache.Timeout):
            self._cache.delete(key)

    def memo(self, namespace: str, digest: str, compute: Callable[[], T],
             load: Callable[[Any], T | None] = lambda raw: raw) -> T:
        """The value of compute() for content `digest`, from the cache when a
        run stored it before. `load` is the typed loader from JSON (None: a
        bad entry, computed afresh); values must be JSON-serialisable."""
        key = f"memo:{namespace}:{digest}"
        raw = self.get(key)
        value = load(raw) if raw is not None else None
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    def volume(self) -> int:
        return int(self._cache.volume())

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        self._cache.close()


class _RawDisk(diskcache.Disk):
    """Values are bytes inside the database, nothing else: an entry in any
    other mode (a pickle, a file beside the database) is never unpickled
    nor opened, only ignored."""

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode != diskcache.core.MODE_RAW:
            return None
        return super().fetch(mode, filename, value, read)


def _drop_unsafe(path: Path) -> None:
    """The database files must be regular files: a FIFO, device or link in
    their place is removed (the cache is rebuilt), never opened."""
    for name in _DB_FILES:
        candidate = path / name
        try:
            mode = candidate.lstat().st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            candidate.unlink()


def salt(*parts: str) -> str:
    """The part of every key that names the code that made the value."""
    return "\0".join([__version__, sys.version, *parts])


@functools.cache
def package_digest() -> str:
    """All of kaudit's own code and data: a value made by any other version is not reused."""
    package = Path(__file__).parent
    sources = sorted(p for p in package.rglob("*") if p.is_file() and p.suffix in (".py", ".json", ".config"))
    return digest_bytes(b"".join(p.relative_to(package).as_posix().encode() + p.read_bytes() for p in sources))


def frontend_digest() -> str:
    """The front end's own source: facts made by other code are not reused."""
    sources = sorted((Path(__file__).parent / "frontend").glob("*.py"))
    return digest_bytes(b"".join(p.read_bytes() for p in sources))[:16]
