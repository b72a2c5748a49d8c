"""Extract one key's protocol from the lowered program, ready to explore.

Entries are the per-vCPU functions nearest to the key's per-vCPU sites (the
site's function, or its nearest per-vCPU callers). Each may run at any
time, any number of times, on any vCPU, except an exit handler (bound in a
handler array) whose actions only release the key: it runs only after that
vCPU's request, and the report says so. For an inhibit, an environment
changes the word for another reason through the rule's locked update API,
whose body in the tree is compiled like any other code.

The passes: inline (kaudit.model.inline) -> resolve storage
(kaudit.model.resolve) -> find the bookkeeping and the actions
(kaudit.model.bookkeeping) -> insert the decisions -> slice -> widen the
inlining while the slice reads unmodelled state that some callee writes.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace
from typing import Literal

import networkx as nx

from kaudit.analysis.context import (
    calls_of,
    held_by_callers,
    holder,
    only_callers,
    per_vcpu_functions,
    vcpu_param,
)
from kaudit.analysis.counter_transition import lifecycle_only
from kaudit.analysis.results import Analysis, JudgedSite
from kaudit.ir.effects import Effects
from kaudit.ir.evaluate import evaluate, fold
from kaudit.ir.names import Keys, lock_key, render_call, subexprs
from kaudit.ir.nodes import Binary, Branch, CallOp, Const, CType, EachVcpu, Expr, Function, Var
from kaudit.ir.program import LoweredProgram
from kaudit.kernel_api import LOCK_ACQUIRE
from kaudit.model.bookkeeping import (
    Bookkeeping,
    Dataflow,
    actions_of,
    diverting,
    find_bookkeeping,
    loop_values,
    on_behalf,
    op_reads,
    op_writes,
    reaching_local_defs,
    reads,
    state_of,
    truth_of_local,
)
from kaudit.model.code import Action, Entry, Loc, Op, Protocol
from kaudit.model.domains import domains
from kaudit.model.flat import decided_by, deciders, link, post_dominators, reachable, reaching, rebuild, successors
from kaudit.model.generations import generations
from kaudit.model.inline import BACKEND, RESULT, Core, Inliner
from kaudit.model.resolve import SELF, VMOBJ, Resolver
from kaudit.rules import Rule

ENV_VALUE = Var("set", "local", CType("bool"))
WIDENINGS = 6  # rounds that may also compile readers (precision); modelled state widens until it settles
MAX_WIDENINGS = 16
MAX_OPS = 2_000  # every inhibit protocol of 6.1 and 6.12 is under 500; vCPU create paths are 10,000+
MAX_COMPILED = 4 * MAX_OPS  # slicing keeps 0.4-0.7 of real kernels' code: beyond this it cannot fit


@dataclass(frozen=True)
class Unmodelled:
    """Why a key's protocol is not modelled (a reason a reviewer would accept)."""

    reason: str
    too_large: bool = False


def nearest_vcpu_functions(graph: nx.DiGraph, vcpu_fns: set[str], fid: str) -> set[str]:
    """The function itself if it runs on a vCPU, else its nearest callers that do."""
    if fid in vcpu_fns:
        return {fid}
    found: set[str] = set()
    seen, frontier = {fid}, [fid]
    while frontier and not found:
        nxt = []
        for node in frontier:
            for caller in sorted(graph.predecessors(node)) if node in graph else ():
                if caller in seen:
                    continue
                seen.add(caller)
                if caller in vcpu_fns:
                    found.add(caller)
                else:
                    nxt.append(caller)
        frontier = nxt
    return found


def _called_freely(graph: nx.DiGraph, paths: nx.DiGraph, fid: str) -> bool:
    """Whether some caller-less function reaches `fid` on a path within `paths`."""
    return any(graph.in_degree(node) == 0 for node in nx.ancestors(paths, fid) | {fid})


def program_effects(analysis: Analysis) -> Effects:
    """The program's effect summaries, with what per-vCPU functions write."""
    effects = analysis.lowered.effects
    if effects.vcpu_written is None:
        vcpu_fns = [fid for fid in analysis.program.functions if vcpu_param(analysis.program, fid, analysis.scopes)]
        effects.vcpu_written = {w for fid in vcpu_fns for w in effects.writes.get(fid, ())}
    return effects


@dataclass
class _Compiled:
    code: list[Op]
    starts: list[int]
    env: int
    resolver: Resolver
    points: list  # (pc, fixed direction, value, stack, where) of the key's API calls
    key_value: int  # the key's enumerator value
    other_value: int  # the reason the environment changes


ResetMoves = Literal["bookkeeping", "state", "nothing"]


