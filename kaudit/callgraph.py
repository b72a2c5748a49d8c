"""The program's call graph as a networkx.DiGraph.

Nodes are function ids (see kaudit.program) with their file and line; calls
to functions the tree does not define become nodes with `external=True`.
Edges carry how the call was written: direct, static_call, member (ops
table), array (handler table); indirect calls go to every function that an
ops table or handler array of the tree binds to that slot.
"""

from __future__ import annotations

import networkx as nx

from kaudit.program import Program


def build_call_graph(program: Program) -> nx.DiGraph:
    graph = nx.DiGraph()
    for fid in sorted(program.functions):
        name, file, line = program.header(fid)
        graph.add_node(fid, name=name, file=file, line=line, external=False)
    for fid in sorted(program.functions):
        for call in program.call_sites(fid):
            kind, targets = program.resolve_call(fid, call)
            for target in targets:
                if target not in graph:
                    graph.add_node(target, name=target, file=None, line=None, external=True)
                if graph.has_edge(fid, target):
                    graph[fid][target]["lines"].append(call["line"])
                else:
                    graph.add_edge(fid, target, kind=kind, lines=[call["line"]])
    return graph
