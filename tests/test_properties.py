"""Property-based tests (hypothesis) of the parts that take untrusted input,
and of the model's canonical state encoding: 1,000 cases each, kept fast."""

from __future__ import annotations

import contextlib
import json
import shlex
import zlib
from pathlib import Path, PurePosixPath

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kaudit.cache import Manifest, decode, inflate
from kaudit.compdb import split_command, translate
from kaudit.errors import UsageError
from kaudit.model.explore import canonical
from kaudit.packed import PackedUnit
from kaudit.patches import VCS_DIRS, checked_path
from kaudit.resources import default_rules_dir
from kaudit.rules import load_rule
from kaudit.warm import load as load_program

MANY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4), max_leaves=12)

# --- rule loader -------------------------------------------------------------

RULE = yaml.safe_load((default_rules_dir() / "apicv-inhibit-balance.yaml").read_text())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for every example (a function-scoped tmp_path would not be reset between them)."""
    return tmp_path_factory.mktemp("props")


@MANY
@given(key=st.sampled_from(sorted(RULE)) | st.text(max_size=10), value=JSON)
def test_a_rule_with_any_value_anywhere_loads_or_fails_in_one_located_line(scratch: Path, key: str,
                                                                          value: object) -> None:
    path = scratch / "rule.yaml"
    path.write_text(yaml.dump({**RULE, key: value}, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
    try:
        rule = load_rule(path)
    except UsageError as err:
        message = str(err)
        assert message.startswith(f"{path}:") and "\n" not in message
        return
    assert isinstance(rule.fix_hint, str) and all(isinstance(t, str) for t in rule.per_vcpu_types)


@MANY
@given(text=st.text(alphabet="ab: -[]{}&*!|>\n'\"#", max_size=60))
def test_any_yaml_text_loads_or_fails_in_one_located_line(scratch: Path, text: str) -> None:
    path = scratch / "garbled.yaml"
    path.write_text(text)
    try:
        load_rule(path)
    except UsageError as err:
        assert str(err).startswith(f"{path}") and "\n" not in str(err)


# --- compile-database translator ----------------------------------------------

ROOT = Path("/src/linux")
OBJ = Path("/build/linux")
FLAGS = ["-I", "-isystem", "-iquote", "-idirafter", "-include", "-imacros", "-D", "-U", "-o", "-c", "-MD", "-MF",
         "-fplugin=/tmp/evil.so", "--config=/tmp/x.cfg", "--config", "@/tmp/resp", "-Xclang", "-load",
         "--target=x86_64-linux-gnu", "--target=x86/../evil", "-std=gnu11", "-O2", "-mno-sse", "-Werror",
         "-fmodules-cache-path=/tmp/m", "-B/tmp", "--sysroot=/tmp", "-isysroot", "-Dx=1", "-Ifoo", "-I../../etc"]
VALUES = ["include", "../include", "/etc", "/src/linux/include", "/build/linux/include", "/src/linux/../etc",
          "/src/linux-headers", "x.h", ""]


@MANY
@given(argv=st.lists(st.sampled_from(FLAGS) | st.sampled_from(VALUES) | st.text(max_size=6), max_size=12),
       objtree=st.booleans())
@example(argv=["-I", "-I", "-I", "\x00"], objtree=False)  # a NUL in a path once crashed the translation
def test_translated_flags_are_allowlisted_and_stay_in_the_trees(argv: list[str], objtree: bool) -> None:
    out = translate(["gcc", *argv], ROOT / "arch/x86/kvm", ROOT, OBJ if objtree else None)
    assert translate(["gcc", *argv], ROOT / "arch/x86/kvm", ROOT, OBJ if objtree else None) == out
    roots = [ROOT, OBJ] if objtree else [ROOT]
    i = 0
    while i < len(out):
        arg = out[i]
        assert not arg.startswith(("-fplugin", "--config", "@", "-Xclang", "-load", "-o", "-B", "--sysroot", "-M"))
        assert arg != "--target=x86/../evil"
        if arg in ("-I", "-isystem", "-iquote", "-idirafter", "-include", "-imacros"):
            path = Path(out[i + 1])
            assert path.is_absolute() and any(path.is_relative_to(r) for r in roots), out
            i += 2
        elif arg in ("-D", "-U"):
            i += 2
        else:
            assert arg.startswith("-"), out
            i += 1


# --- patch path checks ---------------------------------------------------------

PARTS = st.sampled_from(["a", "..", ".", "", ".git", ".hg", ".svn", "x.c", "/", "//", ".gitx", "..."])


@MANY
@given(parts=st.lists(PARTS | st.text(max_size=4), max_size=6))
def test_a_checked_patch_path_never_leaves_the_tree(parts: list[str]) -> None:
    name = "/".join(parts)
    try:
        checked = checked_path(name)
    except UsageError as err:
        assert str(err).startswith("patch path ")
        return
    path = PurePosixPath(checked)
    assert not path.is_absolute() and ".." not in path.parts and not set(path.parts) & set(VCS_DIRS)
    assert PurePosixPath("/tree", checked).is_relative_to("/tree") and checked not in ("", ".")


# --- cache loader --------------------------------------------------------------

BLOBS = (st.binary(max_size=64)
         | JSON.map(lambda v: zlib.compress(json.dumps(v).encode()))
         | st.tuples(st.integers(0, 200), JSON).map(
             lambda t: t[0].to_bytes(8, "little") + zlib.compress(json.dumps(t[1]).encode())))


class _Store:
    """The Store interface warm.load uses, over one blob."""

    def __init__(self, blob: bytes) -> None:
        self.blob, self.discarded = blob, False

    def get_blob(self, key: str) -> bytes:
        return self.blob

    def discard(self, key: str) -> None:
        self.discarded = True


@MANY
@given(raw=JSON, blob=BLOBS)
def test_any_cache_entry_loads_or_is_a_miss(raw: object, blob: bytes) -> None:
    manifest = Manifest.load(raw)
    assert manifest is None or (isinstance(manifest.facts, str) and isinstance(manifest.deps, dict))
    assert PackedUnit.from_blob(blob) is None or isinstance(PackedUnit.from_blob(blob), PackedUnit)
    store = _Store(blob)
    assert load_program(store, "program:x") is None and store.discarded  # type: ignore[arg-type]
    with contextlib.suppress(ValueError):  # the one way decode says no
        decode(blob)


def test_a_zlib_bomb_in_the_cache_is_a_miss() -> None:
    bomb = zlib.compress(b"[" + b" " * (4 << 20) + b"]", 9)
    with pytest.raises(ValueError, match="inflates past 1 MiB"):
        inflate(bomb, 1 << 20)


# --- the model's canonical state encoding ----------------------------------------

VCPUS = 3
SMALL = st.integers(0, 2)
THREAD = st.tuples(st.sampled_from([-1, 0, 1]), SMALL, st.just(()).map(tuple) | st.tuples(
    st.tuples(st.just("v"), SMALL)), st.tuples(SMALL), st.just(()), SMALL, st.booleans(), SMALL, SMALL, SMALL)
STATE = st.tuples(st.tuples(SMALL, SMALL), st.tuples(*[THREAD] * (VCPUS + 1)), SMALL)


@MANY
@given(state=STATE, order=st.permutations(range(VCPUS)))
def test_canonical_states_are_deterministic_and_permutation_invariant(state: tuple, order: list[int]) -> None:
    vm, threads, demand = state
    permuted = (vm, tuple(threads[i] for i in order) + threads[VCPUS:], demand)
    canon, old = canonical(state, VCPUS)
    assert canonical(state, VCPUS)[0] == canon and hash(canonical(state, VCPUS)[0]) == hash(canon)
    assert canonical(permuted, VCPUS)[0] == canon  # vCPUs run the same code: one state
    assert canonical(canon, VCPUS)[0] == canon
    assert sorted(old) == list(range(VCPUS + 1)) and tuple(threads[i] for i in old) == canon[1]


@MANY
@given(state=STATE, owns=st.lists(st.booleans(), min_size=VCPUS, max_size=VCPUS), refs=st.booleans())
def test_a_vcpus_own_lock_stays_its_own_when_the_vcpus_are_sorted(state: tuple, owns: list[bool],
                                                                  refs: bool) -> None:
    """A per-vCPU lock is named by its owner's number: sorting the vCPUs renumbers it with them."""
    vm, threads, demand = state
    threads = tuple((*t[:4], ((("vcpu->lock", i), "write"),) if i < VCPUS and owns[i] else (), *t[5:])
                    for i, t in enumerate(threads))
    canon, old = canonical((vm, threads, demand), VCPUS, None if refs else frozenset())
    for new, thread in enumerate(canon[1][:VCPUS]):
        assert [owner for (_, owner), _ in thread[4]] == ([new] if owns[old[new]] else [])


@MANY
@given(a=STATE, b=STATE)
def test_the_canonical_encoding_is_injective_up_to_vcpu_order(a: tuple, b: tuple) -> None:
    same = (a[0], sorted(a[1][:VCPUS]), a[1][VCPUS:], a[2]) == (b[0], sorted(b[1][:VCPUS]), b[1][VCPUS:], b[2])
    assert (canonical(a, VCPUS)[0] == canonical(b, VCPUS)[0]) == same


# --- compile commands split as the shell does ---------------------------------------

SHELL_TEXT = st.text(st.sampled_from(list("ab -=\'\"\\\n\t$")), max_size=40)


@MANY
@given(command=SHELL_TEXT)
@example(command="-DKBUILD_MODNAME='\"kvm\"' -D\"X=1 2\" a\\ b")
def test_a_compile_command_splits_as_shlex_splits_it(command: str) -> None:
    try:
        expected: list[str] | str = shlex.split(command)
    except ValueError as err:
        expected = str(err)
    try:
        got: list[str] | str = split_command(command)
    except ValueError as err:
        got = str(err)
    assert got == expected
