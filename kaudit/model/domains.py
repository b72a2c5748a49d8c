"""The values an input may take: enough to make every test on it go both ways.

An input (an unmodelled read, an opaque call's result, an entry's scalar
parameter) is chosen by the explorer from a small set read off how the
code uses it: a boolean is 0 or 1; a pointer is NULL or the object its type
says (this vCPU's, the VM's, something else); an integer is 0, 1, each mask
it is tested with and their union, each constant it is compared with for
equality and one value equal to none, and both sides of each threshold
it is ordered against (a constant met through arithmetic, `x * 2 + 1 == 7`,
is such a threshold, solved for x by undoing each operation with a
constant operand; a constant expression such as `BIT(2)` or `-EINVAL` is
a constant like any other); a value compared for equality with other
variables (`new_index == vcpu->arch.vp_index`, `!= vcpu->vcpu_idx`) may
equal each of them or none: it takes a value no test names for each
comparison among the names that hold it over time, and one more for
comparisons with anything else (`_Uses.spread`); an enum is each of its
enumerators (the facts list them for every enum a function's type spells `enum X`) and each
constant the code compares it with; an enum the facts do not define (a
typedef of an anonymous one) is each value from 0 to the largest constant
the code compares it with. Uses are followed through the locals and the
state it is copied into.
"""

from __future__ import annotations

from dataclasses import replace

from kaudit.analysis.context import Scopes
from kaudit.ir.evaluate import evaluate, fold, truth
from kaudit.ir.names import subexprs
from kaudit.ir.nodes import Binary, Const, CType, Expr, Unary
from kaudit.model.bookkeeping import op_reads, op_writes, state_of
from kaudit.model.code import Loc, Op, Protocol
from kaudit.model.resolve import SELF, VMOBJ, Slots

OBJECT = ("obj",)
MAX_ENUMERATOR = 64  # an enum not in the facts compared with no larger constant is taken for 0 .. its largest one
_COMPARE = frozenset({"==", "!=", "<", ">", "<=", ">="})
_TURNED = {"==": "==", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}


def _exprs(op: Op) -> list[Expr]:
    return [a for a in op.args if isinstance(a, Expr)]


def _name(loc: Loc) -> tuple:
    return ("local", loc.slot) if loc.kind == "local" else ("state", state_of(loc))


