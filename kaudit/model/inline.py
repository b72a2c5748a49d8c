"""Entries of the lowered form -> one flat draft of model code, calls inlined.

A call is inlined when its callee's body is in the tree and it can touch
the state being checked (kaudit.ir.effects); kernel primitives (locks,
atomics, bit operations, static keys) become their own operations; any
other call is opaque: its result is an input the explorer chooses. Each
inlined call gets a frame: its locals are renamed apart, pointer
parameters (and constant ones the callee never assigns) are replaced by
the caller's argument, the others assigned on entry. Branch targets are
labels until `Draft.link`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kaudit.ir.effects import Effects, primitive_effects, written_operand
from kaudit.ir.evaluate import fold
from kaudit.ir.names import Keys, counted_key, deref, field_key, lock_key, render, render_call, returned_only, subexprs
from kaudit.ir.nodes import (
    Assign,
    Binary,
    Block,
    Branch,
    Call,
    CallOp,
    Cleanup,
    Const,
    CType,
    EachVcpu,
    Expr,
    Field,
    Function,
    Index,
    Jump,
    LockAssert,
    Opaque,
    Return,
    Select,
    Unary,
    Var,
)
from kaudit.ir.program import LoweredProgram
from kaudit.kernel_api import (
    ATOMIC_READ,
    ATOMIC_RETURNS_NEW,
    ATOMIC_SET,
    ATOMIC_UNLESS,
    ATOMIC_UPDATE,
    BIT_CLEAR,
    BIT_SET,
    BIT_TEST,
    BIT_TEST_AND_CLEAR,
    BIT_TEST_AND_SET,
    BITMAP_EMPTY,
    LOCK_ACQUIRE,
    LOCK_RELEASE,
    MEM_COPY,
    MEM_FILL,
    STATIC_KEY_READ,
    STATIC_KEY_UPDATE,
)
from kaudit.model.code import Loc, Op
from kaudit.rules import ApiEntry

MAX_DEPTH = 12
SUMMARY_BUDGET = 8  # functions: a callee that would compile more, moving none of the core state, is summarised
TINY_INSTRUCTIONS = 8  # a helper this small, with its callees, is compiled whenever its value is used
SUMMARY_INSTRUCTIONS = 100  # ... or more of their instructions than this (kvm_pmu_set_msr() behind an MSR write)
RESULT = Var("%result", "local")  # an entry's return value
BACKEND = CType("enum %backend")  # the type of the constant naming the backend (vendor module) a host runs


@dataclass(frozen=True)
class Core:
    """What makes a callee part of the protocol itself: it leads to a set or clear of the key, or
    writes this state (the flags and counts the bookkeeping may use)."""

    leads_to_key: frozenset[str]
    state: frozenset[str]


@dataclass
class Frame:
    fid: str
    prefix: str
    subst: dict[str, Expr]
    api: bool  # inside the body of an API function
    stack: tuple[tuple[str, CallOp], ...]
    result: Var | None
    end: int  # label of the frame's end
    loops_outside: dict[int, tuple[Var, int]] = field(default_factory=dict)


@dataclass
class Point:
    """An API call with a constant key, met in code outside API bodies."""

    label: int
    key: str
    key_value: int
    api: ApiEntry
    value: Expr | None  # the set/clear value when the API takes one
    stack: tuple[tuple[str, CallOp], ...]
    file: str
    line: int


@dataclass
class Draft:
    ops: list[Op] = field(default_factory=list)
    labels: dict[int, int] = field(default_factory=dict)  # label -> op index
    nlabels: int = 0
    points: list[Point] = field(default_factory=list)
    skipped: set[str] = field(default_factory=set)  # state written only in code left out (Inliner._kept_blocks)

    def label(self) -> int:
        self.nlabels += 1
        return self.nlabels

    def place(self, label: int) -> None:
        self.labels[label] = len(self.ops)


def bit_of(word: Expr, nr: Expr) -> Expr:
    """Bit `nr` of `word`, as test_bit() reads it."""
    return Binary("&", Binary(">>", word, nr), Const(1))


def simplify(expr: Expr) -> Expr:
    """`*&x` is x; `*bitmap` of an array field is the array (a bitmap as a whole)."""
    if isinstance(expr, Unary) and expr.op == "*":
        if isinstance(expr.arg, Unary) and expr.arg.op == "&":
            return expr.arg.arg
        if isinstance(expr.arg, Field) and "[" in expr.arg.ctype.spelling:
            return expr.arg
    return expr


class Inliner:
    def __init__(self, lowered: LoweredProgram, effects: Effects, api: dict[str, ApiEntry], interesting: set[str],
                 update_lock: str, word: str, core: Core, readers: frozenset[str] = frozenset(),
                 coarse: bool = False) -> None:
        self.lowered = lowered
        self.coarse = coarse  # the value of a heavy callee is a guess (a protocol too large compiled in full)
        self.effects = effects
        self.api = api
        self.interesting = Keys(interesting)
        self.core = core  # what a callee must move to be compiled in full, whatever its size
        self.core_state = Keys(core.state)
        self._heavies: dict[str, bool] = {}
        self._returned: dict[str, frozenset[str]] = {}
        self._bindings: dict[str, list[tuple[str, str, str]]] | None = None  # (record, member, directory)
        self.readers = readers  # callees that only read interesting state, compiled because a decision reads them
        self.update_lock = update_lock
        self.word = word
        self.draft = Draft()
        self.calls_seen: dict[tuple[str, int], bool] = {}  # _visible of a call (by id: the lowered program
        # keeps every function it lowered for the run), the same in every frame
        self.frames = 0
        self.origin = -1  # the action point being compiled

    # -- expressions ----------------------------------------------------------

    def rename(self, expr: Expr, frame: Frame) -> Expr:
        if isinstance(expr, Var):
            if expr.scope == "global":
                return expr
            if expr.scope == "param" and expr.name in frame.subst:
                return frame.subst[expr.name]
            return Var(f"{frame.prefix}{expr.name}", "local", expr.ctype)
        if isinstance(expr, Field):
            return replace(expr, base=self.rename(expr.base, frame))
        if isinstance(expr, Unary):
            return simplify(Unary(expr.op, self.rename(expr.arg, frame)))
        if isinstance(expr, Binary):
            return Binary(expr.op, self.rename(expr.left, frame), self.rename(expr.right, frame))
        if isinstance(expr, Select):
            return Select(self.rename(expr.test, frame), self.rename(expr.then, frame),
                          self.rename(expr.orelse, frame))
        if isinstance(expr, Index):
            return Index(self.rename(expr.base, frame), self.rename(expr.index, frame))
        if isinstance(expr, Opaque):
            return Opaque(expr.what, tuple(self.rename(s, frame) for s in expr.subs))
        return expr

    def emit(self, kind: str, args: tuple, frame: Frame, line: int, text: str) -> None:
        fn = self.lowered.program.functions[frame.fid]
        self.draft.ops.append(Op(kind, args, fn["name"], fn["file"], line, text, frame.api, self.origin))

    # -- functions ------------------------------------------------------------

    def entry(self, fid: str, subst: dict[str, Expr], returns: bool, callers_hold: tuple[tuple[str, str], ...] = ()
              ) -> int:
        """Compile an entry function; returns the label of its first op. Its
        parameters not given in `subst` are inputs; with `returns`, its value
        is kept in RESULT (a create's: non-zero is a failure); it holds the VM-wide
        locks `callers_hold` (key, mode) throughout, as every caller does."""
        start, end = self.draft.label(), self.draft.label()
        self.frames += 1  # each entry's locals are its own: a prefix per frame
        frame = Frame(fid, f"{self.frames}:", subst, fid in self._api_fids(), (), RESULT if returns else None, end)
        self.draft.place(start)
        function = self.lowered.function(fid)
        asserted = self._asserted_locks(function, frame)
        callers_hold = tuple(held for held in callers_hold if held[0] not in {lock for lock, _, _ in asserted})
        for lock, mode, held in asserted:
            self.emit("acquire", (lock, mode, held), frame, function.line,
                      f"{function.name} runs with {lock} held (its callers hold it: lockdep_assert_held)")
        for lock, mode in callers_hold:
            self.emit("acquire", (lock, mode, None), frame, function.line,
                      f"{function.name} runs with {lock} held (every caller takes it first)")
        if (backend := self._backend_of(fid)) is not None:  # one backend's function: only on its vCPUs
            run = self.draft.label()
            self.emit("branch", (Binary("==", backend[0], Const(backend[1])), run, end), frame, function.line,
                      f"{function.name} runs on a vCPU of its backend")
            self.draft.place(run)
        for param in function.params:
            if param.name not in subst:
                value = self.rename(Var(param.name, "local", param.ctype), frame)
                self.emit("input", (value, None, (), False, ""), frame, function.line,
                          f"{function.name}: {param.name} is any value")
        self.body(function, frame)
        self.draft.place(end)
        fn = self.lowered.program.functions[fid]
        for lock, _, held in asserted:
            self.emit("release", (lock, held), frame, fn["end_line"], f"its caller drops {lock}")
        for lock, _ in callers_hold:
            self.emit("release", (lock, None), frame, fn["end_line"], f"its caller drops {lock}")
        self.emit("end", (), frame, fn["end_line"], f"returns from {fn['name']}")
        return start

    def _asserted_locks(self, function: Function, frame: Frame) -> list[tuple[str, str, Expr]]:
        """The locks an entry asserts held (`lockdep_assert_held(&kvm->arch.tsc_write_lock)`): run on its
        own, it runs inside its caller's critical section, so it holds them throughout."""
        found: dict[str, tuple[str, str, Expr]] = {}
        for _, instr in function.instructions():
            if isinstance(instr, LockAssert):
                held = deref(self.rename(instr.lock, frame))
                found.setdefault(lock_key(held), (lock_key(held), "read" if instr.mode == "read" else "write", held))
        return [found[key] for key in sorted(found)]

    def synthetic(self, api: ApiEntry, args: tuple[Expr, ...], fid: str, choice: Var) -> int:
        """Compile a call of an API function made by the environment (not a
        vCPU), whose local `choice` is 0 or 1: `fid` lends its file for the trace."""
        start, end = self.draft.label(), self.draft.label()
        frame = Frame(fid, "env:", {}, True, (), None, end)
        self.draft.place(start)
        self.emit("input", (self.rename(choice, frame), (0, 1), (), False, ""), frame,
                  self.lowered.program.functions[fid]["line"],
                  f"the environment {'sets or clears'} another reason")
        call = Call(api.function, None, args, self.lowered.program.functions[fid]["line"], 0)
        self.call(CallOp(call, None, call.line), frame)
        self.draft.place(end)
        self.emit("end", (), frame, call.line, f"{api.function} returns")
        return start

    def _api_fids(self) -> set[str]:
        program = self.lowered.program
        return {fid for name in self.api for fid in program.functions_named(name)}

    def body(self, function: Function, frame: Frame) -> None:
        taken = self._constant_tests(function, frame)
        kept = self._kept_blocks(function, frame, taken)
        labels = {block.id: self.draft.label() if block.id in kept else frame.end for block in function.blocks}
        loop_of_head = {loop.head: loop for loop in function.loops if loop.kind == "vcpus"}
        for block in function.blocks:
            if block.id not in kept:
                continue
            self.draft.place(labels[block.id])
            for instr in block.instrs:
                self.instr(instr, frame)
            if block.id in taken:
                self.emit("jump", (labels[taken[block.id]],), frame, block.term.line,
                          f"if ({render(block.term.cond, function.temps)})")
            else:
                self.term(block, function, frame, labels, loop_of_head)

    def _constant_tests(self, function: Function, frame: Frame) -> dict[int, int]:
        """The blocks whose test is a constant in this frame (`if (init_event)` for a caller's `true`),
        and the block each goes to. The code behind the other way is never compiled: the fold of
        constant branches (kaudit.model.extract) would drop it, after compiling it for nothing."""
        taken = {}
        for block in function.blocks:
            if isinstance(block.term, Branch) and (value := fold(self.rename(block.term.cond, frame))) is not None:
                taken[block.id] = block.term.then if value else block.term.orelse
        return taken

    def _kept_blocks(self, function: Function, frame: Frame, taken: dict[int, int]) -> set[int]:
        """The blocks that can matter once the function returns: those the entry reaches (a constant
        test goes one way) from which an instruction with an effect outside the frame
        (kaudit.model.inline._visible), or a return of a value the caller uses, is reachable. The
        others do nothing the model could see: they compile to a jump to the frame's end, a slice
        before inlining (the MSR cases of kvm_set_msr_common() that move nothing modelled). A write
        they skip to state that is not interesting cannot be read as modelled: what the slice reads
        and some code writes becomes interesting by widening (kaudit.model.extract)."""
        def successors(block: Block) -> tuple[int, ...]:
            return (taken[block.id],) if block.id in taken else function.successors(block)

        live, todo = {0}, [0]
        while todo:
            for nxt in successors(function.blocks[todo.pop()]):
                if nxt not in live:
                    live.add(nxt)
                    todo.append(nxt)
        preds: dict[int, list[int]] = {}
        for block in function.blocks:
            if block.id in live:
                for nxt in successors(block):
                    preds.setdefault(nxt, []).append(block.id)
        todo = [block.id for block in function.blocks if block.id in live and (
                any(self._visible(instr, frame) for instr in block.instrs)
                or (frame.result is not None and isinstance(block.term, Return) and block.term.value is not None))]
        kept = set(todo)
        while todo:
            for prev in preds.get(todo.pop(), ()):
                if prev not in kept:
                    kept.add(prev)
                    todo.append(prev)
        for block in function.blocks:  # code that cannot run here writes nothing, not even state left out
            if block.id in live and block.id not in kept:
                self.draft.skipped |= set().union(*(self._writes(instr, frame) for instr in block.instrs))
        return kept

    def _writes(self, instr, frame: Frame) -> set[str]:
        """The storage an instruction writes, by field key, locks aside."""
        if isinstance(instr, Assign):
            key = field_key(self.rename(instr.target, frame))
            return {key} if key else set()
        if not isinstance(instr, CallOp):
            return set()
        return {w for w in self.effects.of_call(frame.fid, instr.call)[0] if not w.startswith(("lock:", "param:"))}

    def _visible(self, instr, frame: Frame) -> bool:
        """Whether an instruction can have an effect outside its frame the model sees: a write of
        interesting state or of the caller's storage, a lock moved, a call that does any of these or
        calls the API."""
        if isinstance(instr, Assign):
            return self._visible_write(self.rename(instr.target, frame), frame)
        if isinstance(instr, Cleanup):
            return self.lowered.guard_lock(instr.init) is not None
        if not isinstance(instr, CallOp):
            return False
        call = instr.call
        name = call.callee or ""
        if name in self.api or name in LOCK_ACQUIRE or name in LOCK_RELEASE:
            return True
        if primitive_effects(call, []) is not None:
            operand = written_operand(call)
            if operand is None:
                return False
            if name in STATIC_KEY_UPDATE:  # a static key is counted as a whole, whichever member is named
                key = counted_key(self.rename(operand, frame))
                return key is None or self.interesting.touched(key)
            return self._visible_write(deref(self.rename(operand, frame)), frame)
        key = (frame.fid, id(call))
        if key not in self.calls_seen:  # a callee that only takes and drops its own locks, touching nothing
            targets = [t for t in self.lowered.targets(frame.fid, call) if t in self.lowered.program.functions]
            self.calls_seen[key] = any(self.effects.changes_locks(t) for t in targets) or any(
                w.startswith("param:") or self.interesting.touched(w) for w in self.effects.of_call(frame.fid, call)[0])
        return self.calls_seen[key]

    def _visible_write(self, target: Expr, frame: Frame) -> bool:
        """A write of interesting state, of a local not this frame's own, or of memory it cannot name."""
        local = _local_storage(target)
        if local is not None:
            return not local.name.startswith(frame.prefix)
        key = field_key(target)
        return key is None or self.interesting.touched(key)

    def term(self, block, function: Function, frame: Frame, labels: dict[int, int], loop_of_head: dict) -> None:
        term = block.term
        line = getattr(term, "line", block.instrs[-1].line if block.instrs else function.line)
        if isinstance(term, Jump):
            loop = loop_of_head.get(term.target)
            if loop is not None and loop.id not in block.loops:  # entering a vCPU loop: start at vCPU 0
                iterator = self.rename(function.blocks[term.target].term.iterator, frame)
                self.emit("set", (iterator, Const(None)), frame, line, "")
            self.emit("jump", (labels[term.target],), frame, line, "")
        elif isinstance(term, Branch):
            cond = self.rename(term.cond, frame)
            self.emit("branch", (cond, labels[term.then], labels[term.orelse]), frame, term.line,
                      f"if ({render(term.cond, function.temps)})")
        elif isinstance(term, EachVcpu):
            iterator = self.rename(term.iterator, frame)
            self.emit("each", (iterator, labels[term.body], labels[term.exit]), frame, term.line,
                      f"for each vCPU {term.iterator.name}")
        elif isinstance(term, Return):
            if term.value is not None and frame.result is not None:
                self.emit("set", (frame.result, self.rename(term.value, frame)), frame, term.line,
                          f"return {render(term.value, function.temps)}")
            self.emit("jump", (frame.end,), frame, term.line, "")

    # -- instructions ---------------------------------------------------------

    def instr(self, instr, frame: Frame) -> None:
        if isinstance(instr, Assign):
            temps = self.lowered.function(frame.fid).temps
            text = render(instr.target, temps) + (f"{instr.op}" if instr.op in ("++", "--") else
                                                  f" = {render(instr.value, temps)}")
            self.emit("set", (self.rename(instr.target, frame), self.rename(instr.value, frame)), frame,
                      instr.line, text)
        elif isinstance(instr, CallOp):
            self.call(instr, frame)
        elif isinstance(instr, Cleanup):
            taken = self.lowered.guard_lock(instr.init)
            if taken is not None:
                held = self.rename(instr.init.args[0], frame)
                lock = lock_key(held)
                self.emit("release", (lock, deref(held)), frame, instr.line, f"drops {lock} (end of scope)")

    def call(self, instr: CallOp, frame: Frame) -> None:
        call = instr.call
        args = tuple(self.rename(a, frame) for a in call.args)
        name = call.callee or ""
        text = render_call(call, self.lowered.function(frame.fid).temps) if frame.fid in \
            self.lowered.program.functions else render_call(call)
        dst = self.rename(instr.result, frame) if instr.result is not None else None
        if dst is not None and frame.result is None and instr.result.name in self._returned_only(frame.fid):
            dst = None  # only returned, and this frame's value is dropped: the callee's returns need no compile
        if self._primitive(name, args, dst, frame, instr.line, text):
            return
        outer = self.origin
        if name in self.api and not frame.api and self._point(instr, args, frame):
            self.origin = len(self.draft.points) - 1
        try:
            self._call(instr, args, dst, frame, text)
        finally:
            self.origin = outer

    def _bound(self, fid: str) -> list[tuple[str, str, str]]:
        """Where ops tables (not handler arrays) bind a function: (struct, member, the table's directory)."""
        if self._bindings is None:
            self._bindings = {}
            for table in self.lowered.program.tables:
                if not table["array"]:
                    for entry in table["entries"]:
                        self._bindings.setdefault(entry["target"], []).append(
                            (table["record"], entry["key"], table["file"].rsplit("/", 1)[0]))
        return self._bindings.get(fid, [])

    def _backends(self, targets: list[str]) -> dict[str, str] | None:
        """The directory of the ops table that binds each target of an indirect call, when each comes
        from its own (svm/, vmx/): alternative backends of one interface, of which a vCPU runs one
        throughout. None when two targets share a directory, or one is bound by no table or several."""
        dirs = [{where for _, _, where in self._bound(t)} for t in targets]
        if len(targets) < 2 or any(len(d) != 1 for d in dirs) or len(set().union(*dirs)) != len(targets):
            return None
        return {t: next(iter(d)) for t, d in zip(targets, dirs, strict=True)}

    def _backend_of(self, fid: str) -> tuple[Expr, int] | None:
        """For a function that one backend's ops table binds (svm_set_efer, for `set_efer` of
        kvm_x86_ops, which vmx/ binds too): the vCPU's backend and the index that is this one's."""
        bound = self._bound(fid)
        if len(bound) != 1:
            return None
        backends = self._backends(self.lowered.program.table_targets(*bound[0][:2]))
        if backends is None or fid not in backends:
            return None
        names = sorted(backends.values())
        return _backend_choice(names), names.index(backends[fid])

    def _returned_only(self, fid: str) -> frozenset[str]:
        if fid not in self._returned:
            self._returned[fid] = returned_only(self.lowered.function(fid))
        return self._returned[fid]

    def _call(self, instr: CallOp, args: tuple[Expr, ...], dst: Var | None, frame: Frame, text: str) -> None:
        call = instr.call
        name = call.callee or ""
        targets = self._inlinable(frame, instr, args)
        summarised = bool(targets) and name not in self.api and \
            all(self._summarised(frame, instr, args, t) for t in targets)
        if summarised:
            self._havoc(frame, instr, text)
            targets = []
        if name in self.api:
            targets = [t for t in self.lowered.targets(frame.fid, call) if t in self.lowered.program.functions]
            if not targets:
                self._api_primitive(self.api[name], args, frame, instr.line, text)
                return
        if not targets or len(frame.stack) >= MAX_DEPTH:
            if dst is not None:  # a summarised value is any value by choice: no reader to compile later
                readers = () if summarised else tuple(f"call:{t}" for t in self.lowered.targets(frame.fid, call)
                                                      if self.effects.reads_any(t, self.interesting))
                guess = f"{text} (summarised)" if summarised else ""
                self.emit("input", (dst, None, readers, False, guess), frame, instr.line,
                          f"{text} ({'summarised' if summarised else 'not modelled'})")
            return
        guessed = self.coarse and dst is not None and name not in self.api and any(map(self._heavy, targets))
        into = None if guessed else dst
        if len(targets) == 1:
            self.inline(targets[0], instr, args, into, frame)
        else:
            every = [t for t in self.lowered.targets(frame.fid, call) if t in self.lowered.program.functions]
            backends = self._backends(every)
            if backends is not None:  # one backend per vCPU: every call through its tables agrees
                names = sorted(backends.values())
                choice: Expr = _backend_choice(names)
                indexes = [names.index(backends[t]) for t in targets]
            else:
                choice = Var(f"{frame.prefix}%choice{instr.line}:{instr.call.col}", "local")
                self.emit("input", (choice, tuple(range(len(targets))), (), False, ""), frame, instr.line,
                          f"{text}: one of {', '.join(t.split('@')[0] for t in targets)}")
                indexes = list(range(len(targets)))
            after = self.draft.label()
            for index, target in zip(indexes, targets, strict=True):
                here, nxt = self.draft.label(), self.draft.label()
                self.emit("branch", (Binary("==", choice, Const(index)), here, nxt), frame, instr.line, "")
                self.draft.place(here)
                self.inline(target, instr, args, into, frame)
                self.emit("jump", (after,), frame, instr.line, "")
                self.draft.place(nxt)
            self.draft.place(after)
        if guessed:  # compiled for what it does, its value a guess: the returns need not be compiled
            self.emit("input", (dst, None, (), False, f"{text} (its value not modelled)"), frame, instr.line,
                      f"{text} (its value not modelled)")

    def _inlinable(self, frame: Frame, instr: CallOp, args: tuple[Expr, ...]) -> list[str]:
        """The callee bodies worth compiling: they write interesting state, change the locks held, or
        compute a value a decision reads from interesting state. A callee that only reads is an input
        (any value) naming itself, compiled once the slice shows that value matters: a static key is
        read on hundreds of paths that never move it."""
        out = []
        for target in self.lowered.targets(frame.fid, instr.call):
            if target not in self.lowered.program.functions or any(f == target for f, _ in frame.stack) \
                    or target == frame.fid:
                continue
            if self.effects.writes_any(target, self.interesting) or self.effects.changes_locks(target) \
                    or self.interesting.touched_by(self.effects.target_writes(target, args)) \
                    or target in self.readers or self._fills_used_local(frame.fid, instr.call, target) \
                    or self._tiny(instr, target) \
                    or self._determined(instr, args, target):
                out.append(target)
        return out

    def _summarised(self, frame: Frame, instr: CallOp, args: tuple[Expr, ...], target: str) -> bool:
        """A callee far from the protocol: compiled only because it writes state the protocol reads (or
        a decision reads its value), it reaches no set or clear of the key, moves no flag or count and
        no lock, and would compile more than SUMMARY_BUDGET functions or SUMMARY_INSTRUCTIONS
        instructions (the x86 emulator behind a skipped instruction). Its summary is havoc: its value
        and what it may write take any value, a sound over-approximation that costs one op per piece
        of state. Other reasons it may set or clear are the environment's."""
        return target not in self.core.leads_to_key \
            and not self.effects.writes_any(target, self.core_state) and not self.effects.changes_locks(target) \
            and not self._fills_used_local(frame.fid, instr.call, target) \
            and not self._determined(instr, args, target) and self._heavy(target)

    def _heavy(self, target: str) -> bool:
        """Whether compiling `target` would reach more than SUMMARY_BUDGET functions touching interesting
        state, or more than SUMMARY_INSTRUCTIONS of their instructions."""
        if target not in self._heavies:
            seen, todo, size = set(), [target], 0
            while todo and len(seen) <= SUMMARY_BUDGET and size <= SUMMARY_INSTRUCTIONS:
                fid = todo.pop()
                if fid in seen or not (self.effects.writes_any(fid, self.interesting)
                                       or self.effects.reads_any(fid, self.interesting)):
                    continue
                seen.add(fid)
                size += self.lowered.function(fid).size
                todo.extend(self.effects.callees(fid))
            self._heavies[target] = len(seen) > SUMMARY_BUDGET or size > SUMMARY_INSTRUCTIONS
        return self._heavies[target]

    def _havoc(self, frame: Frame, instr: CallOp, text: str) -> None:
        """The summary of a summarised call: each interesting piece of state it may write, any value; but
        a holder of a per-vCPU object, which only its maker sets, to the object it makes and fills (a
        summary cannot make one): an assumption, as Effects.seen_by_callers."""
        written = self.interesting.touched_by(self.effects.data_writes(frame.fid, instr.call)) - {self.word} \
            - self.effects.holders
        for key in sorted(written):
            self.emit("input", (_storage(key), None, (), False, f"{text} (summarised)"), frame, instr.line,
                      f"{text} (summarised: may change {key})")

    def _tiny(self, instr: CallOp, target: str) -> bool:
        """A helper small enough to be an accessor (`to_hv_vcpu()`, `apic_lvt_nmi_mode()`), whose value
        the caller uses: compiled, its value is what it reads, not an input independent of the state."""
        if instr.result is None:
            return False
        seen, todo, size = set(), [target], 0
        while todo and size <= TINY_INSTRUCTIONS:
            fid = todo.pop()
            if fid not in seen:
                seen.add(fid)
                size += self.lowered.function(fid).size if fid in self.lowered.program.functions else 0
                todo.extend(self.effects.callees(fid))
        return size <= TINY_INSTRUCTIONS

    def _determined(self, instr: CallOp, args: tuple[Expr, ...], target: str) -> bool:
        """A call whose value the code determines: every argument a constant, a callee that writes
        nothing (`check_apicv_inhibit_reasons(APICV_INHIBIT_REASON_HYPERV)`). Its value is no input."""
        return instr.result is not None and bool(args) and all(isinstance(a, Const) for a in args) \
            and not self.effects.plain_writes(target)

    def _fills_used_local(self, fid: str, call: Call, target: str) -> bool:
        """Whether the callee writes, through a pointer argument, a local of
        the caller (`set_bit_in(&new, ...)`) whose value the caller then
        stores in interesting state (`kvm->arch.apicv_inhibit_reasons = new`)."""
        writes = self.effects.writes.get(target, ())
        filled = {arg.arg for i, arg in enumerate(call.args) if isinstance(arg, Unary) and arg.op == "&"
                  and isinstance(arg.arg, Var) and arg.arg.scope == "local" and f"param:{i}" in writes}
        if not filled:
            return False
        return any(isinstance(instr, Assign) and self.interesting.touched(field_key(instr.target) or "")
                   and filled & set(subexprs(instr.value)) for _, instr in self.lowered.function(fid).instructions())

    def inline(self, target: str, instr: CallOp, args: tuple[Expr, ...], dst: Var | None, frame: Frame) -> None:
        function = self.lowered.function(target)
        self.frames += 1
        end = self.draft.label()
        assigned = {i.target.name for _, i in function.instructions()
                    if isinstance(i, Assign) and isinstance(i.target, Var) and i.target.scope == "param"}
        inner = Frame(target, f"{self.frames}:", {}, frame.api or function.name in self.api,
                      (*frame.stack, (frame.fid, instr)), dst, end)
        for param, arg in zip(function.params, args, strict=False):
            stable = param.ctype.ptr > 0 or (isinstance(arg, Const) and param.name not in assigned)
            if stable and _is_stable(arg):
                inner.subst[param.name] = arg
            else:
                self.emit("set", (Var(f"{inner.prefix}{param.name}", "local", param.ctype), arg), inner,
                          instr.line, f"{function.name}: {param.name} = {render(arg)}")
        self.body(function, inner)
        self.draft.place(end)

    def _point(self, instr: CallOp, args: tuple[Expr, ...], frame: Frame) -> bool:
        api = self.api[instr.call.callee]
        key = deref(args[api.key_arg]) if api.key_arg < len(args) else None
        if not isinstance(key, Const) or not key.name:
            return False
        value = args[api.value_arg] if api.value_arg is not None and api.value_arg < len(args) else None
        label = self.draft.label()
        self.draft.place(label)
        fn = self.lowered.program.functions[frame.fid]
        self.draft.points.append(Point(label, key.name, key.value or 0, api, value, (*frame.stack, (frame.fid, instr)),
                                       fn["file"], instr.line))
        return True

    def _api_primitive(self, api: ApiEntry, args: tuple[Expr, ...], frame: Frame, line: int, text: str) -> None:
        """An API function whose body is not in the tree: what the rule says it does."""
        key = args[api.key_arg] if api.key_arg < len(args) else Const(0)
        value = args[api.value_arg] if api.value_arg is not None and api.value_arg < len(args) else \
            Const(int(api.action == "set"))
        word = Var(self.word, "global")
        if api.takes_lock:
            self.emit("acquire", (self.update_lock, "write", None), frame, line, f"{text}: takes {self.update_lock}")
        self.emit("bit", (word, key, value, None), frame, line, text)
        if api.takes_lock:
            self.emit("release", (self.update_lock, None), frame, line, f"{text}: drops {self.update_lock}")

    def _primitive(self, name: str, args: tuple[Expr, ...], dst: Var | None, frame: Frame, line: int,
                   text: str) -> bool:
        if name in LOCK_ACQUIRE and args:
            self.emit("acquire", (lock_key(args[0]), LOCK_ACQUIRE[name], deref(args[0])), frame, line, text)
        elif name in LOCK_RELEASE and args:
            self.emit("release", (lock_key(args[0]), deref(args[0])), frame, line, text)
        elif name in ATOMIC_UPDATE and args:
            delta = ATOMIC_UPDATE[name]
            amount = Const(delta) if delta is not None else args[0]
            if "sub" in name.split("_"):  # atomic_sub(), atomic_fetch_sub(), atomic_sub_and_test()
                amount = Unary("-", amount)
            returns = "test" if name.endswith("_and_test") else ("new" if name in ATOMIC_RETURNS_NEW else "")
            self.emit("atomic", (dst, deref(args[-1]), amount, returns, None), frame, line, text)
        elif name in ATOMIC_UNLESS and len(args) >= 1 + ATOMIC_UNLESS[name].count(None):
            delta, unless = ATOMIC_UNLESS[name]
            amount = Const(delta) if delta is not None else args[1]
            stop = Const(unless) if unless is not None else args[2]
            self.emit("atomic", (dst, deref(args[0]), amount, "moved", stop), frame, line, text)
        elif name in STATIC_KEY_UPDATE and args:
            key = counted_key(args[0])
            self.emit("atomic", (None, Var(key or "?", "global"), Const(STATIC_KEY_UPDATE[name]), "", None), frame,
                      line, text)
        elif name in STATIC_KEY_READ and args and dst is not None:
            key = counted_key(args[0])
            self.emit("set", (dst, Binary(">", Var(key or "?", "global"), Const(0))), frame, line, text)
        elif name in ATOMIC_READ and args and dst is not None:
            self.emit("set", (dst, deref(args[0])), frame, line, text)
        elif name in ATOMIC_SET and len(args) > 1:
            self.emit("set", (deref(args[0]), args[1]), frame, line, text)
        elif (name in BIT_SET or name in BIT_CLEAR) and len(args) > 1:
            self.emit("bit", (simplify(Unary("*", args[1])), args[0], Const(int(name in BIT_SET)), None), frame, line,
                      text)
        elif (name in BIT_TEST_AND_SET or name in BIT_TEST_AND_CLEAR) and len(args) > 1:
            self.emit("bit", (simplify(Unary("*", args[1])), args[0], Const(int(name in BIT_TEST_AND_SET)), dst), frame,
                      line, text)
        elif name in BIT_TEST and len(args) > 1 and dst is not None:
            word = simplify(Unary("*", args[1]))
            self.emit("set", (dst, bit_of(word, args[0])), frame, line, text)
        elif (name in MEM_COPY or name in MEM_FILL) and len(args) > 1:
            source, byte = (args[1], None) if name in MEM_COPY else (None, args[1])
            self.emit("fill", (args[0], source, byte), frame, line, text)
        elif name in BITMAP_EMPTY and args and dst is not None:
            self.emit("set", (dst, Binary("==", simplify(Unary("*", args[0])), Const(0))), frame, line, text)
        else:
            return False
        return True


def _backend_choice(directories: list[str]) -> Expr:
    """Which of the backends in these directories a vCPU runs: a per-vCPU constant, chosen at its start."""
    return Field(Var("%vcpu", "local"), f"%backend:{'|'.join(directories)}", True, "kvm_vcpu", BACKEND)


def _storage(key: str) -> Expr:
    """An expression naming the storage of a field key (`kvm_vcpu.arch.hflags`) in this vCPU's or the
    VM's object, or a global."""
    parts = key.split(".")
    if len(parts) == 1:
        return Var(key, "global")
    expr: Expr = Field(Var("%summary", "local"), parts[1], True, parts[0])
    for part in parts[2:]:
        expr = Field(expr, part, False, "")
    return expr


def _local_storage(place: Expr) -> Var | None:
    """The local whose own storage a place is (`x`, `x.a`, `(&x)->a`, `x[i]` of an array), None when
    the place is reached through a pointer."""
    while True:
        if isinstance(place, Var):
            return place if place.scope == "local" else None
        if isinstance(place, Field) and place.arrow and isinstance(place.base, Unary) and place.base.op == "&":
            place = place.base.arg
        elif (isinstance(place, Field) and not place.arrow) or \
                (isinstance(place, Index) and isinstance(place.base, Var) and "[" in place.base.ctype.spelling):
            place = place.base
        elif isinstance(place, Unary) and place.op == "*" and isinstance(place.arg, Unary) and place.arg.op == "&":
            place = place.arg.arg
        else:
            return None


def _is_stable(expr: Expr) -> bool:
    """A value that names the same thing for the whole call (no input, no temp)."""
    if isinstance(expr, (Const, Var, Loc)):  # a Loc: this vCPU's object, the VM's (a caller's `vcpu`)
        return True
    if isinstance(expr, Field):
        return _is_stable(expr.base)
    if isinstance(expr, Unary):
        return expr.op in ("&", "*") and _is_stable(expr.arg)
    if isinstance(expr, Binary):
        return expr.op in ("-", "+") and _is_stable(expr.left) and isinstance(expr.right, Const)
    return False
