"""Explore every interleaving of N vCPUs running an extracted protocol.

Breadth-first over states, so the first counterexample is a shortest one;
states are canonicalised under vCPU permutation (the vCPUs run the same
code). Each vCPU may start an entry function up to `calls` times.

Partial-order reduction: an instruction that touches only its own vCPU's
state (a jump, a branch or assignment over locals and per-vCPU fields, not
the bit, a demand, a lock or VM-wide state) commutes with every other
vCPU's moves and cannot change what is checked; when some vCPU is at one,
only that vCPU moves. The programs are loop-free, so no cycle can hide a
postponed move.

Checked, from the rule's meaning rather than per case:
- premature clear: some vCPU demands the bit (its request completed, its
  release not begun) while the bit is clear;
- leak: in a quiescent state (no vCPU inside an entry, no lock held), the
  bit is set while no vCPU demands it, or a VM-wide count is negative.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kaudit.model.protocol import Instr, Protocol

# A vCPU: (entry index or -1 when idle, pc, calls made, demand, locals, fields, held locks)
VCpu = tuple[int, int, int, bool, tuple, tuple, tuple]
# A state: (bit, VM fields, vCPUs sorted)
State = tuple[int, tuple, tuple[VCpu, ...]]


@dataclass
class Outcome:
    status: str  # "verified" | "violation"
    violation: str
    vcpus: int
    states: int
    bound_hit: bool
    trace: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "violation": self.violation, "vcpus": self.vcpus, "states": self.states,
                "bound_hit": self.bound_hit, "trace": self.trace}


def _eval(expr: tuple, env: dict, vcpu_fields: dict, vm: dict) -> Iterator[tuple[int, dict, dict]]:
    """Possible (value, vcpu field updates, vm updates) of an expression."""
    kind = expr[0]
    if kind == "c":
        yield int(expr[1]), {}, {}
    elif kind == "nd":
        yield 0, {}, {}
        yield 1, {}, {}
    elif kind == "l":
        yield env.get(expr[1], 0), {}, {}
    elif kind == "v":
        yield vcpu_fields.get(expr[1], 0), {}, {}
    elif kind == "g":
        yield vm.get(expr[1], 0), {}, {}
    elif kind in ("not", "neg"):
        for value, fu, vu in _eval(expr[1], env, vcpu_fields, vm):
            yield (int(not value) if kind == "not" else -value), fu, vu
    elif kind == "cond":
        for test, fu, vu in _eval(expr[1], env, vcpu_fields, vm):
            for value, fu2, vu2 in _eval(expr[2] if test else expr[3], env, vcpu_fields, vm):
                yield value, {**fu, **fu2}, {**vu, **vu2}
    elif kind == "atomic":
        _, target, delta_expr, returns_new = expr
        for delta, fu, vu in _eval(delta_expr, env, vcpu_fields, vm):
            store = "v" if target[0] == "v" else "g"
            old = (vcpu_fields if store == "v" else vm).get(target[1], 0) if target[0] in ("v", "g") else 0
            new = old + delta
            update = {target[1]: new} if target[0] in ("v", "g") else {}
            result = new if returns_new else int(new == 0)
            yield result, {**fu, **(update if store == "v" else {})}, {**vu, **(update if store == "g" else {})}
    elif kind == "op":
        op = expr[1]
        for left, fu, vu in _eval(expr[2], env, vcpu_fields, vm):
            if op == "&&" and not left:
                yield 0, fu, vu
                continue
            if op == "||" and left:
                yield 1, fu, vu
                continue
            for right, fu2, vu2 in _eval(expr[3], env, vcpu_fields, vm):
                yield _binary(op, left, right), {**fu, **fu2}, {**vu, **vu2}


def _binary(op: str, a: int, b: int) -> int:
    return {
        "==": lambda: int(a == b), "!=": lambda: int(a != b), "<": lambda: int(a < b), ">": lambda: int(a > b),
        "<=": lambda: int(a <= b), ">=": lambda: int(a >= b), "+": lambda: a + b, "-": lambda: a - b,
        "&&": lambda: int(bool(a and b)), "||": lambda: int(bool(a or b)), "&": lambda: a & b, "|": lambda: a | b,
    }[op]()


class Explorer:
    def __init__(self, protocol: Protocol, vcpus: int = 2, calls: int = 3, max_states: int = 2_000_000) -> None:
        self.p = protocol
        self.n = vcpus
        self.calls = calls
        self.max_states = max_states
        self.local = [[_is_local(instr) for instr in entry.code] for entry in protocol.entries]
        self.live = [_live_locals(entry.code) for entry in protocol.entries]

    def initial(self) -> State:
        idle: VCpu = (-1, 0, 0, False, (), (), ())
        return (0, (), (idle,) * self.n)

    def _code(self, entry: int) -> list[Instr]:
        return self.p.entries[entry].code

    def successors(self, state: State) -> Iterator[tuple[int, Instr | None, str, State]]:
        """(vcpu index, instruction, what happened, next state) of every move,
        or only one vCPU's local moves when it has one (see module doc)."""
        cpus = state[2]
        for i, (entry, pc, *_rest) in enumerate(cpus):
            if entry >= 0 and pc < len(self.local[entry]) and self.local[entry][pc]:
                return self.moves(state, [i])
        return self.moves(state, range(len(cpus)))

    def moves(self, state: State, which: Iterable[int]) -> Iterator[tuple[int, Instr | None, str, State]]:
        bit, vm_items, cpus = state
        for i in which:
            cpu = cpus[i]
            held_by_others = set().union(*(c[6] for j, c in enumerate(cpus) if j != i))
            entry, pc, made, demand, env_items, field_items, held = cpu
            if entry < 0:
                if made < self.calls:
                    for e in range(len(self.p.entries)):
                        if self.p.entries[e].releases and not demand:
                            continue
                        nxt = (e, 0, made + 1, demand, (), field_items, held)
                        yield i, None, f"calls {self.p.entries[e].name}", self._with(state, i, nxt, bit, vm_items)
                continue
            code = self._code(entry)
            if pc >= len(code):
                nxt = (-1, 0, made, demand, (), field_items, held)
                yield i, None, f"returns from {self.p.entries[entry].name}", self._with(state, i, nxt, bit, vm_items)
                continue
            instr = code[pc]
            env, fields, vm = dict(env_items), dict(field_items), dict(vm_items)
            if instr.op == "acquire":
                if instr.args[0] in held_by_others:
                    continue  # blocked
                nxt = (entry, pc + 1, made, demand, env_items, field_items, tuple(sorted({*held, instr.args[0]})))
                yield i, instr, instr.text, self._with(state, i, nxt, bit, vm_items)
            elif instr.op == "release":
                nheld = tuple(x for x in held if x != instr.args[0])
                yield i, instr, instr.text, self._with(state, i, (entry, pc + 1, made, demand, env_items,
                                                                   field_items, nheld), bit, vm_items)
            elif instr.op == "demand":
                nxt = (entry, pc + 1, made, instr.args[0], env_items, field_items, held)
                yield i, instr, instr.text, self._with(state, i, nxt, bit, vm_items)
            elif instr.op == "jump":
                nxt = (entry, instr.args[0], made, demand, env_items, field_items, held)
                yield i, instr, instr.text or "jump", self._with(state, i, nxt, bit, vm_items)
            elif instr.op == "branch":
                for value, fu, vu in _eval(instr.args[0], env, fields, vm):
                    target = pc + 1 if value else instr.args[1]
                    nxt = (entry, target, made, demand, env_items, _items({**fields, **fu}), held)
                    yield i, instr, f"{instr.text}: {'taken' if value else 'not taken'}", self._with(
                        state, i, nxt, bit, _items({**vm, **vu}))
            elif instr.op == "bit" and instr.args[1] is not None and instr.args[1] in held_by_others:
                continue  # the API waits for the update lock
            elif instr.op in ("assign", "bit"):
                expr = instr.args[1] if instr.op == "assign" else instr.args[0]
                for value, fu, vu in _eval(expr, env, fields, vm):
                    nenv, nfields, nvm, nbit = dict(env), {**fields, **fu}, {**vm, **vu}, bit
                    if instr.op == "bit":
                        nbit = int(bool(value))
                    else:
                        kind, slot = instr.args[0]
                        {"l": nenv, "v": nfields, "g": nvm}[kind][slot] = value
                    nxt = (entry, pc + 1, made, demand, _items(nenv), _items(nfields), held)
                    yield i, instr, instr.text, self._with(state, i, nxt, nbit, _items(nvm))

    def _with(self, state: State, i: int, cpu: VCpu, bit: int, vm_items: tuple) -> State:
        entry, pc, made, demand, env_items, field_items, held = cpu
        if env_items:  # forget dead locals, so states that differ only there merge
            live = self.live[entry][pc] if entry >= 0 else frozenset()
            env_items = tuple(item for item in env_items if item[0] in live)
            cpu = (entry, pc, made, demand, env_items, field_items, held)
        cpus = list(state[2])
        cpus[i] = cpu
        return (bit, vm_items, tuple(cpus))

    @staticmethod
    def canonical(state: State) -> State:
        return (state[0], state[1], tuple(sorted(state[2])))

    def violation(self, state: State) -> str:
        bit, vm_items, cpus = state
        if not bit and any(c[3] for c in cpus):
            return "premature-clear"
        quiescent = all(c[0] < 0 and not c[6] for c in cpus)
        if quiescent:
            if bit and not any(c[3] for c in cpus):
                return "leak"
            if any(v < 0 for _, v in vm_items):
                return "negative-count"
        return ""

    def run(self) -> Outcome:
        start = self.canonical(self.initial())
        parents: dict[State, State | None] = {start: None}
        queue = deque([start])
        bound_hit = False
        while queue:
            state = queue.popleft()
            for _, _, _, nxt in self.successors(state):
                canon = self.canonical(nxt)
                if canon in parents:
                    continue
                parents[canon] = state
                problem = self.violation(canon)
                if problem:
                    return Outcome("violation", problem, self.n, len(parents), False, self._trace(parents, canon))
                if len(parents) >= self.max_states:
                    bound_hit = True
                    queue.clear()
                    break
                queue.append(canon)
        return Outcome("verified", "", self.n, len(parents), bound_hit)

    def _trace(self, parents: dict[State, State | None], end: State) -> list[dict[str, Any]]:
        """Replay the canonical path concretely, so vCPU numbers stay stable."""
        path = [end]
        while parents[path[-1]] is not None:
            path.append(parents[path[-1]])  # type: ignore[arg-type]
        path.reverse()
        concrete = self.initial()
        steps = []
        for target in path[1:]:
            for i, instr, what, nxt in self.successors(concrete):
                if self.canonical(nxt) == target:
                    concrete = nxt
                    if instr is None or _visible(instr):
                        steps.append(self._step(i, instr, what, nxt))
                    break
        return steps

    def _step(self, i: int, instr: Instr | None, what: str, state: State) -> dict[str, Any]:
        bit, vm_items, cpus = state
        vm_state = {"bit": bit, **dict(vm_items), "demand": [int(c[3]) for c in cpus]}
        return {"vcpu": i, "function": instr.function if instr else "", "file": instr.file if instr else "",
                "line": instr.line if instr else 0, "action": what, "vm_state_after": vm_state}


