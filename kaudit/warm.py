"""Warm runs: the merged program and its call graph, cached whole.

Keyed by the content keys of every TU's facts (in order) and the source of
the code that merges them and builds the graph, so a re-run with nothing
changed loads both in one read without decoding any TU's facts; a change to
any TU, or to that code, is another key. Function bodies stay packed until
something reads them (program.FunctionTable).
"""

from __future__ import annotations

import itertools
import json
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from kaudit.cache import Store, digest_bytes, inflate, salt
from kaudit.packed import pack_text
from kaudit.program import Program

if TYPE_CHECKING:
    import networkx as nx

_CODE = ("program.py", "callgraph.py")


def program_key(unit_keys: list[str]) -> str:
    code = b"".join((Path(__file__).parent / name).read_bytes() for name in _CODE)
    return "program:" + digest_bytes("\0".join([salt(digest_bytes(code)), *unit_keys]).encode())


def save(store: Store, key: str, program: Program, graph: nx.DiGraph) -> None:
    """One blob: the length of the packed header, the header (the program
    without function bodies, the graph, where each function's text ends),
    then each function's packed text, unpacked only when read."""
    header, packed = program.to_json()
    ends, end = [], 0
    for item in packed:
        end += len(item)
        ends.append(end)
    graph_json = {"nodes": [[n, a["name"], a["file"], a["line"], a["external"]] for n, a in graph.nodes(data=True)],
                  "edges": [[u, v, a["kind"], a["lines"]] for u, v, a in graph.edges(data=True)]}
    first = pack_text(json.dumps({"program": header, "graph": graph_json, "ends": ends}, separators=(",", ":")))
    store.put_blob(key, b"".join([len(first).to_bytes(8, "little"), first, *packed]))


def load(store: Store, key: str) -> tuple[Program, nx.DiGraph] | None:
    """The cached program and graph, or None (absent, or not of the shape
    written: such an entry is dropped)."""
    blob = store.get_blob(key)
    if blob is None:
        return None
    try:
        size = int.from_bytes(blob[:8], "little")
        raw = json.loads(inflate(blob[8:8 + size]))
        body, starts = memoryview(blob)[8 + size:], [0, *raw["ends"]]
        if starts[-1] != len(body):
            raise ValueError("truncated program entry")
        packed = [bytes(body[a:b]) for a, b in itertools.pairwise(starts)]
        import networkx as nx  # only here: a warm run answered by its cached report never loads it

        program = Program.from_json(raw["program"], packed)
        graph = nx.DiGraph()
        graph.add_nodes_from((n, {"name": name, "file": file, "line": line, "external": external})
                             for n, name, file, line, external in raw["graph"]["nodes"])
        graph.add_edges_from((u, v, {"kind": kind, "lines": lines}) for u, v, kind, lines in raw["graph"]["edges"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError, zlib.error):
        store.discard(key)
        return None
    return program, graph
