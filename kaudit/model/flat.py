"""Graph utilities over linked model code (branch targets are op indexes)."""

from __future__ import annotations

from collections.abc import Iterable

from kaudit.ir.names import subexprs
from kaudit.ir.nodes import Expr
from kaudit.model.code import Loc, Op

TARGETS = {"jump": (0,), "branch": (1, 2), "each": (1, 2)}
REMAP = {**TARGETS, "dry": (0,)}  # ops whose arguments name pcs (a dry run's start is not a successor)


def successors(code: list[Op], pc: int) -> tuple[int, ...]:
    op = code[pc]
    if op.kind == "end":
        return ()
    if op.kind in TARGETS:
        return tuple(op.args[i] for i in TARGETS[op.kind])
    return (pc + 1,)


def link(ops: list[Op], labels: dict[int, int]) -> list[Op]:
    """Branch targets from labels to op indexes."""
    out = []
    for op in ops:
        if op.kind in REMAP:
            args = list(op.args)
            for i in REMAP[op.kind]:
                args[i] = labels[args[i]]
            op = op.but(args=tuple(args))
        out.append(op)
    return out


def rebuild(code: list[Op], before: dict[int, list[Op]], keep: list[bool] | None = None,
            edges: dict[tuple[int, int], list[Op]] | None = None) -> tuple[list[Op], list[int]]:
    """New code: `before[pc]` runs ahead of op pc (a jump to pc runs it too),
    ops with keep[pc] false are dropped (a dropped branch must be replaced
    by a jump in `before`), `edges[(pc, target)]` runs on that branch edge.
    Targets in all of them are old pcs.
    Returns the code and, for each old pc, where it starts now."""
    keep = keep or [True] * len(code)
    edges = edges or {}
    out: list[Op] = []
    where = [0] * (len(code) + 1)
    patches: list[tuple[int, int, tuple[int, int | None]]] = []  # (op, arg, (target, edge source))
    for pc, op in enumerate(code):
        where[pc] = len(out)
        for extra in before.get(pc, ()):
            if extra.kind in REMAP:
                patches.extend((len(out), i, (extra.args[i], None)) for i in REMAP[extra.kind])
            out.append(extra)
        if not keep[pc]:
            continue
        if op.kind in REMAP:
            for i in REMAP[op.kind]:
                target = op.args[i]
                patches.append((len(out), i, (target, pc if (pc, target) in edges else None)))
        out.append(op)
    where[len(code)] = len(out)
    edge_start = {}
    for (pc, target), ops in sorted(edges.items()):
        edge_start[(pc, target)] = len(out)
        for op in ops:
            if op.kind in REMAP:
                patches.extend((len(out), i, (op.args[i], None)) for i in REMAP[op.kind])
            out.append(op)
        patches.append((len(out), 0, (target, None)))
        out.append(Op("jump", (target,), ops[-1].function, ops[-1].file, ops[-1].line, ""))
    for index, arg, (target, source) in patches:
        args = list(out[index].args)
        args[arg] = edge_start[(source, target)] if source is not None else where[target]
        out[index] = out[index].but(args=tuple(args))
    return out, where


def reaching(code: list[Op], goals: Iterable[int]) -> set[int]:
    """The pcs from which some goal pc can be reached (goals included)."""
    preds: dict[int, list[int]] = {pc: [] for pc in range(len(code))}
    for pc in range(len(code)):
        for nxt in successors(code, pc):
            if nxt < len(code):
                preds[nxt].append(pc)
    seen = set(goals)
    stack = list(seen)
    while stack:
        for prev in preds[stack.pop()]:
            if prev not in seen:
                seen.add(prev)
                stack.append(prev)
    return seen


def reachable(code: list[Op], starts: Iterable[int], stop: int = -1) -> set[int]:
    """The pcs reachable from starts (included), not through `stop`."""
    seen = {s for s in starts if s != stop}
    stack = list(seen)
    while stack:
        for nxt in successors(code, stack.pop()):
            if nxt < len(code) and nxt != stop and nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def post_dominators(code: list[Op]) -> list[int]:
    """The immediate post-dominator of each pc; len(code) stands for the exit
    (also for ops in a loop that never exits). Cooper, Harvey and Kennedy's
    iteration over the reversed graph."""
    n = len(code)
    exit_ = n
    succ = [[s for s in successors(code, pc) if s < n] or [exit_] for pc in range(n)]
    preds: list[list[int]] = [[] for _ in range(n + 1)]
    for pc, targets in enumerate(succ):
        for t in targets:
            preds[t].append(pc)
    number: dict[int, int] = {}
    order: list[int] = []
    seen, stack = {exit_}, [(exit_, iter(preds[exit_]))]
    while stack:
        node, it = stack[-1]
        for p in it:
            if p not in seen:
                seen.add(p)
                stack.append((p, iter(preds[p])))
                break
        else:
            number[node] = len(order)
            order.append(node)
            stack.pop()
    idom = {exit_: exit_}

    def meet(a: int, b: int) -> int:
        while a != b:
            while number[a] < number[b]:
                a = idom[a]
            while number[b] < number[a]:
                b = idom[b]
        return a

    changed = True
    while changed:
        changed = False
        for node in reversed(order):
            if node == exit_:
                continue
            known = [s for s in succ[node] if s in idom]
            if not known:
                continue
            new = known[0]
            for other in known[1:]:
                new = meet(other, new)
            if idom.get(node) != new:
                idom[node] = new
                changed = True
    return [idom.get(pc, exit_) for pc in range(n)]


def deciders(code: list[Op], ipdom: list[int]) -> dict[int, set[int]]:
    """For each pc, the branches and vCPU loops that decide whether it runs
    (control dependence, Ferrante, Ottenstein and Warren): for each edge
    B -> S, S and the post-dominators of S short of B's own. Code that never
    reaches the exit has no post-dominators to walk: there, everything B
    reaches before its paths join again."""
    n = len(code)
    out: dict[int, set[int]] = {}
    succ = [successors(code, pc) for pc in range(n)]
    exits = reaching(code, [pc for pc in range(n) if not succ[pc] or any(s >= n for s in succ[pc])])
    for pc, op in enumerate(code):
        if op.kind not in ("branch", "each"):
            continue
        if pc not in exits or any(s < n and s not in exits for s in succ[pc]):
            for node in reachable(code, [s for s in succ[pc] if s < n], stop=ipdom[pc]):
                out.setdefault(node, set()).add(pc)
            continue
        for runner in succ[pc]:
            while runner != ipdom[pc] and runner < n:
                out.setdefault(runner, set()).add(pc)
                runner = ipdom[runner]
    return out


def decided_by(pcs: Iterable[int], deciders: dict[int, set[int]]) -> set[int]:
    """The branches and loops that decide, directly or through others, whether any of pcs runs."""
    found: set[int] = set()
    stack = list(pcs)
    while stack:
        for decider in deciders.get(stack.pop(), ()):
            if decider not in found:
                found.add(decider)
                stack.append(decider)
    return found


def local_reads(expr: Expr | None) -> set[int]:
    """The local slots an expression reads (a field of another vCPU reads its reference)."""
    found: set[int] = set()
    if expr is not None:
        for e in subexprs(expr):
            if isinstance(e, Loc):
                if e.kind == "local":
                    found.add(e.slot)
                if e.ref >= 0:
                    found.add(e.ref)
    return found
