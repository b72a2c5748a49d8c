"""Explore every interleaving of N simulated vCPUs running a protocol.

Breadth-first over states, so the first counterexample is a shortest one;
states are canonicalised under vCPU permutation (the vCPUs run the same
code), except while a vCPU holds a reference to another. Each vCPU may call
its entries up to `calls` times, the environment `env_calls` times.

Checked, from the rule's meaning:
- premature clear: a vCPU demands the key (its request returned and it has
  not decided to release) while AVIC is not inhibited for any reason (the
  word is zero);
- leak: with every vCPU idle and no lock held, the key's bit alone keeps
  AVIC inhibited while no vCPU demands it;
- underflow: with every vCPU idle, a count of requests is below zero.
- a count of requests above the number of vCPUs is a leak too: some vCPU
  is counted twice. (It also keeps the state space finite: entries are
  called without bound; other state moved by constants that grows past
  GROWTH_BOUND per vCPU is not followed further, and the outcome says
  the bound was hit.)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from kaudit.ir.names import subexprs
from kaudit.model.code import Loc, Op, Protocol
from kaudit.model.generations import ranked
from kaudit.model.machine import (
    ACTIVE,
    CREATED,
    EARLY,
    FAILED,
    GONE,
    IDLE,
    LIVE,
    NOBODY,
    Machine,
    State,
    Step,
    is_ref,
)
from kaudit.model.reliance import Reliance

VIOLATIONS = ("premature-clear", "leak", "underflow", "drift")
PHASES = ("new", "created", "live", "failed", "destroyed early", "destroyed", "created, never online")
GROWTH_BOUND = 4
MAX_GUESSED = 8  # counterexamples relying on guesses looked at before settling for the first


@dataclass
class Outcome:
    status: str  # verified | violation
    violation: str
    vcpus: int
    states: int
    bound_hit: bool
    trace: list[dict[str, Any]] = field(default_factory=list)
    culprit: Op | None = None  # the op that made the violation happen
    culprit_entry: str = ""
    assumes: list[str] = field(default_factory=list)  # the guessed values the trace relies on (kaudit.model.reliance)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "violation": self.violation, "vcpus": self.vcpus, "states": self.states,
                "bound_hit": self.bound_hit, "trace": self.trace, "assumes": self.assumes}


def _key(thread: tuple) -> tuple:
    """A sort key that does not depend on vCPU numbers (references to other vCPUs, and the owners of
    per-vCPU locks held, are blanked)."""
    entry, pc, local_items, fields, held, *rest = thread
    return (entry, pc, tuple((k, -1 if is_ref(v) else v) for k, v in local_items), fields,
            tuple(((key, -1), mode) for (key, _), mode in held), *rest)


def _renumber(thread: tuple, new: dict[int, int]) -> tuple:
    entry, pc, local_items, fields, held, *rest = thread
    items = tuple((k, _ref(v, new) if is_ref(v) else v) for k, v in local_items)
    locks = tuple(sorted(((key, new.get(owner, owner)), mode) for (key, owner), mode in held))
    return (entry, pc, items, fields, locks, *rest)


def _ref(value: tuple, new: dict[int, int]) -> tuple:
    """A reference ("cpu", i) or a loop position ("cpu", i, still to visit) under new numbers."""
    if len(value) == 2:
        return ("cpu", new[value[1]])
    return ("cpu", new[value[1]], tuple(sorted(new[i] for i in value[2])))


def _holds_ref(thread: tuple) -> bool:
    return any(is_ref(v) for _, v in thread[2])


def _owns_lock(thread: tuple) -> bool:
    """Whether it holds a vCPU's lock: one that names a vCPU by its number."""
    return any(owner != NOBODY for (_, owner), _ in thread[4])


def _sorted_order(keys: list) -> list[int]:
    try:
        return sorted(range(len(keys)), key=keys.__getitem__)
    except TypeError:  # a pointer where another vCPU has an int
        return sorted(range(len(keys)), key=lambda i: repr(keys[i]))


def _reference_slots(protocol: Protocol) -> set[int]:
    """The locals that may hold a reference to a vCPU: a loop's iterator over every vCPU, a vCPU picked,
    or a copy."""
    slots = {op.args[0].slot for op in protocol.code if op.kind in ("each", "pick")}
    copies = [(op.args[0].slot, _locals_read(op.args[1])) for op in protocol.code
              if op.kind == "set" and op.args[0].kind == "local"]  # not local_reads(): a field read through
    grown = True  # a reference (`x = v->arch.y`) holds a value, not the reference
    while grown:
        before = len(slots)
        slots |= {target for target, read in copies if read & slots}
        grown = len(slots) > before
    return slots


def _locals_read(expr: object) -> set[int]:
    return {e.slot for e in subexprs(expr) if isinstance(e, Loc) and e.kind == "local"}


def reference_pcs(protocol: Protocol) -> frozenset[int]:
    """Where a thread may hold a reference to a vCPU: a pc at which a local that may hold one is live."""
    slots = _reference_slots(protocol)
    return frozenset(pc for pc, live in enumerate(protocol.live) if slots & set(live))


