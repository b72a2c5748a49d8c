"""The runtime model judges every site: the verdict decides the finding.

Per key: extract the protocol (kaudit.model.extract), explore it. A
violation (premature clear, leak, underflow) is an error with its trace,
whatever the static shape said; a verified protocol names its discipline
from what the proof relied on (the same exploration without the flags,
without the counts, without the update lock: a part whose loss breaks the
proof is one it relied on); a static shape that predicted a violation the
model does not find is inconclusive, and said so. A key the model cannot
run keeps its static findings, and a site whose shape is unsafe becomes a
finding saying the model could not check it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaudit.analysis.discipline import UNSAFE, Verdict
from kaudit.analysis.results import Analysis, Finding, JudgedSite
from kaudit.cache import Store
from kaudit.model.code import Protocol
from kaudit.model.explore import Explorer, Outcome
from kaudit.model.extract import Unmodelled, counter_protocol, inhibit_protocol
from kaudit.model.judgement import Judgement, Proof, cached
from kaudit.model.settings import ModelSettings
from kaudit.model.simulate import simulate
from kaudit.rules import Rule

NOT_PER_VCPU = {
    "vm-scope": "changed only from VM-scope code: no vCPU demands it, nothing per-vCPU to check",
    "sticky": "set and never cleared: no clear can be premature",
}


def explore(protocol: Protocol, settings: ModelSettings, ablate: frozenset[str] = frozenset()) -> Outcome:
    return Explorer(protocol, settings.vcpus, settings.calls, settings.env_calls, settings.max_states,
                    ablate).run()


def protocol_of(analysis: Analysis, rule: Rule, key: str) -> Protocol | Unmodelled:
    if rule.engine == "counter-transition":
        return counter_protocol(analysis, rule, key)
    return inhibit_protocol(analysis, rule, key)


def check_key(analysis: Analysis, rule: Rule, key: str, settings: ModelSettings) -> Outcome | Unmodelled:
    """The model's verdict on one key."""
    protocol = protocol_of(analysis, rule, key)
    return protocol if isinstance(protocol, Unmodelled) else explore(protocol, settings)


def judge(protocol: Protocol, settings: ModelSettings) -> Judgement:
    """Explore; name the discipline of a verified inhibit protocol, cost a violated one."""
    outcome = explore(protocol, settings)
    counter = protocol.kind == "counter"
    if outcome.status == "violation":
        cost = simulate(protocol, settings.sim_vcpus, settings.sim_steps, settings.seed).to_json() \
            if settings.sim_steps and not counter and not outcome.assumes else None
        return Judgement(outcome, None, cost)
    if outcome.bound_hit or counter:
        return Judgement(outcome, None, None)
    return Judgement(outcome, proof(protocol, settings), None)


def proof(protocol: Protocol, settings: ModelSettings) -> Proof:
    """The discipline of a verified protocol, named by what its proof relied on."""
    relied: dict[str, bool] = {}
    named_by_shape = protocol.vm_demand or protocol.recompute  # their name needs only whether the lock matters
    parts = {"flags": bool(protocol.flags) and not named_by_shape,
             "counts": bool(protocol.counts) and not named_by_shape,
             "lock": any(op.kind == "acquire" and op.args[0] == protocol.update_lock for op in protocol.code)}
    for part, present in parts.items():
        if present:
            relied[part] = explore(protocol, settings, frozenset({part})).status == "violation"
    lock = f" under {protocol.update_lock}" if relied.get("lock") else ""
    flags, counts = ", ".join(protocol.flag_names), ", ".join(protocol.count_names)
    if protocol.vm_demand:
        name, why = "vm-recompute", "the bit follows VM-wide state, recomputed by whichever vCPU runs"
    elif protocol.recompute:
        name, why = "recompute-all-vcpus", "the bit is recomputed from every vCPU's state"
    elif relied.get("flags") and relied.get("counts"):
        name, why = ("per-vcpu-flag-counter", f"per-vCPU flag {flags} makes each request idempotent; count {counts} "
                     "sets and clears the bit on its 0<->1 transitions")
    elif relied.get("counts"):
        name, why = "locked-counter", f"count {counts} of the vCPUs that need it decides the bit"
    elif relied.get("flags"):
        name, why = "per-vcpu-flag", f"per-vCPU flag {flags} makes each request idempotent"
    else:
        name, why = "self-contained", "each vCPU's set and clear leave no other vCPU's demand exposed"
    return Proof(name, why + lock, relied)


