"""Facts -> the lowered form: one function's statement tree becomes a CFG.

Every side effect becomes an instruction of its own, in evaluation order:
calls (their value in a temp), assignments and increments. Conditions are
split at `&&`, `||`, `!` and `?:` into branches on atoms, so a guard is
always one atom with a polarity. `goto`/labels, `break`/`continue`,
`switch` and early returns are edges; cleanup variables (`guard()`,
`scoped_guard()`) get a `Cleanup` on every edge that leaves their scope.
`kvm_for_each_vcpu`, as the macro or written out, is an `EachVcpu` loop
over the VM's vCPUs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from kaudit.ir.addresses import resolve_addresses
from kaudit.ir.evaluate import fold
from kaudit.ir.nodes import (
    NO_TYPE,
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
    FuncRef,
    Function,
    Index,
    Jump,
    LockAssert,
    Loop,
    Opaque,
    Param,
    Return,
    Select,
    Unary,
    Var,
    Via,
)
from kaudit.kernel_api import (
    BUILTIN_IDENTITY,
    LOCK_ACQUIRE,
    LOCK_ASSERT,
    LOCK_RELEASE,
    ONLINE_VCPUS,
    VCPU_ARRAY,
    VCPU_BY_INDEX,
    VCPU_ITERATORS,
)

Facts = dict[str, Any]
_ASSIGN_OPS = frozenset({"=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>="})
_EFFECT_KINDS = frozenset({"call", "block"})


def ctype(facts: Facts, record_key: str = "record") -> CType:
    return CType(facts.get("type", ""), facts.get(record_key) or "", facts.get("ptr", 0), facts.get("array", False))


def has_effects(expr: Facts | None) -> bool:
    """Whether evaluating a fact expression calls, assigns or increments."""
    return expr is not None and any(
        node.get("k") in _EFFECT_KINDS or (node.get("k") == "binary" and node["op"] in _ASSIGN_OPS)
        or (node.get("k") == "unary" and node["op"] in ("++", "--")) for node in _nodes(expr))


class _Lowerer:
    """Builds the CFG of one function; `cur` is the block being filled."""

    def __init__(self, bound: dict[str, int], paths: dict[str, str]) -> None:
        self.bound = bound  # parameters with a caller's constant
        self.paths = paths  # struct -> the one place it is embedded (embedding_paths)
        self.blocks: list[Block] = []
        self.loops: list[Loop] = []
        self.loop_stack: list[int] = []
        self.temps: dict[str, Call] = {}
        self.ncopies = 0
        self.sources = 0
        self.cleanups: list[tuple[Var, Call]] = []  # active cleanup variables, innermost last
        self.labels: dict[str, int] = {}
        self.label_depth: dict[str, int] = {}
        self.gotos: list[tuple[int, str, int, int]] = []  # (edge block, label, cleanup depth, line)
        self.cleanups_at_goto: dict[int, list[tuple[Var, Call]]] = {}
        self.breaks: list[tuple[int, int]] = []  # (target, cleanup depth)
        self.continues: list[tuple[int, int]] = []
        self.switches: list[list[tuple[Expr | tuple[Expr, Expr] | None, int]]] = []  # (case value or range, block)
        self.sides: list[tuple[int, bool]] = []  # (condition, side) of the if-bodies being lowered
        self.cur = self.new_block()

    # -- blocks -----------------------------------------------------------------

    def new_block(self) -> int:
        block = Block(len(self.blocks), loops=tuple(self.loop_stack), sides=tuple(self.sides))
        self.blocks.append(block)
        return block.id

    def emit(self, instr: Any) -> None:
        if self.blocks[self.cur].term is not None:  # code after a jump: unreachable, pruned later
            self.cur = self.new_block()
        self.blocks[self.cur].instrs.append(instr)

    def terminate(self, term: Any) -> None:
        if self.blocks[self.cur].term is None:
            self.blocks[self.cur].term = term

    def goto(self, target: int) -> None:
        self.terminate(Jump(target))
        self.cur = target

    def release_to(self, depth: int, line: int) -> None:
        """Cleanups of the variables declared deeper than `depth` (innermost first)."""
        for var, init in reversed(self.cleanups[depth:]):
            self.emit(Cleanup(var, init, line))

    # -- statements -------------------------------------------------------------

    def body(self, stmts: list[Facts]) -> None:
        depth = len(self.cleanups)
        for stmt in stmts:
            self.stmt(stmt)
        if self.blocks[self.cur].term is None:
            self.release_to(depth, stmts[-1]["line"] if stmts else 0)
        del self.cleanups[depth:]

    def stmt(self, s: Facts) -> None:
        handler = getattr(self, f"_s_{s['s']}", None)
        if handler is not None:
            handler(s)

    def _s_block(self, s: Facts) -> None:
        self.body(s["body"])

    def _s_expr(self, s: Facts) -> None:
        self.effect(s["e"], s["line"])

    def _s_decl(self, s: Facts) -> None:
        init = s["init"]
        if init is None:
            return
        var = Var(s["name"], "local", ctype(s))
        if s["cleanup"] and init.get("k") == "call":
            call = self.call(init, s["line"])
            self.emit(CallOp(call, var, s["line"]))
            self.cleanups.append((var, call))
        else:
            self.emit(Assign(var, self.value(init, s["line"]), s["line"]))

    def _s_if(self, s: Facts) -> None:
        source = self.new_source()
        join = self.new_block()
        self.sides.append((source, True))
        then = self.new_block()
        self.sides[-1] = (source, False)
        orelse = self.new_block()
        self.sides.pop()
        self.cond(s["c"], then, orelse, s["line"], source)
        for block, side, body in ((then, True, s["then"]), (orelse, False, s["else"])):
            self.sides.append((source, side))
            self.cur = block
            self.body(body)
            self.terminate(Jump(join))
            self.sides.pop()
        self.cur = join

    def _s_return(self, s: Facts) -> None:
        value = self.value(s["e"], s["line"]) if s["e"] is not None else None
        self.release_to(0, s["line"])
        self.terminate(Return(value, s["line"]))

    def _s_break(self, s: Facts) -> None:
        self._leave(self.breaks, s["line"])

    def _s_continue(self, s: Facts) -> None:
        self._leave(self.continues, s["line"])

    def _leave(self, targets: list[tuple[int, int]], line: int) -> None:
        if not targets:
            return
        target, depth = targets[-1]
        self.release_to(depth, line)
        self.terminate(Jump(target))

    def _s_goto(self, s: Facts) -> None:
        edge = self.new_block()
        self.terminate(Jump(edge))
        self.gotos.append((edge, s["label"], len(self.cleanups), s["line"]))
        self.cleanups_at_goto[edge] = list(self.cleanups)

    def label_block(self, name: str) -> int:
        if name not in self.labels:
            self.labels[name] = self.new_block()
        return self.labels[name]

    def _s_label(self, s: Facts) -> None:
        self.goto(self.label_block(s["name"]))
        self.label_depth[s["name"]] = len(self.cleanups)

    def _s_switch(self, s: Facts) -> None:
        value = self.value(s["c"], s["line"])
        dispatch, exit_ = self.cur, self.new_block()
        self.switches.append([])
        self.breaks.append((exit_, len(self.cleanups)))
        self.cur = self.new_block()  # reached only through a case label
        self.body(s["body"])
        self.terminate(Jump(exit_))
        self.breaks.pop()
        cases = self.switches.pop()
        self.cur = dispatch
        default = next((block for expr, block in cases if expr is None), exit_)
        for expr, block in cases:
            if expr is None:
                continue
            test = self.new_block()
            if isinstance(expr, tuple):  # a range: low <= value, then value <= high
                within = self.new_block()
                self.terminate(Branch(Binary(">=", value, expr[0]), within, test, s["line"], self.new_source()))
                self.cur = within
                self.terminate(Branch(Binary("<=", value, expr[1]), block, test, s["line"], self.new_source()))
            else:
                self.terminate(Branch(Binary("==", value, expr), block, test, s["line"], self.new_source()))
            self.cur = test
        self.terminate(Jump(default))
        self.cur = exit_

    def _s_case(self, s: Facts) -> None:
        block = self.new_block()
        self.goto(block)  # falls through from the previous case
        if self.switches:
            expr = self.value(s["e"], s["line"]) if s["e"] is not None else None
            if expr is not None and s.get("hi") is not None:
                expr = (expr, self.value(s["hi"], s["line"]))
            self.switches[-1].append((expr, block))
        self.body(s["body"])

    def _s_loop(self, s: Facts) -> None:
        header = s["header"]
        if any(h["s"] == "decl" and h["cleanup"] for h in header):
            self._scope_loop(s)
        elif s["macro"] in VCPU_ITERATORS and self._iterator(header) is not None:
            self._vcpu_loop(s, self._iterator(header))
        elif (indexed := _indexed_vcpu_loop(s)) is not None:
            self._vcpu_loop({**s, "body": s["body"][1:]}, indexed)
        elif s["macro"] in LOCK_ASSERT and len(s["body"]) == 1 and s["body"][0]["s"] == "expr":
            self.emit(LockAssert(self.value(s["body"][0]["e"], s["line"]), LOCK_ASSERT[s["macro"]], s["line"]))
        else:
            self._generic_loop(s)

    def _iterator(self, header: list[Facts]) -> Var | None:
        """The vCPU pointer `kvm_for_each_vcpu` assigns in its header."""
        return next((v for n in _nodes(header) if (v := _assigned_pointer(n)) is not None), None)

    def _open_loop(self, kind: str, s: Facts, head: int, exit_: int) -> None:
        self.loops.append(Loop(len(self.loops), kind, s["line"], head, exit_, s["macro"]))
        self.loop_stack.append(len(self.loops) - 1)

    def _close_loop(self) -> None:
        self.loop_stack.pop()

    def _loop_body(self, body: list[Facts], brk: int, cont: int) -> None:
        self.breaks.append((brk, len(self.cleanups)))
        self.continues.append((cont, len(self.cleanups)))
        self.body(body)
        self.breaks.pop()
        self.continues.pop()

    def _scope_loop(self, s: Facts) -> None:
        """scoped_guard(): the header takes the guard, the body runs once."""
        exit_ = self.new_block()
        self._open_loop("scope", s, self.cur, exit_)
        depth = len(self.cleanups)
        for h in s["header"]:
            if h["s"] == "decl":
                self.stmt(h)
        self._loop_body(s["body"], exit_, exit_)
        if self.blocks[self.cur].term is None:
            self.release_to(depth, s["line"])
        del self.cleanups[depth:]
        self._close_loop()
        self.goto(exit_)

    def _vcpu_loop(self, s: Facts, iterator: Var) -> None:
        head, exit_ = self.new_block(), self.new_block()
        self.goto(head)
        self._open_loop("vcpus", s, head, exit_)
        body = self.new_block()
        self.blocks[head].term = EachVcpu(iterator, body, exit_, s["line"])
        self.cur = body
        self._loop_body(s["body"], exit_, head)
        self.terminate(Jump(head))
        self._close_loop()
        self.cur = exit_

    def _generic_loop(self, s: Facts) -> None:
        """for/while/do: the test, the body, the step (the continue target);
        a `for` header whose parts cannot be told apart runs once, untested."""
        kind, header, line = s["kind"], s["header"], s["line"]
        parts = header if kind == "for" and len(header) == 3 else None  # init; cond; inc
        if kind == "for":
            for h in header[:1] if parts else header:
                self.stmt(h)
        exit_ = self.new_block()
        head = self.new_block()
        self._open_loop("generic", s, head, exit_)
        self.blocks[head].loops = tuple(self.loop_stack)
        body, step = self.new_block(), self.new_block()
        self.goto(body if kind == "do" else head)
        self.cur = head
        test = parts[1] if parts else (header[0] if kind != "for" and header else None)
        if test is None:
            self.terminate(Branch(Opaque("loop-condition"), body, exit_, line, self.new_source()))
        else:
            self.cond(test["e"] if test["s"] == "expr" else {"k": "int", "v": 1}, body, exit_, line)
        self.cur = body
        self._loop_body(s["body"], exit_, step)
        self.goto(step)
        if parts:
            self.stmt(parts[2])
        self.terminate(Jump(head))
        self._close_loop()
        self.cur = exit_

    # -- conditions -------------------------------------------------------------

    def new_source(self) -> int:
        self.sources += 1
        return self.sources

    def cond(self, e: Facts, then: int, orelse: int, line: int, source: int | None = None) -> None:
        """Branch to `then` if the C condition holds, else to `orelse`."""
        source = source or self.new_source()
        kind = e.get("k")
        if kind == "unary" and e["op"] == "!":
            self.cond(e["arg"], orelse, then, line, source)
        elif kind == "binary" and e["op"] in ("&&", "||"):
            mid = self.new_block()
            if e["op"] == "&&":
                self.cond(e["l"], mid, orelse, line, source)
            else:
                self.cond(e["l"], then, mid, line, source)
            self.cur = mid
            self.cond(e["r"], then, orelse, line, source)
        elif kind == "binary" and e["op"] == ",":
            self.effect(e["l"], line)
            self.cond(e["r"], then, orelse, line, source)
        elif kind == "cond" and (has_effects(e["t"]) or has_effects(e["f"])):
            yes, no = self.new_block(), self.new_block()
            self.cond(e["c"], yes, no, line, source)
            self.cur = yes
            self.cond(e["t"], then, orelse, line, source)
            self.cur = no
            self.cond(e["f"], then, orelse, line, source)
        else:
            value = self.value(e, line)
            known = fold(value)
            if known is not None:
                self.terminate(Jump(then if known else orelse))
            else:
                self.terminate(Branch(value, then, orelse, line, source))

    # -- expressions ------------------------------------------------------------

    def copy(self, ct: CType = NO_TYPE) -> Var:
        self.ncopies += 1
        return Var(f"%c{self.ncopies}", "temp", ct)

    def call(self, e: Facts, line: int) -> Call:
        via = e.get("via")
        facts = e["args"]
        if e.get("callee") in LOCK_ACQUIRE or e.get("callee") in LOCK_RELEASE:
            facts = [_lock_object(facts[0]), *facts[1:]] if facts else facts
        args = tuple(self.value(a, line) for a in facts)
        return Call(e.get("callee"), _via(via), args, e.get("line", line), e.get("col", 0))

    def effect(self, e: Facts, line: int) -> None:
        """Evaluate for side effects only."""
        kind = e.get("k")
        if kind == "call" and e.get("callee") not in BUILTIN_IDENTITY:
            self.emit(CallOp(self.call(e, line), None, e.get("line", line)))
        elif kind == "binary" and e["op"] == ",":
            self.effect(e["l"], line)
            self.effect(e["r"], line)
        elif (kind == "binary" and e["op"] in ("&&", "||")) or kind == "cond":
            if has_effects(e):
                join = self.new_block()
                if kind == "cond":
                    yes, no = self.new_block(), self.new_block()
                    self.cond(e["c"], yes, no, line)
                    for block, part in ((yes, e["t"]), (no, e["f"])):
                        self.cur = block
                        self.effect(part, line)
                        self.terminate(Jump(join))
                else:
                    rest = self.new_block()
                    self.cond(e["l"], rest if e["op"] == "&&" else join, join if e["op"] == "&&" else rest, line)
                    self.cur = rest
                    self.effect(e["r"], line)
                    self.terminate(Jump(join))
                self.cur = join
        elif kind == "unary" and e["op"] in ("++", "--"):
            self._unary(e, line, keep_old=False)
        elif has_effects(e):
            self.value(e, line)

    def value(self, e: Facts, line: int) -> Expr:
        """The pure value of a fact expression, emitting its side effects first."""
        kind = e.get("k")
        if kind == "int":
            return Const(e.get("v"))
        if kind == "enum":
            return Const(e.get("v"), e["name"])
        if kind == "var":
            if e["scope"] == "param" and e["name"] in self.bound:
                return Const(self.bound[e["name"]])
            return Var(e["name"], e["scope"], ctype(e))
        if kind == "func":
            return FuncRef(e["name"])
        if kind == "member":
            return Field(self.value(e["base"], line), e["field"], e["arrow"], e["record"], ctype(e, "type_record"),
                         self.paths.get(e["record"], ""))
        if kind == "call":
            if e.get("callee") in BUILTIN_IDENTITY and e["args"]:
                return self.value(e["args"][0], line)
            if e.get("callee") == "__builtin_constant_p":  # what the compiler answers for this argument
                return Const(int(not has_effects(e["args"][0]) and fold(self.value(e["args"][0], line)) is not None))
            call = self.call(e, line)
            temp = Var(f"%{len(self.temps) + 1}", "temp")
            self.temps[temp.name] = call
            self.emit(CallOp(call, temp, call.line))
            return temp
        if kind == "unary":
            return self._unary(e, line)
        if kind == "binary":
            return self._binary(e, line)
        if kind == "cond":
            if has_effects(e["t"]) or has_effects(e["f"]):
                return self._branch_value(e, line)
            return Select(self.value(e["c"], line), self.value(e["t"], line), self.value(e["f"], line))
        if kind == "index":
            return Index(self.value(e["base"], line), self.value(e["index"], line))
        if kind == "block":
            return self._statement_expression(e["body"], line)
        return Opaque(e.get("what", "?"), tuple(self.value(s, line) for s in e.get("sub", ())))

    def _unary(self, e: Facts, line: int, keep_old: bool = True) -> Expr:
        op = e["op"]
        if op in ("++", "--"):
            target = self.value(e["arg"], line)
            old = None
            if e.get("post") and keep_old:
                old = self.copy()
                self.emit(Assign(old, target, line, "copy"))
            self.emit(Assign(target, Binary("+" if op == "++" else "-", target, Const(1)), line, op))
            return old or target
        if op == "__extension__":
            return self.value(e["arg"], line)
        arg = self.value(e["arg"], line)
        if op == "*" and isinstance(arg, Unary) and arg.op == "&":  # READ_ONCE(x) is *&x
            return arg.arg
        return Unary(op, arg)

    def _binary(self, e: Facts, line: int) -> Expr:
        op = e["op"]
        if op == "=":
            value = self.value(e["r"], line)
            target = self.value(e["l"], line)
            self.emit(Assign(target, value, line))
            return value
        if op in _ASSIGN_OPS:
            target = self.value(e["l"], line)
            value = self.value(e["r"], line)
            self.emit(Assign(target, Binary(op[:-1], target, value), line, op))
            return target
        if op == ",":
            self.effect(e["l"], line)
            return self.value(e["r"], line)
        if op in ("&&", "||") and has_effects(e["r"]):
            return self._branch_value(e, line)
        return Binary(op, self.value(e["l"], line), self.value(e["r"], line))

    def _branch_value(self, e: Facts, line: int) -> Expr:
        """A `&&`, `||` or `?:` whose operands have effects: branches into a copy."""
        result = self.copy()
        join = self.new_block()
        if e["k"] == "cond":
            yes, no = self.new_block(), self.new_block()
            self.cond(e["c"], yes, no, line)
            for block, part in ((yes, e["t"]), (no, e["f"])):
                self.cur = block
                self.emit(Assign(result, self.value(part, line), line, "copy"))
                self.terminate(Jump(join))
        else:
            yes, no = self.new_block(), self.new_block()
            self.cond(e, yes, no, line)
            for block, bit in ((yes, 1), (no, 0)):
                self.cur = block
                self.emit(Assign(result, Const(bit), line, "copy"))
                self.terminate(Jump(join))
        self.cur = join
        return result

    def _statement_expression(self, body: list[Facts], line: int) -> Expr:
        """GNU `({ ...; last; })`: the statements, then the last expression's value."""
        depth = len(self.cleanups)
        for stmt in body[:-1]:
            self.stmt(stmt)
        last = body[-1] if body else None
        if last is not None and last["s"] == "expr":
            result = self.value(last["e"], line)
        else:
            if last is not None:
                self.stmt(last)
            result = Opaque("void")
        if self.blocks[self.cur].term is None:
            self.release_to(depth, line)
        del self.cleanups[depth:]
        return result

    # -- the whole function -----------------------------------------------------

    def finish(self, end_line: int) -> None:
        if self.blocks[self.cur].term is None:
            self.release_to(0, end_line)
            self.terminate(Return(None, end_line))
        for edge, label, depth, line in self.gotos:  # leaving scopes on the way to the label
            self.cur = edge
            target = self.label_block(label)
            for var, init in reversed(self.cleanups_at_goto[edge][self.label_depth.get(label, 0):depth]):
                self.emit(Cleanup(var, init, line))
            self.terminate(Jump(target))
        for block in self.blocks:  # a label no statement follows, an empty exit
            if block.term is None:
                block.term = Return(None, end_line)