def stores_references(protocol: Protocol) -> bool:
    """Whether the code may store a reference to a vCPU in the VM's or a vCPU's slots (`kvm->arch.last =
    v` in a loop over every vCPU). canonical() renumbers references in locals only: such a protocol's
    vCPUs are not sorted (no symmetry reduction), which is exact."""
    slots = _reference_slots(protocol)
    return any(op.kind == "set" and op.args[0].kind != "local" and _locals_read(op.args[1]) & slots
               for op in protocol.code)


def canonical(state: State, vcpus: int, refs_at: frozenset[int] | None = None) -> tuple[State, list[int]]:
    """The state with its vCPUs sorted (they run the same code), references
    to vCPUs renumbered to match; and which old vCPU each new one was.
    Only a thread that holds a reference (it can only at `refs_at`, when
    known) or a vCPU's lock is rebuilt; a state already in order is returned as it is."""
    vm, threads, vm_demand = state
    holders = [i for i, t in enumerate(threads)
               if (t[2] and (refs_at is None or t[1] in refs_at) and _holds_ref(t)) or _owns_lock(t)]  # t[2]: locals
    held = set(holders)
    order = _sorted_order([_key(t) if i in held else t for i, t in enumerate(threads[:vcpus])])
    order += range(vcpus, len(threads))
    if order == list(range(len(threads))):
        return state, order
    if not held and not isinstance(vm_demand, tuple):
        return (vm, tuple(threads[i] for i in order), vm_demand), order
    new = {old: index for index, old in enumerate(order)}
    renumbered = tuple(_renumber(threads[i], new) if i in held else threads[i] for i in order)
    if isinstance(vm_demand, tuple):
        vm_demand = (vm_demand[0], new[vm_demand[1]])
    return (vm, renumbered, vm_demand), order