class _Uses:
    """Constants that an input meets, following the locals and state it flows into: one pass over
    the code indexes, for each local and each piece of state, the tests that mention it and the
    places its value is copied to."""

    def __init__(self, code: list[Op]) -> None:
        self.code = code
        self.tests: dict[tuple, set[tuple[str, int]]] = {}
        self.copies: dict[tuple, list[tuple[Loc, Expr]]] = {}  # name -> (where its value goes, through what)
        self.branches: dict[tuple[tuple, int], list[int]] = {}  # (name, constant) -> branches on `name == constant`
        self.elsewhere: set[tuple[tuple, int]] = set()  # ... also tested some other way
        self.found: dict[tuple, tuple[set[int], set[int], set[int]]] = {}  # name -> of() it
        self.copied: dict[tuple, set[tuple]] = {}  # name -> the names it is copied to or from
        self.compared: dict[tuple, set[tuple]] = {}  # name -> the names it is compared with for equality
        for pc, op in enumerate(code):
            for expr in _exprs(op):
                for sub in subexprs(expr):
                    if not isinstance(sub, Binary) or (sub.op != "&" and sub.op not in _COMPARE):
                        continue
                    found = _constant_side(sub)
                    if found is None:
                        if sub.op in ("==", "!=") and isinstance(sub.left, Loc) and isinstance(sub.right, Loc):
                            _pair(self.compared, _name(sub.left), _name(sub.right))
                        continue
                    constant, side = found
                    if isinstance(side, Loc) or sub.op == "&":
                        for name in _mentioned(sub):
                            self.tests.setdefault(name, set()).add((sub.op, constant))
                            if op.kind == "branch" and sub is op.args[0] and _equality(sub) == (name, constant):
                                self.branches.setdefault((name, constant), []).append(pc)
                            else:
                                self.elsewhere.add((name, constant))
                        continue
                    for name, value in _solved(side, constant):  # `x * 2 + 1 == 7`: x near 3, and near 7
                        self.tests.setdefault(name, set()).add(("~", value))
            if op.kind == "set":
                for read in op_reads(op):
                    self.copies.setdefault(_name(read), []).extend((dst, op.args[1]) for dst in op_writes(op))
                    if isinstance(op.args[1], Loc):
                        for dst in op_writes(op):
                            _pair(self.copied, _name(read), _name(dst))

    def _held(self, start: Loc) -> set[tuple]:
        """The names that hold `start`'s value: copied, through one another, either way; itself too."""
        return self._held_name(_name(start))

    def _held_name(self, start: tuple) -> set[tuple]:
        held, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name not in held:
                held.add(name)
                todo.extend(self.copied.get(name, ()))
        return held

    def peers_of(self, start: Loc) -> set[tuple]:
        """The names that hold `start`'s value, those any of them is compared with for equality, and the
        names that hold theirs (`apic_id = id` then `apic_id != vcpu_id`: `id` may take any `vcpu_id`)."""
        held = self._held(start)
        return held.union(*(self._held_name(other) for name in held for other in self.compared.get(name, ())))

    def spread(self, start: Loc) -> tuple[set[int], int]:
        """(the constants the names holding its value are compared with for equality, how many values
        unequal to all of those it needs). Names holding one value at different times and compared with
        one another (`index == vcpu->arch.vp_index` after `vp_index = index`) need a value for each
        comparison among them, and one more for comparisons with any other name: every integer takes 0
        and 1 and the first values no test names, so each may equal any other or none."""
        held = self._held(start)
        inside = {frozenset((name, other)) for name in held for other in self.compared.get(name, ())
                  if other in held and other != name}
        outside = any(other not in held for name in held for other in self.compared.get(name, ()))
        return set().union(*(self._of(name)[2] for name in held)), 1 + len(inside) + outside

    def inert(self, name: tuple, value: int) -> bool:
        """Whether `name == value` changes nothing: each test of it is a branch (a switch's case) whose
        equal side comes, as the value goes on through the tests on `name`, where an unequal value does
        (a case the slice emptied)."""
        if (name, value) in self.elsewhere:
            return False
        for pc in self.branches.get((name, value), ()):
            cond, then, orelse = self.code[pc].args
            equal_side, other_side = (then, orelse) if cond.op == "==" else (orelse, then)
            if self._onward(equal_side, name, value, True) != self._onward(other_side, name, value, False):
                return False
        return True

    def _onward(self, pc: int, name: tuple, value: int, equal: bool) -> int:
        """Where `value` of `name` goes from `pc` through jumps and tests of `name` against constants;
        not `equal`, it is taken for a neighbour in its interval that no equality test names."""
        for _ in range(len(self.code)):
            op = self.code[pc] if pc < len(self.code) else None
            test = _comparison(op.args[0]) if op is not None and op.kind == "branch" else None
            if op is not None and op.kind == "jump":
                pc = op.args[0]
            elif test is not None and test[0] == name:
                compare, constant = test[1], test[2]
                holds = truth(evaluate(Binary(compare, Const(value), Const(constant)))) \
                    if compare not in ("==", "!=") else (equal and value == constant) == (compare == "==")
                pc = op.args[1] if holds else op.args[2]
            else:
                break
        return pc

    def of(self, start: Loc) -> tuple[set[int], set[int], set[int]]:
        """(thresholds of ordered comparisons, masks, the constants compared with for equality)."""
        return self._of(_name(start))

    def _of(self, start: tuple) -> tuple[set[int], set[int], set[int]]:
        """of(), for a name; a value computed from it (`m = mode + 1`) and tested later (`m == 3`) gives it
        the values that meet the test (2), solved back through the computation. Each name once: a value
        computed from itself (`i = i + 1`) adds nothing new."""
        if start in self.found:
            return self.found[start]
        self.found[start] = set(), set(), set()  # while it is being found
        ordered, masks, equal, live = set(), set(), set(), set()
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for op, value in self.tests.get(name, ()):  # "~": a constant met through arithmetic, both sides
                (masks if op == "&" else equal if op in ("==", "!=") else ordered).add(value)
                if op in ("==", "!=") and not self.inert(name, value):
                    live.add(value)
            for dst, through in self.copies.get(name, ()):
                if isinstance(through, Loc):
                    todo.append(_name(dst))
                else:
                    met = set().union(*self._of(_name(dst)))
                    ordered |= {v for c in met for n, v in _solved(through, c) if n == name}
        self.found[start] = ordered, masks, equal & live
        return self.found[start]


