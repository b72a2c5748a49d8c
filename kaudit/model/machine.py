"""What one step of one simulated vCPU does to the model's state.

A state is (VM slots, threads, VM-wide demand). A thread is a simulated vCPU
(or, last, the environment): (entry or -1 when idle, pc, locals, its
per-vCPU slots, locks held as ((key, owner), mode), demand, armed, calls
made). Values are ints, or pointers: "self" (the running vCPU's own object),
"vm", "obj", or ("cpu", i) for vCPU i met in a loop over every vCPU.

A move runs one thread from one visible op (one that touches shared state,
a lock or a demand) through the invisible ops after it: other threads
cannot observe those, so interleaving them would only repeat states
(partial-order reduction). A call is no move of its own: the entry's
invisible start runs with its first visible op, when that op can run (an
idle vCPU and one that has called but done nothing anyone can see yet are
the same to every other vCPU and to every property checked). Inputs fork
the move where the code tells their values apart (kaudit.model.lazy).

Demand: 0 none, 1 pending (the vCPU decided it needs the key; its request
is still running), 2 active (the request returned: from now on AVIC must
stay inhibited until this vCPU decides it no longer needs the key).

For a count of vCPUs, a thread also has a lifetime phase (NEW until its
create entry returns 0, CREATED, LIVE once it runs anything else, FAILED
if create returned non-zero, EARLY or GONE once destroyed before or after
it went live; DOOMED where other vCPUs look for it: created by the arch's
create, never online, as when the generic create fails after it) and its
contribution: what it added to the count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import combinations, permutations

from kaudit.ir.evaluate import evaluate, truth
from kaudit.ir.names import subexprs
from kaudit.ir.nodes import Expr
from kaudit.model import lazy
from kaudit.model.bookkeeping import on_behalf, op_reads, op_writes, reads, state_of, truth_of_local
from kaudit.model.code import Loc, Op, Protocol
from kaudit.model.domains import OBJECT, for_vcpus
from kaudit.model.flat import reachable, successors
from kaudit.model.lazy import ALL, Lazy, narrowed, split, tags
from kaudit.model.resolve import SELF, VMOBJ

IDLE, PENDING, ACTIVE = 0, 1, 2
NEW, CREATED, LIVE, FAILED, EARLY, GONE, DOOMED = range(7)
WHILE_LIVE = ("transition", "recompute", "reset", "writer")  # entries a created vCPU may call any number of times
UNKNOWN = "unknown"  # what a read of ablated state gives: tests on it go both ways
REFS = "refs"  # an op that is visible when it touches another vCPU's state
LOADED = -1  # the local that holds what a torn store loaded (Machine.torn)
NOBODY = -1  # the owner of a lock that is not a vCPU's (Machine.lock_of)
DRY_STEPS = 2000
Thread = tuple  # (entry, pc, locals, fields, held, demand, armed, calls, phase, contribution)
State = tuple  # (vm, threads, vm_demand)


@dataclass(frozen=True)
class Step:
    """One op (or an entry call) of a trace: who, where, what, and the
    state after it (word, every vCPU's demand, the VM-wide demand, the VM slots)."""

    thread: int
    op: Op | None
    text: str
    function: str
    file: str
    line: int
    after: tuple
    entry: int = -1  # the entry a call (op None) calls
    picked: int | None = None  # the vCPU a pick gave (None: NULL)


def _spell(value) -> str:
    return {SELF: "this vCPU's object", VMOBJ: "the VM", OBJECT: "an object"}.get(value, str(value)) \
        if isinstance(value, (Loc, tuple)) else str(value)


def is_ref(value: object) -> bool:
    """Whether a value is a reference to a vCPU: ("cpu", i), or a loop's position ("cpu", i, still to visit)."""
    return type(value) is tuple and bool(value) and value[0] == "cpu"


def _pointer(value):
    if value is SELF or value == SELF:
        return "self"
    if value is VMOBJ or value == VMOBJ:
        return "vm"
    if value == OBJECT:
        return "obj"
    return value


class _Run:
    """A thread in the middle of a move: mutable copies of what it may change."""

    __slots__ = (
        "acquired",
        "armed",
        "calls",
        "contrib",
        "demand",
        "entry",
        "fields",
        "held",
        "locals",
        "me",
        "note",
        "others",
        "pc",
        "phase",
        "reset",
        "steps",
        "threads",
        "vm",
        "vm_demand",
    )

    def __init__(self, state: State, me: int) -> None:
        vm, threads, vm_demand = state
        entry, pc, local_items, fields, held, demand, armed, calls, phase, contrib = threads[me]
        self.entry, self.pc, self.locals = entry, pc, dict(local_items)
        self.fields, self.held, self.demand, self.armed, self.calls = list(fields), held, demand, armed, calls
        self.phase, self.contrib, self.reset = phase, contrib, False
        self.vm, self.vm_demand, self.steps, self.me, self.note = list(vm), vm_demand, None, me, ""
        self.acquired = 0  # locks taken during the move (for the cost simulation)
        self.others: dict[int, list] = {}  # another vCPU this move changes -> [its fields, its contribution's change]
        self.threads = threads  # as the move found them

    def fork(self) -> _Run:
        other = object.__new__(_Run)
        other.entry, other.pc, other.locals, other.fields = self.entry, self.pc, self.locals.copy(), self.fields.copy()
        other.held, other.demand, other.armed, other.calls = self.held, self.demand, self.armed, self.calls
        other.vm, other.vm_demand, other.me, other.note = self.vm.copy(), self.vm_demand, self.me, self.note
        other.steps, other.acquired = self.steps, self.acquired
        other.phase, other.contrib, other.reset = self.phase, self.contrib, self.reset
        other.others = {i: [fields.copy(), change] for i, (fields, change) in self.others.items()}
        other.threads = self.threads
        return other

    def other(self, i: int) -> list:
        """[fields, contribution's change] of vCPU i as this move leaves it."""
        if i not in self.others:
            self.others[i] = [list(self.threads[i][3]), 0]
        return self.others[i]

    def credit(self, ref: object, change: int) -> None:
        """A count moved on behalf of vCPU `ref` (the one a loop over every vCPU is at, else this one)."""
        if isinstance(ref, tuple) and ref[1] != self.me:
            self.other(ref[1])[1] += change
        else:
            self.contrib += change

    def changed(self) -> tuple:
        """What this move did to other vCPUs: (vCPU, its fields, its contribution's change)."""
        return tuple(sorted((i, tuple(fields), change) for i, (fields, change) in self.others.items()))

    def snapshot(self, threads: tuple) -> tuple:
        """(VM slots, demands, VM-wide demand, phases, contributions), this thread's as it is now."""
        def mine(i: int, index: int, value: object) -> object:
            return value if i == self.me else threads[i][index]

        demands = tuple(mine(i, 5, self.demand) for i in range(len(threads)))
        phases = tuple(mine(i, 8, self.phase) for i in range(len(threads)))
        contributions = tuple(0 if self.reset and i != self.me else mine(i, 9, self.contrib) +
                              (self.others[i][1] if i in self.others else 0) for i in range(len(threads)))
        return (tuple(self.vm), demands, self.vm_demand, phases, contributions)


class Machine:
    def __init__(self, protocol: Protocol, vcpus: int, calls: int = 0, env_calls: int = 0,
                 ablate: frozenset[str] = frozenset()) -> None:
        protocol = for_vcpus(protocol, vcpus)
        self.p = protocol
        self.code = protocol.code
        self.n = vcpus
        self.calls = calls
        self.env_calls = env_calls
        self.ablate = ablate  # "flags" | "counts" | "lock": what the proof is asked to do without
        self.tracing = False  # record the steps of each move (for a counterexample)
        self.memo: dict[tuple, list[tuple]] = {}  # see moves()
        self.count = protocol.word if protocol.kind == "counter" else -1
        self.has_env = any(e.kind == "env" for e in protocol.entries)
        self.destroys = any(e.kind == "destroy" for e in protocol.entries)
        self.arms = any(e.armed for e in protocol.entries)  # else whether a vCPU asked is no state
        self.arming = self._arming() if self.arms else frozenset()
        self.protected = protected_state(protocol, protocol.update_lock if "lock" in ablate else "")
        self.shared_cpu = {loc.slot for op in self.code for arg in op.args if isinstance(arg, Expr)
                           for loc in subexprs(arg) if isinstance(loc, Loc) and loc.kind == "cpu"}
        self.on_behalf = on_behalf(self.code)  # pc -> the reference to the vCPU a count's move there is for
        self.phases_read = protocol.lifecycle and (  # a loop visits, a pick gives, only the VM's vCPUs
            bool(self.on_behalf) or any(op.kind == "pick" for op in self.code))
        self.visible = [self._visible(op) for op in self.code]
        self.torn = {pc for pc, op in enumerate(self.code) if self._torn(op)}
        self.written_by_others = {loc.slot for op in self.code for loc in op_writes(op) if loc.kind == "cpu"}
        preds = Counter(t for pc in range(len(self.code)) for t in successors(self.code, pc))
        self.joins = {pc for pc, n in preds.items() if n > 1}  # where invisible ways can meet
        self.action = {a.id: a for a in protocol.actions}
        self.ablated = {s for kind, s in protocol.flags} if "flags" in ablate else set()
        self.ablated_vm = set(protocol.counts) if "counts" in ablate else set()
        self.ablated_vm |= {s for kind, s in protocol.flags if kind == "vm"} if "flags" in ablate else set()
        self.lazy = {pc for pc, op in enumerate(self.code) if op.kind == "input" and op.args[0] is not None and
                     op.args[0].kind == "local" and _numbers(protocol.domains.get(pc, (0, 1)))}
        self.chosen = {pc: replace(self.code[pc], kind="choose", args=()) for pc in self.lazy}  # trace steps
        self.needs_choice = [self._needs_choice(op) for op in self.code]
        self.tested = [_tested(op) for op in self.code]

    # -- structure --------------------------------------------------------------

    def _visible(self, op: Op) -> bool:
        """Whether other threads could tell when this op runs. Not: local work,
        state only ever touched under a lock the thread holds, a release (it
        can always run at once), an entry's return (its demand turning
        active at once is a schedule the vCPU may take), a vCPU's decision that it needs the key (its own
        demand: only its return makes it active). But a decision is seen where demand is VM-wide (others
        decide over it), and where loops visit only the VM's vCPUs, a loop's step and a return (create's
        and destroy's change which vCPUs those are)."""
        if op.kind == "acquire":
            return True
        if op.kind in ("each", "pick", "end"):
            return self.phases_read
        if op.kind == "release":
            return False
        if op.kind == "dry":  # invisible when all it can decide is a request
            return self.p.vm_demand or self._dry_may_release(op.args[0])
        if op.kind == "decide":  # a decision that comes with the write before it is part of that write
            return len(op.args) == 1 and (self.p.vm_demand or self.action_direction(op) != "request")
        refs = False
        for arg in op.args:
            if isinstance(arg, Expr):
                for e in subexprs(arg):
                    if not isinstance(e, Loc):
                        continue
                    if e.kind == "cpu" and ("cpu", e.slot) not in self.protected:
                        refs = True  # visible only if it reaches another vCPU: decided when it runs
                    elif (e.kind == "vm" and ("vm", e.slot) not in self.protected) or (e.kind == "mine" and \
                            e.slot in self.shared_cpu and ("cpu", e.slot) not in self.protected):
                        return True
        return REFS if refs else False

    def _shared(self, loc: Loc) -> bool:
        """State another vCPU can touch, with no lock that keeps it out."""
        if loc.kind == "vm":
            return ("vm", loc.slot) not in self.protected
        return loc.kind in ("mine", "cpu") and loc.slot in self.shared_cpu and ("cpu", loc.slot) not in self.protected

    def _torn(self, op: Op) -> bool:
        """A plain store of a value read from shared state into shared state (`kvm->arch.users++`): C
        loads, then stores, and another vCPU may run in between (a lost update); an atomic is one step."""
        return op.kind == "set" and self._shared(op.args[0]) and \
            any(isinstance(e, Loc) and self._shared(e) for e in subexprs(op.args[1]))

    def _needs_choice(self, op: Op) -> tuple[int, ...] | None:
        """The locals whose inputs must be chosen before `op` runs: any it stores in state or decides by
        (ALL for a walk that may read any). A test splits an input's values itself, a computation into a
        local keeps them unchosen (_derive), an input and an entry's return choose their own."""
        kind, args = op.kind, op.args
        if kind in ("branch", "jump", "acquire", "release", "each", "pick", "input", "end"):
            return ()
        if kind == "set" and args[0].kind == "local":  # a computation on one input is kept unchosen
            return ()
        if kind == "dry" or (kind == "decide" and self.action[args[0]].direction == "contribution"):
            return ALL
        locs = reads(self.action[args[0]].value) if kind == "decide" else op_reads(op)
        return tuple(sorted({loc.slot for loc in locs if loc.kind == "local"} |
                            {loc.ref for loc in locs if loc.kind == "cpu"}))

    def _dry_may_release(self, start: int) -> bool:
        """Whether a dry run from `start` may release, or read shared state on its way."""
        seen, stack = set(), [start]
        while stack:
            pc = stack.pop()
            if pc in seen or pc >= len(self.code):
                continue
            seen.add(pc)
            op = self.code[pc]
            if op.kind == "decide":
                if self.action_direction(op) != "request":
                    return True
                continue
            if op.kind in ("branch", "set") and any(isinstance(e, Loc) and e.kind in ("vm", "cpu")
                                                    for e in subexprs(op.args[1 if op.kind == "set" else 0])):
                return True
            stack.extend(successors(self.code, pc) if pc not in self.p.forced else (self.p.forced[pc],))
        return False

    def action_direction(self, op: Op) -> str:
        return next(a.direction for a in self.p.actions if a.id == op.args[0])

    def initial(self) -> State:
        fields = tuple(0 for _ in self.p.cpu_names)
        idle: Thread = (-1, 0, (), fields, (), IDLE, 0, 0, NEW if self.p.lifecycle else LIVE, 0)
        threads = [idle] * self.n
        if self.has_env:
            threads.append(idle)
        return (tuple(0 for _ in self.p.vm_names), tuple(threads), IDLE)

    def initial_states(self) -> list[State]:
        """Every choice of the per-vCPU constants (`vcpu->arch.apic_base`...); a host-wide one (the
        backend) is the same on every vCPU, an identity (`vcpu->vcpu_idx`) differs on each. States are
        the same up to the order of the vCPUs, so the first identity's values are given in one order."""
        states = [self.initial()]
        ordered = False
        for slot, values in sorted(self.p.cpu_init.items()):
            out = []
            if slot in self.p.host_constants:
                choices = [(value,) * self.n for value in values]
            elif slot in self.p.identities:
                choices = list(permutations(values, self.n) if ordered else combinations(values, self.n))
                ordered = True
            else:
                choices = list(_product(values, self.n))
            for state in states:
                for choice in choices:
                    vm, threads, vd = state
                    new = list(threads)
                    for i, value in enumerate(choice):
                        fields = list(new[i][3])
                        fields[slot] = _pointer(value)
                        new[i] = (*new[i][:3], tuple(fields), *new[i][4:])
                    out.append((vm, tuple(new), vd))
            states = out
        return states

    # -- values -----------------------------------------------------------------

    def read(self, run: _Run, loc: Loc, threads: tuple) -> object:
        kind = loc.kind
        if kind == "local":
            value = run.locals.get(loc.slot)
            if is_ref(value) and value[1] == run.me:  # a loop at this vCPU: the same object as `vcpu`
                return "self"
            return 0 if value is None else None if value == UNKNOWN else value
        if kind == "mine":
            return run.fields[loc.slot]
        if kind == "vm":
            return run.vm[loc.slot]
        if kind == "cpu":
            ref = run.locals.get(loc.ref)
            if is_ref(ref) and ref[1] != run.me:
                return run.others[ref[1]][0][loc.slot] if ref[1] in run.others else threads[ref[1]][3][loc.slot]
            return run.fields[loc.slot]
        if kind == "self":
            return "self"
        return "vm"

    def write(self, run: _Run, loc: Loc, value: object) -> None:
        kind = loc.kind
        if value is None:  # unknown (an ablated read): a local remembers it, state cannot
            if kind == "local":
                run.locals[loc.slot] = UNKNOWN
                return
            value = 0
        if kind == "local":
            run.locals[loc.slot] = value
        elif kind == "mine" or kind == "cpu":
            ref = run.locals.get(loc.ref) if kind == "cpu" else None
            if is_ref(ref) and ref[1] != run.me:  # a loop over every vCPU
                run.other(ref[1])[0][loc.slot] = value
            else:
                run.fields[loc.slot] = value
        elif kind == "vm":
            run.vm[loc.slot] = value

    def value(self, run: _Run, expr: Expr, threads: tuple) -> object:
        def leaf(e: Expr) -> object:
            if isinstance(e, Loc):
                if (e.kind == "vm" and e.slot in self.ablated_vm) or (e.kind in ("mine", "cpu") and \
                        e.slot in self.ablated):
                    return None
                return self.read(run, e, threads)
            return None

        return evaluate(expr, leaf)

    # -- moves ----------------------------------------------------------------

    @staticmethod
    def lock_of(run: _Run, op: Op) -> tuple[str, int]:
        """The lock an acquire or release names, as (key, owner): a per-vCPU lock is one per vCPU, told
        apart by the vCPU whose it is (kaudit.model.resolve.Resolver._lock_owner); NOBODY owns a lock of
        the VM or the host. The owner is a vCPU number, renumbered with the vCPUs (explore.canonical)."""
        key, owner = op.args[0], op.args[-1]
        if owner is None:
            return (key, NOBODY)
        ref = "self" if owner.kind == "self" else run.locals.get(owner.slot)
        return (key, ref[1] if is_ref(ref) else run.me)

    def lock_free(self, threads: tuple, me: int, lock: tuple[str, int], mode: str) -> bool:
        if "lock" in self.ablate and lock[0] == self.p.update_lock:
            return True
        for i, thread in enumerate(threads):
            if i == me:
                continue
            for held, held_mode in thread[4]:
                if held == lock and (mode == "write" or held_mode == "write"):
                    return False
        return True

    def starts(self, state: State, me: int) -> Iterator[_Run]:
        """An idle thread calls one of its entries."""
        thread = state[1][me]
        env = self.has_env and me == self.n
        limit = self.env_calls if env else self.calls
        if limit and thread[7] >= limit:  # 0: no bound
            return
        phase = thread[8]
        teardown, others_idle = self.teardown(state[1], me)
        for index, entry in enumerate(self.p.entries):
            if (entry.kind == "env") != env or (entry.armed and not thread[6]):
                continue
            if not env and not _allowed(phase, entry.kind):
                continue
            if not env and ((teardown and entry.kind != "destroy") or
                            (entry.kind == "destroy" and self.online(phase) and not others_idle)):
                continue
            if entry.needs >= 0 and not truth(thread[3][entry.needs]):  # its object is not there
                continue
            run = _Run(state, me)
            if entry.kind in WHILE_LIVE and phase == CREATED:
                run.phase = LIVE
            run.entry, run.pc, run.locals, run.calls = index, entry.pc, {}, run.calls + bool(limit)
            if entry.armed:
                run.armed = 0
            if self.tracing:
                run.steps = [Step(me, None, f"calls {entry.name}", entry.name, entry.file, entry.line,
                                  run.snapshot(state[1]), index)]
            yield run

    def _arming(self) -> frozenset[int]:
        """The stores a request path makes of the vCPU's own state that an armed entry tests (`vintr_armed
        = 1` ahead of a guest-mode return that decides no demand): they arm its exit too, as a decision
        to need the key does."""
        entries = self.p.entries
        tested = {loc.slot for e in entries if e.armed for pc in reachable(self.code, [e.pc])
                  for loc in op_reads(self.code[pc]) if loc.kind == "mine"}
        return frozenset(pc for e in entries if e.arms for pc in reachable(self.code, [e.pc])
                         if any(loc.kind == "mine" and loc.slot in tested for loc in op_writes(self.code[pc])))

    def online(self, phase: int) -> bool:
        """Whether a vCPU in this phase went online: other vCPUs can find it (kvm_get_vcpu() looks below
        online_vcpus, which the generic create raises last), and only the VM's teardown destroys it. A
        vCPU that never ran is online only where other vCPUs look (else DOOMED is not told apart)."""
        return phase == LIVE or (phase == CREATED and self.phases_read)

    def teardown(self, threads: tuple, me: int) -> tuple[bool, bool]:
        """(whether the VM is being torn down, whether every other vCPU is idle). KVM destroys a vCPU that
        has run only when the VM goes, once no vCPU ioctl is running, one after another
        (kvm_destroy_vcpus()): that destroy starts only when the other vCPUs are idle, and once one has
        started no vCPU calls anything else. A vCPU that never went online is destroyed while the others
        run, where the generic create fails after the arch's (no fd for it: kvm_vm_ioctl_create_vcpu())."""
        if not self.destroys:
            return False, True
        vcpus = threads[:self.n]
        started = any(t[8] == GONE or (self.online(t[8]) and t[0] >= 0 and self.p.entries[t[0]].kind == "destroy")
                      for t in vcpus)
        return started, all(t[0] < 0 for i, t in enumerate(vcpus) if i != me)

    def moves(self, state: State, me: int) -> list[tuple[list[Step] | None, State, int]]:
        """Every way thread `me` can take its next move (none if it cannot):
        its steps (when tracing), the state after, how often it took the update lock.

        A thread's moves depend on its own state, the VM's, the locks the
        others hold and (if the code reads other vCPUs) their per-vCPU slots:
        they are remembered by exactly that, and reused in every state that
        agrees on it."""
        vm, threads, vm_demand = state
        if self.tracing:
            return [(run.steps, self.freeze(run, state), run.acquired) for run in self._moves(state, me)]
        held = tuple([t[4] for t in threads])  # what the others hold (and, harmlessly, what it holds itself)
        key = (me, threads[me], vm, vm_demand, held, tuple([t[3] for t in threads]) if self.shared_cpu else (),
               tuple([t[8] for t in threads]) if self.phases_read else (),
               self.teardown(threads, me) if threads[me][0] < 0 else ())
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = [self.shrink(run) for run in self._moves(state, me)]
        out = []
        for thread, new_vm, new_demand, reset, acquired, changed in found:
            out.append((None, (new_vm, _threads(threads, me, thread, reset, changed), new_demand), acquired))
        return out

    def shrink(self, run: _Run) -> tuple:
        """What a move leaves: the thread, the VM slots, the VM-wide demand, whether it reset a count."""
        live = self.p.live[run.pc] if run.entry >= 0 else ()
        local_items = tuple(sorted((k, v) for k, v in run.locals.items()
                                   if (k in live or k == LOADED) and v is not None))
        thread = (run.entry, run.pc if run.entry >= 0 else 0, local_items, tuple(run.fields), run.held, run.demand,
                  run.armed, run.calls, run.phase, run.contrib)
        return thread, tuple(run.vm), run.vm_demand, run.reset, run.acquired, run.changed()

    def _moves(self, state: State, me: int) -> list[_Run]:
        threads = state[1]
        if threads[me][0] < 0:  # a call: the entry's invisible start and its first visible op are one move
            todo = []
            for run in self._invisible(list(self.starts(state, me)), threads):
                stepped = [run] if run.entry < 0 else self._visible_step(run, threads)
                if not stepped and run.held != threads[me][4]:  # it must wait, but it dropped a lock first
                    stepped = [run]
                todo += stepped
        else:
            run = _Run(state, me)
            if self.tracing:
                run.steps = []
            todo = self._visible_step(run, threads)
        return self._invisible(todo, threads)

    def _visible_step(self, run: _Run, threads: tuple) -> list[_Run]:
        """The visible op a run stands at, if it can run now (an acquire waits for the lock)."""
        op = self.code[run.pc]
        if op.kind == "acquire" and not self.lock_free(threads, run.me, self.lock_of(run, op), op.args[1]):
            return []
        return self.step(run, threads)

    def _invisible(self, todo: list[_Run], threads: tuple) -> list[_Run]:
        """The runs, each taken through the invisible ops ahead of it: where they stop (at a visible op,
        or returned)."""
        done, seen = [], set()
        joins, step = self.joins, self.step
        while todo:
            run = todo.pop()
            if self._stops(run):
                done.append(run)
                continue
            if run.pc in joins:
                here = self.local_state(run)
                if here in seen:  # two invisible ways (or a loop come round) meet in one state: one is enough
                    continue
                seen.add(here)
            todo.extend(step(run, threads))
        return done

    def _stops(self, run: _Run) -> bool:
        """Whether a run's move ends where it stands: it returned, or the op there is visible."""
        if run.entry < 0:
            return True
        seen_by_others = self.visible[run.pc]
        return self._touches_others(run, self.code[run.pc]) if seen_by_others is REFS else bool(seen_by_others)

    def local_state(self, run: _Run) -> tuple:
        """All that decides what a thread does next in a move: its pc, live locals, fields, what it holds and
        decided, and the VM as it has changed it."""
        live = self.p.live[run.pc]
        return (run.pc, tuple(sorted((k, v) for k, v in run.locals.items() if k in live)), tuple(run.fields),
                tuple(run.vm), run.held, run.demand, run.vm_demand, run.armed, run.calls, run.phase, run.contrib,
                run.reset, run.acquired, run.changed())

    def _touches_others(self, run: _Run, op: Op) -> bool:
        """Whether an op through a loop's reference touches what another vCPU can see: another vCPU's
        fields, its own ones another vCPU's loop writes, or its own ones it writes (others read them)."""
        written = {loc.slot for loc in op_writes(op) if loc.kind == "cpu"}
        for arg in op.args:
            if isinstance(arg, Expr):
                for e in subexprs(arg):
                    if isinstance(e, Loc) and e.kind == "cpu":
                        ref = run.locals.get(e.ref)
                        if (isinstance(ref, tuple) and ref[1] != run.me) or e.slot in self.written_by_others \
                                or e.slot in written:
                            return True
        return False

    def step(self, run: _Run, threads: tuple) -> list[_Run]:
        """execute(), recording the step when tracing."""
        if not self.tracing:
            return self.execute(run, threads)
        op = self.code[run.pc]
        outs = self.execute(run, threads)
        if self.tracing:
            for out in outs:
                picked = out.locals[op.args[0].slot] if op.kind == "pick" else None
                out.steps = [*out.steps, Step(out.me, op, out.note or op.text, op.function, op.file, op.line,
                                              out.snapshot(threads), picked=picked[1] if is_ref(picked) else None)]
                out.note = ""
        return outs

    def freeze(self, run: _Run, state: State) -> State:
        thread, vm, vm_demand, reset, _, changed = self.shrink(run)
        return (vm, _threads(state[1], run.me, thread, reset, changed), vm_demand)

    def execute(self, run: _Run, threads: tuple) -> list[_Run]:
        """Run the op at run.pc; the runs that follow (several where an input is chosen)."""
        pc, pending = run.pc, _unchosen(run, self.needs_choice[run.pc])
        outs = self._execute(run, threads) if not pending else self.chosen_first(run, pending, threads)
        if pc in self.arming:
            for out in outs:
                out.armed = 1
        return outs

    def chosen_first(self, run: _Run, pending: list[int], threads: tuple) -> list[_Run]:
        """The op at run.pc, once the inputs in `pending` are chosen."""
        return [out for chosen in self.choose(run, pending, threads) for out in self._execute(chosen, threads)]

    def choose(self, run: _Run, pending: list[int], threads: tuple) -> list[_Run]:
        """One run per value still possible of each input in `pending` (one that no live local holds any
        more is forgotten)."""
        runs, live = [run], self.p.live[run.pc]
        for tag in pending:
            out = []
            for each in runs:
                held = lazy.holders(each.locals, tag)
                if not any(s in live for s in held):
                    for slot in held:
                        del each.locals[slot]
                    out.append(each)
                    continue
                values = lazy.sources(each.locals, tag)
                forks = [each.fork() for _ in values[1:]] + [each]
                for fork, value in zip(forks, values, strict=True):
                    narrowed(fork.locals, tag, (value,))
                    self.note_choice(fork, tag, value, threads)
                out.extend(forks)
            runs = out
        return runs

    def note_choice(self, run: _Run, tag: int, value: object, threads: tuple) -> None:
        if self.tracing:
            op = self.chosen[tag]
            run.steps = [*run.steps, Step(run.me, op, f"{op.text}: {_spell(value)}", op.function, op.file,
                                          op.line, run.snapshot(threads))]

    def _split(self, run: _Run, cond: Expr, then: int, orelse: int, threads: tuple) -> list[_Run] | None:
        """A test of unchosen inputs: one run each way some of their values go (None: it tests none)."""
        pending = _unchosen(run, self.tested[run.pc])
        if not pending:
            return None
        runs = self.choose(run, pending[1:], threads)  # two inputs tested together: all but one chosen
        out = []
        for each in runs:
            yes, no = split(each.locals, pending[0], lambda each=each: self.value(each, cond, threads), truth)
            for values, target in ((yes, then), (no, orelse)):
                if values:
                    other = each.fork() if values is yes and no else each
                    narrowed(other.locals, pending[0], values)
                    if len(values) == 1:
                        self.note_choice(other, pending[0], values[0], threads)
                    other.pc = target
                    out.append(other)
        return out

    def _derive(self, run: _Run, target: Loc, expr: Expr, threads: tuple) -> list[_Run] | None:
        """A local computed from unchosen inputs: kept unchosen on the one with most values, the others
        chosen (None: it reads none)."""
        pending = _unchosen(run, self.tested[run.pc])
        if not pending:
            return None
        kept = max(pending, key=lambda tag: len(lazy.sources(run.locals, tag)))
        out = []
        for each in self.choose(run, [tag for tag in pending if tag != kept], threads):
            value = lazy.derived(each.locals, kept, lambda each=each: self.value(each, expr, threads))
            runs = [each] if value is not None else self.choose(each, [kept], threads)
            for one in runs:
                self.write(one, target, value if value is not None else self.value(one, expr, threads))
                one.pc += 1
            out.extend(runs)
        return out

    def _execute(self, run: _Run, threads: tuple) -> list[_Run]:
        op = self.code[run.pc]
        kind, args = op.kind, op.args
        if kind == "set":
            target = args[0]
            if target.kind == "local":
                derived = self._derive(run, target, args[1], threads)
                if derived is not None:
                    return derived
            if run.pc in self.torn and LOADED not in run.locals:  # the load: the store is a step of its own
                run.locals[LOADED] = (self.value(run, args[1], threads),)
                if self.tracing:
                    run.note = f"{op.text}: loads {_spell(run.locals[LOADED][0])}, not yet stored"
                return [run]
            value = run.locals.pop(LOADED)[0] if run.pc in self.torn else self.value(run, args[1], threads)
            if target.kind == "vm" and target.slot == self.count:
                old = run.vm[target.slot]
                self.write(run, target, value)
                new = run.vm[target.slot]
                if new == 0 and old != 0 and not self._steps(op):
                    run.reset, run.contrib = True, 0
                    for other in run.others.values():  # what it credited others before: no longer counted
                        other[1] = 0
                elif isinstance(new, int) and isinstance(old, int):
                    run.credit(self.behalf(run), new - old)
            else:
                self.write(run, target, value)
        elif kind == "input":
            if args[3] and run.locals.get(args[0].slot) is not None:  # read before in this call
                run.pc += 1
                return [run]
            values = self.p.domains.get(run.pc, (0, 1))
            if run.pc in self.lazy:
                if run.pc in tags(run.locals, ALL):  # its earlier value is chosen first
                    return self.chosen_first(run, [run.pc], threads)
                self.write(run, args[0], lazy.read(run.pc, values))
                run.pc += 1
                if self.tracing:
                    run.note = f"{op.text}: one of {len(values)} values, chosen where the code tells them apart"
                return [run]
            outs = [run.fork() for _ in values[1:]] + [run]
            for other, value in zip(outs, values, strict=True):
                self.write(other, args[0], _pointer(value))
                other.pc += 1
                if self.tracing:
                    other.note = f"{op.text}: {_spell(value)}"
            return outs
        elif kind == "atomic":
            dst, loc, amount, returns, unless = args
            old = self.read(run, loc, threads)
            old = old if isinstance(old, int) else 0
            delta = self.value(run, amount, threads)
            moved = unless is None or old != self.value(run, unless, threads)  # atomic_add_unless()
            new = old + (delta if isinstance(delta, int) and moved else 0)
            self.write(run, loc, new)
            if loc.kind == "vm" and loc.slot == self.count:
                run.credit(self.behalf(run), new - old)
            if dst is not None:
                known = not (loc.kind == "vm" and loc.slot in self.ablated_vm)  # an ablated count tells nothing
                result = new if returns == "new" else int(new == 0) if returns == "test" else \
                    int(moved) if returns == "moved" else old
                self.write(run, dst, result if known else None)
        elif kind == "bit":
            word = self.read(run, args[0], threads)
            word = word if isinstance(word, int) else 0
            bit = self.value(run, args[1], threads)
            on = self.value(run, args[2], threads)
            if args[3] is not None:  # test_and_set_bit(): the old bit, in the same step (unknown if ablated)
                known = isinstance(bit, int) and 0 <= bit < 4096 and self.value(run, args[0], threads) is not None
                self.write(run, args[3], word >> bit & 1 if known else None)
            if isinstance(bit, int) and 0 <= bit < 4096:
                word = word | (1 << bit) if on is None or truth(on) else word & ~(1 << bit)
            self.write(run, args[0], word)
        elif kind == "acquire":
            run.acquired += args[0] == self.p.update_lock
            if not ("lock" in self.ablate and args[0] == self.p.update_lock):
                run.held = tuple(sorted({*run.held, (self.lock_of(run, op), args[1])}))
        elif kind == "release":
            lock = self.lock_of(run, op)
            run.held = tuple(h for h in run.held if h[0] != lock)
        elif kind == "branch":
            split_runs = self._split(run, *args, threads)
            if split_runs is not None:
                return split_runs
            test = self.value(run, args[0], threads)
            if test is None:  # an ablated read: either way
                outs = []
                for target in (args[1], args[2]):
                    other = run.fork()
                    other.pc = target
                    outs.append(other)
                return outs
            run.pc = args[1] if truth(test) else args[2]
            return [run]
        elif kind == "jump":
            run.pc = args[0]
            return [run]
        elif kind == "each":  # the iterator is ("cpu", current vCPU, vCPUs still to visit): the VM's vCPUs
            current = run.locals.get(args[0].slot)
            rest = tuple(range(self.n)) if not isinstance(current, tuple) else current[2]
            while rest and rest[0] != run.me and threads[rest[0]][8] not in (CREATED, LIVE):  # not (any more) its
                rest = rest[1:]
            if rest:
                run.locals[args[0].slot] = ("cpu", rest[0], rest[1:])
                run.pc = args[1]
            else:
                run.locals[args[0].slot] = None
                run.pc = args[2]
            return [run]
        elif kind == "pick":  # some vCPU of the VM, or none (`kvm->vcpus[dest]` may be NULL)
            outs = []
            for i in range(self.n):
                if i == run.me or threads[i][8] in (CREATED, LIVE):
                    other = run.fork()
                    other.locals[args[0].slot] = ("cpu", i, ())
                    other.pc += 1
                    outs.append(other)
            run.locals[args[0].slot] = 0
            run.pc += 1
            return [*outs, run]
        elif kind == "decide":
            return self.decide(run, self.action[args[0]], threads)
        elif kind == "dry":
            return self.dry(run, args[0], threads)
        elif kind == "end":
            result = run.locals.get(self.p.result_slot)
            if type(result) is Lazy and self.p.entries[run.entry].kind == "create":  # its failure is chosen
                return self.chosen_first(run, [result.tag], threads)
            self.end(run)
            if run.phase == CREATED and self.phases_read and self.destroys:  # or its generic create fails
                doomed = run.fork()
                doomed.phase = DOOMED
                return [run, doomed]
            return [run]
        run.pc += 1
        return [run]

    # -- demand -----------------------------------------------------------------

    def set_demand(self, run: _Run, need: bool) -> None:
        if self.p.vm_demand:
            run.vm_demand = (PENDING, run.me) if need else IDLE
        else:
            run.demand = PENDING if need and run.demand != ACTIVE else (run.demand if need else IDLE)
        if need and self.arms:
            run.armed = 1

    def decide(self, run: _Run, action, threads: tuple) -> list[_Run]:
        run.pc += 1
        direction = action.direction
        if direction == "value":
            value = self.value(run, action.value, threads)
            direction = "request" if value is None or truth(value) else "release"
        elif direction == "delta":
            value = self.value(run, action.value, threads)
            direction = "request" if isinstance(value, int) and value > 0 else "release"
        elif direction == "contribution":
            direction = "request" if self.contribution(run, action, threads) else "release"
        if direction in ("request", "release"):
            self.set_demand(run, direction == "request")
            call = action.text + ": " if action.text else ""
            run.note = f"{call}{'needs the key' if direction == 'request' else 'no longer needs the key'}"
        return [run]

    def contribution(self, run: _Run, action, threads: tuple) -> bool:
        """This vCPU's part of a value computed over every vCPU: the loop body run for it alone."""
        slot = truth_of_local(action.value)
        for pc, op in enumerate(self.code):
            if op.kind == "each":
                for outcome in self._dry_loop(run, pc, op, slot, threads):
                    if outcome:
                        return True
        return False

    def _dry_loop(self, run: _Run, head: int, op: Op, slot: int, threads: tuple) -> Iterator[bool]:
        """The loop's body at this vCPU, as any other vCPU computing the value runs it: `v == vcpu` is
        false there, so a loop that skips the vCPU running it leaves out that vCPU's own need."""
        trial = run.fork()
        trial.others[run.me] = [trial.fields, 0]
        trial.me = NOBODY
        trial.locals[slot] = 0
        trial.locals[op.args[0].slot] = ("cpu", run.me, ())
        trial.pc = op.args[1]
        for _ in range(DRY_STEPS):
            if trial.pc in (head, op.args[2]) or trial.pc >= len(self.code):
                break
            inner = self.code[trial.pc]
            if inner.kind == "set" and inner.args[0].kind == "local":
                self.write(trial, inner.args[0], self.value(trial, inner.args[1], threads))
                trial.pc += 1
            elif inner.kind == "branch":
                test = self.value(trial, inner.args[0], threads)
                trial.pc = inner.args[1] if test is None or truth(test) else inner.args[2]
            elif inner.kind == "jump":
                trial.pc = inner.args[0]
            else:
                trial.pc += 1
        yield truth(trial.locals.get(slot) or 0)

    def dry(self, run: _Run, start: int, threads: tuple) -> list[_Run]:
        """A request skipped by bookkeeping: walk on as if every bookkeeping
        test let it through, to the action it would have reached."""
        run.pc += 1
        outcomes: list[tuple[_Run, str]] = []
        trials = [(run.fork(), start, 0)]
        while trials:
            trial, pc, steps = trials.pop()
            while steps < DRY_STEPS and pc < len(self.code):
                steps += 1
                op = self.code[pc]
                if op.kind == "decide":
                    action = self.action[op.args[0]]
                    decided = self.decide(trial, action, threads)[0]
                    outcomes.append((decided, action.direction))
                    break
                if op.kind in ("end", "dry"):
                    if op.kind == "end":
                        break
                    pc += 1
                elif op.kind == "branch":
                    forced = self.p.forced.get(pc)
                    if forced is not None:
                        pc = forced
                    else:
                        test = self.value(trial, op.args[0], threads)
                        pc = op.args[1] if test is None or truth(test) else op.args[2]
                elif op.kind == "jump":
                    pc = op.args[0]
                elif op.kind == "each":  # the loop runs: a skipped recompute decides on what its scan reads
                    trial.pc = pc
                    pc = self._execute(trial, threads)[0].pc
                elif op.kind == "pick":  # a dry run decides as if the code took what it was given
                    trial.locals[op.args[0].slot] = ("cpu", trial.me, ())
                    pc += 1
                elif op.kind == "input":
                    for value in self.p.domains.get(pc, (0, 1))[1:]:
                        other = trial.fork()
                        self.write(other, op.args[0], _pointer(value))
                        trials.append((other, pc + 1, steps))
                    self.write(trial, op.args[0], _pointer(self.p.domains.get(pc, (0, 1))[0]))
                    pc += 1
                elif op.kind == "set" and op.args[0].kind == "local":
                    self.write(trial, op.args[0], self.value(trial, op.args[1], threads))
                    pc += 1
                elif op.kind == "atomic" and op.args[0] is not None:
                    self.write(trial, op.args[0], 0)
                    pc += 1
                else:
                    pc += 1
        results = []
        for decided, _ in outcomes:
            out = run.fork()
            out.demand, out.vm_demand, out.armed = decided.demand, decided.vm_demand, decided.armed
            out.note = f"skipped by the protocol's bookkeeping, but {decided.note or 'decides nothing'}"
            results.append(out)
        return results or [run]

    def behalf(self, run: _Run) -> object:
        """The vCPU a move of the count at run.pc is made for (bookkeeping.on_behalf), None for the running one."""
        slot = self.on_behalf.get(run.pc)
        return None if slot is None else run.locals.get(slot)

    def _steps(self, op: Op) -> bool:
        value = op.args[1]
        return getattr(value, "op", "") in ("+", "-") and getattr(value, "left", None) == op.args[0]

    def end(self, run: _Run) -> None:
        kind = self.p.entries[run.entry].kind
        if kind == "create":
            result = run.locals.get(self.p.result_slot)
            run.phase = CREATED if result in (None, 0) else FAILED
        elif kind == "destroy":
            run.phase = GONE if self.online(run.phase) else EARLY
        if run.phase in (FAILED, EARLY, GONE) and not self.shared_cpu:  # no code reads a dead vCPU's fields:
            run.fields = [0] * len(run.fields)  # how its life ended makes no two states differ
        for slot in self.p.dead_when_idle:  # never read before it is written again: forgotten
            run.fields[slot] = 0
        if run.demand == PENDING:
            run.demand = ACTIVE
        if isinstance(run.vm_demand, tuple) and run.vm_demand[1] == run.me:
            run.vm_demand = ACTIVE
        run.entry, run.pc, run.locals = -1, 0, {}


def protected_state(protocol: Protocol, ignored: str = "") -> set[tuple[str, int]]:
    """State slots every access to which holds one same lock (writes in write
    mode): between taking and dropping that lock nobody else can see them.
    The `ignored` lock protects nothing (the proof is asked to do without it)."""
    code = protocol.code
    held: list[frozenset | None] = [None] * len(code)
    stack = []
    for entry in protocol.entries:
        if 0 <= entry.pc < len(code):
            held[entry.pc] = frozenset()
            stack.append(entry.pc)
    while stack:
        pc = stack.pop()
        now = held[pc]
        op = code[pc]
        if op.kind == "acquire" and op.args[0] != ignored and op.args[-1] is None:  # one vCPU's lock: not the others
            now = now | {(op.args[0], op.args[1])}
        elif op.kind == "release":
            now = frozenset(h for h in now if h[0] != op.args[0])
        for nxt in successors(code, pc):
            if nxt < len(code):
                merged = now if held[nxt] is None else held[nxt] & now
                if merged != held[nxt]:
                    held[nxt] = merged
                    stack.append(nxt)
    guard: dict[tuple[str, int], set | None] = {}
    for pc, op in enumerate(code):
        locks = held[pc] or frozenset()
        for loc, writing in [(loc, False) for loc in op_reads(op)] + [(loc, True) for loc in op_writes(op)]:
            state = state_of(loc)
            if state is None:
                continue
            usable = {name for name, mode in locks if mode == "write" or not writing}
            guard[state] = usable if guard.get(state) is None else guard[state] & usable
    return {state for state, locks in guard.items() if locks}


def _tested(op: Op) -> tuple[int, ...]:
    """The locals a test, or a computation into a local, reads: where unchosen inputs are split or kept."""
    if op.kind == "branch":
        expr = op.args[0]
    elif op.kind == "set" and op.args[0].kind == "local":
        expr = op.args[1]
    else:
        return ()
    return tuple(loc.slot for loc in reads(expr) if loc.kind == "local")


def _unchosen(run: _Run, slots: tuple[int, ...] | None) -> list[int]:
    """The tags of the unchosen inputs among these locals of the run (every local for ALL)."""
    return tags(run.locals, slots) if slots != () else []


def _numbers(values: tuple) -> bool:
    """Whether an input's values are plain numbers, more than one (a pointer is chosen where it is read)."""
    return len(values) > 1 and all(type(v) is int for v in values)


def _threads(threads: tuple, me: int, thread: Thread, reset: bool, changed: tuple) -> tuple:
    """The threads after a move of `me`: its own new thread, the other vCPUs' fields it changed and the
    contributions it made for them; a count set back to zero holds nobody's contribution any more."""
    new = [(*t[:9], 0) for t in threads] if reset else list(threads)
    for i, fields, change in changed:
        new[i] = (*new[i][:3], fields, *new[i][4:9], new[i][9] + change)
    new[me] = thread
    return tuple(new)


def _allowed(phase: int, kind: str) -> bool:
    """Which entries a vCPU in this phase of its lifetime may call."""
    if phase == NEW:
        return kind == "create"
    if phase in (CREATED, LIVE):
        return kind in WHILE_LIVE or kind == "destroy"
    return phase == DOOMED and kind == "destroy"


def _product(values: tuple, n: int) -> Iterator[tuple]:
    if n == 0:
        yield ()
        return
    for rest in _product(values, n - 1):
        for value in values:
            yield (*rest, value)