class Extractor:
    """Builds the protocol of one key of one rule from the entries given."""

    def __init__(self, analysis: Analysis, rule: Rule, key: str) -> None:
        self.analysis = analysis
        self.lowered = analysis.lowered
        self.rule = rule
        self.key = key
        self.scopes = analysis.scopes
        self.api = {a.function: a for a in rule.api}
        self.effects = program_effects(analysis)

    def entry_subst(self, fid: str, kind: str) -> dict[str, Expr]:
        """Pointer parameters to a vCPU's or the VM's object are that object; the rest are inputs, but
        a reset's parameters that its callers all pass as one constant."""
        out: dict[str, Expr] = self.constant_args(fid) if kind == "reset" else {}
        for param in self.lowered.function(fid).params:
            if param.ctype.ptr and param.ctype.record in self.scopes.per_vcpu:
                out[param.name] = SELF
            elif param.ctype.ptr and param.ctype.record in self.scopes.vm_wide:
                out[param.name] = VMOBJ
        return out

    @functools.cache  # noqa: B019 -- one extractor per key; its compiles ask for the same entries
    def constant_args(self, fid: str) -> dict[str, Expr]:
        """The parameters every call of a lifecycle entry from outside create and destroy passes as one
        constant: kvm_vcpu_reset(vcpu, true) on INIT (create's own reset(vcpu, false) is part of create).
        Nothing for a function whose address is taken: who calls it, with what, is not known."""
        function, graph = self.lowered.function(fid), self.analysis.graph
        if function.name in self.lowered.address_taken or fid not in graph:
            return {}
        inside = lifecycle_only(graph, self.lowered, self.rule)
        passed: dict[int, set[int | None]] = {}
        for caller in sorted(set(graph.predecessors(fid)) - inside):
            for _, instr in self.lowered.function(caller).instructions():
                if isinstance(instr, CallOp) and fid in self.lowered.targets(caller, instr.call):
                    for i, arg in enumerate(instr.call.args):
                        passed.setdefault(i, set()).add(fold(arg))
        return {function.params[i].name: Const(value) for i, (value,) in
                ((i, values) for i, values in passed.items() if len(values) == 1)
                if value is not None and i < len(function.params)}

    def object_holder(self, fid: str) -> str | None:
        """The pointer through which a vCPU holds the per-vCPU object an entry takes, when the vCPU does
        not embed it (`kvm_vcpu.arch.apic` for `apic_set_spiv(struct kvm_lapic *apic, ...)`)."""
        param = next((p for p in self.lowered.function(fid).params
                      if p.ctype.ptr and p.ctype.record in self.scopes.per_vcpu), None)
        return holder(self.analysis.program, param.ctype.record, self.rule.per_vcpu_types) if param else None

    @functools.cached_property
    def api_code(self) -> set[str]:
        """The rule's API functions and everything they call."""
        graph = self.analysis.graph
        api = {f for name in self.api for f in self.lowered.program.functions_named(name)}
        return api.union(*(nx.descendants(graph, f) for f in api if f in graph))

    def reset_moves(self, fid: str, protocol: Protocol) -> ResetMoves:
        """What running `fid` can change of what the protocol sees: "bookkeeping" when it writes the
        protocol's flags or counts, or the word other than in the rule's API bodies (whose bits of other
        reasons the environment already moves at will); "state" when it writes other state the protocol
        models or reads, or reaches a set or clear of the key; else "nothing"."""
        graph = self.analysis.graph
        reached = {fid} | (nx.descendants(graph, fid) if fid in graph else set())
        writes = self.effects.plain_writes(fid)
        books = Keys({*protocol.flag_names, *protocol.count_names})
        word = Keys({self.rule.word})
        if books.touched_by(writes) or any(word.touched_by(self.effects.own_writes(f))
                                           for f in reached - self.api_code):
            return "bookkeeping"
        if Keys(protocol.state - {self.rule.word}).touched_by(writes) or \
                any(j.site.key == self.key and j.site.function in reached for j in self.analysis.sites):
            return "state"
        return "nothing"

    def bookkeeping(self, protocol: Protocol) -> set[str]:
        """The field keys of a protocol's flags and counts, and of a count's flag: what decides whether it
        moves that the functions moving it also write (the flag destroy tests before undoing a share)."""
        movers = {j.site.function for j in self.analysis.sites if j.site.key == self.key}
        kept = Keys(protocol.guards).touched_by(set().union(*map(self.effects.own_writes, movers)))
        return {*protocol.flag_names, *protocol.count_names, *kept}

    def unreached_writers(self, fids: list[str], protocol: Protocol) -> list[str]:
        """Functions that write the protocol's bookkeeping or the word on a path nothing it runs covers: a
        write some caller-less function (an ioctl user space issues at will) reaches without passing
        through the given entries, the rule's API, create or destroy, even where those reach it too
        (a helper create calls that an ioctl calls as well). On a path through per-vCPU code, the
        nearest per-vCPU function above the write; on one through none (a VM ioctl), the writer itself."""
        graph = self.analysis.graph
        books = Keys(self.bookkeeping(protocol) | {self.rule.word})  # the word outside the API
        run = set(fids) | lifecycle_only(graph, self.lowered, self.rule) | self.api_code
        free = graph.subgraph(node for node in graph if node not in run)
        vcpu_fns = per_vcpu_functions(self.analysis.program, self.scopes)
        vm_only = free.subgraph(node for node in free if node not in vcpu_fns)
        found: set[str] = set()
        for fid in sorted(self.lowered.program.functions):
            if fid in run or not books.touched_by(self.effects.own_writes(fid)):
                continue
            if fid not in graph:
                found.add(fid)
                continue
            if fid not in vcpu_fns and _called_freely(graph, vm_only, fid):
                found.add(fid)
            if _called_freely(graph, free, fid):
                found |= nearest_vcpu_functions(free, vcpu_fns, fid)
        return sorted(found)

    def makes(self, fid: str, protocol: Protocol) -> str | None:
        """The pointer through which the vCPU holds the per-vCPU object whose bookkeeping `fid` writes, when
        `fid` sets it too: it makes a new object (kvm_create_lapic() sets kvm_vcpu.arch.apic,
        kvm_hv_vcpu_init() kvm_vcpu.arch.hyperv) rather than changing the one a vCPU holds."""
        writes = self.effects.plain_writes(fid)
        holders = {holder(self.analysis.program, book.split(".")[0], self.rule.per_vcpu_types)
                   for book in Keys(self.bookkeeping(protocol)).touched_by(writes)}
        return min(holders) if holders and None not in holders and holders <= writes else None

    @functools.cache  # noqa: B019 - one extractor per key: its entries are asked once per compile
    def callers_hold(self, fid: str) -> tuple[tuple[str, str], ...]:
        """The VM-wide locks, with their mode, that every caller of a static helper holds at each of its
        calls (held_by_callers): run on its own, the helper runs inside their critical section."""
        held = held_by_callers(self.lowered, self.analysis.graph, fid)
        modes: dict[str, set[str]] = {}
        for caller in (only_callers(self.lowered, self.analysis.graph, fid) or ()) if held else ():
            for _, instr in self.lowered.function(caller).instructions():
                if isinstance(instr, CallOp) and instr.call.callee in LOCK_ACQUIRE and instr.call.args:
                    modes.setdefault(lock_key(instr.call.args[0]), set()).add(LOCK_ACQUIRE[instr.call.callee])
        return tuple((key, min(modes[key])) for key in sorted(held)  # "read" where any caller only reads
                     if key in modes and key.split(".", 1)[0] in self.scopes.vm_wide)

    def is_exit_handler(self, fid: str) -> bool:
        return any(e["target"] == fid for t in self.lowered.program.tables if t["array"] for e in t["entries"])

    def env_api(self):
        return next((a for a in self.rule.api if a.value_arg is not None and a.takes_lock), None)

    def compile(self, entries: list[tuple[str, str]], interesting: set[str], readers: frozenset[str], env: bool,
                core: Core, coarse: bool) -> _Compiled:
        inliner = Inliner(self.lowered, self.effects, self.api, interesting, self.rule.update_lock, self.rule.word,
                          core, readers, coarse)
        labels = [inliner.entry(fid, self.entry_subst(fid, kind), kind == "create", self.callers_hold(fid))
                  for fid, kind in entries]
        fids = [fid for fid, _ in entries]
        env_label = -1
        api = self.env_api() if env else None
        used = {p.key_value for p in inliner.draft.points}
        other = min(set(range(len(used) + 1)) - used)  # a reason no code here names
        if api is not None:
            args: list[Expr] = [VMOBJ] * (max(api.key_arg, api.value_arg) + 1)
            args[api.key_arg] = Const(other, "another reason")
            args[api.value_arg] = ENV_VALUE
            lender = next(iter(self.lowered.program.functions_named(api.function)), fids[0])
            env_label = inliner.synthetic(api, tuple(args), lender, ENV_VALUE)
        key_value = next((p.key_value for p in inliner.draft.points if p.key == self.key), 0)
        # A count of vCPUs must balance whatever the host's settings; an inhibit matters only where AVIC
        # runs, with every feature on.
        resolver = Resolver(inliner.draft, self.scopes, lambda key: key in self.effects.vcpu_written,
                            lambda key: key in self.effects.written_anywhere,
                            self.key if self.rule.engine == "counter-transition" else "",
                            frozenset().union(*map(self.effects.plain_writes, fids)))
        ops, labelled = resolver.run()
        code, moved = thread_constant_tests(link(ops, labelled))
        labelled = {label: moved[pc] for label, pc in labelled.items()}
        entry_pcs = [labelled[s] for s in labels] + ([labelled[env_label]] if env_label in labelled else [])
        code, where, live = fold_constant_branches(code, entry_pcs)
        reached = {label for label, pc in labelled.items() if pc in live}  # a dropped op's pc is its successor's
        labelled = {label: where[pc] for label, pc in labelled.items()}
        points = []
        for point in inliner.draft.points:
            if point.key != self.key or point.label not in reached:
                continue
            fixed = None if point.value is not None else ("request" if point.api.action == "set" else "release")
            value = resolver.pure(point.value) if point.value is not None else None
            caller_fid, call = point.stack[-1]
            caller = self.lowered.program.functions[caller_fid]
            text = render_call(call.call, self.lowered.function(caller_fid).temps)
            points.append((labelled[point.label], fixed, value, point.stack, (caller["name"], point.file, point.line),
                           text))
        return _Compiled(code, [labelled[s] for s in labels], labelled.get(env_label, -1), resolver, points,
                         key_value, other)


