"""The runtime model: counterexamples for the bug, verification of the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import variants
from conftest import SAMPLE, audit

from kaudit.audit import AuditResult, audit_tree
from kaudit.model.check import ModelSettings, check_key
from kaudit.resources import default_rules_dir
from kaudit.rules import load_rules

IRQWIN = "APICV_INHIBIT_REASON_IRQWIN"
RULE = load_rules(default_rules_dir())[0]


def outcome(result: AuditResult, vcpus: int = 2):
    result_outcome = check_key(result.analyses[0], RULE, IRQWIN, vcpus)
    assert result_outcome is not None
    return result_outcome


def test_sample_bug_is_confirmed_by_a_short_two_vcpu_trace(sample_result: AuditResult) -> None:
    found = outcome(sample_result)
    assert (found.status, found.violation) == ("violation", "premature-clear")
    assert len(found.trace) <= 12
    actions = [(step["vcpu"], step["action"]) for step in found.trace]
    sets = [v for v, a in actions if a.startswith("kvm_set_apicv_inhibit")]
    clears = [v for v, a in actions if a.startswith("kvm_clear_apicv_inhibit")]
    assert sorted(sets) == [0, 1] and len(clears) == 1
    last = found.trace[-1]["vm_state_after"]
    assert last["bit"] == 0 and 1 in last["demand"]  # someone still demands the cleared bit


@pytest.mark.parametrize("vcpus", [2, 3])
def test_fix_is_verified(fixed_result: AuditResult, vcpus: int) -> None:
    found = outcome(fixed_result, vcpus)
    assert found.status == "verified" and not found.bound_hit


def test_audit_marks_finding_confirmed_and_fixed_sites_verified(fixed_tree: Path) -> None:
    buggy = audit_with_model(SAMPLE)
    (finding,) = [f for a in buggy.analyses for f in a.findings if f.severity == "error"]
    assert finding.model["status"] == "confirmed" and finding.model["trace"]
    fixed = audit_with_model(fixed_tree)
    irq = [j for a in fixed.analyses for j in a.sites if j.site.key == IRQWIN]
    assert {j.model["status"] for j in irq} == {"verified"}


def test_counter_without_flag_leaks(tmp_path: Path) -> None:
    found = outcome(audit(variants.counter_without_flag(tmp_path / "t")))
    assert (found.status, found.violation) == ("violation", "leak")


def test_counted_transition_outside_lock_races(tmp_path: Path) -> None:
    found = outcome(audit(variants.counter_outside_lock(tmp_path / "t")))
    assert (found.status, found.violation) == ("violation", "premature-clear")


def audit_with_model(tree: Path) -> AuditResult:
    return audit_tree(tree, [RULE], model=ModelSettings(sim_steps=2000))


def test_inc_return_dec_return_outside_the_lock_races(tmp_path: Path) -> None:
    result = audit(variants.inc_dec_return(tmp_path / "t", locked=False))
    judged = {(j.site.action, j.verdict.discipline) for a in result.analyses for j in a.sites if j.site.key == IRQWIN}
    assert judged == {("set", "flag-counter-unlocked"), ("clear", "flag-counter-unlocked")}
    found = outcome(result)
    assert (found.status, found.violation) == ("violation", "premature-clear")


@pytest.mark.parametrize("vcpus", [2, 3])
def test_inc_return_dec_return_under_the_lock_is_verified(tmp_path: Path, vcpus: int) -> None:
    result = audit(variants.inc_dec_return(tmp_path / "t", locked=True))
    judged = {(j.site.action, j.verdict.discipline) for a in result.analyses for j in a.sites if j.site.key == IRQWIN}
    assert judged == {("set", "per-vcpu-flag-counter"), ("clear", "per-vcpu-flag-counter")}
    found = outcome(result, vcpus)
    assert found.status == "verified" and not found.bound_hit


def test_cost_simulation_shows_the_churn_the_fix_removes(fixed_tree: Path) -> None:
    settings = ModelSettings(sim_steps=20_000)
    buggy = audit_tree(SAMPLE, [RULE], model=settings).analyses[0].model[IRQWIN]["cost"]
    fixed = audit_tree(fixed_tree, [RULE], model=settings).analyses[0].model[IRQWIN]["cost"]
    assert buggy["requests"] > 100 and fixed["requests"] > 100
    assert buggy["premature_clears"] > 0 and fixed["premature_clears"] == 0
    assert buggy["toggles_per_request"] > 2 * fixed["toggles_per_request"]
    assert buggy["locks_per_request"] > fixed["locks_per_request"]
    again = audit_tree(SAMPLE, [RULE], model=settings).analyses[0].model[IRQWIN]["cost"]
    assert again == buggy  # seeded: the same numbers every run


def test_scoped_guard_holds_the_lock_for_its_block(tmp_path: Path) -> None:
    result = audit(variants.scoped_guard(tmp_path / "t"))
    judged = {j.verdict.discipline for a in result.analyses for j in a.sites if j.site.key == IRQWIN}
    assert judged == {"per-vcpu-flag-counter"}
    assert [d for d in result.program.diagnostics] == []
    found = outcome(result, 3)
    assert found.status == "verified" and not found.bound_hit
