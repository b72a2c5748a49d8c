"""Hostile input to the parse: deep nesting, crashes, unsafe headers, a bad cache."""

from __future__ import annotations

import json
import os
import signal
import time
import zlib
from pathlib import Path

import diskcache
import pytest
from conftest import copy_sample, edit
from test_report_cli import invoke, run

from kaudit import scan
from kaudit.audit import parse_jobs
from kaudit.frontend.exprs import MAX_DEPTH
from kaudit.resources import default_rules_dir
from kaudit.rules import load_rules, rule_sources
from kaudit.scan import TreeReader, parse_failure
from kaudit.workers import Failed, Limits, run_tasks

GLOBS = rule_sources(load_rules(default_rules_dir()))


def report(tree: Path, *extra: str) -> tuple[int, dict]:
    result = invoke("audit", str(tree), "--format", "json", "--no-model", *extra)
    return result.exit_code, json.loads(result.stdout)


def diagnostics_by_tu(data: dict) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for d in data["tree"]["diagnostics"]:
        found.setdefault(d["tu"], []).append(d["message"])
    return found


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_deep_nesting_is_a_named_parse_error_and_the_rest_is_audited(tmp_path: Path, jobs: str) -> None:
    tree = copy_sample(tmp_path / "t")
    kvm = tree / "arch/x86/kvm"
    for depth in (500, 3000):
        (kvm / f"not{depth}.c").write_text(f"int f{depth}(int x) {{ return {'! ' * depth}x; }}\n")
        (kvm / f"sum{depth}.c").write_text(f"int g{depth}(int x) {{ return {'+'.join(['x'] * depth)}; }}\n")
    code, data = report(tree, "--jobs", jobs)
    assert code == 2 and data["summary"]["errors"] == 1  # incomplete; the sample's error is still found
    found = diagnostics_by_tu(data)
    assert set(found) == {f"arch/x86/kvm/{name}.c" for name in ("not500", "not3000", "sum500", "sum3000")}
    assert data["tree"]["parse_errors"] == 4
    for name in ("not500", "sum500", "sum3000"):
        assert found[f"arch/x86/kvm/{name}.c"] == [
            f"kaudit: code nested deeper than {MAX_DEPTH} levels; the subtree is not analysed"]
    # 3,000 unary operators overflow libclang's own stack: its worker dies, the TU is named
    (message,) = found["arch/x86/kvm/not3000.c"]
    assert "libclang crashed (SIGSEGV)" in message or "nested deeper" in message


def test_a_truncated_fact_tree_stays_bounded(tmp_path: Path) -> None:
    from kaudit.frontend.tu import extract_tu

    path = tmp_path / "t.c"
    path.write_text(f"int f(int x) {{ return {'-'.join(['x'] * 400)}; }}\n")
    facts = extract_tu(path, ["-std=gnu11"], tmp_path)

    def depth(node: object) -> int:
        if isinstance(node, dict):
            return 1 + max((depth(v) for v in node.values()), default=0)
        if isinstance(node, list):
            return max((depth(v) for v in node), default=0)
        return 0

    assert depth(facts["functions"]) <= MAX_DEPTH + 5
    assert json.dumps(facts).count('"too_deep"') >= 1


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def _crash(_: object) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _allocate(_: object) -> bytes:
    return b"x" * (1 << 31)


def test_workers_turn_crashes_timeouts_and_memory_into_failures() -> None:
    limits = Limits(seconds=2, memory=1 << 30)
    slept = dict(run_tasks(_sleep, [0.0, 30.0], 2, limits, parse_failure))
    assert slept[0] == "slept"
    assert isinstance(slept[1], Failed) and "longer than 2 s" in slept[1].message
    (_, crashed), = run_tasks(_crash, [None], 1, limits, parse_failure)
    assert isinstance(crashed, Failed) and "SIGSEGV" in crashed.message
    (_, grown), = run_tasks(_allocate, [None], 1, limits, parse_failure)
    assert isinstance(grown, Failed) and "1024 MiB" in grown.message


def test_fifo_and_device_headers_are_refused_before_libclang(tmp_path: Path) -> None:
    tree = copy_sample(tmp_path / "t")
    os.mkfifo(tree / "include/linux/fifo.h")
    (tree / "include/linux/zero.h").symlink_to("/dev/zero")
    edit(tree / "arch/x86/kvm/lapic.c", "#include <linux/kernel.h>",
         "#include <linux/kernel.h>\n#include <linux/fifo.h>")
    edit(tree / "arch/x86/kvm/hyperv.c", "#include <linux/kernel.h>",
         "#include <linux/kernel.h>\n#include <linux/zero.h>")
    start = time.monotonic()
    _, data = report(tree)
    assert time.monotonic() - start < 60
    found = diagnostics_by_tu(data)
    assert found == {"arch/x86/kvm/lapic.c": ['"kaudit: include/linux/fifo.h is a FIFO: not read"'],
                     "arch/x86/kvm/hyperv.c": ['"kaudit: include/linux/zero.h is a character device: not read"']}
    assert data["tree"]["files_analyzed"] == 4


def test_a_new_header_that_shadows_one_invalidates_the_cache(tmp_path: Path) -> None:
    tree = copy_sample(tmp_path / "t")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert report(tree, *cache)[1]["tree"]["parse_errors"] == 0
    shadow = tree / "arch/x86/include/linux/kernel.h"  # found before include/linux/kernel.h
    shadow.parent.mkdir(parents=True)
    shadow.write_text("#error shadowed\n")
    warm, cold = report(tree, *cache), report(tree, "--no-cache")
    assert warm == cold
    assert warm[1]["tree"]["parse_errors"] == 4  # every TU includes <linux/kernel.h>