def thread_constant_tests(code: list[Op]) -> tuple[list[Op], list[int]]:
    """A store of a constant in a local that, through jumps only, reaches a branch on that local alone
    goes straight where the branch would (a bool helper's `return false;` and its caller's `if
    (!claim(svm)) return;`): the test of the state that chose the constant is then the one that
    skips the action, as where the caller tests the state itself (find_bookkeeping).
    Returns the code and where each old pc starts now."""
    before: dict[int, list[Op]] = {}
    for pc, op in enumerate(code):
        if op.kind != "set" or op.args[0].kind != "local" or (value := fold(op.args[1])) is None:
            continue
        target, seen = pc + 1, set()
        while target < len(code) and code[target].kind == "jump" and target not in seen:
            seen.add(target)
            target = code[target].args[0]
        test = code[target] if target < len(code) else None
        if test is None or test.kind != "branch" or \
                {e for e in subexprs(test.args[0]) if isinstance(e, Loc)} != {op.args[0]}:
            continue
        taken = evaluate(test.args[0], lambda e, slot=op.args[0]: value if e == slot else None)
        if isinstance(taken, int):
            before[pc] = [op, Op("jump", (test.args[1] if taken else test.args[2],), op.function, op.file,
                                 op.line, "")]
    if not before:
        return code, list(range(len(code) + 1))
    return rebuild(code, before, [pc not in before for pc in range(len(code))])


def fold_constant_branches(code: list[Op], starts: list[int]) -> tuple[list[Op], list[int], set[int]]:
    """A branch on locals assigned once with a constant (`msr.index = MSR_IA32_TSC` before the MSR
    switch of kvm_set_msr_common()) goes one way; code no entry reaches any more is dropped.
    Returns the code, where each old pc starts now, and the old pcs still reached."""
    flow = Dataflow(code)
    folded = list(code)
    for pc, op in enumerate(code):
        if op.kind == "branch" and (value := flow.fold(op.args[0])) is not None:
            folded[pc] = op.but(kind="jump", args=(op.args[1] if value else op.args[2],))
    live = reachable(folded, starts)
    out, where = rebuild(folded, {}, [pc in live for pc in range(len(folded))])
    return out, where, live


def insert_decisions(code: list[Op], flow: Dataflow, books: Bookkeeping, actions: list[Action]
                     ) -> tuple[list[Op], list[int]]:
    """A `decide` op before each action; a `dry` op on each edge where a
    bookkeeping test skips the actions, starting where they are still reachable."""
    before: dict[int, list[Op]] = {}
    for action in actions:
        op = code[action.pc]
        function, file, line = action.where
        text = f"{action.text}: {DECISION_TEXT.get(action.direction, action.direction)}"
        before.setdefault(action.pc, []).append(Op("decide", (action.id,), function, file, line, text, op.api,
                                                   op.origin))
    for action in actions:  # a vCPU's part of a recomputed value changes when it writes its own state
        if action.direction != "contribution":
            continue
        watched = contribution_reads(code, action)
        for pc, op in enumerate(code):
            if op.kind == "set" and not op.api and op.args[0].kind == "mine" and op.args[0].slot in watched:
                before.setdefault(pc + 1, []).append(Op("decide", (action.id, "with the write"), op.function,
                                                        op.file, op.line, "its part of the value may have changed",
                                                        op.api, op.origin))
    edges = {}
    for pc, (toward, away) in diverting(code, [a.pc for a in actions]).items():
        op = code[pc]
        if op.kind == "branch" and flow.state_read(reads(op.args[0])) & books.all:
            edges[(pc, away)] = [Op("dry", (toward,), op.function, op.file, op.line,
                                    "skipped by the protocol's bookkeeping: decides as if taken", op.api, op.origin)]
    return rebuild(code, before, edges=edges)


def contribution_reads(code: list[Op], action: Action) -> set[int]:
    """The per-vCPU slots the loop computing a recomputed value reads of each vCPU."""
    slot = truth_of_local(action.value)
    loops = loop_values(code)
    if slot not in loops:
        return set()
    head, _ = loops[slot]
    each = code[head]
    body = reachable(code, [each.args[1]]) - reachable(code, [each.args[2]]) - {head}
    return {loc.slot for pc in body for loc in op_reads(code[pc]) if loc.kind == "cpu"}


