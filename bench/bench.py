"""Benchmark kaudit on a tree, every figure measured in this one run.

    python bench/bench.py [TREE] [--compdb compile_commands.json] [--vcpus 2 3 4]

Prints: bare libclang parse of the same files with the same flags (one
process), kaudit's facts extraction of them (one process, no cache) and the
ratio; the whole audit with 2 workers, cold and warm cache; and the runtime
model's time per modelled key and vCPU count. TREE defaults to the sample.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clang.cindex as ci

from kaudit.audit import audit_tree, parse_jobs
from kaudit.model.check import ModelSettings, check_key
from kaudit.resources import default_rules_dir, sample_tree
from kaudit.rules import load_rules, rule_sources
from kaudit.scan import parse_tree


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def bare_parse(jobs: list[Any]) -> None:
    for job in jobs:
        ci.Index.create().parse(str(job.path), args=list(job.args), options=0x200)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tree", nargs="?", type=Path, default=sample_tree())
    parser.add_argument("--compdb", type=Path)
    parser.add_argument("--vcpus", type=int, nargs="*", default=[2, 3, 4])
    options = parser.parse_args()
    root = options.tree.resolve()
    rules = load_rules(default_rules_dir())

    with tempfile.TemporaryDirectory() as scratch:
        jobs = parse_jobs(root, Path(scratch), options.compdb, rule_sources(rules))
        _, bare = timed(bare_parse, jobs)
        _, facts = timed(parse_tree, root, jobs, 1, None)
        cache = Path(scratch) / "cache"
        settings = ModelSettings(sim_steps=0)
        result, cold = timed(audit_tree, root, rules, 2, cache, settings, options.compdb)
        _, warm = timed(audit_tree, root, rules, 2, cache, settings, options.compdb)

    mode = "compile database" if options.compdb else "no-build (or plain) flags"
    print(f"tree: {root} ({mode}), {len(jobs)} files")
    print(f"bare libclang parse, 1 process:                      {bare:8.2f} s")
    print(f"kaudit facts (parse + extract), 1 process, no cache: {facts:8.2f} s = {facts / bare:.2f}x bare")
    print(f"kaudit audit, 2 workers, cold cache:                 {cold:8.2f} s = {cold / bare:.2f}x bare")
    print(f"kaudit audit, 2 workers, warm cache:                 {warm:8.2f} s = {warm / bare:.2f}x bare")
    for rule, analysis in zip(rules, result.analyses, strict=True):
        for key in sorted({j.site.key for j in analysis.sites}):
            for vcpus in options.vcpus:
                outcome, seconds = timed(check_key, analysis, rule, key, vcpus)
                if outcome is None:
                    break
                bound = " (bound hit)" if outcome.bound_hit else ""
                print(f"model {key}, {vcpus} vCPUs: {outcome.status} {outcome.violation} "
                      f"{outcome.states} states, {seconds:.3f} s{bound}")


if __name__ == "__main__":
    main()