def _pair(table: dict[tuple, set[tuple]], one: tuple, other: tuple) -> None:
    table.setdefault(one, set()).add(other)
    table.setdefault(other, set()).add(one)


def _constant_side(expr: Binary) -> tuple[int, Expr] | None:
    """(the constant, the other side) of a binary test one side of which folds to a constant
    (`BIT(8)`, `-EINVAL`, `APIC_SPIV_APIC_ENABLED` are constants as much as `256`)."""
    right = fold(expr.right)
    if right is not None:
        return right, expr.left
    left = fold(expr.left)
    return (left, expr.right) if left is not None else None


def _comparison(expr: Expr) -> tuple[tuple, str, int] | None:
    """(name, operator, constant) of `loc OP constant`, the operator turned for `constant OP loc`."""
    if isinstance(expr, Binary) and expr.op in _COMPARE:
        found = _constant_side(expr)
        if found is not None and isinstance(found[1], Loc):
            op = expr.op if found[1] is expr.left else _TURNED[expr.op]
            return _name(found[1]), op, found[0]
    return None


def _equality(expr: Expr) -> tuple[tuple, int] | None:
    """(name, constant) of `loc == constant` or `loc != constant`."""
    test = _comparison(expr)
    return (test[0], test[2]) if test is not None and test[1] in ("==", "!=") else None


def _solved(side: Expr, constant: int) -> list[tuple[tuple, int]]:
    """What a constant compared with a computed side says of each location in it: the constant itself,
    and, undoing each operation with a constant operand on the way down (`+ - * / << >> ~`, unary
    minus), the values of the location at the edges of the set that meets it."""
    out = [(_name(loc), constant) for loc in subexprs(side) if isinstance(loc, Loc)]
    todo = [(side, constant)]
    while todo:
        expr, value = todo.pop()
        if isinstance(expr, Loc):
            out.append((_name(expr), value))
        elif isinstance(expr, Unary) and expr.op in ("-", "~"):
            todo.append((expr.arg, -value if expr.op == "-" else ~value))
        elif isinstance(expr, Binary):
            right, left = fold(expr.right), fold(expr.left)
            if right is not None:
                todo.extend((expr.left, v) for v in _undone(expr.op, value, right, True))
            elif left is not None:
                todo.extend((expr.right, v) for v in _undone(expr.op, value, left, False))
    return out


