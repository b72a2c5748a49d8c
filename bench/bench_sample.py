"""Benchmark on the bundled sample (or a tree given as argv[1]): prints, from
one run, kaudit's facts extraction vs a bare libclang parse of the same files
with the same flags, and the runtime model's time for 2, 3 and 4 vCPUs.

    python bench/bench_sample.py [TREE]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import clang.cindex as ci

from kaudit.analysis import inhibit_balance
from kaudit.callgraph import build_call_graph
from kaudit.model.check import check_key
from kaudit.program import Program
from kaudit.resources import default_rules_dir, sample_tree
from kaudit.rules import load_rules
from kaudit.scan import ParseJob, find_sources, kernel_include_args, parse_tree


def main() -> None:
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else sample_tree()
    sources = find_sources(root)
    args = kernel_include_args(root)

    start = time.perf_counter()
    for path in sources:
        ci.Index.create().parse(str(path), args=args, options=0x200)
    bare = time.perf_counter() - start

    start = time.perf_counter()
    units = parse_tree(root, [ParseJob(p, tuple(args)) for p in sources], 1, None)
    facts = time.perf_counter() - start

    start = time.perf_counter()
    program = Program.from_facts(units)
    graph = build_call_graph(program)
    rule = load_rules(default_rules_dir())[0]
    analysis = inhibit_balance.run(program, graph, rule)
    rules_time = time.perf_counter() - start

    print(f"files: {len(sources)}")
    print(f"bare libclang parse: {bare:.3f} s")
    print(f"kaudit facts (parse + extract, 1 job, no cache): {facts:.3f} s  ratio {facts / bare:.2f}x")
    print(f"call graph + rule: {rules_time:.3f} s  ({graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges)")
    for vcpus in (2, 3, 4):
        for key in sorted({j.site.key for j in analysis.sites}):
            start = time.perf_counter()
            outcome = check_key(analysis, rule, key, vcpus)
            if outcome is not None:
                print(f"model {key} {vcpus} vCPUs: {outcome.status} {outcome.violation or ''} "
                      f"{outcome.states} states in {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
