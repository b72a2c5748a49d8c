"""Confirm or refute the static verdicts of one analysis with the model.

For every key with per-vCPU set/clear sites, the extracted protocol runs
with N vCPUs in every interleaving. A finding is confirmed by a
counterexample or refuted (then dropped to info, saying why); a site judged
sound is verified, or the violation becomes a `model-violation` finding.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaudit.analysis.results import Analysis, Finding
from kaudit.model.explore import Explorer, Outcome
from kaudit.model.protocol import Protocol, extract_protocol
from kaudit.model.simulate import simulate
from kaudit.rules import Rule


@dataclass(frozen=True)
class ModelSettings:
    vcpus: int = 2
    sim_vcpus: int = 4
    sim_steps: int = 100_000
    seed: int = 0


def _recomputed(analysis: Analysis) -> set[str]:
    return {j.site.key for j in analysis.sites if j.verdict.discipline == "vm-recompute"}


def protocol_of(analysis: Analysis, rule: Rule, key: str) -> Protocol | None:
    """The key's per-vCPU demand protocol; None when there is none to check
    (no per-vCPU set/clear, or a VM-state recompute)."""
    if key in _recomputed(analysis):
        return None
    return extract_protocol(analysis, key, rule.api, rule.update_lock)


def check_key(analysis: Analysis, rule: Rule, key: str, vcpus: int) -> Outcome | None:
    """The model's verdict on one key (None: nothing to model)."""
    protocol = protocol_of(analysis, rule, key)
    return None if protocol is None else Explorer(protocol, vcpus=vcpus).run()


def _model_json(outcome: Outcome, status: str) -> dict:
    return {**outcome.to_json(), "status": status}


COMPUTED = {"status": "not-modelled",
            "reason": "the value is computed from state the model does not track (a per-vCPU bitmap, a "
                      "loop over vCPUs); the static discipline stands alone"}
RECOMPUTED = {"status": "not-modelled",
              "reason": "the bit is recomputed from VM-wide state on every call; no vCPU holds a demand on it "
                        "that an interleaving could break"}


def apply_model(analysis: Analysis, rule: Rule, settings: ModelSettings) -> None:
    vcpus = settings.vcpus
    recomputed = _recomputed(analysis)
    for judged in analysis.sites:
        if judged.context == "per-vcpu" and judged.site.action == "computed":
            judged.model = dict(COMPUTED)
        elif judged.site.key in recomputed:
            judged.model = dict(RECOMPUTED)
    for key in sorted({j.site.key for j in analysis.sites}):
        protocol = protocol_of(analysis, rule, key)
        if protocol is None:
            continue
        outcome = Explorer(protocol, vcpus=vcpus).run()
        cost = simulate(protocol, settings.sim_vcpus, settings.sim_steps, settings.seed).to_json() \
            if settings.sim_steps else None
        analysis.model[key] = {"rule": rule.id, "key": key, "status": outcome.status,
                               "violation": outcome.violation, "vcpus": vcpus, "states": outcome.states,
                               "bound_hit": outcome.bound_hit, "cost": cost}
        findings = [f for f in analysis.findings if f.key == key and f.kind != "sticky"]
        violated = outcome.status == "violation"
        for finding in findings:
            status = "confirmed" if violated else ("inconclusive" if outcome.bound_hit else "refuted")
            finding.model = _model_json(outcome, status)
            if status == "refuted":
                finding.severity = "info"
                finding.message += (f" [refuted by the runtime model: no violation in {outcome.states} states "
                                    f"with {vcpus} vCPUs]")
        for judged in analysis.sites:
            if judged.site.key != key or judged.context != "per-vcpu":
                continue
            status = "violated" if violated else ("inconclusive" if outcome.bound_hit else "verified")
            judged.model = _model_json(outcome, status)
        if violated and not findings:
            site = next(j for j in analysis.sites if j.site.key == key and j.context == "per-vcpu")
            message = (f"runtime model breaks the {site.verdict.discipline} discipline of {key}: "
                       f"{outcome.violation} with {vcpus} vCPUs")
            analysis.findings.append(Finding(rule, "error", "model-violation", key, message, site,
                                             model=_model_json(outcome, "confirmed")))