def _via(via: Facts | None) -> Via | None:
    if not via:
        return None
    return Via(via["kind"], via.get("name", ""), via.get("record", ""), via.get("field", ""))


def _thread(blocks: list[Block]) -> None:
    """Jumps to an empty block that only jumps on go straight to its target."""
    def final(target: int) -> int:
        seen = set()
        while not blocks[target].instrs and isinstance(blocks[target].term, Jump) and target not in seen:
            seen.add(target)
            target = blocks[target].term.target
        return target

    for block in blocks:
        term = block.term
        if isinstance(term, Jump):
            block.term = Jump(final(term.target))
        elif isinstance(term, Branch):
            block.term = Branch(term.cond, final(term.then), final(term.orelse), term.line, term.source)
        elif isinstance(term, EachVcpu):
            block.term = EachVcpu(term.iterator, final(term.body), final(term.exit), term.line)


def _prune(blocks: list[Block], successors: Any) -> dict[int, int]:
    """The blocks reachable from the entry, as old id -> new id (creation order kept)."""
    seen, stack = {0}, [0]
    while stack:
        for nxt in successors(blocks[stack.pop()]):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return {old: new for new, old in enumerate(sorted(seen))}


def _renumber(term: Any, new: dict[int, int]) -> Any:
    if isinstance(term, Jump):
        return Jump(new[term.target])
    if isinstance(term, Branch):
        return Branch(term.cond, new[term.then], new[term.orelse], term.line, term.source)
    if isinstance(term, EachVcpu):
        return EachVcpu(term.iterator, new[term.body], new[term.exit], term.line)
    return term


