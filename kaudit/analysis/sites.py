"""Set/clear sites of a keyed VM-wide state, with wrappers followed.

The rule names an API family (e.g. kvm_set_apicv_inhibit) and which argument
is the key and which the set/clear value. A function that calls the family
with the key or the value taken from its own parameter is a wrapper: its
callers that pass constants are the sites (constant propagation across
calls). A one-statement helper with no vCPU parameter
(`kvm_inc_apicv_irq_window_req(kvm)`) is followed the same way, and so is a
helper whose call is guarded by its own parameter (`if (inc) set(); else
clear();`): the caller's constant picks the branch. So the site is where the
per-vCPU code decided to act.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaudit.analysis.context import Scopes, vcpu_param
from kaudit.facts import Event, EventWalker, Expr, const_value, deref, lock_key
from kaudit.kernel_api import LOCK_ACQUIRE
from kaudit.program import Program
from kaudit.rules import Rule


@dataclass(frozen=True)
class Hop:
    """One call on the way from a site down to the API: where, under what."""

    function: str
    event: Event


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
        value = ("param", api["value_arg"]) if "value_arg" in api else ("const", api["action"] == "set")
        specs[api["function"]] = Spec(("param", api["key_arg"]), value, bool(api.get("takes_lock")))
    return specs


def _argument(arg: Expr | None, params: list[str], by_name: bool) -> tuple[str, Any]:
    """What a call passes: a constant (an enumerator by name when it is a
    key, by value otherwise: the kernel's `false` is an enumerator), one of
    the caller's parameters, or some computed expression."""
    if arg is None:
        return ("computed", None)
    arg = deref(arg)
    if by_name and arg.get("k") == "enum":
        return ("const", arg["name"])
    value = const_value(arg)
    if value is not None:
        return ("const", value)
    if arg.get("k") == "var" and arg["scope"] == "param" and arg["name"] in params:
        return ("param", params.index(arg["name"]))
    return ("computed", arg)


def _bind(slot: tuple[str, Any], args: list[Expr], params: list[str], by_name: bool) -> tuple[str, Any]:
    kind, payload = slot
    if kind != "param":
        return slot
    return _argument(args[payload] if payload < len(args) else None, params, by_name)


def guard_lock(program: Program, init: Expr) -> str | None:
    """The lock a scoped guard takes: `guard(x)(&lock)` declares a variable
    initialised by `class_x_constructor(&lock)`, whose body (in the tree)
    takes the lock it is given."""
    if init.get("k") != "call" or not init.get("callee") or not init["args"]:
        return None
    constructors = program.functions_named(init["callee"])
    if any(c.get("callee") in LOCK_ACQUIRE for fid in constructors for c in program.calls_in(fid)):
        return lock_key(init["args"][0])
    return None


def all_events(program: Program) -> dict[str, list[Event]]:
    """Every function's events, walked once and shared by all rules."""
    walker = EventWalker(lambda init: guard_lock(program, init))
    return {fid: walker.walk(fn["body"]) for fid, fn in program.functions.items()}


def _bind_conditions(spec: Spec, args: list[Expr], params: list[str]) -> list[tuple[int, bool]] | None:
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
    return [(params.index(g.atom["name"]), g.polarity) for g in event.guards
            if g.atom.get("k") == "var" and g.atom["scope"] == "param" and g.atom["name"] in params]


def _enumerators(expr: Expr) -> list[str] | None:
    """The enumerators an expression can be: `c ? A : B` is A or B."""
    expr = deref(expr)
    if expr.get("k") == "enum":
        return [expr["name"]]
    if expr.get("k") == "cond":
        left, right = _enumerators(expr["t"]), _enumerators(expr["f"])
        return left + right if left is not None and right is not None else None
    return None


def _key_names(key: tuple[str, Any], events: list[Event]) -> list[str]:
    """A constant key, or the enumerators a local key variable is assigned
    (`reason = enable_apicv ? ABSENT : DISABLED; set(..., reason, ...)`)."""
    kind, payload = key
    if kind == "const":
        return [str(payload)]
    if kind != "computed" or payload is None or payload.get("k") != "var" or payload["scope"] != "local":
        return []
    names: list[str] = []
    for ev in events:
        target = ev.expr.get("l") if ev.kind == "assign" else None
        if target and target.get("k") == "var" and target["name"] == payload["name"]:
            found = _enumerators(ev.expr["r"])
            if found is None:
                return []
            names += found
    return sorted(set(names))


def _is_thin(program: Program, fid: str, call: Expr) -> bool:
    body = program.functions[fid]["body"]
    return len(body) == 1 and body[0]["s"] in ("expr", "return") and body[0].get("e") is call


@dataclass
class _Search:
    """State of the wrapper fixpoint: what each function does to the key."""

    program: Program
    scopes: Scopes
    events: dict[str, list[Event]]
    api: dict[str, Spec]
    called: set[str]
    wrappers: dict[str, list[Spec]]

    def specs_called(self, fid: str, event: Event) -> list[Spec]:
        """The API member or wrappers a call event reaches."""
        name = event.expr["callee"]
        if name in self.api:
            return [self.api[name]]
        return self.wrappers.get(self.program.resolve_name(fid, name), [])

    def visit(self, fid: str, sites: list[Site]) -> list[Spec]:
        """One function: the sites it holds (appended) and the wrapper specs it exports."""
        params = [p["name"] for p in self.program.functions[fid]["params"]]
        no_vcpu = vcpu_param(self.program, fid, self.scopes) is None
        exported: list[Spec] = []
        for event in self.events[fid]:
            if event.kind != "call" or not event.expr.get("callee"):
                continue
            for spec in self.specs_called(fid, event):
                if any(hop.function == fid for hop in spec.hops):
                    continue  # recursion through wrappers: followed once
                args = event.expr["args"]
                conditions = _bind_conditions(spec, args, params)
                if conditions is None:
                    continue  # the caller's constants rule this branch out
                conditions += _own_conditions(event, params)
                key = _bind(spec.key, args, params, by_name=True)
                value = _bind(spec.value, args, params, by_name=False)
                hops = (Hop(fid, event), *spec.hops)
                decided_by_caller = bool(conditions) and fid in self.called
                thin = key[0] == "const" and no_vcpu and (_is_thin(self.program, fid, event.expr)
                                                          or decided_by_caller)
                if "param" in (key[0], value[0]) or thin:
                    exported.append(Spec(key, value, spec.takes_lock, hops, tuple(conditions)))
                else:
                    sites += [_site(fid, name, value, hops, spec.takes_lock)
                              for name in _key_names(key, self.events[fid])]
        return exported


def find_sites(program: Program, rule: Rule, scopes: Scopes, events: dict[str, list[Event]]) -> list[Site]:
    """Every site of the rule's API family, wrappers resolved to a fixpoint."""
    api = _api_specs(rule)
    called = {program.resolve_name(fid, ev.expr["callee"]) for fid, evs in events.items()
              for ev in evs if ev.kind == "call" and ev.expr.get("callee")}
    search = _Search(program, scopes, events, api, called, {})
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
