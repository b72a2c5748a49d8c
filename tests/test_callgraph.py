"""The merged call graph, with ops tables and handler arrays resolved."""

from __future__ import annotations

from pathlib import Path

from kaudit.audit import AuditResult, load_program


def test_static_call_from_run_loop_reaches_vendor_op(sample_result: AuditResult) -> None:
    graph = sample_result.graph
    edge = graph.edges["kvm_check_and_inject_events@arch/x86/kvm/x86.c", "svm_enable_irq_window@arch/x86/kvm/svm/svm.c"]
    assert edge["kind"] == "static_call"


def test_member_call_through_kvm_x86_ops(sample_result: AuditResult) -> None:
    edge = sample_result.graph.edges["vcpu_enter_guest@arch/x86/kvm/x86.c", "svm_handle_exit@arch/x86/kvm/svm/svm.c"]
    assert edge["kind"] == "member"


def test_exit_handler_dispatch_reaches_irq_window_handler(sample_result: AuditResult) -> None:
    graph = sample_result.graph
    edge = graph.edges["svm_handle_exit@arch/x86/kvm/svm/svm.c", "interrupt_window_interception@arch/x86/kvm/svm/svm.c"]
    assert edge["kind"] == "array"


def test_same_named_statics_in_two_files_stay_apart(tmp_path: Path) -> None:
    kvm = tmp_path / "arch/x86/kvm"
    kvm.mkdir(parents=True)
    (kvm / "a.c").write_text("static int helper(void) { return 1; }\nint a(void) { return helper(); }\n")
    (kvm / "b.c").write_text("static int helper(void) { return 2; }\nint b(void) { return helper(); }\n")
    _, graph = load_program(tmp_path, ("arch/x86/kvm/*.c",), jobs=1, cache_dir=None)
    assert graph.has_edge("a", "helper@arch/x86/kvm/a.c")
    assert graph.has_edge("b", "helper@arch/x86/kvm/b.c")
    assert not graph.has_edge("a", "helper@arch/x86/kvm/b.c")