def _reads_shared(expr: tuple) -> bool:
    if expr[0] in ("g", "atomic"):
        return True
    return any(isinstance(part, tuple) and _reads_shared(part) for part in expr[1:])


def _locals(expr: tuple) -> set[str]:
    if expr[0] == "l":
        return {expr[1]}
    return set().union(*(_locals(part) for part in expr[1:] if isinstance(part, tuple)))


def _live_locals(code: list[Instr]) -> list[frozenset[str]]:
    """Locals live before each instruction (the code jumps only forward)."""
    live: list[frozenset[str]] = [frozenset()] * (len(code) + 1)
    for pc in range(len(code) - 1, -1, -1):
        instr = code[pc]
        if instr.op == "jump":
            live[pc] = live[instr.args[0]]
            continue
        after = live[pc + 1] | (live[instr.args[1]] if instr.op == "branch" else frozenset())
        if instr.op == "assign":
            target = instr.args[0]
            written = {target[1]} if target[0] == "l" else set()
            live[pc] = frozenset((after - written) | _locals(instr.args[1]) | (_locals(target) - written))
        elif instr.op in ("branch", "bit"):
            live[pc] = frozenset(after | _locals(instr.args[0]))
        else:
            live[pc] = after
    return live


def _is_local(instr: Instr) -> bool:
    """Touches only its own vCPU's state (see the module doc)."""
    if instr.op == "jump":
        return True
    if instr.op == "branch":
        return not _reads_shared(instr.args[0])
    if instr.op == "assign":
        return instr.args[0][0] in ("l", "v") and not _reads_shared(instr.args[1])
    return False


def _visible(instr: Instr) -> bool:
    """Steps a reviewer follows: the bit, demands, locks, shared-state updates."""
    if instr.op in ("bit", "demand", "acquire", "release"):
        return True
    if instr.op == "branch":
        return _reads_shared(instr.args[0])
    return instr.op == "assign" and (instr.args[0][0] in ("v", "g") or _reads_shared(instr.args[1]))


def _items(mapping: dict) -> tuple:
    return tuple(sorted(mapping.items()))