DECISION_TEXT = {
    "request": "decides it needs the key", "release": "decides it no longer needs the key",
    "value": "decides by the value it sets", "contribution": "decides by this vCPU's part of the value",
    "delta": "decides by the count's direction", "none": "leaves the decision to the counts",
}


def _may_hold(code: list[Op], starts: list[int]) -> list[set[str]]:
    held: list[set[str] | None] = [None] * len(code)
    stack = [s for s in starts if 0 <= s < len(code)]
    for s in stack:
        held[s] = set()
    while stack:
        pc = stack.pop()
        now = set(held[pc] or ())
        op = code[pc]
        if op.kind == "acquire":
            now.add(op.args[0])
        elif op.kind == "release":
            now.discard(op.args[0])
        for nxt in successors(code, pc):
            if nxt < len(code) and (held[nxt] is None or not now <= held[nxt]):
                held[nxt] = (held[nxt] or set()) | now
                stack.append(nxt)
    return [h or set() for h in held]


class Slicer:
    """What to keep: ops that write bookkeeping, decide, end an entry; what
    they read, transitively; branches whose two ways reach different kept ops."""

    def __init__(self, code: list[Op], books: Bookkeeping, actions: list[Action], result_slot: int) -> None:
        self.code = code
        self.books = books
        self.value_of = {a.id: a.value for a in actions}
        self.result_slot = result_slot
        self.goals = [pc for pc, op in enumerate(code) if op.kind == "decide"]
        self.seen_by_others = {loc.slot for op in code for loc in op_reads(op) + op_writes(op) if loc.kind == "cpu"}

    def reads(self, pc: int) -> list[tuple[str, int]]:
        op = self.code[pc]
        locs = op_reads(op)
        if op.kind == "decide":
            locs = locs + reads(self.value_of.get(op.args[0]))
        names = [("local", loc.slot) if loc.kind == "local" else state_of(loc) for loc in locs]
        names += [("local", loc.ref) for loc in locs if loc.ref >= 0]
        if op.kind == "end":
            names.append(("local", self.result_slot))
        return [n for n in names if n is not None]

    def shared(self, pc: int) -> bool:
        """Whether an op touches state another vCPU can see: VM-wide state,
        another vCPU's fields, or this vCPU's fields that others read. Only
        locks held around such ops can order anything."""
        op = self.code[pc]
        if op.kind in ("decide", "dry"):
            return True
        locs = op_reads(op) + op_writes(op)
        return any(loc.kind in ("vm", "cpu") or (loc.kind == "mine" and loc.slot in self.seen_by_others)
                   for loc in locs)

    def relevant(self) -> set[int]:
        code = self.code
        keep = {pc for pc, op in enumerate(code) if op.kind in ("decide", "dry", "end")
                or any(state_of(loc) in self.books.all for loc in op_writes(op))}
        defs: dict[tuple[str, int], list[int]] = {}
        for pc, op in enumerate(code):
            for loc in op_writes(op):
                name = ("local", loc.slot) if loc.kind == "local" else state_of(loc)
                if name is not None:
                    defs.setdefault(name, []).append(pc)
        reach = reaching_local_defs(code)  # a local's read depends on the writes that reach it; state on all
        controls = deciders(code, post_dominators(code))  # a kept op keeps what decides whether it runs
        toward = reaching(code, self.goals)
        dry_paths = {pc for pc, op in enumerate(code) if op.kind == "dry"
                     for pc in reachable(code, [op.args[0]]) & toward if code[pc].kind == "branch"}
        keep |= dry_paths
        stack = list(keep)
        while stack:
            pc = stack.pop()
            needed = [d for name in self.reads(pc) for d in defs.get(name, ())
                      if name[0] != "local" or reach.reaches(d, pc)]
            for d in (*needed, *controls.get(pc, ())):
                if d not in keep:
                    keep.add(d)
                    stack.append(d)
        return keep

    def run(self, starts: list[int]) -> tuple[list[Op], list[int]]:
        code = self.code
        keep = self.relevant()
        held = _may_hold(code, starts)
        locks = {lock for pc in keep if self.shared(pc) for lock in held[pc]}
        ipdom = post_dominators(code)
        flags, before = [], {}
        for pc, op in enumerate(code):
            if op.kind in ("acquire", "release"):
                flags.append(op.args[0] in locks)
            elif op.kind in ("branch", "each") and pc not in keep:
                flags.append(False)
                if ipdom[pc] < len(code):
                    before[pc] = [Op("jump", (ipdom[pc],), op.function, op.file, op.line, "", op.api, op.origin)]
                else:
                    flags[-1] = True
            else:
                flags.append(op.kind in ("jump", "end") or pc in keep)
        return rebuild(code, before, flags)


def thread_jumps(code: list[Op], starts: list[int]) -> tuple[list[Op], list[int]]:
    """Jumps to jumps go straight on; jumps to the next op, and what no start reaches any more, go."""
    def final(target: int) -> int:
        seen = set()
        while target < len(code) and code[target].kind == "jump" and target not in seen:
            seen.add(target)
            target = code[target].args[0]
        return target

    threaded = []
    for op in code:
        if op.kind == "jump":
            op = op.but(args=(final(op.args[0]),))
        elif op.kind in ("branch", "each"):
            op = op.but(args=(op.args[0], final(op.args[1]), final(op.args[2])))
        threaded.append(op)
    live = reachable(threaded, starts)
    keep = [pc in live and not (op.kind == "jump" and op.args[0] == pc + 1) for pc, op in enumerate(threaded)]
    return rebuild(threaded, {}, keep)


def _read_exprs(op: Op) -> list[Expr]:
    """The expressions an op reads (not the location it writes)."""
    if op.kind == "set":
        return [op.args[1]]
    if op.kind == "atomic":
        return [op.args[2]]
    if op.kind == "bit":
        return [op.args[1], op.args[2]]
    if op.kind == "branch":
        return [op.args[0]]
    return []