def test_bad_cache_entries_are_rebuilt_silently(tmp_path: Path) -> None:
    tree = copy_sample(tmp_path / "t")
    cache = tmp_path / "cache"
    args = ["--cache-dir", str(cache)]
    first = report(tree, *args)
    store = diskcache.Cache(str(cache / "store"))
    for key in list(store.iterkeys()):
        store.set(key, zlib.compress(b"[]") if key.startswith(("facts:", "program:")) else b"garbage")
    store.close()
    assert report(tree, *args) == first
    assert report(tree, *args) == first  # and the rebuilt entries are good


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_fifo_or_device_as_the_cache_database_never_hangs(tmp_path: Path, kind: str) -> None:
    tree = copy_sample(tmp_path / "t")
    cache = tmp_path / "cache"
    args = ["--cache-dir", str(cache)]
    first = report(tree, *args)
    for name in ("cache.db", "cache.db-wal", "cache.db-shm"):
        (cache / "store" / name).unlink(missing_ok=True)
    database = cache / "store" / "cache.db"
    os.mkfifo(database) if kind == "fifo" else database.symlink_to("/dev/zero")
    start = time.monotonic()
    assert report(tree, *args) == first
    assert time.monotonic() - start < 60


def test_a_patched_copy_does_not_evict_the_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = copy_sample(tmp_path / "t")
    copy = copy_sample(tmp_path / "copy")
    edit(copy / "arch/x86/kvm/svm/svm.c", "\n", "\n/* patched */\n")
    args = ["--cache-dir", str(tmp_path / "cache")]
    original = report(tree, *args)
    report(copy, *args)

    def no_parsing(fn: object, tasks: list, *rest: object) -> list:
        assert not tasks, "the original tree must still be warm"
        return []

    monkeypatch.setattr("kaudit.scan.run_tasks", no_parsing)
    assert report(tree, *args) == original


def test_facts_and_report_are_the_same_with_and_without_pch(tmp_path: Path) -> None:
    tree = copy_sample(tmp_path / "t")
    jobs = parse_jobs(tree, tmp_path / "gen", None, GLOBS)
    with_pch = TreeReader(tree, jobs, 2, None, pch=True)
    plain = TreeReader(tree, jobs, 1, None, pch=False)
    assert json.dumps(with_pch.units()) == json.dumps(plain.units())
    assert (with_pch.stats.pchs, with_pch.stats.with_pch, plain.stats.with_pch) == (1, 4, 0)
    assert run("audit", str(tree), "--format", "json")[1] == run("audit", str(tree), "--format", "json", "--no-pch")[1]


def test_store_memo_computes_once_and_drops_bad_entries(tmp_path: Path) -> None:
    from kaudit.cache import Store

    store = Store(tmp_path)
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"verdict": "sound"}

    def load(raw: object) -> dict | None:
        return raw if isinstance(raw, dict) else None

    assert store.memo("analysis", "abc", compute, load) == {"verdict": "sound"}
    assert store.memo("analysis", "abc", compute, load) == {"verdict": "sound"}
    assert len(calls) == 1
    store.put("memo:analysis:abc", [])  # the wrong shape: computed afresh
    assert store.memo("analysis", "abc", compute, load) == {"verdict": "sound"} and len(calls) == 2


def _crash_against_pch(task: object) -> object:
    from kaudit import scan

    if isinstance(task, scan._Task) and task.pch is not None:
        os.kill(os.getpid(), signal.SIGSEGV)
    return _WORK(task)


_WORK = None


def test_a_worker_that_fails_against_the_pch_is_retried_plainly(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    global _WORK
    tree = copy_sample(tmp_path / "t")
    jobs = parse_jobs(tree, tmp_path / "gen", None, GLOBS)
    _WORK = scan._work
    monkeypatch.setattr(scan, "_work", _crash_against_pch)
    reader = scan.TreeReader(tree, jobs, 2, None)
    facts = reader.units()
    assert reader.stats.pchs == 1 and reader.stats.with_pch == 0
    assert [f["diagnostics"] for f in facts] == [[]] * 4


def test_includes_outside_the_include_path_are_stopped_by_the_worker_bounds(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "PARSE_LIMITS", Limits(seconds=5))  # the 50 s default, shortened for the test
    tree = copy_sample(tmp_path / "t")
    fifo = tmp_path / "outside.h"
    os.mkfifo(fifo)
    edit(tree / "arch/x86/kvm/lapic.c", "#include <linux/kernel.h>", '#include <linux/kernel.h>\n#include "/dev/zero"')
    edit(tree / "arch/x86/kvm/hyperv.c", "#include <linux/kernel.h>", f'#include <linux/kernel.h>\n#include "{fifo}"')
    start = time.monotonic()
    _, data = report(tree)
    assert time.monotonic() - start < 30
    found = diagnostics_by_tu(data)
    assert found["arch/x86/kvm/hyperv.c"] == ["kaudit: libclang took longer than 5 s on this file; stopped"]
    (zero,) = found["arch/x86/kvm/lapic.c"]  # libclang gives up, or its worker runs out of memory or time first
    assert "memory bound" in zero or "could not parse this file" in zero or "longer than 5 s" in zero
    assert data["summary"]["errors"] == 1  # the sample's error is still found in svm.c
