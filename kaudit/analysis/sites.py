"""Set/clear sites of a keyed VM-wide state, with wrappers followed.

The rule names an API family (e.g. kvm_set_apicv_inhibit) and which argument
is the key and which the set/clear value. A function that calls the family
with the key or the value taken from its own parameter is a wrapper: its
callers that pass constants are the sites (constant propagation across
calls). A one-call helper with no vCPU parameter
(`kvm_inc_apicv_irq_window_req(kvm)`) is followed the same way, and so is a
helper whose call is guarded by its own parameter (`if (inc) set(); else
clear();`): the caller's constant picks the branch. So the site is where the
per-vCPU code decided to act.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaudit.analysis.context import Scopes, vcpu_param
from kaudit.ir.evaluate import evaluate, fold
from kaudit.ir.flow import Event
from kaudit.ir.names import deref, subexprs
from kaudit.ir.nodes import Assign, Binary, Const, Expr, Select, Unary, Var
from kaudit.ir.program import LoweredProgram
from kaudit.rules import Rule


@dataclass(frozen=True)
class Hop:
    """One call on the way from a site down to the API: where, under what. `bound`: the caller's constants
    the function's events were specialised with (LoweredProgram.specialised_events), the event among them."""

    function: str
    event: Event
    bound: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Spec:
    """How a callee acts on the state: key and value as constants
    ("const", x), forwarded parameters ("param", i) or ("computed", expr)."""

    key: tuple[str, Any]
    value: tuple[str, Any]
    takes_lock: bool
    hops: tuple[Hop, ...] = ()
    # guards on the callee's own parameters: (parameter index, polarity)
    conditions: tuple[tuple[int, bool], ...] = ()


@dataclass
class Site:
    key: str
    action: str  # "set" | "clear" | "computed" (inhibits); "inc" | "dec" (counts)
    function: str
    hops: tuple[Hop, ...]  # hops[0] is the call in `function`
    value: Expr | None  # the value expression when computed
    takes_lock: bool

    @property
    def event(self) -> Event:
        return self.hops[0].event

    @property
    def api_hop(self) -> Hop:
        return self.hops[-1]


def _api_specs(rule: Rule) -> dict[str, Spec]:
    specs = {}
    for api in rule.api:
        value = ("param", api.value_arg) if api.value_arg is not None else ("const", api.action == "set")
        specs[api.function] = Spec(("param", api.key_arg), value, api.takes_lock)
    return specs


def _argument(arg: Expr | None, params: list[str], by_name: bool) -> tuple[str, Any]:
    """What a call passes: a constant (an enumerator by name when it is a
    key, by value otherwise: the kernel's `false` is an enumerator), one of
    the caller's parameters, or some computed expression."""
    if arg is None:
        return ("computed", None)
    arg = deref(arg)
    if by_name and isinstance(arg, Const) and arg.name:
        return ("const", arg.name)
    value = fold(arg)
    if value is not None:
        return ("const", value)
    if isinstance(arg, Var) and arg.scope == "param" and arg.name in params:
        return ("param", params.index(arg.name))
    leaves = [e for e in subexprs(arg) if not isinstance(e, (Const, Unary, Binary, Select))]
    if leaves and all(isinstance(e, Var) and e.scope == "param" and e.name in params for e in leaves):
        return ("of-params", (arg, tuple(params)))  # `delta > 0`: each caller's constants decide
    return ("computed", arg)


def _bind(slot: tuple[str, Any], args: tuple[Expr, ...], params: list[str], by_name: bool) -> tuple[str, Any]:
    kind, payload = slot
    if kind == "of-params":
        expr, names = payload
        given = dict(zip(names, args, strict=False))
        value = evaluate(expr, lambda leaf: fold(given[leaf.name]) if leaf.name in given else None)
        return ("const", value) if value is not None else ("computed", expr)
    if kind != "param":
        return slot
    return _argument(args[payload] if payload < len(args) else None, params, by_name)


def _bind_conditions(spec: Spec, args: tuple[Expr, ...], params: list[str]) -> list[tuple[int, bool]] | None:
    """The spec's parameter guards in the caller's terms; None when the
    caller's constants contradict them (that branch never runs from here)."""
    bound = []
    for index, polarity in spec.conditions:
        kind, payload = _bind(("param", index), args, params, by_name=False)
        if kind == "const" and bool(payload) != polarity:
            return None
        if kind == "param":
            bound.append((payload, polarity))
    return bound


def _own_conditions(event: Event, params: list[str]) -> list[tuple[int, bool]]:
    return [(params.index(g.atom.name), g.polarity) for g in event.guards
            if isinstance(g.atom, Var) and g.atom.scope == "param" and g.atom.name in params]


def _enumerators(expr: Expr) -> list[str] | None:
    """The enumerators an expression can be: `c ? A : B` is A or B."""
    expr = deref(expr)
    if isinstance(expr, Const) and expr.name:
        return [expr.name]
    if isinstance(expr, Select):
        left, right = _enumerators(expr.then), _enumerators(expr.orelse)
        return left + right if left is not None and right is not None else None
    return None


