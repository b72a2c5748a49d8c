"""The APICv inhibit balance rule on the sample, its fix and variants."""

from __future__ import annotations

from pathlib import Path

import variants
from conftest import audit

from kaudit.audit import AuditResult


def disciplines(result: AuditResult) -> dict[tuple[str, str, str], str]:
    program = result.program
    return {
        (j.site.key, j.site.action, program.functions[j.site.function]["name"]): j.verdict.discipline
        for a in result.analyses for j in a.sites
    }


def findings(result: AuditResult) -> list[tuple[str, str, str]]:
    return [(f.severity, f.kind, f.key) for a in result.analyses for f in a.findings]


def test_sample_has_exactly_the_irq_window_error(sample_result: AuditResult) -> None:
    errors = [f for a in sample_result.analyses for f in a.findings if f.severity == "error"]
    assert len(errors) == 1
    error = errors[0]
    program = sample_result.program
    assert error.key == "APICV_INHIBIT_REASON_IRQWIN" and error.kind == "premature-clear"
    at = program.functions[error.at.site.function]
    assert (at["file"], at["name"], error.at.site.action) == (
        "arch/x86/kvm/svm/svm.c", "interrupt_window_interception", "clear")
    assert [program.functions[r.site.function]["name"] for r in error.related] == ["svm_enable_irq_window"]


def test_sound_shapes_are_judged_with_their_discipline(sample_result: AuditResult) -> None:
    judged = disciplines(sample_result)
    assert judged[("APICV_INHIBIT_REASON_PIT_REINJ", "computed", "kvm_vm_ioctl_reinject")] == "vm-scope"
    assert judged[("APICV_INHIBIT_REASON_BLOCKIRQ", "computed",
                   "kvm_arch_vcpu_guestdbg_update_apicv_inhibit")] == "recompute-all-vcpus"
    assert judged[("APICV_INHIBIT_REASON_HYPERV", "computed", "synic_update_vector")] == "locked-counter"
    assert judged[("APICV_INHIBIT_REASON_DISABLED", "set", "kvm_arch_init_vm")] == "sticky"
    assert ("info", "sticky", "APICV_INHIBIT_REASON_DISABLED") in findings(sample_result)


def test_wrapper_forwarding_the_reason_is_followed_to_the_constant(sample_result: AuditResult) -> None:
    site = next(j.site for a in sample_result.analyses for j in a.sites if j.site.key.endswith("PIT_REINJ"))
    # the call in kvm_vm_ioctl_reinject passes the constant; kvm_vm_update_inhibit forwards it
    assert [h.function for h in site.hops] == [
        "kvm_vm_ioctl_reinject@arch/x86/kvm/x86.c", "kvm_vm_update_inhibit@arch/x86/kvm/x86.c"]


def test_synic_is_per_vcpu_through_its_container(sample_result: AuditResult) -> None:
    scopes = sample_result.analyses[0].scopes
    assert {"kvm_vcpu_hv_synic", "vcpu_svm", "kvm_lapic"} <= scopes.per_vcpu
    assert "kvm_hv" in scopes.vm_wide and "kvm_hv" not in scopes.per_vcpu


def test_fix_is_accepted_as_flag_plus_counter(fixed_result: AuditResult) -> None:
    assert [f for f in findings(fixed_result) if f[0] != "info"] == []
    judged = disciplines(fixed_result)
    assert judged[("APICV_INHIBIT_REASON_IRQWIN", "set", "svm_enable_irq_window")] == "per-vcpu-flag-counter"
    assert judged[("APICV_INHIBIT_REASON_IRQWIN", "clear", "interrupt_window_interception")] == "per-vcpu-flag-counter"


def test_flag_without_counter_is_still_a_premature_clear(tmp_path: Path) -> None:
    result = audit(variants.flag_without_counter(tmp_path / "t"))
    assert ("error", "premature-clear", "APICV_INHIBIT_REASON_IRQWIN") in findings(result)
    judged = disciplines(result)
    assert judged[("APICV_INHIBIT_REASON_IRQWIN", "set", "svm_enable_irq_window")] == "flag-without-counter"


def test_counter_without_flag_is_a_warning(tmp_path: Path) -> None:
    result = audit(variants.counter_without_flag(tmp_path / "t"))
    kinds = findings(result)
    assert ("warning", "counter-without-flag", "APICV_INHIBIT_REASON_IRQWIN") in kinds
    assert not [k for k in kinds if k[0] == "error"]


def test_counted_transition_outside_the_lock_is_a_warning(tmp_path: Path) -> None:
    result = audit(variants.counter_outside_lock(tmp_path / "t"))
    assert ("warning", "flag-counter-unlocked", "APICV_INHIBIT_REASON_IRQWIN") in findings(result)