class Explorer:
    def __init__(self, protocol: Protocol, vcpus: int = 3, calls: int = 0, env_calls: int = 0,
                 max_states: int = 1_000_000, ablate: frozenset[str] = frozenset()) -> None:
        self.p = protocol
        self.n = vcpus = 1 if protocol.independent else vcpus
        self.machine = Machine(protocol, vcpus, calls, env_calls, ablate)
        self.max_states = max_states
        self.refs_at = reference_pcs(protocol)
        self.symmetric = not stores_references(protocol)

    def canonical(self, state: State) -> tuple[State, list[int]]:
        """The state as explored (generations ranked, vCPUs sorted when they may be), which old vCPU each
        new one was."""
        state = self.ranks(state)
        return canonical(state, self.n, self.refs_at) if self.symmetric else (state, list(range(len(state[1]))))

    def ranks(self, state: State) -> State:
        return ranked(state, self.p.generations) if self.p.generations else state

    def violation(self, state: State) -> str:
        if self.p.kind == "counter":
            return self.count_violation(state)
        vm, threads, vm_demand = state
        vcpus = threads[:self.n]
        if any(vm[c] > self.n for c in self.p.counts):
            return "leak"
        word = vm[self.p.word]
        quiescent = all(t[0] < 0 and not t[4] for t in threads)
        # A VM-wide demand is the VM's state, which a vCPU still in its entry may be changing and will
        # recompute: it is owed only once every vCPU is out. A vCPU's own demand is owed as its request returns.
        demanded = (vm_demand == ACTIVE and quiescent) or any(t[5] == ACTIVE for t in vcpus)
        if demanded and not word:
            return "premature-clear"
        if quiescent:
            if any(isinstance(vm[c], int) and vm[c] < 0 for c in self.p.counts):
                return "underflow"
            anyone = vm_demand != IDLE or any(t[5] != IDLE for t in vcpus)
            if word & self.p.key_bit and not word & ~self.p.key_bit and not anyone:
                return "leak"
        return ""

    def count_violation(self, state: State) -> str:
        """A count of vCPUs: each vCPU's lifetime must leave it as it found it
        (a host-wide count also across VM teardown); while the vCPUs are idle
        each live one contributes 0 or 1, and the count is what they contributed."""
        vm, threads, _ = state
        for t in threads[:self.n]:
            phase, contribution = t[8], t[9]
            if contribution and (phase in (FAILED, EARLY) or (phase == GONE and self.p.host_wide)):
                return "leak" if contribution > 0 else "underflow"  # it took back more than it gave
        if all(t[0] < 0 and not t[4] for t in threads):
            if any(t[9] not in (0, 1) for t in threads[:self.n] if t[8] in (CREATED, LIVE)):
                return "drift"
            if vm[self.p.word] != sum(t[9] for t in threads[:self.n]):
                return "drift"
        return ""

    def run(self) -> Outcome:
        parents: dict[State, tuple[State, int, int] | None] = {}
        queue: deque[State] = deque()
        for state in self.machine.initial_states():
            canon, _ = self.canonical(state)
            if canon not in parents:
                parents[canon] = None
                queue.append(canon)
        bound = False
        guessed: list[Outcome] = []
        while queue:
            state = queue.popleft()
            for me in range(len(state[1])):
                for k, (_, nxt, _) in enumerate(self.machine.moves(state, me)):
                    canon = self.canonical(nxt)[0]
                    if canon in parents:
                        continue
                    parents[canon] = (state, me, k)
                    found = self.violation(canon)
                    if found:
                        outcome = self.counterexample(found, canon, parents)
                        if not outcome.assumes:
                            return outcome
                        guessed.append(outcome)  # what may happen: look on for what does
                        if len(guessed) >= MAX_GUESSED:
                            return self.settled(guessed[0], len(parents), True)
                        continue
                    if any(abs(canon[0][s]) > GROWTH_BOUND * self.n for s in self.p.stepped):
                        bound = True  # grows without end: not followed
                        continue
                    if len(parents) >= self.max_states:
                        queue.clear()
                        return self.settled(guessed[0], len(parents), True) if guessed else \
                            Outcome("verified", "", self.n, len(parents), True)
                    queue.append(canon)
        return self.settled(guessed[0], len(parents), bound) if guessed else \
            Outcome("verified", "", self.n, len(parents), bound)

    def settled(self, outcome: Outcome, states: int, cut: bool) -> Outcome:
        """A counterexample that relies on guesses, after the search for one that does not: how far it
        went, and whether it stopped short (bound_hit) of every interleaving."""
        return replace(outcome, states=states, bound_hit=cut)

    def counterexample(self, found: str, last: State, parents: dict) -> Outcome:
        path = []
        state = last
        while parents[state] is not None:
            parent, me, k = parents[state]
            path.append((parent, me, k))
            state = parent
        path.reverse()
        display = list(range(len(state[1])))  # canonical index -> the vCPU number the trace shows
        trace: list[dict[str, Any]] = []
        steps_done: list[tuple[Step, str]] = []
        reliance = Reliance({a.id: a.value for a in self.p.actions}, self.p.result_slot)
        self.machine.tracing = True
        for parent, me, k in path:
            steps, nxt, _ = self.machine.moves(parent, me)[k]
            entry = parent[1][me][0]
            if entry < 0:  # a call (it may also return in this move): its first step names the entry
                entry = next(step.entry for step in steps if step.op is None)
            name = self.p.entries[entry].fid if 0 <= entry < len(self.p.entries) else ""
            creating = 0 <= entry < len(self.p.entries) and self.p.entries[entry].kind == "create"
            for step in steps:
                if step.op is None:
                    reliance.call(display[me])
                else:
                    reliance.step(display[me], step.op, creating)
                if shown(step):
                    trace.append(self.step_json(step, display, me))
                steps_done.append((step, name))
            _, order = self.canonical(nxt)
            display = [display[i] for i in order]
        self.machine.tracing = False
        culprit, entry = self.culprit(found, steps_done)
        return Outcome("violation", found, self.n, len(parents), False, trace, culprit, entry, reliance.relied)

    def culprit(self, found: str, steps: list[tuple[Step, str]]) -> tuple[Op | None, str]:
        """The op that made it happen: the last write of the word (a premature
        clear, a leak) or of a count (an underflow)."""
        targets = {self.p.word} if found != "underflow" else set(self.p.counts)
        for step, entry in reversed(steps):
            op = step.op
            if op is not None and op.kind in ("set", "bit", "atomic"):
                loc = op.args[1] if op.kind == "atomic" else op.args[0]
                if getattr(loc, "kind", "") == "vm" and loc.slot in targets:
                    return op, entry
        return None, ""

    def step_json(self, step: Step, display: list[int], me: int) -> dict[str, Any]:
        if step.op is not None and step.op.kind == "pick":
            step = replace(step, text=f"{step.text}: " + ("NULL" if step.picked is None else
                                                           f"vCPU {display[step.picked]}"))
        vm, demands, vm_demand = step.after[:3]
        word = vm[self.p.word]
        who = display[me]
        if self.p.kind == "counter":
            phases, contributions = step.after[3:]
            after = {"count": word, "contribution": [contributions[display.index(i)] for i in range(self.n)],
                     "phase": [PHASES[phases[display.index(i)]] for i in range(self.n)]}
            return {"vcpu": who, "function": step.function, "file": step.file, "line": step.line,
                    "action": step.text, "vm_state_after": after}
        after: dict[str, Any] = {"inhibited": int(bool(word)), "key": int(bool(word & self.p.key_bit)),
                                 "demand": [demands[display.index(i)] for i in range(self.n)]}
        if self.p.vm_demand:
            after["vm_demand"] = vm_demand if isinstance(vm_demand, int) else 1
        for slot in self.p.counts:
            after[self.p.vm_names[slot].rsplit(".", 1)[-1]] = vm[slot]
        who = display[me]
        return {"vcpu": "env" if who >= self.n else who, "function": step.function, "file": step.file,
                "line": step.line, "action": step.text, "vm_state_after": after}


def shown(step: Step) -> bool:
    """Steps a reader of the trace needs: calls, decisions, locks, shared writes, choices."""
    op = step.op
    if op is None:
        return True
    if op.kind in ("decide", "dry", "acquire", "release", "end", "input", "choose", "atomic", "bit", "pick"):
        return bool(step.text)
    return op.kind == "set" and getattr(op.args[0], "kind", "local") != "local"