def observed_bits(code: list[Op]) -> list[Op]:
    """State only ever read through masks keeps only those bits: values that
    differ elsewhere behave the same, and the model need not tell them apart."""
    masks: dict[tuple[str, int], int | None] = {}
    for op in code:
        if op.kind in ("atomic", "bit"):  # read-modify-write: every bit matters
            masks[state_of(op.args[1] if op.kind == "atomic" else op.args[0])] = None
        for expr in _read_exprs(op):
            masked = set()
            for sub in subexprs(expr):
                if isinstance(sub, Binary) and sub.op == "&":
                    for side, other in ((sub.left, sub.right), (sub.right, sub.left)):
                        name = state_of(side) if isinstance(side, Loc) else None
                        if name and isinstance(other, Const) and isinstance(other.value, int):
                            known = masks.get(name, 0)
                            masks[name] = None if known is None else known | other.value
                            masked.add(id(side))
            for sub in subexprs(expr):
                if isinstance(sub, Loc) and state_of(sub) and id(sub) not in masked:
                    masks[state_of(sub)] = None
    out = []
    for op in code:
        if op.kind == "set" and (name := state_of(op.args[0])) and masks.get(name):
            op = op.but(args=(op.args[0], Binary("&", op.args[1], Const(masks[name]))))
        out.append(op)
    return out


def forced_successors(code: list[Op], flow: Dataflow, books: Bookkeeping, actions: list[Action]) -> dict[int, int]:
    """Where a dry run goes at a bookkeeping test: toward an action. Where both ways decide, the way that
    decides as the path already has (a release that rechecks the bit from the count keeps to the
    release: the count's value picks whose demand the recheck serves, not this vCPU's), else the
    true side."""
    direction = {a.id: a.direction for a in actions}
    decides = [pc for pc, op in enumerate(code) if op.kind == "decide"]
    can = reaching(code, decides)
    ways = ("request", "release")
    toward = {way: reaching(code, [pc for pc in decides if direction[code[pc].args[0]] == way]) for way in ways}
    after = {way: reachable(code, [pc + 1 for pc in decides if direction[code[pc].args[0]] == way]) for way in ways}
    out = {}
    for pc, op in enumerate(code):
        if op.kind == "branch" and flow.state_read(reads(op.args[0])) & books.all:
            then, orelse = op.args[1], op.args[2]
            if then in can or orelse in can:
                out[pc] = then if then in can else orelse
                decided = [way for way in ways if pc in after[way]]
                if then in can and orelse in can and len(decided) == 1 and orelse in toward[decided[0]] and \
                        then not in toward[decided[0]]:
                    out[pc] = orelse
    return out


def independent(code: list[Op], count: tuple[str, int]) -> bool:
    """Whether the vCPUs of a count's protocol share nothing but the count, which each only moves by
    read-modify-writes whose value it does not use: no code reads VM-wide state or another vCPU's, and
    nothing sets the count outright. Then each vCPU's lifetime is a behaviour of its own, the count the
    sum of what each added: exploring one vCPU decides every leak and drift of any number of them."""
    for op in code:
        if op.kind in ("each", "pick"):
            return False
        blind = op.kind == "atomic" and op.args[0] is None
        if any(loc.kind == "cpu" or (loc.kind == "vm" and not blind) for loc in op_reads(op)):
            return False
        if op.kind != "atomic" and any(state_of(loc) == count for loc in op_writes(op)):
            return False
    return True


def dead_when_idle(code: list[Op], actions: list[Action], starts: list[int], fields: int) -> tuple[int, ...]:
    """The per-vCPU slots no entry can read before it writes them: their value once a call returns is
    never seen again, so the explorer forgets it (two idle vCPUs that differ only there are alike).
    A slot another vCPU reads (through a loop over every vCPU) is never forgotten."""
    shared = {loc.slot for op in code for loc in op_reads(op) + op_writes(op) if loc.kind == "cpu"}
    live = _slot_liveness(code, actions, "mine", lambda op: op.kind in ("set", "input"), frozenset())
    read = shared.union(*(live[pc] for pc in starts if 0 <= pc < len(code)))
    return tuple(slot for slot in range(fields) if slot not in read)


def liveness(code: list[Op], result_slot: int, actions: list[Action]) -> list[frozenset[int]]:
    """Per pc, the local slots that may still be read: the explorer forgets the others. A move of a count
    reads the reference to the vCPU it is made for (on_behalf)."""
    return _slot_liveness(code, actions, "local", lambda op: op.kind != "each", frozenset({result_slot}),
                          on_behalf(code))


def _slot_liveness(code: list[Op], actions: list[Action], kind: str, kills_in, at_end: frozenset[int],
                   also: dict[int, int] | None = None) -> list[frozenset[int]]:
    """Per pc, the slots of one kind (locals, or this vCPU's fields) that may still be read: a backward
    fixpoint. A decide reads its action's value, a dry run all it may walk, an entry's end `at_end`;
    an op writes its slots away where `kills_in(op)` (a loop head's iterator is read again); `also`: a
    slot each of some pcs reads besides."""
    value_reads = {a.id: {loc.slot for loc in reads(a.value) if loc.kind == kind} for a in actions}
    uses, kills = [], []
    for op in code:
        used = {loc.slot for loc in op_reads(op) if loc.kind == kind}
        if kind == "local":
            used |= {loc.ref for loc in op_reads(op) if loc.ref >= 0}
            if also and len(uses) in also:
                used.add(also[len(uses)])
        if op.kind == "end":
            used |= at_end
        elif op.kind == "decide":
            used |= value_reads.get(op.args[0], set())
        elif op.kind == "dry":
            used |= {loc.slot for r in reachable(code, [op.args[0]]) for loc in op_reads(code[r]) if loc.kind == kind}
        uses.append(used)
        kills.append({loc.slot for loc in op_writes(op) if loc.kind == kind} if kills_in(op) else set())
    live: list[frozenset[int]] = [frozenset()] * len(code)
    changed = True
    while changed:
        changed = False
        for pc in range(len(code) - 1, -1, -1):
            out: set[int] = set()
            for nxt in successors(code, pc):
                if nxt < len(code):
                    out |= live[nxt]
            new = frozenset((out - kills[pc]) | uses[pc])
            if new != live[pc]:
                live[pc] = new
                changed = True
    return live


def _per_vcpu_entries(analysis: Analysis, sites: list[JudgedSite], lift: frozenset[str] | None = None
                      ) -> list[str]:
    """The nearest per-vCPU functions that reach the sites; with `lift` (the functions that run in their
    own right), each entered from where its precondition is set up (_entered_from)."""
    vcpu_fns = {fid for fid in analysis.program.functions if vcpu_param(analysis.program, fid, analysis.scopes)}
    nearest = set().union(*(nearest_vcpu_functions(analysis.graph, vcpu_fns, j.site.function) for j in sites))
    if lift is None:
        return sorted(nearest)
    return sorted(set().union(*(_entered_from(analysis, vcpu_fns, fid, lift) for fid in nearest)))