def _entries_json(protocol: Protocol) -> list[dict]:
    """Each entry the model runs, and each lifecycle entry it left out, with what it assumes."""
    return [{"function": e.name, "assumption": e.why} for e in protocol.entries] + \
        [{"function": name, "assumption": why} for name, why in protocol.left_out]


def _model_json(outcome: Outcome, status: str, protocol: Protocol) -> dict:
    return {**outcome.to_json(), "status": status, "entries": _entries_json(protocol)}


def _site_for(analysis: Analysis, outcome: Outcome, sites: list[JudgedSite]) -> JudgedSite:
    """The judged site the violation's culprit op belongs to."""
    op = outcome.culprit
    if op is not None:
        for j in sites:
            fn = analysis.program.functions[j.site.function]
            if (fn["file"], j.site.event.line) == (op.file, op.line):
                return j
        for j in sites:
            if j.site.function == outcome.culprit_entry:
                return j
    want = {"premature-clear": "clear", "underflow": "clear", "leak": "set", "drift": "inc"}.get(outcome.violation)
    return next((j for j in sites if j.site.action == want), sites[0])


HOW = {
    "premature-clear": "a vCPU still needs it when AVIC is no longer inhibited, after {where}",
    "leak": "its bit alone keeps AVIC inhibited once no vCPU needs it, or its count of requests exceeds the "
            "vCPUs ({where})",
    "underflow": "a count of its requests goes below zero ({where})",
}
HOW_COUNT = {
    "drift": "a vCPU's share of the count is not 0 or 1, or the count no longer adds up to the vCPUs' shares "
             "({where})",
    "leak": "a vCPU's lifetime ends (a failed create, or a destroy) with its share still counted ({where})",
    "underflow": "a vCPU's lifetime ends (a failed create, or a destroy) having taken more from the count than "
                 "it gave ({where})",
}


def _how(outcome: Outcome, analysis: Analysis, at: JudgedSite, protocol: Protocol) -> str:
    """How the violation comes about, after the site it is reported at, or after the write of a function no
    request or release path calls (a bookkeeping writer that user space runs) when that made it happen."""
    fn = analysis.program.functions[at.site.function]
    where = f"{fn['name']} ({fn['file']}:{at.site.event.line})"
    writer = next((e for e in protocol.entries if e.kind == "writer" and e.fid == outcome.culprit_entry), None)
    if writer is not None and outcome.culprit is not None:
        where = f"{writer.name} ({outcome.culprit.file}:{outcome.culprit.line}), which no request or release path calls"
    counter = protocol.kind == "counter"
    text = (HOW_COUNT if counter else HOW)[outcome.violation].format(where=where)
    return f"{text}; the runtime model shows it with {outcome.vcpus} vCPUs in a {len(outcome.trace)}-step trace"


@dataclass(frozen=True)
class KeyTask:
    """One key of one rule for the model to judge: the rule's index among the audit's rules."""

    rule: int
    key: str


def _vcpu_sites(analysis: Analysis, rule: Rule, key: str) -> list[JudgedSite]:
    """The sites of a key the model judges: every site of a count; an inhibit's per-vCPU, not sticky ones."""
    sites = [j for j in analysis.sites if j.site.key == key]
    if rule.engine == "counter-transition":
        return sites
    return [j for j in sites if j.context == "per-vcpu" and j.verdict.discipline != "sticky"]


def model_tasks(rules: list[Rule], analyses: list[Analysis]) -> list[KeyTask]:
    """The keys the model judges, in report order."""
    return [KeyTask(i, key) for i, (rule, analysis) in enumerate(zip(rules, analyses, strict=True))
            for key in sorted({j.site.key for j in analysis.sites}) if _vcpu_sites(analysis, rule, key)]


def judged(analysis: Analysis, rule: Rule, key: str, settings: ModelSettings, store: Store | None
           ) -> tuple[Protocol | Unmodelled, Judgement | None]:
    """Extract one key's protocol and judge it (from the cache when it was judged before)."""
    protocol = protocol_of(analysis, rule, key)
    if isinstance(protocol, Unmodelled):
        return protocol, None
    return protocol, cached(store, protocol, settings, lambda p: judge(p, settings))


