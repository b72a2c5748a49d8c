"""The lowered form's node types: typed expressions, instructions, blocks.

Expressions are side-effect free: every call, assignment and increment has
been hoisted into an instruction of its own, in C's evaluation order, and
`&&`, `||` and `?:` with side effects have become branches. So any reader
(the rules, the model) sees each effect once, at one place, in one order.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CType:
    """A type as the analysis needs it: its spelling, the struct it leads to
    (after pointer and array levels), the pointer depth, array-ness."""

    spelling: str = ""
    record: str = ""
    ptr: int = 0
    array: bool = False

    @property
    def is_bool(self) -> bool:
        return self.ptr == 0 and not self.array and self.spelling in ("bool", "_Bool", "const bool")


NO_TYPE = CType()


class Expr:
    """Base of the pure expressions."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Const(Expr):
    """An integer constant; `name` is set for an enumerator (`APICV_INHIBIT_REASON_IRQWIN`)."""

    value: int | None
    name: str = ""


@dataclass(frozen=True, slots=True)
class Var(Expr):
    """A variable. `scope`: param, local, global, or temp (the result of one
    call instruction; `Function.temps` names the call)."""

    name: str
    scope: str
    ctype: CType = NO_TYPE


@dataclass(frozen=True, slots=True)
class Field(Expr):
    """`base.name` or `base->name`; `owner` is the struct that has the field; `path`, when the owner is
    embedded by value in exactly one place (`kvm_vcpu_arch` as `kvm_vcpu.arch`), that place: the field is
    named by it however it is reached (`vcpu->arch.x`, `arch->x`, `svm->vcpu.arch.x`)."""

    base: Expr
    name: str
    arrow: bool
    owner: str
    ctype: CType = NO_TYPE
    path: str = ""


@dataclass(frozen=True, slots=True)
class Slot(Field):
    """A vCPU's own element of VM storage (kaudit.ir.slots): `kvm->arch.waiting[vcpu->vcpu_idx]`, or bit
    `vcpu->vcpu_idx` of a bitmap, where the program reaches that storage in no other way. It is a field
    of the vCPU (`base`, as for its identity field); `storage` and `index` are how the code spells it."""

    storage: Expr | None = None
    index: Expr | None = None


@dataclass(frozen=True, slots=True)
class Unary(Expr):
    """`! - ~ + & *` (never `++`/`--`: those are assignments)."""

    op: str
    arg: Expr


@dataclass(frozen=True, slots=True)
class Binary(Expr):
    """Arithmetic, comparison, bitwise; `&&`/`||` only over pure operands."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Select(Expr):
    """`test ? then : orelse` over pure operands."""

    test: Expr
    then: Expr
    orelse: Expr


@dataclass(frozen=True, slots=True)
class Index(Expr):
    base: Expr
    index: Expr


@dataclass(frozen=True, slots=True)
class FuncRef(Expr):
    """A function designator outside call position (`&fn`, a callback)."""

    name: str


@dataclass(frozen=True, slots=True)
class Opaque(Expr):
    """A construct the analysis does not read (sizeof, a string, a builtin)."""

    what: str
    subs: tuple[Expr, ...] = ()


@dataclass(frozen=True, slots=True)
class Via:
    """How an indirect call finds its target (docs/facts.md, `via`)."""

    kind: str  # static_call | member | array | pointer
    name: str = ""
    record: str = ""
    field: str = ""


@dataclass(frozen=True, slots=True)
class Call:
    callee: str | None
    via: Via | None
    args: tuple[Expr, ...]
    line: int
    col: int


class Instr:
    """Base of the instructions of a block."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Assign(Instr):
    """`target = value`. `op` is how the source wrote it (`=`, `+=`, `++`,
    `--`), for messages; `value` always holds the full new value."""

    target: Expr
    value: Expr
    line: int
    op: str = "="


@dataclass(frozen=True, slots=True)
class CallOp(Instr):
    """A call; `result` is the temp that receives its value, if it is used."""

    call: Call
    result: Var | None
    line: int


@dataclass(frozen=True, slots=True)
class Cleanup(Instr):
    """A variable with a cleanup attribute leaves scope (`guard()`,
    `scoped_guard()`): whatever its initialising call `init` took is released."""

    var: Var
    init: Call
    line: int


@dataclass(frozen=True, slots=True)
class LockAssert(Instr):
    """`lockdep_assert_held*(lock)`: the function expects its caller to hold it."""

    lock: Expr
    mode: str  # any | read | write
    line: int


class Term:
    """Base of the block terminators."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Jump(Term):
    target: int


@dataclass(frozen=True, slots=True)
class Branch(Term):
    """Two-way branch on the atom `cond` (true: `then`). `source` identifies
    the C condition it came from: one `if (a && !b)` gives two branches with
    one source, so two sites can be told apart as the two sides of it."""

    cond: Expr
    then: int
    orelse: int
    line: int
    source: int


@dataclass(frozen=True, slots=True)
class EachVcpu(Term):
    """Head of `kvm_for_each_vcpu`: run `body` with `iterator` bound to each
    vCPU of the VM in turn (the body jumps back here), then go to `exit`."""

    iterator: Var
    body: int
    exit: int
    line: int


@dataclass(frozen=True, slots=True)
class Return(Term):
    value: Expr | None
    line: int


@dataclass
class Block:
    id: int
    instrs: list[Instr] = field(default_factory=list)
    term: Term | None = None
    loops: tuple[int, ...] = ()  # enclosing loops, outermost first
    sides: tuple[tuple[int, bool], ...] = ()  # (Branch.source, side) of each enclosing if-body, outermost first


@dataclass(frozen=True, slots=True)
class Loop:
    """A loop: `vcpus` (kvm_for_each_vcpu), `generic`, or `scope` (the
    one-pass loop of scoped_guard()). Generic loops keep their back edge."""

    id: int
    kind: str
    line: int
    head: int
    exit: int
    macro: str | None = None


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    ctype: CType


@dataclass
class Function:
    """One function, lowered: blocks[0] is the entry; block ids index `blocks`."""

    fid: str
    name: str
    file: str
    line: int
    end_line: int
    static: bool
    params: tuple[Param, ...]
    returns: str
    blocks: list[Block]
    loops: list[Loop]
    temps: dict[str, Call]

    def successors(self, block: Block) -> tuple[int, ...]:
        term = block.term
        if isinstance(term, Jump):
            return (term.target,)
        if isinstance(term, Branch):
            return (term.then, term.orelse)
        if isinstance(term, EachVcpu):
            return (term.body, term.exit)
        return ()

    @property
    def size(self) -> int:
        """Instructions and terminators: what compiling the body costs."""
        return sum(len(block.instrs) + 1 for block in self.blocks)

    def instructions(self):
        """Every instruction with its block, in block order."""
        for block in self.blocks:
            for instr in block.instrs:
                yield block, instr