def lower_function(fid: str, facts: Facts, bound: dict[str, int] | None = None,
                   paths: dict[str, str] | None = None) -> Function:
    """Lower one function's facts (docs/facts.md) to its CFG; `bound`
    parameters (never assigned in the body) read as the caller's constants,
    so the branches they decide fold away; `paths` (embedding_paths) name the
    fields of structs embedded in one place by that place."""
    lowerer = _Lowerer(bound or {}, paths or {})
    lowerer.body(facts["body"])
    lowerer.finish(facts["end_line"])
    function = Function(
        fid=fid, name=facts["name"], file=facts["file"], line=facts["line"], end_line=facts["end_line"],
        static=facts["static"], params=tuple(Param(p["name"], ctype(p)) for p in facts["params"]),
        returns=facts["returns"], blocks=[], loops=[], temps=lowerer.temps,
    )
    _thread(lowerer.blocks)
    new = _prune(lowerer.blocks, function.successors)
    for old, block in enumerate(lowerer.blocks):
        if old in new:
            block.id = new[old]
            block.term = _renumber(block.term, new)
            function.blocks.append(block)
    function.loops = [replace(loop, head=new.get(loop.head, -1), exit=new.get(loop.exit, -1)) for loop in lowerer.loops]
    resolve_addresses(function)
    return function