def _undone(op: str, value: int, constant: int, constant_right: bool) -> list[int]:
    """The operands x of `x OP constant` (or `constant OP x`) at the edges of the set whose result is
    `value`: both ends of an interval (`x / 4 == 2`: 8 and 11), the nearest two where none is exact."""
    if op == "+":
        return [value - constant]
    if op == "-":
        return [value + constant] if constant_right else [constant - value]
    if op == "*" and constant:
        return [value // constant, -(-value // constant)]
    if op == "/" and constant_right and constant > 0:
        return [value * constant, value * constant + constant - 1]
    if op == "<<" and constant_right and 0 <= constant < 64:
        return [value >> constant, (value >> constant) + 1]
    if op == ">>" and constant_right and 0 <= constant < 64:
        return [value << constant, ((value + 1) << constant) - 1]
    return []


def _mentioned(expr: Binary) -> set[tuple]:
    """What a test is about: a location on either side, or inside a computed side."""
    out = set()
    for side in (expr.left, expr.right):
        if isinstance(side, Loc):
            out.add(_name(side))
        elif isinstance(side, Binary):
            out |= {_name(x) for x in subexprs(side) if isinstance(x, Loc)}
    return out


def _values(ctype: CType, scopes: Scopes, enums: dict[str, list[int]], ordered: set[int], masks: set[int],
            equal: set[int], spread: tuple[set[int], int] = (set(), 1)) -> tuple:
    """Every value that can take a test another way: each constant compared for equality, each side of
    each ordered threshold (a value no equality test names), each mask and their union, and values
    unequal to every constant: one, or as many as its comparisons with other variables need (`spread`:
    the constants of the names that hold its value, that number). None is left out: a value the
    explorer never tries would be a behaviour it never checks."""
    if ctype.ptr:
        if ctype.record in scopes.per_vcpu:
            return (0, SELF)
        if ctype.record in scopes.vm_wide:
            return (0, VMOBJ)
        return (0, OBJECT)
    if ctype.is_bool:
        return (0, 1)
    named = equal | ordered
    enumerators = enums.get(ctype.spelling[5:]) if ctype.spelling.startswith("enum ") else None
    if enumerators and not masks:
        return tuple(sorted(set(enumerators) | named))  # what a value of the enum is, and what the code names
    if ctype.spelling.startswith("enum ") and not masks and all(0 <= v <= MAX_ENUMERATOR for v in named):
        return tuple(range(max(named, default=1) + 1))  # an enum not defined in the facts: counted from 0 as C does
    peer_equal, peers = spread
    equal = equal | peer_equal
    values = {0, 1} | equal | fresh(peers, equal)
    for threshold in ordered:
        values |= {threshold, _unequal(threshold - 1, -1, equal), _unequal(threshold + 1, 1, equal)}
    values |= masks | ({_union(masks)} if masks else set())
    unsigned = ctype.spelling.startswith(("unsigned", "u8", "u16", "u32", "u64", "size_t", "gfn_t", "gpa_t"))
    return tuple(sorted(v for v in values if v >= 0 or not unsigned))


def _unequal(value: int, step: int, equal: set[int]) -> int:
    """The nearest value from `value` on, going by `step`, that no equality test names."""
    while value in equal:
        value += step
    return value


def fresh(count: int, named: set[int]) -> set[int]:
    """The first `count` non-negative values no equality test names."""
    out, value = set(), 0
    while len(out) < count:
        if value not in named:
            out.add(value)
        value += 1
    return out


def _union(masks: set[int]) -> int:
    union = 0
    for mask in masks:
        union |= mask
    return union


def for_vcpus(protocol: Protocol, n: int) -> Protocol:
    """The protocol run by n vCPUs: an identity (`vcpu_idx`) takes n distinct values, so values no test
    names are added where it has fewer; what is compared with it may take each of them, and one none
    of them is (a `vcpu_id` that names no vCPU)."""
    if not protocol.identities:
        return protocol
    inputs, constants = dict(protocol.domains), dict(protocol.cpu_init)
    for slot, peers in protocol.identities.items():
        values = constants[slot]
        added = tuple(sorted(fresh(n, set(values)) - set(values)))[:max(0, n - len(values))]
        constants[slot] = values + added
        wanted = (*constants[slot], *fresh(1, set(constants[slot])))
        for kind, at in peers:
            table = inputs if kind == "input" else constants
            table[at] = table[at] + tuple(v for v in wanted if v not in table[at])
    return replace(protocol, domains=inputs, cpu_init=constants)


def domains(code: list[Op], slots: Slots, scopes: Scopes, enums: dict[str, list[int]]
            ) -> tuple[dict[int, tuple], dict[int, tuple], dict[int, tuple[tuple[str, int], ...]]]:
    """(input op pc -> values, per-vCPU constant slot -> values, identity slot -> the inputs ("input",
    pc) and constants ("cpu", slot) compared with it: those may take any value a vCPU's identity takes)."""
    uses = _Uses(code)
    inputs: dict[int, tuple] = {}
    named: dict[tuple, list[tuple[str, int]]] = {}  # a name -> the inputs and constants that give it a value
    for pc, op in enumerate(code):
        if op.kind == "input" and op.args[0] is not None:
            if op.args[1] is not None:
                inputs[pc] = tuple(op.args[1])
                continue
            loc = op.args[0]
            named.setdefault(_name(loc), []).append(("input", pc))
            inputs[pc] = _values(slots.input_types.get(loc.slot, CType()), scopes, enums, *uses.of(loc),
                                 uses.spread(loc))
    read = {loc.slot for op in code for loc in op_reads(op) if loc.kind in ("mine", "cpu")}
    # an identity differs on every vCPU already: it needs no values of its own for what it is compared with
    constants = {slot: _values(ctype, scopes, enums, *uses.of(Loc("mine", slot)),
                               *([] if slot in slots.identity else [uses.spread(Loc("mine", slot))]))
                 for slot, ctype in slots.cpu_constant.items() if slot in read}  # one nothing reads is no state
    for slot in constants:
        named.setdefault(_name(Loc("mine", slot)), []).append(("cpu", slot))
    identities = {slot: tuple(sorted(given for name in uses.peers_of(Loc("mine", slot)) for given in
                                     named.get(name, ()) if given != ("cpu", slot)))
                  for slot in sorted(slots.identity) if slot in constants}
    return inputs, constants, identities
