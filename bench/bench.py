"""Benchmark kaudit on a tree: every figure measured in this one run.

    python bench/bench.py TREE [--compdb compile_commands.json] [--jobs N] [--rounds R]
                               [--model-vcpus 2 3 4]

It times, on the same files with the same flags (kaudit's own, as
`kaudit compdb` writes them):
- a bare libclang parse, with 1 process and with N;
- `kaudit audit` as a user runs it (the CLI, a subprocess, model and cost
  simulation included; -j N): cold (empty cache), warm, and warm with
  `--sim-steps 0` and with `--no-model` (what is left without the model);
- on a hard-link copy of the tree (never the tree itself): the audit after
  a comment added to one .c (its facts stay as they were), after a function
  added to it (new facts: the analysis runs again), after a comment added
  to one header; the bare parse of that .c; then the original tree again
  (it must still be warm).
Each round runs the bare parses and the kaudit runs back to back, so the
machine's load weighs on both alike; each ratio is against the bare parse
with the same number of processes, from the same round. Peak memory is the
largest sum of PSS over the kaudit process and its workers (sampled): forked
workers share their parent's pages, which a sum of RSS would count once per
process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import get_context
from pathlib import Path

import clang.cindex as ci

from kaudit.audit import audit_tree, parse_jobs
from kaudit.model.check import ModelSettings, check_key
from kaudit.model.extract import Unmodelled
from kaudit.resources import default_rules_dir, sample_tree
from kaudit.rules import load_rules, rule_sources
from kaudit.scan import ParseJob

CHANGED_C = "arch/x86/kvm/svm/svm.c"
CHANGED_H = "arch/x86/kvm/svm/svm.h"


def _parse_one(job: tuple[str, tuple[str, ...]]) -> None:
    path, args = job
    ci.Index.create().parse(path, args=["--no-default-config", *args], options=0x200)  # KeepGoing, as kaudit


def _cpu() -> float:
    """CPU seconds (user + system) of this process and its waited-for children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bare_parse(jobs: list[ParseJob], processes: int) -> tuple[float, float]:
    """(wall, CPU) seconds to parse every file with libclang and nothing else."""
    work = [(str(job.path), job.args) for job in jobs]
    start, cpu = time.perf_counter(), _cpu()
    if processes == 1:
        for item in work:
            _parse_one(item)
    else:
        with get_context("fork").Pool(processes) as pool:
            pool.map(_parse_one, work, chunksize=1)
    return time.perf_counter() - start, _cpu() - cpu