def _key_names(key: tuple[str, Any], events: list[Event]) -> list[str]:
    """A constant key, or the enumerators a local key variable is assigned
    (`reason = enable_apicv ? ABSENT : DISABLED; set(..., reason, ...)`)."""
    kind, payload = key
    if kind == "const":
        return [str(payload)]
    if kind != "computed" or not isinstance(payload, Var) or payload.scope != "local":
        return []
    names: list[str] = []
    for ev in events:
        if isinstance(ev.instr, Assign) and ev.instr.target == payload:
            found = _enumerators(ev.instr.value)
            if found is None:
                return []
            names += found
    return sorted(set(names))


@dataclass
class _Search:
    """State of the wrapper fixpoint: what each function does to the key."""

    lowered: LoweredProgram
    scopes: Scopes
    api: dict[str, Spec]
    called: set[str]
    wrappers: dict[str, list[Spec]]

    def specs_called(self, fid: str, event: Event) -> list[Spec]:
        """The API member or wrappers a call event reaches."""
        name = event.call.callee
        if name in self.api:
            return [self.api[name]]
        return self.wrappers.get(self.lowered.program.resolve_name(fid, name), [])

    def specialise(self, hops: tuple[Hop, ...], args: tuple[Expr, ...]) -> tuple[Hop, ...] | None:
        """A wrapper's hops as a caller that passes these arguments sees
        them: its guards with the caller's constants folded in (`if (delta
        > 0 && users != 1) goto out;` with delta = 1 leaves `users == 1`);
        None when those constants rule its call out."""
        if not hops:
            return hops
        first = hops[0]
        params = [p["name"] for p in self.lowered.program.functions[first.function]["params"]]
        bound = {name: value for name, arg in zip(params, args, strict=False) if (value := fold(arg)) is not None}
        events = self.lowered.specialised_events(first.function, bound)
        if events is self.lowered.events(first.function):
            return hops
        where = (first.event.call.callee, first.event.call.line, first.event.call.col)
        for ev in events:
            if ev.call is not None and (ev.call.callee, ev.call.line, ev.call.col) == where:
                return (Hop(first.function, ev, tuple(sorted(bound.items()))), *hops[1:])
        return None

    def is_thin(self, fid: str, event: Event) -> bool:
        """The function's whole body is this one call."""
        return [instr for _, instr in self.lowered.function(fid).instructions()] == [event.instr]

    def visit(self, fid: str, sites: list[Site]) -> list[Spec]:
        """One function: the sites it holds (appended) and the wrapper specs it exports."""
        program = self.lowered.program
        params = [p["name"] for p in program.functions[fid]["params"]]
        no_vcpu = vcpu_param(program, fid, self.scopes) is None
        events = self.lowered.events(fid)
        exported: list[Spec] = []
        for event in events:
            if event.call is None or not event.call.callee:
                continue
            for spec in self.specs_called(fid, event):
                if any(hop.function == fid for hop in spec.hops):
                    continue  # recursion through wrappers: followed once
                args = event.call.args
                conditions = _bind_conditions(spec, args, params)
                if conditions is None:
                    continue  # the caller's constants rule this branch out
                conditions += _own_conditions(event, params)
                key = _bind(spec.key, args, params, by_name=True)
                value = _bind(spec.value, args, params, by_name=False)
                below = self.specialise(spec.hops, args)
                if below is None:
                    continue  # the wrapper, given these constants, never makes the call
                hops = (Hop(fid, event), *below)
                decided_by_caller = bool(conditions) and fid in self.called
                thin = key[0] == "const" and no_vcpu and (self.is_thin(fid, event) or decided_by_caller)
                if {"param", "of-params"} & {key[0], value[0]} or thin:
                    exported.append(Spec(key, value, spec.takes_lock, hops, tuple(conditions)))
                else:
                    sites += [_site(fid, name, value, hops, spec.takes_lock) for name in _key_names(key, events)]
        return exported


def find_sites(lowered: LoweredProgram, rule: Rule, scopes: Scopes) -> list[Site]:
    """Every site of the rule's API family, wrappers resolved to a fixpoint."""
    program = lowered.program
    api = _api_specs(rule)
    events = lowered.all_events
    called = {program.resolve_name(fid, ev.call.callee) for fid, evs in events.items()
              for ev in evs if ev.call is not None and ev.call.callee}
    search = _Search(lowered, scopes, api, called, {})
    changed = True
    while changed:
        changed = False
        sites: list[Site] = []
        for fid in sorted(program.functions):
            if program.functions[fid]["name"] in api:
                continue
            exported = search.visit(fid, sites)
            if exported != search.wrappers.get(fid, []):
                search.wrappers[fid] = exported
                changed = True
    return sorted(sites, key=lambda s: (s.key, program.functions[s.function]["file"], s.event.line, s.function))


def _site(fid: str, key: Any, value: tuple[str, Any], hops: tuple[Hop, ...], takes_lock: bool) -> Site:
    if value[0] == "const":
        action = "set" if value[1] else "clear"
        return Site(str(key), action, fid, hops, None, takes_lock)
    return Site(str(key), "computed", fid, hops, value[1], takes_lock)
