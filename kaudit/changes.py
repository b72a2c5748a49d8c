"""What check-patch checks: a series of changes, from patches or from git.

Patches come from files, mboxes (a `git format-patch` series, `b4 am`
output) or stdin, split into messages by git's own mailsplit and mailinfo.
From a git repository, `--git A..B` gives each commit of a linear range and
`--git REV` the working tree (staged and unstaged) against REV, both read
from the repository's objects with plumbing commands (gitrun.py), so its
index, HEAD and working files are left alone.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kaudit.errors import UsageError
from kaudit.gitrun import first_error_line, git

VCS_DIRS = (".git", ".hg", ".svn")
_MODE = re.compile(r"^(?:new file mode|new mode|old mode|deleted file mode)\s+([0-7]+)\s*$")
_SYMLINK, _GITLINK = "120000", "160000"


def checked_path(name: str) -> str:
    """A tree-relative path a change may touch: never absolute, `..` or VCS metadata."""
    path = PurePosixPath(name)
    if name.startswith("/") or ".." in path.parts or not path.parts:
        raise UsageError(f"patch path {name!r} leaves the tree")
    if set(path.parts) & set(VCS_DIRS):
        raise UsageError(f"patch path {name!r} touches version-control metadata")
    return str(path)


@dataclass(frozen=True)
class Patch:
    """One patch of a series: a message of an mbox, a patch file, or stdin."""

    name: str
    subject: str
    text: bytes


@dataclass(frozen=True)
class Snapshot:
    """The content of the paths one change leaves behind (None: the path is deleted)."""

    name: str
    subject: str
    files: dict[str, bytes | None] = field(default_factory=dict)


# ---- patches ----------------------------------------------------------------------------------------------------

def _check_text(text: bytes) -> None:
    if b"\0" in text:
        raise UsageError("patch contains a NUL byte")
    for line in text.decode("utf-8", errors="replace").splitlines():
        if line.startswith(("GIT binary patch", "Binary files ")):
            raise UsageError("binary patches are not accepted")
        mode = _MODE.match(line)
        if mode and int(mode.group(1), 8) & 0o170000 == 0o120000:
            raise UsageError("patches that create or change symlinks are not accepted")


def patch_paths(text: bytes, scratch: Path) -> list[str]:
    """The tree-relative paths a patch touches, as git's own parser reads
    them (quoted names, renames), refusing any that could leave the tree."""
    _check_text(text)
    proc = git(["apply", "-p1", "--numstat", "-z", "-"], scratch, text)
    if proc.returncode != 0:
        raise UsageError(f"not a usable patch: {first_error_line(proc, 'not a patch')}")
    names = [n for f in proc.stdout.split(b"\0") for n in [f.split(b"\t")[-1]] if n]
    paths = {checked_path(raw.decode("utf-8", errors="replace")) for raw in names}
    if not paths:
        raise UsageError("not a patch: no file changes found")
    return sorted(paths)


def _messages(name: str, text: bytes, scratch: Path) -> list[Patch]:
    """The patches of one input: each message of an mbox (a plain diff is one), cover letters skipped."""
    split = scratch / f"split-{len(list(scratch.glob('split-*')))}"
    split.mkdir(parents=True)
    source = split / "input"
    source.write_bytes(text)
    proc = git(["mailsplit", "-b", f"-o{split}", str(source)], scratch)
    if proc.returncode != 0:
        raise UsageError(f"{name}: cannot split into messages: {first_error_line(proc, 'mailsplit failed')}")
    patches = []
    for message in sorted(p for p in split.iterdir() if p.name.isdigit()):
        info = git(["mailinfo", str(split / "msg"), str(split / "patch")], scratch, message.read_bytes())
        if info.returncode != 0:
            raise UsageError(f"{name}: unreadable message: {first_error_line(info, 'mailinfo failed')}")
        body = (split / "patch").read_bytes()
        if not body.strip():
            continue  # a cover letter: no diff
        subject = next((line[len(b"Subject: "):] for line in info.stdout.splitlines()
                        if line.startswith(b"Subject: ")), b"")
        patches.append(Patch(name, subject.decode("utf-8", errors="replace").strip(), body))
    return patches


def read_patches(sources: list[Path], stdin: bytes | None, scratch: Path) -> list[Patch]:
    """Every patch of the inputs, in order; `-` names stdin (read once: what is checked is what is applied)."""
    patches: list[Patch] = []
    for source in sources:
        if str(source) == "-":
            if stdin is None:
                raise UsageError("- (stdin) given twice")
            text, stdin = stdin, None
        else:
            try:
                text = source.read_bytes()
            except OSError as err:
                raise UsageError(f"{source}: cannot read patch: {err.strerror}") from err
        _check_text(text)
        found = _messages(str(source), text, scratch)
        if not found:
            raise UsageError(f"{source}: no patch in it")
        patches += found
    if len(patches) > 1:  # name each by its place in the series
        patches = [Patch(f"{p.name} [{n}/{len(patches)}]", p.subject, p.text) for n, p in enumerate(patches, 1)]
    return patches


# ---- git --------------------------------------------------------------------------------------------------------

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
        out = _git_ok(self.root, ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"])
        return out.decode().strip()

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
    if not commit:
        raise UsageError(f"{root}: --git {rev}: not a commit")
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
