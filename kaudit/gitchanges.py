"""Changes for check-patch read from a git repository, with plumbing only.

`--git A..B` gives each commit of a linear range and `--git REV` the work
tree (staged and unstaged) against REV. Everything is read from the
repository's objects (rev-list, ls-tree, ls-files, cat-file, run isolated by
gitrun.py), so its index, HEAD and working files are left alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from kaudit.errors import UsageError
from kaudit.gitrun import first_error_line, git
from kaudit.patches import checked_path

_SYMLINK, _GITLINK = "120000", "160000"


@dataclass(frozen=True)
class Snapshot:
    """The content of the paths one change leaves behind (None: the path is deleted)."""

    name: str
    subject: str
    files: dict[str, bytes | None] = field(default_factory=dict)


def _git_ok(root: Path, args: list[str], stdin: bytes | None = None) -> bytes:
    proc = git(args, root, stdin)
    if proc.returncode != 0:
        raise UsageError(f"{root}: git {args[0]} failed: {first_error_line(proc, 'unknown error')}")
    return proc.stdout


class _Repository:
    """Read-only access to the objects of the repository whose work tree is root."""

    def __init__(self, root: Path) -> None:
        if not (root / ".git").exists():
            raise UsageError(f"{root}: --git needs the top of a git work tree (no .git there)")
        self.root = root
        self.hash = _git_ok(root, ["rev-parse", "--show-object-format"]).decode().strip() or "sha1"

    def resolve(self, rev: str) -> str:
        """The commit rev names, or UsageError naming rev (--quiet: git itself says nothing)."""
        proc = git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"], self.root)
        commit = proc.stdout.decode(errors="replace").strip() if proc.returncode == 0 else ""
        if not commit:
            raise UsageError(f"{self.root}: --git {rev}: not a commit")
        return commit

    def tree(self, commit: str) -> dict[str, tuple[str, str]]:
        """path -> (mode, object) of every file of a commit."""
        entries = {}
        for record in _git_ok(self.root, ["ls-tree", "-r", "-z", "--full-tree", commit]).split(b"\0"):
            if record:
                meta, path = record.split(b"\t", 1)
                mode, _, obj = meta.decode().split()
                entries[path.decode("utf-8", errors="surrogateescape")] = (mode, obj)
        return entries

    def index_paths(self) -> set[str]:
        out = _git_ok(self.root, ["ls-files", "-z", "--cached"])
        return {p.decode("utf-8", errors="surrogateescape") for p in out.split(b"\0") if p}

    def blobs(self, objects: list[str]) -> dict[str, bytes]:
        out = _git_ok(self.root, ["cat-file", "--batch"], "".join(f"{o}\n" for o in objects).encode())
        found: dict[str, bytes] = {}
        at = 0
        while at < len(out):
            header_end = out.index(b"\n", at)
            obj, kind, size = out[at:header_end].decode().split()
            if kind != "blob":
                raise UsageError(f"{self.root}: object {obj} is a {kind}, not a file")
            start = header_end + 1
            found[obj] = out[start:start + int(size)]
            at = start + int(size) + 1
        return found

    def blob_id(self, data: bytes) -> str:
        return hashlib.new(self.hash, b"blob %d\0" % len(data) + data).hexdigest()


def _contents(repo: _Repository, entries: dict[str, tuple[str, str] | None]) -> dict[str, bytes | None]:
    """The files of path -> (mode, object) entries (None: absent), refusing symlinks, skipping submodules."""
    wanted = {}
    for path, entry in entries.items():
        if entry is not None and entry[0] == _SYMLINK:
            raise UsageError(f"{path}: changes that create or change symlinks are not accepted")
        if entry is None or entry[0] != _GITLINK:
            wanted[checked_path(path)] = entry
    blobs = repo.blobs(sorted({e[1] for e in wanted.values() if e is not None}))
    return {path: None if entry is None else blobs[entry[1]] for path, entry in wanted.items()}


def _differing(repo: _Repository, state: dict[str, tuple[str, str]], paths: set[str]) -> dict[str, bytes | None]:
    """Of paths, those whose file in the work tree differs from state: state's content for each."""
    differ: dict[str, tuple[str, str] | None] = {}
    for path in sorted(paths):
        disk = repo.root / path
        entry = state.get(path)
        if disk.is_symlink() or (entry is not None and entry[0] == _GITLINK):
            continue  # neither side is a regular file kaudit reads
        present = disk.is_file()
        if entry is None:
            if present:
                differ[path] = None
        elif not present or repo.blob_id(disk.read_bytes()) != entry[1]:
            differ[path] = entry
    return _contents(repo, differ)


def _disk(root: Path, paths: list[str]) -> dict[str, bytes | None]:
    return {path: (root / path).read_bytes() if (root / path).is_file() else None for path in paths}


@dataclass(frozen=True)
class GitSeries:
    """The state to start from (what differs from the work tree) and the changes to check on top of it."""

    base: dict[str, bytes | None]
    changes: list[Snapshot]


def worktree_change(root: Path, rev: str) -> GitSeries:
    """The work tree's tracked files (staged and unstaged) against REV, as one change."""
    repo = _Repository(root)
    commit = repo.resolve(rev)
    state = repo.tree(commit)
    base = _differing(repo, state, set(state) | repo.index_paths())
    if not base:
        return GitSeries({}, [])
    return GitSeries(base, [Snapshot("working tree", f"changes against {rev}", _disk(root, sorted(base)))])


def range_changes(root: Path, spec: str) -> GitSeries:
    """Each commit of a linear range A..B, on top of the first one's parent."""
    repo = _Repository(root)
    listing = _git_ok(root, ["rev-list", "--reverse", "--topo-order", "--parents", "--format=%s",
                             "--end-of-options", spec]).decode("utf-8", errors="replace").splitlines()
    commits = [(line.split()[1], line.split()[2:], subject)
               for line, subject in zip(listing[::2], listing[1::2], strict=True)]
    if not commits:
        raise UsageError(f"--git {spec}: no commit in the range")
    changes, previous = [], None
    for sha, parents, subject in commits:
        if len(parents) != 1 or (previous is not None and parents[0] != previous):
            raise UsageError(f"--git {spec}: commit {sha[:12]} is a merge or off the range's line; "
                             "check a linear range")
        before, after = repo.tree(parents[0]), repo.tree(sha)
        changed = {p: after.get(p) for p in set(before) | set(after) if before.get(p) != after.get(p)}
        changes.append(Snapshot(sha[:12], subject, _contents(repo, changed)))
        previous = sha
    touched = {p for change in changes for p in change.files}
    base_state = repo.tree(commits[0][1][0])
    base = _differing(repo, base_state, set(base_state) | repo.index_paths() | touched)
    return GitSeries(base, changes)
