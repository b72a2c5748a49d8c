"""The VM-wide counter rule: sound counts in the sample, the patch-0002 bug."""

from __future__ import annotations

from pathlib import Path

from conftest import SAMPLE, apply_patch, audit, copy_sample

from kaudit.audit import AuditResult

COUNTER_BUG = next((SAMPLE / "patches").glob("0002-*.patch"))


def counter_sites(result: AuditResult) -> dict[tuple[str, str, str], str]:
    program = result.program
    return {
        (j.site.key, j.site.action, program.functions[j.site.function]["name"]): j.verdict.discipline
        for a in result.analyses for j in a.sites if j.site.action in ("inc", "dec")
    }


def test_sample_counts_are_transition_guarded(sample_result: AuditResult) -> None:
    sites = counter_sites(sample_result)
    assert sites == {
        ("kvm.arch.vapics_in_nmi_mode", "inc", "apic_manage_nmi_watchdog"): "transition-guarded",
        ("kvm.arch.vapics_in_nmi_mode", "dec", "apic_manage_nmi_watchdog"): "transition-guarded",
        ("kvm.arch.hyperv.synic_auto_eoi_used", "inc", "synic_update_vector"): "transition-guarded",
        ("kvm.arch.hyperv.synic_auto_eoi_used", "dec", "synic_update_vector"): "transition-guarded",
    }


def test_unguarded_counter_of_patch_0002_is_an_error(tmp_path: Path) -> None:
    tree = copy_sample(tmp_path / "t")
    apply_patch(tree, COUNTER_BUG)
    result = audit(tree)
    errors = sorted((f.kind, f.key, f.at.site.action) for a in result.analyses for f in a.findings
                    if f.rule.id == "KVM002")
    assert errors == [("unguarded-counter", "kvm.arch.vapics_lint1_unmasked", "dec"),
                      ("unguarded-counter", "kvm.arch.vapics_lint1_unmasked", "inc")]
    assert counter_sites(result)[("kvm.arch.vapics_in_nmi_mode", "inc", "apic_manage_nmi_watchdog")] == \
        "transition-guarded"
