"""Extract, from facts, the protocol that per-vCPU code follows for one key.

The entry functions are the per-vCPU functions holding the key's set/clear
sites. Each is compiled to a flat list of instructions; wrappers on the way
to the API are inlined, the API itself becomes set/clear of the ghost bit,
lock calls become acquire/release, atomics and field writes become updates
of per-vCPU or VM-wide state. Any other condition is a nondeterministic
choice. Global configuration scalars (enable_apicv, vgif...) are assumed
enabled (non-zero): the protocol is checked where the feature is on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaudit.analysis.results import Analysis, JudgedSite
from kaudit.analysis.sites import guard_lock
from kaudit.facts import Expr, children, deref, field_key, lock_key, owner_record, render
from kaudit.kernel_api import ATOMIC_UPDATE, LOCK_ACQUIRE, LOCK_RELEASE


@dataclass(frozen=True)
class Instr:
    op: str  # branch | assign | bit | acquire | release | demand | jump
    args: tuple[Any, ...]
    function: str
    file: str
    line: int
    text: str


@dataclass
class Entry:
    """An entry function; a release entry (holding a clear site) runs only on
    a vCPU with a request outstanding, as an IRQ-window exit follows a request."""

    name: str
    code: list[Instr] = field(default_factory=list)
    releases: bool = False


@dataclass
class Protocol:
    key: str
    entries: list[Entry]
    vcpu_fields: list[str]
    vm_fields: list[str]
    update_lock: str


class _Compiler:
    def __init__(self, analysis: Analysis, sites: list[JudgedSite], rule_api: dict[str, dict],
                 update_lock: str) -> None:
        self.update_lock = update_lock
        self.program = analysis.program
        self.scopes = analysis.scopes
        self.api = rule_api
        self.inline = {hop.function for j in sites for hop in j.site.hops[1:]}
        self.demand_at = {(j.site.function, j.site.event.line, j.site.event.expr.get("col")): j.site.action
                          for j in sites}
        self.vcpu_fields: set[str] = set()
        self.vm_fields: set[str] = set()
        self.code: list[Instr] = []
        self.depth = 0

    # expressions are rewritten to a small evaluable form: ("c", v) constant,
    # ("v", slot) per-vCPU field, ("g", slot) VM field, ("l", name) local,
    # ("op", op, a, b), ("not", a), ("neg", a), ("cond", c, t, f),
    # ("atomic", slot, delta, returns_new), ("nd",) nondeterministic
    def expr(self, e: Expr, frame: str) -> tuple:
        e = deref(e)
        kind = e.get("k")
        if kind in ("int", "enum"):
            return ("c", e.get("v") or 0)
        if kind == "var":
            if e["scope"] == "global":
                return ("c", 1)  # configuration scalar: assumed enabled
            return ("l", f"{frame}{e['name']}")
        if kind == "member":
            return self.slot(e)
        if kind == "unary":
            inner = self.expr(e["arg"], frame)
            return {"!": ("not", inner), "-": ("neg", inner)}.get(e["op"], ("nd",))
        if kind == "binary" and e["op"] in ("==", "!=", "<", ">", "<=", ">=", "+", "-", "&&", "||", "&", "|"):
            return ("op", e["op"], self.expr(e["l"], frame), self.expr(e["r"], frame))
        if kind == "cond":
            return ("cond", self.expr(e["c"], frame), self.expr(e["t"], frame), self.expr(e["f"], frame))
        if kind == "call" and e.get("callee") in ATOMIC_UPDATE and e["args"]:
            return self.atomic(e, frame)
        return ("nd",)

    def slot(self, e: Expr) -> tuple:
        key = field_key(e)
        owner = owner_record(e)
        if key and owner in self.scopes.per_vcpu:
            self.vcpu_fields.add(key)
            return ("v", key)
        if key and owner in self.scopes.vm_wide:
            self.vm_fields.add(key)
            return ("g", key)
        return ("nd",)

    def atomic(self, call: Expr, frame: str) -> tuple:
        target = self.slot(call["args"][-1])
        delta_spec = ATOMIC_UPDATE[call["callee"]]
        if delta_spec is None:
            delta = self.expr(call["args"][0], frame)
            if call["callee"].startswith("atomic_sub"):
                delta = ("neg", delta)
        else:
            delta = ("c", delta_spec)
        returns_new = not call["callee"].endswith("_and_test")
        return ("atomic", target, delta, returns_new)

    def emit(self, op: str, args: tuple, fid: str, line: int, text: str) -> int:
        fn = self.program.functions[fid]
        self.code.append(Instr(op, args, fn["name"], fn["file"], line, text))
        return len(self.code) - 1

    def function(self, fid: str, frame: str, scoped: list[str]) -> list[int]:
        """Compile a body; returns the indexes of jumps to patch to its end."""
        exits: list[int] = []
        self.block(self.program.functions[fid]["body"], fid, frame, scoped, exits)
        return exits

    def block(self, body: list[dict], fid: str, frame: str, scoped: list[str], exits: list[int]) -> None:
        for stmt in body:
            self.stmt(stmt, fid, frame, scoped, exits)

    def release_scoped(self, scoped: list[str], fid: str, line: int) -> None:
        for lock in reversed(scoped):
            self.emit("release", (lock,), fid, line, f"release {lock} (end of scope)")

    def stmt(self, s: dict, fid: str, frame: str, scoped: list[str], exits: list[int]) -> None:
        kind, line = s["s"], s["line"]
        if kind == "expr":
            self.effect(s["e"], fid, frame, line)
        elif kind == "decl" and s["init"] is not None:
            init = s["init"]
            lock = guard_lock(self.program, init) if s["cleanup"] else None
            if lock:
                self.emit("acquire", (lock,), fid, line, f"guard: acquire {lock}")
                scoped.append(lock)
            else:
                self.effect(init, fid, frame, line)
                self.emit("assign", (("l", f"{frame}{s['name']}"), self.expr(init, frame)), fid, line,
                          f"{s['name']} = {render(init)}")
        elif kind == "if":
            self.nested_calls(s["c"], fid, frame, line)
            branch = self.emit("branch", (self.expr(s["c"], frame), None), fid, line, f"if ({render(s['c'])})")
            self.block(s["then"], fid, frame, list(scoped), exits)
            jump = self.emit("jump", (None,), fid, line, "")
            self._patch(branch, len(self.code))
            self.block(s["else"], fid, frame, list(scoped), exits)
            self._patch(jump, len(self.code))
        elif kind == "loop" and self.is_scoped_guard(s):  # scoped_guard(...) { }: the body runs once, locked
            inner = list(scoped)
            self.block(s["header"] + s["body"], fid, frame, inner, exits)
            self.release_scoped(inner[len(scoped):], fid, line)
        elif kind in ("loop", "switch"):
            branch = self.emit("branch", (("nd",), None), fid, line, f"{kind} (some iterations/cases)")
            self.block(s.get("header", []) + s.get("body", []), fid, frame, list(scoped), exits)
            self._patch(branch, len(self.code))
        elif kind in ("block", "case"):
            self.block(s["body"], fid, frame, scoped, exits)
        elif kind in ("return", "goto"):
            if s.get("e") is not None:
                self.effect(s["e"], fid, frame, line)
            self.release_scoped(scoped, fid, line)
            exits.append(self.emit("jump", (None,), fid, line, "return"))

    def is_scoped_guard(self, loop: dict) -> bool:
        return any(h["s"] == "decl" and h["cleanup"] and h["init"] is not None
                   and guard_lock(self.program, h["init"]) for h in loop["header"])

    def _patch(self, index: int, target: int) -> None:
        instr = self.code[index]
        args = (instr.args[0], target) if instr.op == "branch" else (target,)
        self.code[index] = Instr(instr.op, args, instr.function, instr.file, instr.line, instr.text)

    def effect(self, e: Expr, fid: str, frame: str, line: int) -> None:
        """Statement-level effects: calls we model, assignments, ++/--.
        Calls nested in a value (`r = wrapper(...)`) run first."""
        kind = e.get("k")
        if kind == "call":
            self.call(e, fid, frame, line)
            return
        self.nested_calls(e, fid, frame, line)
        if kind == "binary" and e["op"] in ("=", "+=", "-="):
            target = self.expr(e["l"], frame)
            value = self.expr(e["r"], frame)
            if e["op"] != "=":
                value = ("op", e["op"][0], target, value)
            if target[0] in ("v", "g", "l"):
                self.emit("assign", (target, value), fid, line, render(e))
        elif kind == "unary" and e["op"] in ("++", "--"):
            target = self.expr(e["arg"], frame)
            if target[0] in ("v", "g", "l"):
                delta = ("c", 1 if e["op"] == "++" else -1)
                self.emit("assign", (target, ("op", "+", target, delta)), fid, line, render(e))

    def nested_calls(self, e: Expr, fid: str, frame: str, line: int) -> None:
        """The calls inside an expression (atomics excluded: they are values)."""
        for child in children(e):
            if child.get("k") == "call" and child.get("callee") not in ATOMIC_UPDATE:
                self.call(child, fid, frame, line)
            else:
                self.nested_calls(child, fid, frame, line)

    def call(self, e: Expr, fid: str, frame: str, line: int) -> None:
        name = e.get("callee") or ""
        col = e.get("col")
        demand = self.demand_at.get((fid, line, col)) if self.depth == 0 else None
        if demand == "clear":
            self.emit("demand", (False,), fid, line, "release begins: this vCPU no longer needs the bit")
        if name in LOCK_ACQUIRE or name in LOCK_RELEASE:
            lock = lock_key(e["args"][0])  # named as the static walker names it
            self.emit("acquire" if name in LOCK_ACQUIRE else "release", (lock,), fid, line, f"{name}({lock})")
        elif name in ATOMIC_UPDATE and e["args"]:
            self.emit("assign", (("l", "_"), self.atomic(e, frame)), fid, line, render(e))
        elif name in self.api:
            self.api_call(e, self.api[name], fid, frame, line)
        else:
            target = self.program.resolve_name(fid, name) if name else None
            if target in self.inline and self.depth < 8:
                self.inline_call(e, target, fid, frame, line)
        if demand == "set":
            self.emit("demand", (True,), fid, line, "request complete: this vCPU relies on the bit")

    def api_call(self, e: Expr, api: dict, fid: str, frame: str, line: int) -> None:
        if "value_arg" in api:
            value = self.expr(e["args"][api["value_arg"]], frame)
        else:
            value = ("c", 1 if api["action"] == "set" else 0)
        # An API that takes the update lock itself is one step under that lock.
        lock = self.update_lock if api.get("takes_lock") else None
        self.emit("bit", (value, lock), fid, line, render(e))

    def inline_call(self, e: Expr, target: str, fid: str, frame: str, line: int) -> None:
        callee = self.program.functions[target]
        self.depth += 1
        inner = f"{frame}{callee['name']}."
        for param, arg in zip(callee["params"], e["args"], strict=False):
            self.emit("assign", (("l", f"{inner}{param['name']}"), self.expr(arg, frame)), fid, line,
                      f"{callee['name']}: {param['name']} = {render(arg)}")
        scoped: list[str] = []
        exits = self.function(target, inner, scoped)
        self.release_scoped(scoped, target, callee["end_line"])
        end = len(self.code)
        for index in exits:
            self._patch(index, end)
        self.depth -= 1



def _slots(expr: tuple) -> set[tuple[str, str]]:
    if expr[0] in ("v", "g", "l"):
        return {expr}
    found: set[tuple[str, str]] = set()
    for part in expr[1:]:
        if isinstance(part, tuple):
            found |= _slots(part)
    return found


def _relevant(code: list[Instr]) -> list[Instr]:
    """Drop updates of state the bit never depends on (statistics, locals
    nothing tests) and jumps to the next instruction: fewer states, same
    behaviour of the bit, the demands and the locks."""
    read: set[tuple[str, str]] = set()
    for instr in code:
        if instr.op in ("branch", "bit"):
            read |= _slots(instr.args[0])
        elif instr.op == "assign" and instr.args[1][0] == "atomic":
            read |= _slots(instr.args[1])
    changed = True
    while changed:
        before = len(read)
        for instr in code:
            if instr.op == "assign" and instr.args[0] in read:
                read |= _slots(instr.args[1])
        changed = len(read) != before
    keep = [not ((i.op == "assign" and i.args[0] not in read and i.args[1][0] != "atomic")
                 or (i.op == "jump" and i.args[0] == n + 1)) for n, i in enumerate(code)]
    new_index, count = [], 0
    for flag in keep:
        new_index.append(count)
        count += flag
    new_index.append(count)
    out = []
    for instr, flag in zip(code, keep, strict=True):
        if not flag:
            continue
        if instr.op == "jump":
            instr = Instr("jump", (new_index[instr.args[0]],), instr.function, instr.file, instr.line, instr.text)
        elif instr.op == "branch":
            instr = Instr("branch", (instr.args[0], new_index[instr.args[1]]), instr.function, instr.file,
                          instr.line, instr.text)
        out.append(instr)
    return out


def extract_protocol(analysis: Analysis, key: str, rule_api: list[dict], update_lock: str) -> Protocol | None:
    """The protocol of one key, or None when it has no per-vCPU set/clear site."""
    sites = [j for j in analysis.sites
             if j.site.key == key and j.context == "per-vcpu" and j.site.action in ("set", "clear")]
    if not sites:
        return None
    compiler = _Compiler(analysis, sites, {a["function"]: a for a in rule_api}, update_lock)
    setters = {j.site.function for j in sites if j.site.action == "set"}
    releases = {j.site.function for j in sites if j.site.action == "clear"} - setters
    entries = []
    for fid in sorted({j.site.function for j in sites}):
        compiler.code = []
        compiler.depth = 0
        scoped: list[str] = []
        exits = compiler.function(fid, "", scoped)
        fn = analysis.program.functions[fid]
        compiler.release_scoped(scoped, fid, fn["end_line"])
        for index in exits:
            compiler._patch(index, len(compiler.code))
        entries.append(Entry(fn["name"], _relevant(compiler.code), fid in releases))
    return Protocol(key, entries, sorted(compiler.vcpu_fields), sorted(compiler.vm_fields), update_lock)