def _tree_pss(pid: int) -> int:
    """Proportional resident bytes of a process and all its descendants (from /proc): a page shared by
    n of them counts 1/n in each, so the sum is the memory they hold together."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            total += next(int(line.split()[1]) << 10 for line in rollup.splitlines() if line.startswith("Pss:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total


def kaudit(args: list[str]) -> tuple[float, int, float]:
    """(wall seconds, peak PSS of the process tree, CPU seconds) of one CLI run."""
    script = Path(sys.executable).with_name("kaudit")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from kaudit.cli import main; main()"]
    start, cpu = time.perf_counter(), _cpu()
    proc = subprocess.Popen([*command, "audit", *args, "--quiet"], stdout=subprocess.DEVNULL)
    peak = 0

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, _tree_pss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    seconds = time.perf_counter() - start
    sampler.join()
    if code not in (0, 1):
        raise SystemExit(f"kaudit audit {' '.join(args)} exited {code}")
    return seconds, peak, _cpu() - cpu


def _copy_tree(root: Path, compdb: Path | None, changed: list[str]) -> tuple[Path, Path | None, Path]:
    """A hard-link copy of root beside it (same filesystem), with real copies
    of the files about to change; the compile database moved to it."""
    holder = Path(tempfile.mkdtemp(prefix=".kaudit-bench-", dir=root.parent))
    copy = holder / root.name
    shutil.copytree(root, copy, symlinks=True, copy_function=os.link, ignore=shutil.ignore_patterns(".git"))
    for rel in changed:
        (copy / rel).unlink()
        shutil.copy2(root / rel, copy / rel)
    moved = None
    if compdb is not None:
        moved = holder / "compile_commands.json"
        moved.write_text(compdb.read_text().replace(f'"{root}/', f'"{copy}/').replace(f'"{root}"', f'"{copy}"')
                         .replace(f"-I{root}/", f"-I{copy}/").replace(f" {root}/", f" {copy}/"))
    return copy, moved, holder


def _line(label: str, seconds: float, cpu: float, base: tuple[float, float] | None = None,
          base_name: str = "") -> str:
    ratio = f"  = {seconds / base[0]:5.2f}x {base_name} (CPU {cpu / base[1]:4.2f}x)" if base else ""
    return f"  {label:<56} {seconds:7.2f} s  CPU {cpu:7.2f} s{ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", nargs="?", type=Path, default=sample_tree())
    parser.add_argument("--compdb", type=Path, help="compile database (default: no-build mode)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the cold/warm round (median reported)")
    parser.add_argument("--model-vcpus", type=int, nargs="*", default=[], help="also time the model per key")
    options = parser.parse_args()
    root = options.tree.resolve()
    n = options.jobs
    scratch = Path(tempfile.mkdtemp(prefix="kaudit-bench-"))
    common = ["--jobs", str(n), *(["--compdb", str(options.compdb)] if options.compdb else [])]
    try:
        globs = rule_sources(load_rules(default_rules_dir()))
        jobs = parse_jobs(root, scratch / "flags", options.compdb, globs)
        rows: dict[str, list[tuple[float, float]]] = {}
        peaks: list[int] = []

        def record(name: str, value: tuple[float, float]) -> None:
            rows.setdefault(name, []).append(value)

        def audit(args: list[str]) -> tuple[float, float]:
            seconds, peak, cpu = kaudit(args)
            peaks.append(peak)
            return seconds, cpu

        for round_no in range(options.rounds):
            cache = scratch / f"cache-{round_no}"
            run = ["--cache-dir", str(cache), *common]
            record("bare1", bare_parse(jobs, 1))
            record("bareN", bare_parse(jobs, n))
            for name, extra in (("cold", []), ("warm", []), ("warm_nosim", ["--sim-steps", "0"]),
                                ("warm_nomodel", ["--no-model"])):
                record(name, audit([str(root), *run, *extra]))
        changed = [rel for rel in (CHANGED_C, CHANGED_H) if (root / rel).is_file()]
        if changed:
            copy, moved, holder = _copy_tree(root, options.compdb, changed)
            try:
                run = ["--cache-dir", str(scratch / "cache-0"), "--jobs", str(n)]
                run += ["--compdb", str(moved)] if moved else []
                copy_jobs = parse_jobs(copy, scratch / "flags", moved, globs)
                kaudit([str(copy), *run])  # the copy's first run: every file's facts come from the original's
                record("copy_warm", audit([str(copy), *run]))
                c_file = next((j for j in copy_jobs if str(j.path).endswith(CHANGED_C)), None)
                for rel, name, text in ((CHANGED_C, "one_c", "/* kaudit bench: a comment */"),
                                        (CHANGED_C, "one_c_code", "int kaudit_bench_fn(void) { return 0; }"),
                                        (CHANGED_H, "one_h", "/* kaudit bench: a comment */")):
                    if rel in changed:
                        with open(copy / rel, "a") as handle:
                            handle.write(f"\n{text}\n")
                        record(name, audit([str(copy), *run]))
                if c_file is not None:
                    record("bare_c", bare_parse([c_file], 1))
                record("original_again", audit([str(root), "--cache-dir", str(scratch / "cache-0"), *common]))
            finally:
                shutil.rmtree(holder, ignore_errors=True)
        cache_size = sum(p.stat().st_size for p in (scratch / "cache-0").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    med = {name: statistics.median(wall for wall, _ in values) for name, values in rows.items()}
    cpu = {name: statistics.median(c for _, c in values) for name, values in rows.items()}
    mode = f"compile database {options.compdb}" if options.compdb else "no-build mode (kaudit's synthesised flags)"
    print(f"tree: {root}\nmode: {mode}; {len(jobs)} files; N = {n} processes; "
          f"{options.rounds} round(s), medians; kaudit = the CLI, as a subprocess")
    print("wall seconds, and CPU seconds (user + system, workers included: less sensitive to a loaded machine)")
    bare_n = (med["bareN"], cpu["bareN"])

    def show(label: str, name: str, base: tuple[float, float] | None = None, base_name: str = "") -> None:
        if name in med:
            print(_line(label, med[name], cpu[name], base, base_name))

    print("bare libclang parse (same files, same flags):")
    show("1 process", "bare1")
    show(f"{n} processes", "bareN")
    print(f"kaudit audit -j {n}, as a user runs it (model and cost simulation included):")
    show("cold (empty cache)", "cold", bare_n, f"bare ({n} proc.)")
    show("warm", "warm", bare_n, f"bare ({n} proc.)")
    show("warm, --sim-steps 0 (no cost simulation)", "warm_nosim")
    show("warm, --no-model (no model, no simulation)", "warm_nomodel")
    if "copy_warm" in med:
        print("a hard-link copy of the tree, same cache:")
        show("copy of the tree, nothing changed", "copy_warm")
        if "bare_c" in med:
            show(f"after a comment added to {CHANGED_C}", "one_c", (med["bare_c"], cpu["bare_c"]), "its bare parse")
            show(f"after a function added to {CHANGED_C}", "one_c_code", (med["bare_c"], cpu["bare_c"]),
                 "its bare parse")
            show(f"bare parse of {CHANGED_C} alone (1 process)", "bare_c")
        show(f"after a comment added to {CHANGED_H} too", "one_h")
        show("the original tree again (still warm?)", "original_again")
    print(f"peak memory (kaudit and its workers, PSS summed): {max(peaks) / (1 << 30):.2f} GiB")
    print(f"cache after the runs: {cache_size / (1 << 20):.1f} MiB")
    print(json.dumps({"wall_s": {k: round(v, 3) for k, v in med.items()},
                      "cpu_s": {k: round(v, 3) for k, v in cpu.items()}, "peak_pss_bytes": max(peaks),
                      "cache_bytes": cache_size}))
    if options.model_vcpus:
        _model_times(root, options)


def _model_times(root: Path, options: argparse.Namespace) -> None:
    """The runtime model's time per modelled key and vCPU count (in process), and over all keys."""
    rules = load_rules(default_rules_dir())
    result = audit_tree(root, rules, options.jobs, None, ModelSettings(sim_steps=0), options.compdb)
    totals = dict.fromkeys(options.model_vcpus, 0.0)
    for rule, analysis in zip(rules, result.analyses, strict=True):
        for key in sorted({j.site.key for j in analysis.sites}):
            for vcpus in options.model_vcpus:
                start = time.perf_counter()
                outcome = check_key(analysis, rule, key, ModelSettings(vcpus=vcpus))
                if isinstance(outcome, Unmodelled):
                    print(f"model {key}: not modelled ({outcome.reason})")
                    break
                took = time.perf_counter() - start
                totals[vcpus] += took
                bound = " (bound hit)" if outcome.bound_hit else ""
                print(f"model {key}, {vcpus} vCPUs: {outcome.status} {outcome.violation} "
                      f"{outcome.states} states, {took:.3f} s{bound}")
    for vcpus, total in totals.items():
        print(f"model, every key, {vcpus} vCPUs: {total:.3f} s")


if __name__ == "__main__":
    main()