def embedding_paths(structs: dict[str, Facts]) -> dict[str, str]:
    """Each struct embedded by value (not in an array) in exactly one place, and nowhere in an array:
    that place, itself named by its own one place (`kvm_vcpu_arch` -> `kvm_vcpu.arch`; `kvm_arch` ->
    `kvm.arch`). A struct embedded in two places (`kvm_mmu` as root_mmu and guest_mmu) has none: which
    one a pointer to it designates is not known; nor has an object other structs point at (`struct kvm`,
    `struct kvm_vcpu`, though a tree with one vendor embeds each in one container): it is named by itself."""
    places: dict[str, list[tuple[str, str]]] = {}
    pointed = {f["record"] for struct in structs.values() for f in struct["fields"] if f["record"] and f["ptr"]}
    for name, struct in sorted(structs.items()):
        for f in struct["fields"]:
            if f["record"] and f["ptr"] == 0:
                places.setdefault(f["record"], []).append((name, "" if f["array"] else f["name"]))
    one = {record: where[0] for record, where in places.items()
           if len(where) == 1 and where[0][1] and record not in pointed}
    paths: dict[str, str] = {}

    def path(record: str, seen: frozenset[str]) -> str:
        if record not in one or record in seen:
            return record
        if record not in paths:
            outer, member = one[record]
            paths[record] = f"{path(outer, seen | {record})}.{member}"
        return paths[record]

    for record in sorted(one):
        path(record, frozenset())
    return paths