def mark_unjudged(analysis: Analysis, rule: Rule) -> None:
    """Sites the model does not judge say why (VM-scope, sticky, not run from per-vCPU code)."""
    for key in sorted({j.site.key for j in analysis.sites}):
        judged_sites = _vcpu_sites(analysis, rule, key)
        for j in analysis.sites:
            if j.site.key == key and j not in judged_sites:
                j.model = {"status": "not-modelled", "reason": NOT_PER_VCPU.get(j.verdict.discipline,
                                                                                 "not run from per-vCPU code")}


def apply_judgement(analysis: Analysis, rule: Rule, key: str, protocol: Protocol | Unmodelled,
                    judgement: Judgement | None) -> None:
    """The model's verdict on one key decides its findings."""
    sites = _vcpu_sites(analysis, rule, key)
    static = [f for f in analysis.findings if f.key == key and f.kind != "sticky"]
    if isinstance(protocol, Unmodelled):
        for j in sites:
            j.model = {"status": "not-modelled", "reason": protocol.reason}
        flagged = {id(f.at) for f in static}
        for j in sites:
            if j.verdict.discipline in UNSAFE and id(j) not in flagged and "unchecked-shape" in rule.findings:
                kind = rule.kind("unchecked-shape")
                analysis.findings.append(Finding(rule, kind.severity, kind.name, key,
                                                 kind.text(key=key, why=j.verdict.why, reason=protocol.reason), j))
        return
    assert judgement is not None  # a protocol is always judged
    counter = protocol.kind == "counter"
    outcome = judgement.outcome
    status = "inconclusive" if outcome.assumes else outcome.status
    entry = {"rule": rule.id, "key": key, "status": status, "violation": outcome.violation,
             "assumes": outcome.assumes,
             "vcpus": outcome.vcpus, "states": outcome.states, "bound_hit": outcome.bound_hit, "cost": None,
             "entries": _entries_json(protocol)}
    analysis.model[key] = entry
    for f in static:
        analysis.findings.remove(f)
    if outcome.status == "violation" and not outcome.assumes:
        at = _site_for(analysis, outcome, sites)
        kind = rule.kind(outcome.violation)
        related = [j for j in sites if j is not at and j.site.action != at.site.action] or \
            [j for j in sites if j is not at]
        model = _model_json(outcome, "confirmed", protocol)
        analysis.findings.append(Finding(rule, kind.severity, kind.name, key,
                                         kind.text(key=key, how=_how(outcome, analysis, at, protocol)), at, related,
                                         model))
        for j in sites:
            j.model = {**model, "status": "violated"}
        entry["cost"] = judgement.cost
        return
    if outcome.bound_hit or outcome.assumes:  # like a key the model cannot run: warns only where the shape is unsafe
        unsafe = [j for j in sites if j.verdict.discipline in UNSAFE]
        if unsafe:
            kind = rule.kind("inconclusive")
            article = "an" if outcome.violation[0] in "aeiou" else "a"
            why = (f"every trace of {article} {outcome.violation} the runtime model found relies on the value of "
                   f"{', '.join(outcome.assumes)}, which it did not compute" if outcome.assumes else
                   f"the runtime model stopped at {outcome.states} states with {outcome.vcpus} vCPUs before "
                   f"covering every interleaving")
            how = f"{why}; the static shape is {unsafe[0].verdict.discipline}"
            analysis.findings.append(Finding(rule, kind.severity, kind.name, key, kind.text(key=key, how=how),
                                             unsafe[0], model=_model_json(outcome, "inconclusive", protocol)))
        for j in sites:
            j.model = _model_json(outcome, "inconclusive", protocol)
        return
    verified = _model_json(outcome, "verified", protocol)
    shapes = sorted({j.verdict.discipline for j in sites if j.verdict.discipline in UNSAFE})
    if counter:
        for j in sites:
            j.model = {**verified, "static_shape": j.verdict.discipline}
        name = ", ".join(sorted({j.verdict.discipline for j in sites}))
    else:
        name, relied = judgement.proof.discipline, judgement.proof.relied
        entry["relied_on"] = relied
        for j in sites:
            j.model = {**verified, "relied_on": relied, "static_shape": j.verdict.discipline}
            j.verdict = Verdict(name, judgement.proof.why, j.verdict.flag, j.verdict.counter)
    if shapes:
        kind = rule.kind("inconclusive")
        how = (f"its static shape ({', '.join(shapes)}) predicts a violation, but the runtime model finds none in "
               f"{outcome.states} states with {outcome.vcpus} vCPUs ({name}); one of the two is wrong here")
        analysis.findings.append(Finding(rule, kind.severity, kind.name, key, kind.text(key=key, how=how),
                                         sites[0], model=verified))