def _entered_from(analysis: Analysis, vcpu_fns: set[str], fid: str, running: frozenset[str],
                  seen: frozenset[str] = frozenset()) -> set[str]:
    """Where a per-vCPU function is entered from. A static function whose address is never taken is
    part of its callers: when each runs on a vCPU and constrains its runs, they are the entries
    instead, so what each establishes holds (_constrains): `enter_guest_mode()` runs where VMRUN and
    KVM_SET_NESTED_STATE call it, after what each tests. Calls from the functions `running` (create,
    destroy, reset and what only they call) run as part of those: a helper that INIT and one MSR write
    call is entered from the MSR write, whose checks of the value hold. A caller that constrains nothing
    adds only its own inputs, so the helper stays the entry. Counts of vCPUs are entered so (their
    invariant ties per-vCPU state to the count); an inhibit's demand is decided at its site, whose
    nearest per-vCPU function is entry enough. A helper of several callers that decides something
    itself (apic_set_spiv() compares the SPIV it stores) is its own entry: what it tests, it keeps
    whoever calls it."""
    callers = only_callers(analysis.lowered, analysis.graph, fid, running)
    if not callers or (len(callers) > 1 and _decides(analysis.lowered.function(fid))) or \
            any(c in seen or c not in vcpu_fns or not _constrains(analysis.lowered, c, fid) for c in callers):
        return {fid}
    return set().union(*(_entered_from(analysis, vcpu_fns, c, running, seen | {fid}) for c in callers))


def _decides(function: Function) -> bool:
    """Whether a function branches: straight-line code (`enter_guest_mode()`) decides nothing itself, its
    callers decide whether it runs."""
    return any(isinstance(block.term, (Branch, EachVcpu)) for block in function.blocks)


def _constrains(lowered: LoweredProgram, caller: str, fid: str) -> bool:
    """Whether a caller decides something of how its helper runs: it calls it only under a test
    (`if (nmi != vcpu->arch.nmi) nmi_mode_changed(vcpu, nmi)`) or with a lock held (the helper's
    ++ of a count never interleaves), or first writes state the helper reads (kvm_hv_set_msr_common()
    creates the Hyper-V vCPU, vp_index equal to vcpu_idx, before kvm_hv_set_msr() compares the two)."""
    effects = lowered.effects
    return any(ev.guards or ev.locks for ev in calls_of(lowered, caller, fid)) \
        or bool(effects.writes_besides(caller, fid) & effects.plain_reads(fid))


def inhibit_protocol(analysis: Analysis, rule: Rule, key: str) -> Protocol | Unmodelled:
    """The protocol by which per-vCPU code demands the inhibit `key`."""
    sites = [j for j in analysis.sites if j.site.key == key and j.context == "per-vcpu"]
    if not sites:
        return Unmodelled("no per-vCPU code sets or clears it: no vCPU demand exists to check")
    recompute = all(j.verdict.discipline == "vm-recompute" for j in sites)
    if recompute:  # the demand is VM-wide, decided inside the recompute: how a vCPU got there does not
        # matter, but what its callers hold does (a static helper whose callers each take the lock first)
        vcpu_fns = {fid for fid in analysis.program.functions if vcpu_param(analysis.program, fid, analysis.scopes)}
        lifted = set().union(*(_entered_from(analysis, vcpu_fns, j.site.function, frozenset()) for j in sites))
        entries = [(fid, "recompute") for fid in sorted(lifted)]
    else:
        entries = [(fid, "transition") for fid in _per_vcpu_entries(analysis, sites)]
    if not entries:
        return Unmodelled("no per-vCPU function reaches its sites")
    # What the static reading took for bookkeeping is modelled from the start (the model judges it):
    # a flag behind an accessor is otherwise an unmodelled call until widening finds it.
    seeds = {rule.word, rule.update_lock} | {k for j in sites for k in (j.verdict.flag, j.verdict.counter) if k}
    protocol = with_resets(Extractor(analysis, rule, key), entries, seeds, "inhibit")
    if isinstance(protocol, Protocol):
        protocol.vm_demand = recompute
    return protocol


def counter_protocol(analysis: Analysis, rule: Rule, key: str) -> Protocol | Unmodelled:
    """The lifetimes of vCPUs as they move a count of vCPUs: the rule's
    create entries (a non-zero return is a failed create), the functions
    that move the count, the destroy entries."""
    sites = [j for j in analysis.sites if j.site.key == key]
    program = analysis.program
    lifecycle = {fid: kind for kind, names in asdict(rule.lifecycle).items() if kind in ("create", "destroy")
                 for name in names for fid in program.functions_named(name)}
    moving = [j for j in sites if j.verdict.discipline != "lifecycle"]
    running = frozenset(lifecycle_only(analysis.graph, analysis.lowered, rule)).union(
        *(program.functions_named(name) for name in rule.lifecycle.reset))
    entries = [(fid, "transition") for fid in _per_vcpu_entries(analysis, moving, running) if fid not in lifecycle]
    entries += sorted(lifecycle.items())
    if not entries:
        return Unmodelled("no per-vCPU function moves it")
    return with_resets(Extractor(analysis, rule, key), entries, {key}, "counter")