def _lock_object(e: Facts) -> Facts:
    """The lock a lock call names: `_raw_spin_lock_irqsave(spinlock_check(&x->lock))` takes the lock of the
    object its one-argument accessor derives the lock from, as `spin_unlock_irqrestore(&x->lock)` drops it."""
    while e.get("k") == "call" and len(e.get("args", ())) == 1 and not has_effects(e["args"][0]):
        e = e["args"][0]
    return e


def _indexed_vcpu_loop(s: Facts) -> Var | None:
    """The vCPU pointer of `kvm_for_each_vcpu` written out: `for (i = 0; i < <online vCPUs>; i++)` whose
    body starts by fetching the vCPU at `i` (`v = kvm_get_vcpu(kvm, i)` or `v = kvm->vcpus[i]`); None for
    any other loop. That first statement is the loop's own step."""
    header, body = s["header"], s["body"]
    if s["kind"] != "for" or len(header) != 3 or any(h["s"] != "expr" for h in header) or \
            not body or body[0]["s"] != "expr":
        return None
    init, cond, step = (h["e"] for h in header)
    index = init.get("l") if init.get("k") == "binary" and init.get("op") == "=" and \
        init.get("r") == {"k": "int", "v": 0} and init["l"].get("k") == "var" else None
    if index is None or not (_below_online_vcpus(cond, index) and _incremented(step, index)):
        return None
    fetch = body[0]["e"]
    vcpu = _assigned_pointer(fetch)
    return vcpu if vcpu is not None and _vcpu_at(fetch["r"], index) else None


