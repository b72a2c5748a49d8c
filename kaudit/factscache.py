"""TU facts in the cache, by content (the scheme is in kaudit/cache.py).

An entry's key names what decides a TU's facts before any header is read;
its manifests name every header read (by digest) and every path searched in
vain; a manifest that still holds gives the content key of the facts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kaudit.cache import MAX_MANIFESTS, Manifest, Store, digest_bytes, frontend_digest, salt
from kaudit.frontend.clang_ops import clang_version
from kaudit.packed import PackedUnit
from kaudit.reading import read_regular

if TYPE_CHECKING:
    from kaudit.scan import ParseJob


def _name(path: str, root: str) -> str:
    """How a manifest names a file: tree-relative inside the tree (so a copy
    of the tree matches), absolute outside it (generated headers)."""
    return path[len(root) + 1:] if path.startswith(root + "/") else path


class FactsCache:
    """TU facts by content (see kaudit/cache.py for the scheme)."""

    def __init__(self, store: Store | None, root: Path) -> None:
        self.store = store
        self.root = root
        self.salt = salt(clang_version(), frontend_digest()) if store is not None else ""
        self._digests: dict[str, str | None] = {}

    def digest(self, name: str) -> str | None:
        """Content digest of a manifest name, once per run (None: absent or unreadable)."""
        if name not in self._digests:
            path = self.root / name
            try:
                self._digests[name] = digest_bytes(read_regular(path))[:40]
            except OSError:
                self._digests[name] = None
        return self._digests[name]

    def _key(self, job: ParseJob) -> str | None:
        source = self.digest(str(job.path.relative_to(self.root)))
        if source is None:
            return None
        root = str(self.root)
        flags = [arg.replace(root, "<tree>") for arg in (str(job.path), *job.args)]
        return "tu:" + digest_bytes("\0".join([self.salt, source, *flags]).encode())

    def _holds(self, manifest: Manifest) -> bool:
        known = self._digests  # the headers TUs share are hashed once per run
        for name, digest in manifest.deps.items():
            found = known[name] if name in known else self.digest(name)
            if found != digest:
                return False
        return True

    def _manifests(self, key: str) -> list[Manifest]:
        raw = self.store.get(key) if self.store is not None else None
        found = [Manifest.load(item) for item in raw] if isinstance(raw, list) else []
        return [m for m in found if m is not None]

    def find(self, job: ParseJob) -> str | None:
        """The key of the job's facts, if a manifest of its entry holds."""
        key = self._key(job) if self.store is not None else None
        if key is None:
            return None
        return next((m.facts for m in self._manifests(key) if self._holds(m)), None)

    def load(self, facts_key: str) -> PackedUnit | None:
        blob = self.store.get_blob(facts_key) if self.store is not None else None
        unit = PackedUnit.from_blob(blob) if blob is not None else None
        if unit is None and self.store is not None:
            self.store.discard(facts_key)
        return unit

    def put(self, job: ParseJob, unit: PackedUnit, absent: list[str]) -> str:
        """Store facts of a TU that parsed cleanly (a failed TU may depend on
        a header missing now: it is parsed again next time); their key."""
        blob = unit.to_blob()
        facts_key = "facts:" + unit.content_key()
        key = self._key(job) if self.store is not None else None
        facts = unit.unit
        if key is None or self.store is None or facts["diagnostics"] or not facts["file"]:
            return facts_key
        deps: dict[str, str | None] = {name: self.digest(name) for name in (facts["file"], *facts["includes"])}
        if None in deps.values():
            return facts_key  # a file it read is gone already: nothing to validate against
        root = str(self.root)
        deps.update((_name(path, root), None) for path in absent)
        self.store.put_blob(facts_key, blob)
        manifest = Manifest(deps, facts_key)
        others = [m for m in self._manifests(key) if m != manifest]
        self.store.put(key, [m.to_json() for m in [manifest, *others][:MAX_MANIFESTS]])
        return facts_key
