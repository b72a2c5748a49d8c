"""The model's program: flat code that N simulated vCPUs run.

Entries are compiled from the lowered form (kaudit.ir) by inlining every
call that can touch modelled state; what is left are the operations below.
Expressions stay lowered-form expressions (evaluated by kaudit.ir.evaluate)
whose leaves are `Loc`s: where a value lives while the model runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kaudit.ir.nodes import Expr


@dataclass(frozen=True, slots=True)
class Loc(Expr):
    """A storage place. kind: `local` (slot of the running frame), `mine`
    (a field of the running vCPU), `cpu` (a field of the vCPU whose index
    the local `ref` holds), `vm` (VM-wide or host-wide state)."""

    kind: str
    slot: int
    ref: int = -1
    name: str = ""


@dataclass(frozen=True)
class Generations:
    """The slots of generation counters and their copies, held as ranks (kaudit.model.generations)."""

    vm: frozenset[int] = frozenset()
    cpu: frozenset[int] = frozenset()
    local: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.vm)


@dataclass(frozen=True, slots=True)
class Op:
    """One step. `kind` says what it does with `args`:

    set (dst, expr)            write a location
    input (dst, domain, reads, repeated, guess)  an unmodelled value: one of
                               `domain` (None: any), chosen; `reads` is the state
                               it depends on (widening may model it); `guess`
                               names a value made up about code in the tree (a
                               summarised call, memory it cannot name:
                               kaudit.model.reliance), "" for any other
    atomic (dst|None, loc, delta, returns)   read-modify-write in one step
    bit (loc, bit, value)      set (value true) or clear bit `bit` of loc
    acquire (lock, mode) / release (lock)
    branch (cond, then, else) / jump (target)
    each (iterator, body, exit) loop head over every vCPU
    decide (action, direction) a demand decision at an action point
    dry (action set, start)    a request skipped by bookkeeping: decide as if taken
    end ()                     the entry returns (its value in local 0)
    fill (dest, source|None)   a block copy (or fill) through pointer `dest`: only in a
                               draft, resolved into writes of what it may change
    """

    kind: str
    args: tuple
    function: str  # where it comes from, for traces
    file: str
    line: int
    text: str
    api: bool = False  # compiled from the body of an API function (or the environment)
    origin: int = -1  # the action point (Draft.points index) whose API call this op belongs to

    def but(self, args: tuple, kind: str = "") -> Op:
        """This op with other arguments (and kind): dataclasses.replace without its cost, which the passes
        pay hundreds of thousands of times a run."""
        return Op(kind or self.kind, args, self.function, self.file, self.line, self.text, self.api, self.origin)


@dataclass(frozen=True)
class Action:
    """A point where a vCPU acts on the key: an API call with the key (its
    direction: request, release, or read off the value), or an update of
    a count of the key. `stack` is the inline chain of calls that led to it."""

    id: int
    pc: int
    kind: str  # site | count
    direction: str  # request | release | value | contribution | delta | none | mixed
    stack: tuple = ()
    value: Expr | None = None
    where: tuple[str, str, int] = ("", "", 0)  # function, file, line of the call or update
    text: str = ""  # the call or update, as written


@dataclass
class Entry:
    name: str
    fid: str
    pc: int
    file: str = ""
    line: int = 0
    kind: str = "transition"  # transition | recompute | create | reset | destroy | writer | env
    armed: bool = False  # runs only once a request path of this vCPU armed it (an exit handler)
    why: str = ""
    needs: int = -1  # a per-vCPU slot that must hold a non-NULL pointer: the object the entry takes exists
    arms: bool = False  # a request path: its stores of what an armed entry tests arm that entry


@dataclass
class Protocol:
    """Everything the explorer needs to run one key."""

    rule: str
    key: str
    code: list[Op]
    entries: list[Entry]
    actions: list[Action]
    vm_names: list[str]  # vm slots
    cpu_names: list[str]  # per-vCPU slots
    cpu_init: dict[int, tuple] = field(default_factory=dict)  # per-vCPU constants: slot -> the values it may take
    locals: int = 0
    word: int = -1  # vm slot of the inhibit word
    key_bit: int = 0
    other_bit: int = 0
    counts: list[int] = field(default_factory=list)  # vm slots of counts of requests
    stepped: list[int] = field(default_factory=list)  # vm slots moved by constants (counts, generations...)
    flags: list[tuple[str, int]] = field(default_factory=list)  # ("vm"|"cpu", slot)
    guards: frozenset[str] = frozenset()  # a count's: the field keys of what decides whether it moves
    update_lock: str = ""
    kind: str = "inhibit"  # inhibit (a key of the word) | counter (a count of vCPUs)
    host_wide: bool = False  # a counter that outlives the VM (a global, e.g. a static key)
    vm_demand: bool = False  # the bit is a function of VM-wide state: one VM-wide demand
    recompute: bool = False  # the value is recomputed over every vCPU
    lifecycle: bool = False
    left_out: list[tuple[str, str]] = field(default_factory=list)  # lifecycle entries not run: (function, why)
    state: frozenset[str] = frozenset()  # the field keys it models or reads: what an entry left out must not write
    live: list[frozenset[int]] = field(default_factory=list)  # per pc: local slots that may still be read
    dead_when_idle: tuple[int, ...] = ()  # per-vCPU slots no entry reads before writing them
    host_constants: frozenset[int] = frozenset()  # per-vCPU constants every vCPU shares (the backend)
    independent: bool = False  # a count whose vCPUs share nothing else: one vCPU shows every behaviour
    forced: dict[int, int] = field(default_factory=dict)  # bookkeeping test pc -> where a dry run goes
    domains: dict[int, tuple] = field(default_factory=dict)  # input op pc -> the values it may take
    identities: dict[int, tuple] = field(default_factory=dict)  # cpu_init slots no two vCPUs share -> their peers
    result_slot: int = 0
    generations: Generations = field(default_factory=Generations)  # slots held as ranks (model/generations.py)

    @property
    def flag_names(self) -> list[str]:
        return [(self.cpu_names if kind == "cpu" else self.vm_names)[slot] for kind, slot in self.flags]

    @property
    def count_names(self) -> list[str]:
        return [self.vm_names[slot] for slot in self.counts]