def _same_var(e: Facts, var: Facts) -> bool:
    return e.get("k") == "var" and e.get("name") == var["name"]


def _below_online_vcpus(cond: Facts, index: Facts) -> bool:
    """`index < <an expression reading the VM's online_vcpus>`."""
    return cond.get("k") == "binary" and cond.get("op") == "<" and _same_var(cond["l"], index) and \
        any(n.get("k") == "member" and n.get("field") == ONLINE_VCPUS for n in _nodes(cond["r"]))


def _incremented(step: Facts, index: Facts) -> bool:
    return step.get("k") == "unary" and step.get("op") == "++" and _same_var(step["arg"], index)


def _vcpu_at(e: Facts, index: Facts) -> bool:
    """`kvm_get_vcpu(kvm, index)` or `kvm->vcpus[index]`."""
    if e.get("k") == "call":
        return e.get("callee") in VCPU_BY_INDEX and len(e["args"]) == 2 and _same_var(e["args"][1], index)
    return e.get("k") == "index" and e["base"].get("field") == VCPU_ARRAY and _same_var(e["index"], index)


def _assigned_pointer(e: Facts) -> Var | None:
    """The local record pointer `p` of `p = ...`."""
    target = e.get("l") if e.get("k") == "binary" and e.get("op") == "=" else None
    if target and target.get("k") == "var" and target.get("ptr") == 1 and target.get("record"):
        return Var(target["name"], target["scope"], ctype(target))
    return None


def _nodes(tree: Facts | list[Facts]) -> Iterator[Facts]:
    """The fact nodes of an expression or statement list, each before what it holds."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            yield node
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