def with_resets(extractor: Extractor, entries: list[tuple[str, str]], interesting: set[str], kind: str
                ) -> Protocol | Unmodelled:
    """The protocol of the entries, run with the rule's resets too where one can break it, and with the
    per-vCPU functions nothing else reaches that write its flags or counts. A count of vCPUs is kept by
    create, reset and destroy alike: its resets run from the start. An inhibit's protocol is built without
    them first, and a reset runs where it moves that protocol's flags, counts or word (INIT dropping a
    vCPU's flag leaks its share). A reset that changes nothing the protocol sees is left out, proven
    harmless; one that changes only an inhibit's other state, or makes the protocol too large to explore,
    is left out as an assumption the report states. A writer of the bookkeeping that no entry, reset or
    lifecycle entry covers (an ioctl user space issues) runs at any time, as the entries do."""
    program = extractor.lowered.program
    resets = sorted(fid for name in extractor.rule.lifecycle.reset for fid in program.functions_named(name))
    ran = resets if kind == "counter" else []
    too_large: list[str] = []
    protocol = build(extractor, entries + [(fid, "reset") for fid in ran], interesting, kind)
    if isinstance(protocol, Unmodelled):
        if not (ran and protocol.too_large):
            return protocol
        too_large, ran = ran, []
        protocol = build(extractor, entries, interesting, kind)  # the rest may still be judged
        if isinstance(protocol, Unmodelled):
            return protocol
    moves = {fid: extractor.reset_moves(fid, protocol) for fid in resets}
    extra = [(fid, "reset") for fid in resets if fid not in ran + too_large and moves[fid] == "bookkeeping"]
    writers = extractor.unreached_writers([fid for fid, _ in entries] + resets, protocol)
    makes = {fid: made for fid in writers if (made := extractor.makes(fid, protocol))}
    extra += [(fid, "writer") for fid in writers if fid not in makes]
    if extra:
        wider = build(extractor, entries + [(fid, "reset") for fid in ran] + extra, interesting, kind)
        if isinstance(wider, Unmodelled) and not wider.too_large:
            return wider
        if isinstance(wider, Protocol):
            protocol, ran = wider, ran + [fid for fid, _ in extra]
        else:
            too_large += [fid for fid, _ in extra]
    what = "the count" if kind == "counter" else "the protocol's flags and counts"
    why = {"nothing": "not run: it writes nothing the protocol models or reads and reaches no set or clear of "
                      f"{extractor.key}, so it cannot change the verdict",
           "state": "not run: it moves none of the protocol's flags and counts; assumed to leave what a vCPU "
                    "demands as it finds it",
           "too large": f"not run: with it the protocol is too large to explore; assumed not to move {what}"}

    def left_out(fid: str) -> str:
        if fid in makes:
            return f"not run: it sets {makes[fid]}, making the object whose bookkeeping it writes (a new one, " \
                   "not a change of the one a vCPU holds)"
        return why["too large" if fid in too_large and moves.get(fid) != "nothing" else moves[fid]]

    protocol.left_out = [(program.functions[fid]["name"], left_out(fid)) for fid in resets + writers if fid not in ran]
    return protocol


def build(extractor: Extractor, entries: list[tuple[str, str]], interesting: set[str], kind: str
          ) -> Protocol | Unmodelled:
    """Compile, find the bookkeeping and decisions, slice; widen while needed."""
    rule, key = extractor.rule, extractor.key
    fids = [fid for fid, _ in entries]
    target = rule.word if kind == "inhibit" else key
    written = set().union(*map(extractor.effects.plain_writes, fids))  # what an unmodelled read could see change
    readers: frozenset[str] = frozenset()
    sites = {j.site.function for j in extractor.analysis.sites if j.site.key == key}
    graph = extractor.analysis.graph
    leads = set(sites).union(*(nx.ancestors(graph, f) for f in sites if f in graph))
    core = Core(frozenset(leads), frozenset(interesting - {rule.word, rule.update_lock}))
    coarse, unsettled, guards = False, [], frozenset()
    for widening in range(MAX_WIDENINGS):
        compiled = extractor.compile(entries, interesting, readers, kind == "inhibit", core, coarse)
        if len(compiled.code) > MAX_COMPILED and not coarse:  # heavy callees' values become guesses
            coarse = True
            compiled = extractor.compile(entries, interesting, readers, kind == "inhibit", core, coarse)
        if len(compiled.code) > MAX_COMPILED:
            return Unmodelled(f"its protocol is too large to explore: {len(compiled.code)} ops before slicing (at "
                              f"most {MAX_COMPILED}), from {len({op.function for op in compiled.code})} functions "
                              f"its entries reach", too_large=True)
        slots = compiled.resolver.slots
        if target not in slots.vm:
            return Unmodelled(f"no code the model runs writes {target}")
        word = ("vm", slots.vm[target])
        flow = Dataflow(compiled.code)
        if kind == "inhibit":
            books = find_bookkeeping(flow, word, [p[0] for p in compiled.points], compiled.key_value)
            actions = actions_of(flow, books, compiled.points)
            why = None
            if any(a.direction == "mixed" for a in actions):
                why = ("a value mixes the protocol's bookkeeping with the vCPU's own need: which vCPU needs the key "
                       "cannot be told")
            elif not any(a.direction != "none" for a in actions):
                why = "no point in the code where a vCPU decides it needs the key"
            if why is not None:  # unless a reader not yet compiled could tell
                more = _readers(compiled.code) - readers
                if not more or widening >= WIDENINGS - 1:
                    return Unmodelled(why)
                readers |= more
                continue
            code, where = insert_decisions(compiled.code, flow, books, actions)
        else:
            books, actions = Bookkeeping(word, {word}), []
            code, where = compiled.code, list(range(len(compiled.code) + 1))
            guards = _guard_state(code, flow, word, slots)
            if not guards <= core.state and widening < WIDENINGS - 1:  # what moves the count: never summarised
                core = replace(core, state=core.state | guards)
                interesting = interesting | guards
                continue
        starts = [where[s] for s in compiled.starts]
        env_start = where[compiled.env] if compiled.env >= 0 else -1
        result_slot = slots.local(RESULT.name)
        code, where = Slicer(code, books, actions, result_slot).run(starts + ([env_start] if env_start >= 0 else []))
        starts, env_start = [where[s] for s in starts], (where[env_start] if env_start >= 0 else -1)
        code, where = thread_jumps(code, starts + ([env_start] if env_start >= 0 else []))
        starts, env_start = [where[s] for s in starts], (where[env_start] if env_start >= 0 else -1)
        wanted = {read for op in code if op.kind == "input" for read in op.args[2]} | _state_read(code, slots)
        wider = interesting | Keys(wanted).touched_by(written)  # what the protocol reads, what writes it must run
        more = _readers(code) - readers if widening < WIDENINGS - 1 else frozenset()
        if wider <= interesting and not more:
            break
        unsettled = sorted(wider - interesting)
        interesting, readers = wider, readers | more
    else:  # a read of modelled state would miss writes the compile left out: no sound protocol
        return Unmodelled(f"the state it reads does not settle: after {MAX_WIDENINGS} widenings its code still "
                          f"reads {', '.join(unsettled[:3])}, written by code not compiled")
    if len(code) > MAX_OPS:  # only the last: modelling more can make the slice smaller (an input becomes state)
        return Unmodelled(f"its protocol is too large to explore: {len(code)} ops after slicing (at most "
                          f"{MAX_OPS}), from {len({op.function for op in code})} functions its entries reach",
                          too_large=True)
    code = observed_bits(code)
    flow = Dataflow(code)
    protocol = Protocol(rule.id, key, code, [], actions, sorted(slots.vm, key=slots.vm.get),
                        sorted(slots.cpu, key=slots.cpu.get), locals=len(slots.locals), word=word[1],
                        key_bit=1 << compiled.key_value, other_bit=1 << compiled.other_value,
                        counts=sorted(s for _, s in books.counts),
                        flags=sorted(books.flags), update_lock=rule.update_lock, kind=kind,
                        host_wide="." not in key)
    protocol.guards = guards
    protocol.state = frozenset(wanted | {slots.stored_in.get(k, k) for k in (*slots.vm, *slots.cpu)})
    protocol.stepped = sorted({loc.slot for op in code if op.kind in ("atomic", "set") and flow.step(op)
                               for loc in op_writes(op)[-1:] if loc.kind == "vm"})
    protocol.forced = forced_successors(code, flow, books, actions)
    numbers = {word[1], *(s for _, s in books.counts), *(s for k, s in books.flags if k == "vm")}
    protocol.generations = generations(code, [a.value for a in actions if a.value is not None], numbers)
    protocol.live = liveness(code, result_slot, actions)
    protocol.result_slot = result_slot
    protocol.domains, protocol.cpu_init, protocol.identities = domains(code, slots, extractor.scopes,
                                                                       extractor.lowered.program.enums)
    protocol.independent = kind == "counter" and independent(code, word)
    protocol.host_constants = frozenset(slot for slot, ctype in slots.cpu_constant.items()
                                        if ctype == BACKEND or slot in slots.vm_constant)
    protocol.recompute = any(a.direction == "contribution" for a in actions)
    protocol.entries = _entries(extractor, code, actions, entries, starts, slots)
    needed = {e.needs for e in protocol.entries}  # read each time the entry may start
    protocol.dead_when_idle = tuple(slot for slot in dead_when_idle(
        code, actions, starts + ([env_start] if env_start >= 0 else []), len(slots.cpu)) if slot not in needed)
    protocol.lifecycle = any(e.kind == "create" for e in protocol.entries)
    if env_start >= 0:
        api = extractor.env_api()
        env_fn = next((extractor.lowered.program.functions[f] for f in
                       extractor.lowered.program.functions_named(api.function)), None)
        protocol.entries.append(Entry(api.function, "", env_start, env_fn["file"] if env_fn else "",
                                      env_fn["line"] if env_fn else 0, "env", False,
                                      f"the environment sets and clears another reason through {api.function}"))
    return protocol


def _guard_state(code: list[Op], flow: Dataflow, count: tuple[str, int], slots) -> frozenset[str]:
    """The field keys read by the branches that decide whether the count moves (`vp_index != vcpu_idx`
    before atomic_inc()): a summary that changed them at will would break the invariant the count keeps."""
    moves = {pc for pc, op in enumerate(code) if count in {state_of(loc) for loc in op_writes(op)}}
    names = {("vm", s): k for k, s in slots.vm.items()} | {("cpu", s): k for k, s in slots.cpu.items()}
    out = set()
    for pc in decided_by(moves, deciders(code, post_dominators(code))):
        if code[pc].kind == "branch":
            out |= {names[s] for s in flow.state_read(reads(code[pc].args[0])) if s in names and s != count}
    return frozenset(out)


def _state_read(code: list[Op], slots) -> set[str]:
    """The field keys of the modelled state the code reads."""
    read = {(loc.kind == "vm", loc.slot) for op in code for loc in op_reads(op) if loc.kind in ("vm", "cpu", "mine")}
    return {slots.stored_in.get(key, key) for key, slot in slots.vm.items() if (True, slot) in read} | \
        {slots.stored_in.get(key, key) for key, slot in slots.cpu.items() if (False, slot) in read}


def _readers(code: list[Op]) -> frozenset[str]:
    """The callees whose values the code takes as inputs although they read interesting state."""
    return frozenset(read[5:] for op in code if op.kind == "input" for read in op.args[2] if read.startswith("call:"))


ENTRY_WHY = {
    "transition": "may run at any time, any number of times",
    "recompute": "recomputes the bit from VM-wide state; any vCPU may run it at any time, from any caller, with "
                 "any state its callers leave (its decision alone is the VM's demand)",
    "armed": "an exit handler whose actions only release: assumed to run only after this vCPU's request path "
             "decided it needs the key or stored what the handler tests",
    "create": "creates the vCPU, once; a non-zero return is a failed create, after which it is never destroyed",
    "reset": "resets the vCPU (INIT, a triple fault): any number of times while it lives, with the arguments its "
             "callers outside create pass",
    "destroy": "destroys the vCPU, once, at any time after it was created",
    "writer": "writes the protocol's flags, counts or word on a path no other entry covers (user space calls it): "
              "may run at any time, any number of times",
}


def _entries(extractor: Extractor, code: list[Op], actions: list[Action], entries: list[tuple[str, str]],
             starts: list[int], slots) -> list[Entry]:
    out = []
    lifecycle = any(kind == "create" for _, kind in entries)
    for start, (fid, kind) in zip(starts, entries, strict=True):
        decided = {actions[code[pc].args[0]].direction for pc in reachable(code, [start]) if code[pc].kind == "decide"}
        fn = extractor.lowered.program.functions[fid]
        armed = kind == "transition" and bool(actions) and extractor.is_exit_handler(fid) and decided <= {"release"}
        arms = not armed and bool(decided - {"release", "none"})  # a request path, which may arm the exit
        why = ENTRY_WHY["armed" if armed else kind]
        needs = -1
        if lifecycle and kind != "create" and (object_key := extractor.object_holder(fid)) in slots.cpu:
            needs = slots.cpu[object_key]  # the vCPU's create made it, or it is not there
            why += f"; only while {object_key} is set (the object it takes exists)"
        out.append(Entry(fn["name"], fid, start, fn["file"], fn["line"], kind, armed, why, needs, arms))
    return out


def sites_of(action: Action, judged: list[JudgedSite]) -> list[JudgedSite]:
    """The judged sites an action was compiled from (its inline stack contains their hops)."""
    calls = [instr for _, instr in action.stack]
    out = []
    for j in judged:
        hops = [hop.event.instr for hop in j.site.hops]
        if any(calls[i:i + len(hops)] == hops for i in range(len(calls))):
            out.append(j)
    return out

